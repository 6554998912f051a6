"""ONNX Runtime backend: CUDA execution provider when available, else CPU.

On CUDA a float32 model computes in float32 (the provider's TF32 is off) unless precision "tf32" is
asked for. A `--plugin` export runs too. Where this onnxruntime has the TensorRT execution provider
(built against TensorRT 10) and a GPU is asked for, the whole graph goes to TensorRT with our plugin
library (`trt_extra_plugin_lib_paths`); TensorRT multiplies float32 layers in TF32 there (the
provider has no switch for it), which `precision` reports. Where that provider is missing or
refuses the graph (said in the log), the plugin nodes run on the CPU with the plugins' host build
(onnxruntime_plugins.py) and the rest where the other providers put it."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..artifact import OUTPUTS, ModelCard, ModelLoadError, check_tensor_names, graph_inputs
from ..images import Batch
from . import BackendOptions, onnxruntime_plugins

log = logging.getLogger("vfnet.runtime")


class OnnxRuntimeBackend:
    """Serves an ONNX file written by `vfnet export onnx` (the detections graph).

    options.device: "auto" (CUDA when onnxruntime-gpu sees a GPU, else CPU), "cuda" or "cpu".
    options.intra_op_threads / inter_op_threads: ONNX Runtime thread pools (None: its defaults).
    """

    name = "onnxruntime"

    def __init__(self, path: Path, options: BackendOptions):
        device = options.device
        try:
            import onnxruntime as ort
        except ImportError:
            raise ModelLoadError("the onnxruntime backend needs onnxruntime: pip install 'vfnet-serve[cpu]' (or [gpu])") from None
        available = ort.get_available_providers()
        if device == "cuda" and "CUDAExecutionProvider" not in available:
            raise ModelLoadError("device cuda requested, but this onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)")
        use_cuda = device in ("auto", "cuda") and "CUDAExecutionProvider" in available
        cuda = ("CUDAExecutionProvider", {"use_tf32": int(options.precision == "tf32")})  # TF32 is the provider's default
        providers = [cuda, "CPUExecutionProvider"] if use_cuda else ["CPUExecutionProvider"]
        session_options = ort.SessionOptions()
        if options.intra_op_threads is not None:
            session_options.intra_op_num_threads = options.intra_op_threads
        if options.inter_op_threads is not None:
            session_options.inter_op_num_threads = options.inter_op_threads
        self.session = _session(ort, path, session_options, providers, device)
        self.card = ModelCard.from_metadata(self.session.get_modelmeta().custom_metadata_map, source=f"{path} (an ONNX model)")
        if self.card.graph != "detections":
            raise ModelLoadError(f"{path}: exported with --raw (head outputs only); export without --raw to serve it")
        check_tensor_names(str(path), (i.name for i in self.session.get_inputs()), (o.name for o in self.session.get_outputs()))
        first = self.session.get_providers()[0]
        self.device = "cuda" if first in ("TensorrtExecutionProvider", "CUDAExecutionProvider") else "cpu"
        self.precision = options.artifact_precision(self.name, self.card, self.device)
        if first == "TensorrtExecutionProvider" and self.precision == "fp32":
            self.precision = "tf32"  # TensorRT's default for float32 layers; the provider cannot turn it off

    def run(self, batch: Batch, iou_threshold: float) -> tuple[np.ndarray, ...]:
        return tuple(self.session.run(list(OUTPUTS), graph_inputs(batch, iou_threshold)))


def _session(ort, path: Path, session_options, providers: list, device: str):
    """The InferenceSession of `path`. A plugin graph goes to the TensorRT provider where there is
    one (and a GPU may be used); where there is none, or it refuses the graph, its plugin nodes run
    on the CPU with the plugins' host build."""
    if onnxruntime_plugins.uses_plugins(path):
        tensorrt = onnxruntime_plugins.tensorrt_provider(ort.get_available_providers()) if device in ("auto", "cuda") else None
        if tensorrt is not None:
            try:
                return ort.InferenceSession(str(path), session_options, providers=[tensorrt, *providers])
            except Exception as exc:
                log.warning(
                    "%s: ONNX Runtime's TensorRT provider refused the plugin graph (%s); its plugin nodes run on the CPU instead", path, _first_line(exc)
                )
        model = onnxruntime_plugins.plugin_model(path)
        onnxruntime_plugins.register_plugin_ops(session_options)
    else:
        model = str(path)
    try:
        return ort.InferenceSession(model, session_options, providers=providers)
    except Exception as exc:  # InvalidProtobuf, Fail, InvalidGraph, NoSuchFile ...
        raise ModelLoadError(f"{path}: ONNX Runtime cannot load it as an ONNX model ({_first_line(exc)})") from None


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
