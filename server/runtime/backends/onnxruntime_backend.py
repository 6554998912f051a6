"""ONNX Runtime backend: CUDA execution provider when available, else CPU.

A `--plugin` export runs too. Where this onnxruntime has the TensorRT execution provider (built
against TensorRT 10) and a GPU is asked for, the whole graph goes to TensorRT with our plugin library
(`trt_extra_plugin_lib_paths`); otherwise its plugin nodes run on the CPU with the plugins' host
build (onnxruntime_plugins.py) and the rest where the providers put it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..artifact import OUTPUTS, ModelCard, ModelLoadError, check_tensor_names, graph_inputs
from ..images import Batch
from . import BackendOptions, onnxruntime_plugins


class OnnxRuntimeBackend:
    """Serves an ONNX file written by `vfnet export onnx` (the detections graph).

    options.device: "auto" (CUDA when onnxruntime-gpu sees a GPU, else CPU), "cuda" or "cpu".
    options.intra_op_threads / inter_op_threads: ONNX Runtime thread pools (None: its defaults).
    """

    name = "onnxruntime"

    def __init__(self, path: Path, options: BackendOptions):
        options.artifact_precision(self.name)
        device = options.device
        try:
            import onnxruntime as ort
        except ImportError:
            raise ModelLoadError("the onnxruntime backend needs onnxruntime: pip install 'vfnet-serve[cpu]' (or [gpu])") from None
        available = ort.get_available_providers()
        if device == "cuda" and "CUDAExecutionProvider" not in available:
            raise ModelLoadError("device cuda requested, but this onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)")
        use_cuda = device in ("auto", "cuda") and "CUDAExecutionProvider" in available
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if use_cuda else ["CPUExecutionProvider"]
        session_options = ort.SessionOptions()
        if options.intra_op_threads is not None:
            session_options.intra_op_num_threads = options.intra_op_threads
        if options.inter_op_threads is not None:
            session_options.inter_op_num_threads = options.inter_op_threads
        model: str | bytes = str(path)
        if onnxruntime_plugins.uses_plugins(path):
            tensorrt_provider = onnxruntime_plugins.tensorrt_provider(available) if device in ("auto", "cuda") else None
            if tensorrt_provider is not None:
                providers = [tensorrt_provider, *providers]
            else:
                model = onnxruntime_plugins.plugin_model(path)
                onnxruntime_plugins.register_plugin_ops(session_options)
        try:
            self.session = ort.InferenceSession(model, session_options, providers=providers)
        except Exception as exc:  # InvalidProtobuf, Fail, InvalidGraph, NoSuchFile ...
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(f"{path}: ONNX Runtime cannot load it as an ONNX model ({first_line})") from None
        self.card = ModelCard.from_metadata(self.session.get_modelmeta().custom_metadata_map, source=f"{path} (an ONNX model)")
        self.precision = self.card.precision
        if self.card.graph != "detections":
            raise ModelLoadError(f"{path}: exported with --raw (head outputs only); export without --raw to serve it")
        check_tensor_names(str(path), (i.name for i in self.session.get_inputs()), (o.name for o in self.session.get_outputs()))
        self.device = "cuda" if self.session.get_providers()[0] in ("TensorrtExecutionProvider", "CUDAExecutionProvider") else "cpu"

    def run(self, batch: Batch, iou_threshold: float) -> tuple[np.ndarray, ...]:
        return tuple(self.session.run(list(OUTPUTS), graph_inputs(batch, iou_threshold)))
