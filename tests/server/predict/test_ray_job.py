"""`vfnet predict --ray`: on a real local Ray instance (2 CPUs, two model actors) the records equal the
local run's record for record, error records included, in both output formats."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from vfnet.server.predict.cli import _options, build_parser, main
from vfnet.server.predict.sources import expand_sources

from .conftest import write_video

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'vfnet-serve[ray]'")


def encoded(image: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def folder(tmp_path_factory, photo_like_images) -> Path:
    """Six good images of three sizes (JPEG and PNG), one broken image and one six-frame video."""
    root = tmp_path_factory.mktemp("photos")
    for i, image in enumerate(photo_like_images):
        (root / f"good{i}.jpg").write_bytes(encoded(image, "JPEG"))
        (root / f"good{i}.png").write_bytes(encoded(np.ascontiguousarray(image[::-1]), "PNG"))
    (root / "broken.jpg").write_bytes(np.random.default_rng(0).bytes(3000))
    pytest.importorskip("av")
    from .conftest import make_scenes

    write_video(root / "clip.mkv", make_scenes())
    return root


def by_key(records: list[dict]) -> list[dict]:
    return sorted(records, key=lambda r: (r["source"], -1 if r["frame"] is None else r["frame"]))


def test_ray_records_equal_the_local_run(folder, tiny_onnx, tmp_path):
    common = [str(folder), "--model", str(tiny_onnx), "--batch-size", "3", "--score-threshold", "0.4"]
    local_out = tmp_path / "local.jsonl"
    assert main([*common, "--out", str(local_out), "--threads", "2"]) == 1  # the broken image failed
    local = by_key([json.loads(line) for line in local_out.read_text().splitlines()])
    assert len(local) == 6 + 1 + 6 and sum(len(r["detections"]) for r in local) > 0

    from vfnet.server.predict.ray_job import predict_on_ray

    ray_out = tmp_path / "ray.jsonl"
    args = build_parser().parse_args([*common, "--out", str(ray_out), "--ray", "--actors", "2"])
    try:
        code = predict_on_ray("auto", tiny_onnx, args, expand_sources(args.sources), _options(args), num_cpus=2)
        assert code == 1
        assert not ray.is_initialized()  # started here, shut down here
    finally:
        ray.shutdown()
    written = sorted(ray_out.glob("*.json"))
    assert written, list(ray_out.iterdir())
    remote = by_key([json.loads(line) for path in written for line in path.read_text().splitlines()])
    assert remote == local
    [broken] = [r for r in remote if r["error"]]
    assert broken["source"].endswith("broken.jpg") and broken["width"] is None and broken["detections"] == []
    position = [source.path for source in expand_sources([str(folder)])].index(str(folder / "clip.mkv")) + 1
    assert {r["image_id"] for r in remote if r["frame"] is not None} == {position}  # the video's place among the sources


def test_parquet_output_holds_the_same_records(folder, tiny_onnx, tmp_path):
    from vfnet.server.predict.ray_job import predict_on_ray
    from vfnet.server.predict.records import parquet_schema

    images = [str(p) for p in sorted(folder.glob("good*"))] + [str(folder / "broken.jpg")]
    local_out = tmp_path / "local.parquet"
    assert main([*images, "--model", str(tiny_onnx), "--out", str(local_out)]) == 1
    out = f"file://{tmp_path / 'ray.parquet'}"  # a URI, through Ray's writer
    args = build_parser().parse_args([*images, "--model", str(tiny_onnx), "--out", out, "--ray", "--actors", "1"])
    try:
        assert predict_on_ray("auto", tiny_onnx, args, expand_sources(args.sources), _options(args), num_cpus=2) == 1
    finally:
        ray.shutdown()
    table = pq.read_table(tmp_path / "ray.parquet")
    assert table.schema.equals(parquet_schema())
    assert by_key(table.to_pylist()) == by_key(pq.read_table(local_out).to_pylist())
