"""TensorRT backend: runs an engine from `vfnet export trt` (TensorRT 10.x or 11.x, cuda-python).

Before deserialising, the engine's sidecar (model card + manifest) is checked against the running
TensorRT and GPU, and a plugin graph's plugin library is loaded into TensorRT's registry. One
execution context and one CUDA stream per backend; device buffers sized for the profile's largest
shapes and pinned host buffers, allocated once; `execute_async_v3`; after each call only
num_detections, then the rows that hold detections, are copied back.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from ...artifact import INPUTS, OUTPUTS, ModelLoadError, check_tensor_names, graph_inputs
from ...images import Batch
from .. import BackendOptions
from .build import gpu, import_tensorrt, load_plugin_library, logger, plugin_library, register_tensorrt_plugins
from .cache import read_sidecar, runtime_mismatches, sha256_file


def _check(result, what: str):
    """cuda-python returns (error, *values); raise on an error, else return the values."""
    error, *values = result if isinstance(result, tuple) else (result,)
    if int(error) != 0:
        raise RuntimeError(f"{what} failed (cudaError {int(error)})")
    return values[0] if len(values) == 1 else values


class TensorRTBackend:
    """Serves `path` (a .engine with its .engine.json sidecar) on CUDA device 0. Of the options, the
    device applies ("auto" or "cuda") and the precision: the engine's arithmetic was chosen when it
    was built (float32 layers in TF32 only when built with --tf32), so "tf32" is refused for an
    engine built without it; the threads are TensorRT's own."""

    name = "tensorrt"

    def __init__(self, path: Path, options: BackendOptions):
        if options.device == "cpu":
            raise ModelLoadError("the tensorrt backend runs on a CUDA GPU; for the CPU serve an ONNX file with the onnxruntime backend")
        trt = import_tensorrt()
        self.card, manifest = read_sidecar(path)
        if options.artifact_precision(self.name, self.card, "cuda") == "tf32" and not manifest.tf32:
            raise ModelLoadError(f"{path}: precision tf32 asked for, but the engine was built without it (vfnet export trt --tf32)")
        plugins = plugin_library(self.card)
        _, capability = gpu()
        problems = runtime_mismatches(manifest, trt.__version__, capability, sha256_file(plugins.path) if plugins else "")
        if problems:
            raise ModelLoadError(f"{path}: {'; '.join(problems)}. Build it again here with `vfnet export trt`")
        self.device = "cuda"
        self.precision = "tf32" if manifest.tf32 and self.card.precision == "fp32" else self.card.precision
        self._cudart = _cudart()
        register_tensorrt_plugins()
        if plugins is not None:
            load_plugin_library(plugins)
        self._runtime = trt.Runtime(logger())
        self.engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise ModelLoadError(f"{path}: TensorRT could not deserialise the engine (its log above says why)")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {name: self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT for name in names}
        check_tensor_names(str(path), (n for n in names if is_input[n]), (n for n in names if not is_input[n]))
        self.context = self.engine.create_execution_context()
        images, image_sizes, iou_threshold = INPUTS
        boxes, scores, labels, num_detections = OUTPUTS
        self.min_shape, _, self.max_shape = (tuple(s) for s in self.engine.get_tensor_profile_shape(images, 0))
        self._stream = _check(self._cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._buffers: dict[str, tuple[int, np.ndarray]] = {}  # name -> (device pointer, pinned host array)
        batch, _, height, width = self.max_shape
        k = self.card.max_detections
        sizes = {
            images: ((batch, 3, height, width), np.uint8),
            image_sizes: ((batch, 2), np.int64),
            iou_threshold: ((1,), np.float32),
            boxes: ((batch, k, 4), np.float32),
            scores: ((batch, k), np.float32),
            labels: ((batch, k), np.int64),
            num_detections: ((batch,), np.int64),
        }
        for name, (shape, dtype) in sizes.items():
            nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
            device_pointer = _check(self._cudart.cudaMalloc(nbytes), "cudaMalloc")
            host_pointer = _check(self._cudart.cudaMallocHost(nbytes), "cudaMallocHost")
            host = np.frombuffer((ctypes.c_char * nbytes).from_address(int(host_pointer)), dtype=dtype).reshape(shape)
            self._buffers[name] = (int(device_pointer), host)
            on_host = self.engine.is_shape_inference_io(name)  # shape tensors are read from host memory
            self.context.set_tensor_address(name, int(host_pointer) if on_host else int(device_pointer))

    def run(self, batch: Batch, iou_threshold: float) -> tuple[np.ndarray, ...]:
        count, _, height, width = batch.images.shape
        low, high = self.min_shape, self.max_shape
        if not (low[0] <= count <= high[0] and low[2] <= height <= high[2] and low[3] <= width <= high[3]):
            raise ValueError(f"images {batch.images.shape} lie outside the engine's profile {low} .. {high}; build it with a larger profile")
        cudart, stream = self._cudart, self._stream
        to_device, to_host = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        feeds = graph_inputs(batch, iou_threshold)
        for name, array in feeds.items():
            device_pointer, host = self._buffers[name]
            view = host.reshape(-1)[: array.size]
            np.copyto(view, array.reshape(-1))
            _check(cudart.cudaMemcpyAsync(device_pointer, view.ctypes.data, view.nbytes, to_device, stream), f"copy of {name}")
        for name in INPUTS[:2]:  # images, image_sizes: the dynamic ones
            if not self.context.set_input_shape(name, feeds[name].shape):
                raise ValueError(f"TensorRT refused {name} of shape {feeds[name].shape} (outside the engine's profile {low} .. {high}?)")
        if not self.context.execute_async_v3(int(stream)):
            raise RuntimeError("TensorRT execute_async_v3 failed (its log says why)")
        boxes, scores, labels, num_detections = OUTPUTS
        device_num, host_num = self._buffers[num_detections]
        _check(cudart.cudaMemcpyAsync(host_num.ctypes.data, device_num, count * 8, to_host, stream), "copy of num_detections")
        _check(cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        num = host_num[:count].copy()
        rows = int(num.max()) if count else 0  # only the rows that hold detections come back
        k = self.card.max_detections
        outputs = []
        for name, per_row in ((boxes, 16), (scores, 4), (labels, 8)):
            device_pointer, host = self._buffers[name]
            if rows:
                pitch = k * per_row
                _check(
                    cudart.cudaMemcpy2DAsync(host.ctypes.data, pitch, device_pointer, pitch, rows * per_row, count, to_host, stream),
                    f"copy of {name}",
                )
            outputs.append(host[:count])
        _check(cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        boxes, scores, labels = (np.array(o) for o in outputs)
        for b, n in enumerate(num):  # rows past each image's count are padding
            boxes[b, n:], scores[b, n:], labels[b, n:] = 0.0, 0.0, -1
        return boxes, scores, labels, num

    def __del__(self):
        cudart = getattr(self, "_cudart", None)
        if cudart is not None and getattr(self, "_stream", None) is not None:
            cudart.cudaStreamSynchronize(self._stream)  # no copy may still use a buffer
        for device_pointer, host in getattr(self, "_buffers", {}).values():
            cudart.cudaFree(device_pointer)
            cudart.cudaFreeHost(host.ctypes.data)
        if cudart is not None and getattr(self, "_stream", None) is not None:
            cudart.cudaStreamDestroy(self._stream)


def _cudart():
    try:
        from cuda.bindings import runtime
    except ImportError:
        from cuda import cudart as runtime  # cuda-python before 12.6
    return runtime
