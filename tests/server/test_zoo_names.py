"""A zoo name works wherever a model path does: `vfnet serve --model NAME` pulls, converts and exports
it on first use, later starts serve the cached export with no network and no export, and `vfnet
eval` / `vfnet export` take the name too.

The zoo is a user zoo file whose entry points at a file:// URL (a team's own zoo on a shared
folder): a key-exact mmdetection checkpoint of the session's tiny model, named like a published file
with its own SHA-256 prefix. Its export is therefore the same network as `tiny_onnx`.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import httpx
import numpy as np
import pytest

from vfnet.server.runtime import load_detector
from vfnet.server.zoo.resolve import checkpoint_file, served_file

from .app.conftest import Server, encode

NAME = "team_vfnet_demo"


@pytest.fixture(scope="module")
def zoo(tmp_path_factory, tiny_model):
    """(VFNET_HOME, zoo file): the cache set for the whole module (every server inherits it)."""
    torch = pytest.importorskip("torch")
    root = tmp_path_factory.mktemp("zoo_names")
    staged = root / "staged.pth"
    torch.save({"meta": {"CLASSES": tuple(tiny_model.class_names)}, "state_dict": tiny_model.state_dict()}, staged)
    digest = hashlib.sha256(staged.read_bytes()).hexdigest()
    published = root / "share" / f"team_vfnet_demo_20261206-{digest[:8]}.pth"
    published.parent.mkdir()
    staged.rename(published)
    zoo_file = root / "zoo.json"
    zoo_file.write_text(json.dumps([{"name": NAME, "url": published.as_uri(), "sha256": digest[:8], "preset": "vfnet_r18_demo"}]))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VFNET_HOME", str(root / "home"))
        patch.setenv("VFNET_ZOO", str(zoo_file))
        yield root / "home", zoo_file


@pytest.fixture(scope="module")
def first_server(zoo):
    """`vfnet serve --model NAME` on an empty cache: it pulls, converts and exports, then serves."""
    server = Server(NAME, max_batch_size=2).wait_ready(timeout=400)
    yield server
    server.stop()


def test_first_use_serves_the_named_model(first_server, zoo, tiny_onnx, photo_like_images):
    home, _ = zoo
    data = encode(photo_like_images[0])
    reply = httpx.post(f"{first_server.url}/detect?score_threshold=0.3", files={"image": ("a.jpg", data, "image/jpeg")}, timeout=60)
    assert reply.status_code == 200, reply.text
    [result] = reply.json()["results"]
    expected = load_detector(tiny_onnx).detect([data], score_threshold=0.3)[0]
    assert len(expected.labels) > 0
    assert [d["class_id"] for d in result["detections"]] == expected.labels.tolist()
    np.testing.assert_allclose(np.reshape([d["box"] for d in result["detections"]], (-1, 4)), expected.boxes, atol=0.05)

    [export] = (home / "exports" / NAME).glob("*.onnx")
    sha256 = hashlib.sha256(next((home / "checkpoints").glob("*.pth")).read_bytes()).hexdigest()
    assert export.name.startswith(f"{sha256[:16]}-onnx-fp32-")  # keyed by the checkpoint's hash and the options
    assert (home / "models" / f"{NAME}.safetensors").is_file()
    log = first_server.log()
    assert "downloading" in log and "exporting" in log
    assert not list(home.rglob("*.part")) and not list(home.rglob("*.tmp"))


def test_later_starts_use_the_cache_without_network_or_export(first_server, zoo):
    home, _ = zoo
    [export] = (home / "exports" / NAME).glob("*.onnx")
    made = export.stat().st_mtime_ns
    for source in (home / "checkpoints").glob("*.pth"):
        source.unlink()  # the published file is not needed once converted
    server = Server(NAME, zoo_mirror="http://127.0.0.1:9/unreachable").wait_ready(timeout=120)
    try:
        model = httpx.get(f"{server.url}/v1/model", timeout=10).json()
    finally:
        assert server.stop() == 0
    assert model["preset"] == "vfnet_r18_demo" and model["backend"] == "onnxruntime"
    assert "downloading" not in server.log() and "exporting" not in server.log()
    assert export.stat().st_mtime_ns == made
    # the other commands find the same files
    assert served_file(NAME, "auto") == export
    assert served_file(NAME, "torch") == checkpoint_file(NAME) == home / "models" / f"{NAME}.safetensors"


def test_eval_and_export_take_a_name(first_server, zoo, tiny_onnx, tmp_path):
    from vfnet.train.synth import generate

    data = generate(tmp_path / "val", images=3, seed=5, size=160).parent
    run = lambda *args: subprocess.run([sys.executable, "-m", "vfnet.server.cli", *args], capture_output=True, text=True, timeout=300)  # noqa: E731
    by_name, by_file = run("eval", "--model", NAME, "--data", str(data)), run("eval", "--model", str(tiny_onnx), "--data", str(data))
    assert by_name.returncode == 0, by_name.stderr
    assert json.loads(by_name.stdout) == json.loads(by_file.stdout)

    # trt takes the name's cached ONNX export (and here stops at the missing TensorRT, naming nothing else)
    trt = run("export", "trt", "--weights", NAME, "--out", str(tmp_path / "m.engine"))
    assert trt.returncode == 1 and "TensorRT" in trt.stderr and "Traceback" not in trt.stderr and "exporting" not in trt.stderr

    for command in (
        ["eval", "--model", "vfnet_r50_fpn_1x_coc", "--data", str(data)],
        ["export", "onnx", "--weights", "vfnet_r50_fpn_1x_coc", "--out", "x.onnx"],
    ):
        done = run(*command)
        assert done.returncode == 1 and "Traceback" not in done.stderr
        assert "unknown model 'vfnet_r50_fpn_1x_coc'; did you mean 'vfnet_r50_fpn_1x_coco'" in done.stderr
