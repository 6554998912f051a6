"""vfnet.trt_plugins: the Python face of our TensorRT plugins (C++/CUDA in this folder, built by
`make plugins` into build/plugins). Needs numpy only: no torch, no TensorRT.

    from vfnet.trt_plugins import library_path, star_deform_conv, star_deform_conv_tiled
    out = star_deform_conv(features, bbox_init, weight, stride=8)  # the host build, float32 numpy
    out16 = star_deform_conv_tiled(features16, bbox_init, weight16, stride=8)  # the GPU kernel's tiling, float16
    library_path("vfnet_trt_plugins")  # for TensorRT: IPluginRegistry.load_library(str(path))

The libraries are looked up in $VFNET_PLUGIN_DIR, else in the repository's build/plugins.
"""

from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path

import numpy as np

LIBRARIES = {
    "vfnet_star_deform_conv_host": "the host build of StarDeformConv (always built)",
    "vfnet_star_deform_conv_cuda": "the CUDA kernel of StarDeformConv (built where nvcc exists)",
    "vfnet_trt_plugins": "the TensorRT plugin library for loadLibrary / trtexec --dynamicPlugins (needs the TensorRT headers)",
    "vfnet_trt_plugins_autoregister": "registers the plugins when loaded, for hosts that only dlopen (needs the TensorRT headers)",
}


class PluginNotBuilt(FileNotFoundError):
    """A plugin library that has not been built; the message says how to build it."""


def plugin_dir() -> Path:
    """Where the built libraries are: $VFNET_PLUGIN_DIR, else <repository>/build/plugins."""
    configured = os.environ.get("VFNET_PLUGIN_DIR")
    return Path(configured) if configured else Path(__file__).resolve().parents[1] / "build" / "plugins"


def library_path(name: str) -> Path:
    """The path of built library `name` (one of LIBRARIES); PluginNotBuilt if it is not there."""
    if name not in LIBRARIES:
        raise ValueError(f"unknown plugin library {name!r}; one of {', '.join(LIBRARIES)}")
    path = plugin_dir() / f"lib{name}.so"
    if not path.is_file():
        raise PluginNotBuilt(
            f"{path} is missing ({LIBRARIES[name]}): run `make plugins` in the repository (or set VFNET_PLUGIN_DIR to the folder holding the built libraries)"
        )
    return path


_FLOATS = ctypes.POINTER(ctypes.c_float)
_HALVES = ctypes.POINTER(ctypes.c_uint16)
ALGORITHMS = {"default": 0, "cuda_cores": 1, "tensor_cores": 2}  # the C APIs' numbering (host mirror and CUDA library)


@functools.cache
def _host_library():
    library = ctypes.CDLL(str(library_path("vfnet_star_deform_conv_host")))
    library.vfnetStarDeformConvF32.argtypes = [_FLOATS] * 4 + [ctypes.c_int] * 7 + [ctypes.c_char_p, ctypes.c_size_t]
    library.vfnetStarDeformConvF32.restype = ctypes.c_int
    library.vfnetStarDeformConvTiled.argtypes = [ctypes.c_int] * 2 + [ctypes.c_void_p] * 4 + [ctypes.c_int] * 7 + [ctypes.c_char_p, ctypes.c_size_t]
    library.vfnetStarDeformConvTiled.restype = ctypes.c_int
    library.vfnetStarHalfRoundTrip.argtypes = [_FLOATS, _HALVES, _FLOATS, ctypes.c_size_t]
    library.vfnetStarHalfRoundTrip.restype = ctypes.c_int
    return library


def _host_function():
    return _host_library().vfnetStarDeformConvF32


