"""Session-wide fixtures: one small random-initialised model, saved and exported once.

The model is `vfnet_r18_demo` with random weights and a zeroed classification bias, so that IACS
values sit near 0.5 and every image yields plenty of detections (a non-trivial score distribution
for parity tests). Exports take 40-70 s each, hence session scope, and under pytest-xdist (`make
test` runs two workers) each is made by one worker and shared (`made_once`).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

# No test's server binds the default gRPC port (8001): the two pytest-xdist workers' servers would
# collide on it. Servers and in-process apps inherit this; tests/server/app/test_grpc.py asks for a free port.
os.environ.setdefault("VFNET_GRPC_PORT", "0")


def _cuda_gpu() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    """`gpu` tests skip without a CUDA GPU, `trt` tests without TensorRT, each saying so; they run
    for real on a GPU host (`make gpu-check`)."""
    reasons = {
        "gpu": None if _cuda_gpu() else "needs a CUDA GPU (torch sees none); runs in `make gpu-check` on a GPU host",
        "trt": None if importlib.util.find_spec("tensorrt") else "needs TensorRT (not installed); runs in `make gpu-check` on a GPU host",
    }
    for item in items:
        for marker, reason in reasons.items():
            if reason and marker in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))


def made_once(tmp_path_factory, name: str, make) -> Path:
    """`make(folder)` -> the path of an artifact, called once per test run: the pytest-xdist workers of
    a run share one folder, the first to need the artifact makes it and the others wait on its lock."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's folder, above each worker's own
    folder, made = root / f"shared-{name}", root / f"shared-{name}.path"
    with FileLock(str(root / f"shared-{name}.lock")):
        if not made.exists():
            folder.mkdir(exist_ok=True)
            made.write_text(str(make(folder)))
    return Path(made.read_text())


@pytest.fixture(scope="session")
def tiny_model():
    torch = pytest.importorskip("torch")
    from vfnet.model import build_vfnet

    torch.manual_seed(0)
    model = build_vfnet("vfnet_r18_demo", class_names=["circle", "square", "triangle", "star", "ring", "cross", "hex", "bar"])
    torch.nn.init.zeros_(model.bbox_head.vfnet_cls.bias)
    return model


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_model, tmp_path_factory):
    from vfnet.model import save_checkpoint

    return made_once(tmp_path_factory, "ckpt", lambda folder: save_checkpoint(tiny_model, folder / "tiny.safetensors"))


@pytest.fixture(scope="session")
def tiny_onnx(tiny_model, tmp_path_factory):
    """The detections graph (fp32)."""
    from vfnet.export import export_onnx

    return made_once(tmp_path_factory, "onnx", lambda folder: export_onnx(tiny_model, folder / "tiny.onnx").path)


@pytest.fixture(scope="session")
def tiny_onnx_raw(tiny_model, tmp_path_factory):
    """The raw head-outputs graph (fp32)."""
    from vfnet.export import export_onnx

    return made_once(tmp_path_factory, "onnx_raw", lambda folder: export_onnx(tiny_model, folder / "tiny_raw.onnx", raw=True).path)


@pytest.fixture(scope="session")
def photo_like_images():
    """Three smooth, differently sized RGB images (uint8 HxWx3): gradients plus blobs."""
    import numpy as np

    rng = np.random.default_rng(0)
    images = []
    for h, w in ((240, 320), (300, 200), (97, 413)):
        yy, xx = np.mgrid[0:h, 0:w]
        image = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (h + w)], axis=-1)
        for _ in range(4):
            cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(10, 60)
            image[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(0, 256, 3)
        images.append(image.astype(np.uint8))
    return images


@pytest.fixture(scope="session")
def demo_ir(tmp_path_factory):
    """The bundled demo checkpoint as an OpenVINO IR (`vfnet export openvino`; ~70 s, hence once)."""
    pytest.importorskip("openvino")
    pytest.importorskip("torch")
    from vfnet.export.openvino_export import export_openvino
    from vfnet.model import load_checkpoint
    from vfnet.server.runtime.load import DEMO_CHECKPOINT

    return made_once(tmp_path_factory, "openvino", lambda folder: export_openvino(load_checkpoint(DEMO_CHECKPOINT), folder / "demo").path)
