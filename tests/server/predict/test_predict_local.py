"""`vfnet predict` on one machine: the same detections as /detect, every bad input an error record, the
output formats, drawn copies, videos frame by frame, and runs that are killed, torn or stopped and resumed."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from vfnet.server.app.main import create_app
from vfnet.server.app.settings import ServeSettings
from vfnet.server.predict import Journal, PredictOptions, expand_sources, predict, read_items
from vfnet.server.runtime import load_detector
from vfnet.server.runtime.annotate import draw_detections

from ..app.conftest import wait_for_readiness
from .conftest import make_scenes, write_video


def encoded(image: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def detector(tiny_onnx):
    return load_detector(tiny_onnx, intra_op_threads=2)


@pytest.fixture(scope="module")
def folder(tmp_path_factory, photo_like_images) -> Path:
    """Six good images of three sizes (JPEG and PNG, one in a subfolder) and four bad ones."""
    root = tmp_path_factory.mktemp("photos")
    (root / "more").mkdir()
    for i, image in enumerate(photo_like_images):
        (root / f"good{i}.jpg").write_bytes(encoded(image, "JPEG"))
        (root / "more" / f"good{i}.png").write_bytes(encoded(np.ascontiguousarray(image[::-1]), "PNG"))
    jpeg = (root / "good0.jpg").read_bytes()
    (root / "bad_random.jpg").write_bytes(np.random.default_rng(0).bytes(3000))
    (root / "bad_truncated.jpg").write_bytes(jpeg[:200])
    (root / "bad_empty.png").write_bytes(b"")
    (root / "bad_huge.png").write_bytes(encoded(np.zeros((1200, 1100, 3), np.uint8), "PNG"))  # over --max-pixels 1e6
    return root


def run_cli(*args: str) -> tuple[int, str]:
    """`vfnet predict ARGS` in a subprocess: (exit code, stderr)."""
    done = subprocess.run([sys.executable, "-m", "vfnet.server.cli", "predict", *args], capture_output=True, text=True, timeout=300)
    return done.returncode, done.stderr


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def first_run(folder, tiny_onnx, tmp_path_factory) -> tuple[int, str, list[dict]]:
    out = tmp_path_factory.mktemp("out") / "dets.jsonl"
    code, err = run_cli(str(folder), "--model", str(tiny_onnx), "--out", str(out), "--max-pixels", "1000000", "--batch-size", "3", "--threads", "2")
    return code, err, read_jsonl(out)


def test_every_input_once_and_the_detections_of_detect(first_run, folder, detector):
    code, err, records = first_run
    assert code == 1, err  # some inputs failed
    assert sorted(r["source"] for r in records) == sorted(str(p) for p in folder.rglob("*.*"))
    good = {r["source"]: r for r in records if r["error"] is None}
    assert len(good) == 6 and sum(len(r["detections"]) for r in good.values()) > 0
    settings = ServeSettings(max_batch_size=4, max_pixels=1_000_000, _env_file=None)
    with TestClient(create_app(settings, detector)) as client:
        wait_for_readiness(client, 200)
        for source, r in good.items():
            data = Path(source).read_bytes()
            reply = client.post("/detect", files={"image": ("x", data, "application/octet-stream")})
            assert reply.status_code == 200, reply.text
            [expected] = reply.json()["results"]
            assert (r["width"], r["height"], r["detections"]) == (expected["width"], expected["height"], expected["detections"]), source


def test_bad_inputs_are_error_records_and_the_run_goes_on(first_run, folder):
    code, err, records = first_run
    errors = {Path(r["source"]).name: r["error"] for r in records if r["error"] is not None}
    assert set(errors) == {"bad_random.jpg", "bad_truncated.jpg", "bad_empty.png", "bad_huge.png"}
    assert "cannot identify the image format" in errors["bad_random.jpg"]
    assert "1,320,000 pixels; the limit is 1,000,000" in errors["bad_huge.png"]
    assert all(r["detections"] == [] and r["width"] is None for r in records if r["error"])
    assert "6 detected, 4 failed, 0 already in" in err and "error: " in err and "Traceback" not in err
    positions = {Path(r["source"]).name: r["image_id"] for r in records}
    assert sorted(positions.values()) == list(range(1, 11))  # each source's position among the expanded ones


def test_formats_and_drawn_copies(folder, detector, tmp_path):
    sources = expand_sources([str(folder / "good0.jpg"), str(folder / "more")])
    jsonl = Journal(tmp_path / "a.jsonl", resume=False)
    predict(detector, sources, jsonl, PredictOptions(annotated=tmp_path / "drawn", threads=2))
    records = list(jsonl.records())
    jsonl.finish()
    parquet = Journal(tmp_path / "a.parquet", resume=False)
    predict(detector, sources, parquet, PredictOptions(threads=2))
    assert (tmp_path / "a.parquet.partial.jsonl").exists()
    parquet.finish()
    assert not (tmp_path / "a.parquet.partial.jsonl").exists()
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "a.parquet").to_pylist()
    key = lambda r: r["source"]  # noqa: E731
    for got, want in zip(sorted(table, key=key), sorted(records, key=key)):
        assert got["source"] == want["source"] and got["image_id"] == want["image_id"] and len(got["detections"]) == len(want["detections"])
        np.testing.assert_allclose([d["box"] for d in got["detections"]], [d["box"] for d in want["detections"]], atol=1e-3)
    coco = Journal(tmp_path / "a.json", resume=False)
    predict(detector, sources, coco, PredictOptions(threads=2))
    coco.finish()
    results = json.loads((tmp_path / "a.json").read_text())
    assert len(results) == sum(len(r["detections"]) for r in records)
    first = next(r for r in records if r["detections"])
    x1, y1, x2, y2 = first["detections"][0]["box"]
    assert {
        "image_id": first["image_id"],
        "category_id": first["detections"][0]["class_id"] + 1,
        "bbox": [x1, y1, round(x2 - x1, 2), round(y2 - y1, 2)],
    }.items() <= next(r for r in results if r["image_id"] == first["image_id"]).items()
    drawn = sorted(p.name for p in (tmp_path / "drawn").iterdir())
    assert len(drawn) == 4 and all(name.endswith(".jpg") for name in drawn)
    r = next(r for r in records if r["source"].endswith("good0.jpg"))
    [result] = detector.detect([Path(r["source"]).read_bytes()], score_threshold=0.3)
    expected = draw_detections(detector.decode(Path(r["source"]).read_bytes()), result)
    name = r["source"].lstrip("/").replace("/", "__") + ".jpg"
    assert (tmp_path / "drawn" / name).read_bytes() == expected


def test_a_coco_source_keeps_its_ids_and_categories(tmp_path, tiny_onnx):
    from vfnet.train.synth import generate

    annotation_file = generate(tmp_path / "val", images=3, seed=2, size=160)
    annotations = json.loads(annotation_file.read_text())
    code, err = run_cli(str(annotation_file), "--model", str(tiny_onnx), "--out", str(tmp_path / "r.json"), "--score-threshold", "0.05")
    assert code == 0, err
    results = json.loads((tmp_path / "r.json").read_text())
    assert results and {r["image_id"] for r in results} <= {im["id"] for im in annotations["images"]}
    assert {r["category_id"] for r in results} <= {c["id"] for c in annotations["categories"]}


def test_video_frames_are_detected_like_the_frames_as_images(tmp_path, detector):
    pytest.importorskip("av")
    video = write_video(tmp_path / "clip.mp4", make_scenes(6), fps=10)
    journal = Journal(tmp_path / "v.jsonl", resume=False)
    sources = expand_sources([str(video)])
    summary = predict(detector, sources, journal, PredictOptions(every=2, score_threshold=0.05, threads=2))
    records = sorted(journal.records(), key=lambda r: r["frame"])
    assert summary.detected == 3 and [(r["frame"], r["timestamp"]) for r in records] == [(0, 0.0), (2, 0.2), (4, 0.4)]
    frames = [item.data for item in read_items(sources[0], every=2)]
    for r, frame in zip(records, frames):
        [expected] = detector.detect([frame], score_threshold=0.05)
        assert r["detections"] == expected.as_json() and (r["width"], r["height"]) == (224, 160)
    code, err = run_cli(str(video), "--out", str(tmp_path / "v.json"))
    assert code == 2 and "COCO results hold images, not video frames" in err
    code, err = run_cli(str(video), "--out", str(tmp_path / "v.json"), "--ray")
    assert code == 2 and "--ray writes a folder of JSON Lines or Parquet files" in err


def test_a_killed_run_resumes_to_each_input_exactly_once(folder, tiny_onnx, tmp_path):
    out = tmp_path / "dets.jsonl"
    command = [sys.executable, "-m", "vfnet.server.cli", "predict", str(folder), str(folder / "more"), "--model", str(tiny_onnx), "--out", str(out)]
    command += ["--batch-size", "1", "--threads", "1", "--max-pixels", "1000000"]
    process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None and (not out.exists() or out.read_text().count("\n") < 3):
        time.sleep(0.02)
    process.kill()
    process.wait(30)
    written = out.read_text()
    assert written.count("\n") < 10, "the run finished before it could be killed"
    with out.open("a") as f:
        f.write('{"source": "torn')  # what a kill in the middle of a write would leave
    code, err = run_cli(str(folder), str(folder / "more"), "--model", str(tiny_onnx), "--out", str(out), "--resume", "--max-pixels", "1000000")
    assert code == 1, err
    records = read_jsonl(out)
    assert sorted(r["source"] for r in records) == sorted(str(p) for p in folder.rglob("*.*"))  # `more` named twice: once each
    assert f"already in {out}" in err and f"{written.count(chr(10))} already in" in err
    code, err = run_cli(str(folder), "--model", str(tiny_onnx), "--out", str(out))
    assert code == 2 and "exists; pass --resume" in err


def test_ctrl_c_stops_after_the_batch_and_resume_finishes(folder, tiny_onnx, tmp_path):
    out = tmp_path / "dets.parquet"
    partial = tmp_path / "dets.parquet.partial.jsonl"
    command = [sys.executable, "-m", "vfnet.server.cli", "predict", str(folder), "--model", str(tiny_onnx), "--out", str(out)]
    command += ["--batch-size", "1", "--threads", "1", "--max-pixels", "1000000"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None and (not partial.exists() or partial.read_text().count("\n") < 2):
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    if process.returncode == 130:
        assert "stopping after the current batch" in err and "--resume to finish" in err and not out.exists()
        kept = partial.read_text()
        assert kept.endswith("\n") and kept.count("\n") < 7
    else:  # the run won the race: it had finished
        assert process.returncode == 1 and out.exists()
        return
    code, err = run_cli(str(folder), "--model", str(tiny_onnx), "--out", str(out), "--resume", "--max-pixels", "1000000")
    assert code == 1, err
    import pyarrow.parquet as pq

    assert sorted(r["source"] for r in pq.read_table(out).to_pylist()) == sorted(str(p) for p in folder.rglob("*.*"))
    assert not partial.exists() and os.path.getsize(out) > 0