def _checked(features: np.ndarray, bbox_init: np.ndarray, weight: np.ndarray, stride: int, dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three arrays contiguous (features and weight as `dtype`, bbox_init float32), shapes and stride checked."""
    features, weight = (np.ascontiguousarray(a, dtype=dtype) for a in (features, weight))
    bbox_init = np.ascontiguousarray(bbox_init, dtype=np.float32)
    if features.ndim != 4 or bbox_init.ndim != 4 or weight.ndim != 4:
        raise ValueError(f"features, bbox_init and weight must be 4-D, got shapes {features.shape}, {bbox_init.shape}, {weight.shape}")
    batch, channels, height, width = features.shape
    if bbox_init.shape != (batch, 4, height, width):
        raise ValueError(f"bbox_init must be [B, 4, H, W] = {[batch, 4, height, width]}, got {list(bbox_init.shape)}")
    if weight.shape[1:] != (channels, 3, 3):
        raise ValueError(f"weight must be [C_out, {channels}, 3, 3], got {list(weight.shape)}")
    if int(stride) != stride or stride < 1:
        raise ValueError(f"stride must be a positive whole number of pixels, got {stride}")
    return features, bbox_init, weight


def star_deform_conv(features: np.ndarray, bbox_init: np.ndarray, weight: np.ndarray, stride: int, threads: int = 0) -> np.ndarray:
    """The star deformable convolution on the CPU (the host build of the plugin), float32.

    features [B, C, H, W], bbox_init [B, 4, H, W] (l, t, r, b in input pixels from each cell's anchor
    point), weight [C_out, C, 3, 3]; stride: the FPN level's stride (pixels per cell) -> [B, C_out,
    H, W]. Tap k = 3 i + j of cell (y, x) samples (y + {-t, 0, b}[i] / stride, x + {-l, 0, r}[j] /
    stride) bilinearly, zero outside the map (torchvision's rule). threads <= 0: one per CPU.
    """
    features, bbox_init, weight = _checked(features, bbox_init, weight, stride, np.float32)
    batch, channels, height, width = features.shape
    output = np.empty((batch, weight.shape[0], height, width), dtype=np.float32)
    error = ctypes.create_string_buffer(512)
    pointers = (a.ctypes.data_as(_FLOATS) for a in (features, bbox_init, weight, output))
    status = _host_function()(*pointers, batch, channels, height, width, weight.shape[0], int(stride), threads, error, len(error))
    if status != 0:
        raise RuntimeError(error.value.decode(errors="replace"))
    return output


def star_deform_conv_tiled(
    features: np.ndarray, bbox_init: np.ndarray, weight: np.ndarray, stride: int, *, algorithm: str = "default", threads: int = 0
) -> np.ndarray:
    """The host mirror of the CUDA kernels: the very tile loops, index arithmetic, shared-memory
    layouts, sampling and float16 rounding the GPU runs (starDeformConvCore.h), block by block on
    the CPU. A test tool (slow), not a way to serve.

    The features' dtype (float32 or float16) is the type; weight is converted to it, the result has
    it. algorithm: "default" (what the GPU runs for the type: "tensor_cores" for float16,
    "cuda_cores" for float32), "cuda_cores" (float32 multiplies; float16 inputs widened exactly) or
    "tensor_cores" (float16 only: float16 columns, float32 sums of the exact products, float16 out).
    Shapes and stride as star_deform_conv; a weight array that is not 16-byte aligned takes the
    kernels' element-by-element weight path, as on the GPU.
    """
    dtype = np.float16 if np.asarray(features).dtype == np.float16 else np.float32
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
    if algorithm == "tensor_cores" and dtype != np.float16:
        raise ValueError("the tensor-core kernel takes float16 features and weight")
    features, bbox_init, weight = _checked(features, bbox_init, weight, stride, dtype)
    batch, channels, height, width = features.shape
    output = np.empty((batch, weight.shape[0], height, width), dtype=dtype)
    error = ctypes.create_string_buffer(512)
    kind = 1 if dtype == np.float16 else 0
    pointers = (a.ctypes.data for a in (features, bbox_init, weight, output))
    status = _host_library().vfnetStarDeformConvTiled(
        ALGORITHMS[algorithm], kind, *pointers, batch, channels, height, width, weight.shape[0], int(stride), threads, error, len(error)
    )
    if status != 0:
        raise RuntimeError(error.value.decode(errors="replace"))
    return output


def float16_round_trip(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The host mirror's float16 conversions (the device's are __float2half_rn and __half2float):
    (float16(values) rounded to nearest even, those float16 values widened back to float32)."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    halves = np.empty(values.shape, dtype=np.uint16)
    widened = np.empty(values.shape, dtype=np.float32)
    _host_library().vfnetStarHalfRoundTrip(values.ctypes.data_as(_FLOATS), halves.ctypes.data_as(_HALVES), widened.ctypes.data_as(_FLOATS), values.size)
    return halves.view(np.float16), widened
