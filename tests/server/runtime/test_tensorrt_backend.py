"""The TensorRT backend. Here (no TensorRT, no GPU): every path fails with one clear line. On a GPU
host with TensorRT (`make gpu-check`): the demo's engines detect what ONNX Runtime on the CPU does."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

from vfnet.server.runtime import ModelLoadError, load_detector
from vfnet.server.runtime.load import DEMO_ONNX
from vfnet.train.synth import render_image

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None
without_tensorrt = pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here")


def engine_of(onnx_path, engine, *flags: str):
    """`vfnet export trt --onnx ONNX_PATH --out ENGINE [flags]`, which must succeed; returns ENGINE."""
    command = [sys.executable, "-m", "vfnet.server.cli", "export", "trt", "--onnx", str(onnx_path), "--out", str(engine), *flags]
    built = subprocess.run(command, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    return engine


@without_tensorrt
def test_an_engine_without_tensorrt_is_a_clear_load_error(tmp_path):
    engine = tmp_path / "demo.engine"
    engine.write_bytes(b"not checked before TensorRT is")
    for backend in ("auto", "tensorrt"):
        with pytest.raises(ModelLoadError, match=r"^TensorRT is not installed here: it comes with NVIDIA's container"):
            load_detector(engine, backend=backend)
    with pytest.raises(ModelLoadError, match="the tensorrt backend runs on a CUDA GPU"):
        load_detector(engine, backend="tensorrt", device="cpu")


@without_tensorrt
def test_serving_an_engine_without_tensorrt_is_one_line_and_exit_1(tmp_path):
    engine = tmp_path / "demo.engine"
    engine.write_bytes(b"?")
    done = subprocess.run([sys.executable, "-m", "vfnet.server.cli", "serve", "--model", str(engine)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stderr.startswith("error: TensorRT is not installed here")
    assert len(done.stderr.strip().splitlines()) == 1


@without_tensorrt
def test_serving_an_onnx_file_on_tensorrt_without_it_fails_before_listening(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "vfnet.server.cli", "serve", "--model", str(DEMO_ONNX), "--backend", "tensorrt", "--engine-cache", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and done.stderr.startswith("error: TensorRT is not installed here")
    assert len(done.stderr.strip().splitlines()) == 1 and not list(tmp_path.iterdir())


def test_cuda_without_a_gpu_provider_is_a_clear_load_error():
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has a CUDA provider")
    with pytest.raises(ModelLoadError, match="device cuda requested, but this onnxruntime has no CUDAExecutionProvider"):
        load_detector(DEMO_ONNX, device="cuda")


@pytest.mark.gpu
@pytest.mark.trt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_the_demo_engine_detects_what_onnxruntime_on_the_cpu_detects(precision, tmp_path):
    """fp32: same labels, IoU >= 0.99, |score difference| <= 1e-3. fp16: reported, and the same
    objects found (labels of the top detections)."""
    from vfnet.export import export_onnx
    from vfnet.model import load_checkpoint
    from vfnet.server.runtime.load import DEMO_CHECKPOINT

    onnx_path = DEMO_ONNX
    if precision == "fp16":
        onnx_path = export_onnx(load_checkpoint(DEMO_CHECKPOINT), tmp_path / "demo_fp16.onnx", fp16=True).path
    engine = engine_of(onnx_path, tmp_path / f"demo_{precision}.engine", "--max-batch", "4")
    gpu, cpu = load_detector(engine), load_detector(DEMO_ONNX, device="cpu")
    assert gpu.loaded.backend == "tensorrt" and gpu.card.precision == precision
    worst = 0.0
    for got, want in zip(gpu.detect(held_out_images(8)), cpu.detect(held_out_images(8))):
        top = min(len(got), len(want), 10)
        assert got.labels[:top].tolist() == want.labels[:top].tolist()
        if precision == "fp32":
            assert_close_detections(got, want)
        worst = max(worst, float(np.abs(got.scores[:top] - want.scores[:top]).max()))
    print(f"{precision}: largest |score difference| among the top detections {worst:.2e}")


def held_out_images(count: int, seed: int = 8800):
    return [render_image(np.random.default_rng([seed, i]), 384, 512)[0] for i in range(count)]


def assert_close_detections(got, want, iou_at_least=0.99, score_within=1e-3):
    import torch
    from torchvision.ops import box_iou

    assert len(got) == len(want) and got.labels.tolist() == want.labels.tolist()
    if len(got):
        iou = box_iou(torch.from_numpy(got.boxes), torch.from_numpy(want.boxes)).diagonal()
        assert bool((iou >= iou_at_least).all()) and float(np.abs(got.scores - want.scores).max()) <= score_within


@pytest.mark.gpu
def test_onnxruntime_on_cuda_detects_what_it_detects_on_the_cpu():
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has no CUDA provider (pip install onnxruntime-gpu)")
    gpu, cpu = load_detector(DEMO_ONNX, device="cuda"), load_detector(DEMO_ONNX, device="cpu")
    assert gpu.loaded.device == "cuda"
    images = held_out_images(8)
    for got, want in zip(gpu.detect(images), cpu.detect(images)):
        assert_close_detections(got, want)


@pytest.mark.gpu
@pytest.mark.trt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_the_plugin_engine_detects_what_onnxruntime_on_the_cpu_detects(precision, tmp_path):
    """fp32 as close as the plain engine; fp16: the same labels among the top detections, differences reported."""
    from vfnet.export import export_onnx
    from vfnet.model import load_checkpoint
    from vfnet.server.runtime.load import DEMO_CHECKPOINT

    plugin_onnx = export_onnx(load_checkpoint(DEMO_CHECKPOINT), tmp_path / "demo_plugin.onnx", plugin=True, fp16=precision == "fp16").path
    engine = engine_of(plugin_onnx, tmp_path / "demo_plugin.engine", "--max-batch", "4")
    gpu, cpu = load_detector(engine), load_detector(DEMO_ONNX, device="cpu")
    images = held_out_images(8, seed=8801)
    for got, want in zip(gpu.detect(images), cpu.detect(images)):
        if precision == "fp32":
            assert_close_detections(got, want)
        else:
            top = min(len(got), len(want), 10)
            print(f"fp16 plugin engine: largest |score difference| among the top detections {float(abs(got.scores[:top] - want.scores[:top]).max()):.2e}")
            assert got.labels[:top].tolist() == want.labels[:top].tolist()


@pytest.mark.gpu
@pytest.mark.trt
def test_the_demo_ap_through_each_engine_is_onnxruntimes(tmp_path):
    """fp32 within 0.001 AP of ONNX Runtime on the CPU; fp16 at most 0.003 (0.3 points) below."""
    from vfnet.export import export_onnx
    from vfnet.model import load_checkpoint
    from vfnet.server.evaluate import evaluate
    from vfnet.server.runtime.load import DEMO_CHECKPOINT
    from vfnet.train.synth import generate

    data = generate(tmp_path / "val", images=100, seed=2, size=512).parent
    reference = evaluate(load_detector(DEMO_ONNX, device="cpu", max_pixels=None), data)["AP"]
    fp16_onnx = export_onnx(load_checkpoint(DEMO_CHECKPOINT), tmp_path / "demo_fp16.onnx", fp16=True).path
    for onnx_path, allowed in ((DEMO_ONNX, 0.001), (fp16_onnx, 0.003)):
        engine = engine_of(onnx_path, tmp_path / f"{onnx_path.stem}.engine")
        ap = evaluate(load_detector(engine, max_pixels=None), data)["AP"]
        print(f"{engine.name}: AP {ap:.4f} vs ONNX Runtime CPU {reference:.4f}")
        assert reference - ap <= allowed
