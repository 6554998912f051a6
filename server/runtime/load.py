"""load_detector: a model file -> a Detector with the right backend."""

from __future__ import annotations

from pathlib import Path

from .backends import BACKEND_CHOICES, DEVICES, INFERENCE_PRECISIONS
from .detector import Detector
from .images import DEFAULT_MAX_PIXELS
from .model_card import ModelLoadError

# The bundled demo model (vfnet_r18_demo trained on the synthetic set; see server/demo/README.md):
# the checkpoint (torch backend, training) and its ONNX export (served without torch).
DEMO_CHECKPOINT = Path(__file__).resolve().parents[1] / "demo" / "vfnet_r18_demo.safetensors"
DEMO_ONNX = DEMO_CHECKPOINT.with_suffix(".onnx")


def demo_model(backend: str = "auto") -> Path:
    """The bundled demo model for `backend`: its ONNX export, except for the torch backend."""
    return DEMO_CHECKPOINT if backend == "torch" else DEMO_ONNX


def _looks_like_safetensors(path: Path) -> bool:
    """safetensors: an 8-byte little-endian header length, then a JSON header starting with '{'."""
    with path.open("rb") as f:
        head = f.read(9)
    return len(head) == 9 and 0 < int.from_bytes(head[:8], "little") < 100_000_000 and head[8:9] == b"{"


def load_detector(
    path: str | Path,
    backend: str = "auto",
    device: str = "auto",
    intra_op_threads: int | None = None,
    inter_op_threads: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    precision: str = "auto",
) -> Detector:
    """Load a model for inference.

    backend "auto" picks from the file: an ONNX file (`vfnet export onnx`) -> ONNX Runtime, an
    OpenVINO IR (`vfnet export openvino`, .xml) -> OpenVINO, a TensorRT engine (`vfnet export trt`,
    .engine) -> TensorRT, a vfnet-serve checkpoint (.safetensors) -> the torch backend.
    device: "auto", "cpu" or "cuda".
    intra_op_threads / inter_op_threads size the backend's thread pools (torch uses the first).
    max_pixels caps decoded image size (None: no cap).
    precision: "auto" (the artifact's; OpenVINO: bf16 where the CPU has it), or "fp32" / "bf16"
    for the openvino backend. Raises ModelLoadError with the reason.
    """
    path = Path(path)
    if backend not in BACKEND_CHOICES:
        raise ModelLoadError(f"unknown backend {backend!r}; choose one of {', '.join(BACKEND_CHOICES)}")
    if device not in DEVICES:
        raise ModelLoadError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if precision not in INFERENCE_PRECISIONS:
        raise ModelLoadError(f"unknown precision {precision!r}; choose one of {', '.join(INFERENCE_PRECISIONS)}")
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file")
    if backend == "auto":
        suffixes = {".engine": "tensorrt", ".xml": "openvino"}
        backend = "torch" if _looks_like_safetensors(path) else suffixes.get(path.suffix, "onnxruntime")
    if precision != "auto" and backend != "openvino":
        raise ModelLoadError(f"precision {precision} applies to the openvino backend (an OpenVINO IR); {backend} runs the artifact's own precision: leave it auto")
    options = {"device": device, "intra_op_threads": intra_op_threads, "inter_op_threads": inter_op_threads}
    if backend == "openvino":
        from .backends.openvino_backend import OpenVINOBackend as chosen

        options["precision"] = precision
    elif backend == "torch":
        from .backends.torch_backend import TorchBackend as chosen
    elif backend == "tensorrt":
        from .backends.tensorrt_backend import TensorRTBackend as chosen
    else:
        from .backends.onnxruntime_backend import OnnxRuntimeBackend as chosen
    return Detector(chosen(path, **options), source=str(path), max_pixels=max_pixels)
