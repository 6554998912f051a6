"""The bundled demo model behind the real service: it finds what is in synthetic images."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import box_iou

from vfnet.server.runtime.load import DEMO_CHECKPOINT
from vfnet.train.synth import CLASSES, generate, render_image

from .conftest import Server, encode


def scenes(count: int, seed: int = 2024):
    """Held-out scenes (a seed no training set uses): cluttered backgrounds with 2-4 objects of at
    least 64 px that do not overlap. On 100 such scenes the demo model finds 99% of the objects this
    way (3 of 100 scenes have a miss; 98% with 40 px objects), so these 8 fixed scenes are a
    regression check of the served path, not a recall measurement: that is `vfnet eval`'s job."""
    return [render_image(np.random.default_rng([seed, i]), 384, 512, min_side=64, max_objects=4, min_visible=1.0) for i in range(count)]


def missed(detections, objects) -> list[str]:
    """Ground-truth objects with no detection of their class at IoU >= 0.7."""
    found = []
    for obj in objects:
        same_class = [d["box"] for d in detections if d["class_name"] == CLASSES[obj.label]]  # xyxy pixels
        best = float(box_iou(torch.tensor([obj.box], dtype=torch.float64), torch.tensor(same_class, dtype=torch.float64)).max()) if same_class else 0.0
        if best < 0.7:
            found.append(f"{CLASSES[obj.label]} {obj.box} (best IoU {best:.2f})")
    return found


@pytest.fixture(scope="module")
def demo_server():
    assert DEMO_CHECKPOINT.is_file(), f"the demo model is missing: {DEMO_CHECKPOINT}"
    srv = Server(DEMO_CHECKPOINT, max_batch_size=4).wait_ready()  # the checkpoint, served by the torch backend
    yield srv
    srv.stop()


def test_demo_finds_every_object_at_the_default_threshold(demo_server):
    problems = []
    for index, (image, objects) in enumerate(scenes(8)):
        response = httpx.post(f"{demo_server.url}/detect", files={"image": ("s.jpg", encode(image, quality=92), "image/jpeg")}, timeout=60)
        assert response.status_code == 200
        problems += [f"scene {index}: {m}" for m in missed(response.json()["results"][0]["detections"], objects)]
    assert not problems, "\n".join(problems)


def test_exif_rotated_photo_comes_back_in_the_displayed_frame(demo_server):
    image, objects = scenes(1, seed=77)[0]
    exif = Image.Exif()
    exif[0x0112] = 6  # viewers rotate the stored pixels 90 degrees clockwise
    stored = encode(np.ascontiguousarray(np.rot90(image)), quality=92, exif=exif)  # stored 90 degrees counter-clockwise
    result = httpx.post(f"{demo_server.url}/detect", files={"image": ("r.jpg", stored, "image/jpeg")}, timeout=60).json()["results"][0]
    assert (result["width"], result["height"]) == (512, 384)  # the displayed frame
    assert not missed(result["detections"], objects)


@pytest.fixture(scope="module")
def cpu_install(tmp_path_factory) -> Path:
    """A fresh venv with `pip install '<this repository>[cpu]'` (no torch), from a copy of the files
    git would commit (tracked or not ignored), so that the wheel's package data and the extra's
    dependencies are what users of a clone get."""
    root = Path(__file__).resolve().parents[3]
    work = tmp_path_factory.mktemp("cpu_install")
    source = work / "src"
    tracked = (
        subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root, capture_output=True, check=True)
        .stdout.decode()
        .split("\0")
    )
    for name in filter(lambda name: (root / name).is_file(), tracked):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, source / name)
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    done = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", f"{source}[cpu]"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert subprocess.run([str(venv / "bin" / "python"), "-c", "import torch"], capture_output=True).returncode == 1
    return venv / "bin" / "vfnet"


def test_a_torch_free_install_serves_the_demo(cpu_install):
    """`pip install '.[cpu]'` then a plain `vfnet serve`: the bundled demo's ONNX export, with ONNX
    Runtime, finding every object of held-out scenes as the checkpoint does."""
    server = Server(None, command=(str(cpu_install),), max_batch_size=2).wait_ready()
    try:
        model = httpx.get(f"{server.url}/v1/model").json()
        assert (model["preset"], model["backend"]) == ("vfnet_r18_demo", "onnxruntime")
        for index, (image, objects) in enumerate(scenes(4)):
            reply = httpx.post(f"{server.url}/detect", files={"image": ("s.jpg", encode(image, quality=92), "image/jpeg")}, timeout=60)
            assert reply.status_code == 200
            assert not missed(reply.json()["results"][0]["detections"], objects), f"scene {index}"
    finally:
        assert server.stop() == 0, server.log()


def test_a_torch_free_install_evaluates_the_demo(cpu_install, tmp_path):
    """`vfnet eval --data DIR` in the same install: COCO metrics of the demo on a small held-out set."""
    data = generate(tmp_path / "val", images=8, seed=2025, size=384).parent
    done = subprocess.run([str(cpu_install), "eval", "--data", str(data)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads(done.stdout)
    assert metrics["AP50"] > 0.7 and metrics["AP"] > 0.5, metrics  # the demo: AP50 0.86, AP 0.71 on 500 images
