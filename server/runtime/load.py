"""From a model file to something that serves it: `load_detector` (a Detector now) and `open_model`
(a Detector, or a PendingModel when the model must first be made: a TensorRT engine built from an
ONNX file). The one place that turns a backend name or a file's kind into a backend."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .artifact import ModelCard, ModelLoadError
from .backends import BACKEND_CHOICES, BackendOptions
from .detector import Detector
from .images import DEFAULT_MAX_PIXELS

# The bundled demo model (vfnet_r18_demo trained on the synthetic set; see server/demo/README.md):
# the checkpoint (torch backend, training) and its ONNX export (served without torch).
DEMO_CHECKPOINT = Path(__file__).resolve().parents[1] / "demo" / "vfnet_r18_demo.safetensors"
DEMO_ONNX = DEMO_CHECKPOINT.with_suffix(".onnx")


def demo_model(backend: str = "auto") -> Path:
    """The bundled demo model for `backend`: its ONNX export, except for the torch backend."""
    return DEMO_CHECKPOINT if backend == "torch" else DEMO_ONNX


@dataclass
class PendingModel:
    """A model still to be made when a server starts listening. `load()` makes it (minutes; call it
    in a thread) and returns the Detector; until then a server says it is not ready, with `state`
    and `detail`. A server that fails to make it sets `state` to "failed"."""

    card: ModelCard
    load: Callable[[], Detector]
    state: str
    detail: str


def _looks_like_safetensors(path: Path) -> bool:
    """safetensors: an 8-byte little-endian header length, then a JSON header starting with '{'."""
    with path.open("rb") as f:
        head = f.read(9)
    return len(head) == 9 and 0 < int.from_bytes(head[:8], "little") < 100_000_000 and head[8:9] == b"{"


def _chosen_backend(path: Path, backend: str) -> str:
    """`backend`, or for "auto" the one the file calls for: an ONNX file (`vfnet export onnx`) ->
    onnxruntime, an OpenVINO IR (.xml) -> openvino, a TensorRT engine (.engine) -> tensorrt, a
    vfnet-serve checkpoint (.safetensors) -> torch."""
    if backend not in BACKEND_CHOICES:
        raise ModelLoadError(f"unknown backend {backend!r}; choose one of {', '.join(BACKEND_CHOICES)}")
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file")
    if backend != "auto":
        return backend
    if _looks_like_safetensors(path):
        return "torch"
    return {".engine": "tensorrt", ".xml": "openvino"}.get(path.suffix, "onnxruntime")


def _load(path: Path, backend: str, options: BackendOptions, max_pixels: int | None) -> Detector:
    """The Detector of `path` on the backend named (never "auto"); each backend imported only here."""
    if backend == "openvino":
        from .backends.openvino_backend import OpenVINOBackend as chosen
    elif backend == "torch":
        from .backends.torch_backend import TorchBackend as chosen
    elif backend == "tensorrt":
        from .backends.tensorrt.backend import TensorRTBackend as chosen
    else:
        from .backends.onnxruntime_backend import OnnxRuntimeBackend as chosen
    return Detector(chosen(path, options), source=str(path), max_pixels=max_pixels)


def load_detector(path: str | Path, backend: str = "auto", max_pixels: int | None = DEFAULT_MAX_PIXELS, **options) -> Detector:
    """Load a model for inference.

    backend "auto" picks from the file: an ONNX file (`vfnet export onnx`) -> ONNX Runtime, an
    OpenVINO IR (`vfnet export openvino`, .xml) -> OpenVINO, a TensorRT engine (`vfnet export trt`,
    .engine) -> TensorRT, a vfnet-serve checkpoint (.safetensors) -> the torch backend.
    max_pixels caps decoded image size (None: no cap).
    options: the fields of BackendOptions, by name:
      device "auto", "cpu" or "cuda";
      intra_op_threads / inter_op_threads size the backend's thread pools (torch uses the first);
      precision "auto" (the artifact's; OpenVINO: bf16 where the CPU has it), or "fp32" / "bf16"
      for the openvino backend.
    Raises ModelLoadError with the reason.
    """
    options = BackendOptions(**options)
    path = Path(path)
    return _load(path, _chosen_backend(path, backend), options, max_pixels)


def open_model(
    path: str | Path,
    backend: str = "auto",
    options: BackendOptions | None = None,
    *,
    engine_cache: Path | None = None,
    max_batch_size: int = 8,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    progress: Callable[[str], None] = lambda message: None,
) -> Detector | PendingModel:
    """What a server serves: `load_detector`'s Detector (options: default BackendOptions()), except for an ONNX file on the tensorrt
    backend, whose engine (for batches up to `max_batch_size`) is taken from `engine_cache` (default
    ~/.cache/vfnet-serve/engines) or, when it is not there yet, built by the PendingModel returned.
    Fast and strict either way: a bad file, no TensorRT or no GPU raise ModelLoadError here."""
    path, options = Path(path), options or BackendOptions()
    backend = _chosen_backend(path, backend)
    if not (backend == "tensorrt" and path.suffix == ".onnx"):
        return _load(path, backend, options, max_pixels)
    from .backends.tensorrt.build import DEFAULT_ENGINE_CACHE, prepare_engine

    tf32 = options.precision == "tf32"
    card, engine, build = prepare_engine(path, engine_cache or DEFAULT_ENGINE_CACHE, max_batch_size, tf32, progress)
    options.artifact_precision(backend, card, "cuda")  # a precision the engine cannot have: refused before a build
    if build is None:
        return _load(engine, backend, options, max_pixels)

    def build_then_load() -> Detector:
        build()
        return _load(engine, backend, options, max_pixels)

    detail = f"building the TensorRT engine for {path.name} into {engine} (this takes minutes)"
    return PendingModel(card, build_then_load, "building_engine", detail)
