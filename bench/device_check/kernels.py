"""The kernel under check: its paths through the C API (one per algorithm of vfnet.trt_plugins.ALGORITHMS)
and how each is called, on torch CUDA tensors (TorchKernel) or stood in for by the host mirror on the CPU
(HostKernel); the shapes it is checked at, the bounds, random cases and the torchvision reference.

The C API (trt_plugins/star_deform_conv/starDeformConvCuda.cpp), returning the launch's cudaError:
    int vfnetStarDeformConvCuda(int type, void const* features, float const* bbox, void const* weight,
        void* output, int batch, int channels, int height, int width, int outChannels, int stride, void* stream)
    int vfnetStarDeformConvCudaWith(int algorithm, int type, ...the same)
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

GPU_DEVICE = "cuda"  # the torch device of the GPU steps
# vfnet_r50_fpn at 800x1344: (level, stride, height, width), 256 channels.
LEVELS = (("P3", 8, 100, 168), ("P4", 16, 50, 84), ("P5", 32, 25, 42), ("P6", 64, 13, 21), ("P7", 128, 7, 11))
CHANNELS = 256
# The stand-in's: the same strides at a 104x168 input, 16 channels.
STANDIN_LEVELS = (("P3", 8, 13, 21), ("P4", 16, 7, 11), ("P5", 32, 4, 6), ("P6", 64, 2, 3), ("P7", 128, 1, 2))
STANDIN_CHANNELS = 16
# Largest error allowed, relative to the reference's largest magnitude. float16: against the exact result
# of the float16-rounded inputs (torchvision's own float16 quantises sample positions, gpu_facts.md defect 4);
# a tensor-core path also rounds the sampled columns to float16.
BOUNDS = {"float32": 1e-5, "float16": 1e-3, "float16 tensor cores": 2e-3}

DEFAULT_ENTRY = "vfnetStarDeformConvCuda"  # the default algorithm: what the TensorRT plugin runs
SELECTOR_ENTRY = "vfnetStarDeformConvCudaWith"  # the algorithm chosen by its first argument
BOTH_TYPES = {"float32": 0, "float16": 1}  # the C API's `type` (bbox is float32 always)


@dataclass(frozen=True)
class KernelPath:
    """One way into the kernel: symbol(*prefix, type, features, bbox, weight, output, 6 sizes, stream)."""

    name: str  # "default", "cuda-cores", "tensor-cores"
    algorithm: str  # its key in vfnet.trt_plugins.ALGORITHMS (the host mirror's name for it too)
    symbol: str
    prefix: tuple[int, ...]  # the arguments before `type`: the selector entry's algorithm number
    kinds: dict[str, int]  # the types it takes: {dtype: the C API's `type`}
    tensor_cores: bool  # float16 may run on tensor cores: the looser float16 bound

    def bind(self, library: ctypes.CDLL):
        """Its entry point in `library` as launch(dtype, (features, bbox, weight, output) pointers,
        (batch, channels, height, width, outChannels, stride), stream) -> cudaError."""
        function = library[self.symbol]  # a function object of its own (getattr would share one)
        function.argtypes = [ctypes.c_int] * (len(self.prefix) + 1) + [ctypes.c_void_p] * 4 + [ctypes.c_int] * 6 + [ctypes.c_void_p]
        function.restype = ctypes.c_int

        def launch(dtype: str, pointers, sizes, stream) -> int:
            return function(*self.prefix, self.kinds[dtype], *pointers, *sizes, stream)

        return launch


def kernel_paths() -> list[KernelPath]:
    """One path per algorithm of vfnet.trt_plugins.ALGORITHMS: "default" through vfnetStarDeformConvCuda
    (tensor cores for float16, CUDA cores for float32), the others through vfnetStarDeformConvCudaWith;
    "tensor-cores" takes float16 only."""
    from vfnet.trt_plugins import ALGORITHMS

    return [
        KernelPath(
            name=algorithm.replace("_", "-"),
            algorithm=algorithm,
            symbol=DEFAULT_ENTRY if algorithm == "default" else SELECTOR_ENTRY,
            prefix=() if algorithm == "default" else (number,),
            kinds={"float16": 1} if algorithm == "tensor_cores" else BOTH_TYPES,
            tensor_cores=algorithm != "cuda_cores",
        )
        for algorithm, number in ALGORITHMS.items()
    ]


def bound(dtype: str, tensor_cores: bool) -> float:
    return BOUNDS["float16 tensor cores"] if dtype == "float16" and tensor_cores else BOUNDS[dtype]


class TorchKernel:
    """One kernel path of libvfnet_star_deform_conv_cuda.so on contiguous torch CUDA tensors."""

    def __init__(self, path: KernelPath, library: ctypes.CDLL):
        self.path, self.name, self.dtypes, self.tensor_cores = path, path.name, list(path.kinds), path.tensor_cores
        self.launch = path.bind(library)

    def __call__(self, features, bbox, weight, stride: int, stream=None):
        import torch

        dtype = str(features.dtype).removeprefix("torch.")
        assert dtype in self.dtypes and all(t.is_contiguous() and t.is_cuda for t in (features, bbox, weight))
        batch, channels, height, width = features.shape
        output = torch.empty(batch, weight.shape[0], height, width, dtype=features.dtype, device=features.device)
        handle = (stream if stream is not None else torch.cuda.current_stream()).cuda_stream
        pointers = (features.data_ptr(), bbox.data_ptr(), weight.data_ptr(), output.data_ptr())
        status = self.launch(dtype, pointers, (batch, channels, height, width, weight.shape[0], int(stride)), handle)
        if status != 0:
            raise RuntimeError(f"{self.path.symbol} returned cudaError {status}")
        return output


class HostKernel:
    """The stand-in on numpy arrays or CPU tensors: for a path, the host mirror of the CUDA kernels
    (vfnet.trt_plugins.star_deform_conv_tiled: the kernels' own tiling and float16 rounding); with no
    path, the host build (star_deform_conv, float32)."""

    def __init__(self, path: KernelPath | None = None):
        self.path = path
        self.name = f"{path.name} (host mirror)" if path else "host build"
        self.dtypes = list(path.kinds) if path else ["float32"]
        self.tensor_cores = bool(path and path.tensor_cores)

    def __call__(self, features, bbox, weight, stride: int, stream=None):
        from vfnet.trt_plugins import star_deform_conv, star_deform_conv_tiled

        torch_input = hasattr(features, "detach")
        if torch_input:
            import torch

            features, bbox, weight = (t.detach().contiguous().numpy() for t in (features, bbox, weight))
        if self.path:
            output = star_deform_conv_tiled(features, bbox, weight, stride, algorithm=self.path.algorithm)
        else:
            output = star_deform_conv(features, bbox, weight, stride).astype(features.dtype)
        return torch.from_numpy(output) if torch_input else output


def cuda_kernels() -> list[TorchKernel]:
    from vfnet.trt_plugins import library_path

    library = ctypes.CDLL(str(library_path("vfnet_star_deform_conv_cuda")))
    return [TorchKernel(path, library) for path in kernel_paths()]


def host_kernels() -> list[HostKernel]:
    return [HostKernel(path) for path in kernel_paths()]


def make_case(rng, batch: int, channels: int, height: int, width: int, out_channels: int, stride: int):
    """Random float32 features, bbox_init (log-uniform from half a stride to 1.2x the map, in pixels:
    taps inside, across and beyond the border) and weight."""
    import numpy as np

    features = rng.standard_normal((batch, channels, height, width), dtype=np.float32)
    longest = max(height, width) * stride
    bbox = np.exp(rng.uniform(np.log(stride / 2), np.log(1.2 * longest), (batch, 4, height, width))).astype(np.float32)
    weight = (rng.standard_normal((out_channels, channels, 3, 3), dtype=np.float32) / np.sqrt(channels * 9)).astype(np.float32)
    return features, bbox, weight


def relative_error(got, want) -> float:
    """max |got - want| / max |want| (torch tensors or numpy arrays), in float64; nan when got has one."""
    if hasattr(got, "detach"):
        got, want = got.detach().double(), want.detach().double()
        if want.numel() == 0:
            return 0.0
        return float((got - want).abs().max() / want.abs().max().clamp_min(1e-30))
    import numpy as np

    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if want.size == 0:
        return 0.0
    return float(np.abs(got - want).max() / max(float(np.abs(want).max()), 1e-30))


def torchvision_star(features, bbox, weight, stride: int):
    """The reference: torchvision's deform_conv2d at the star offsets, as the model's torchvision path."""
    from torchvision.ops import deform_conv2d

    from vfnet.model.head import star_dcn_offset

    return deform_conv2d(features, star_dcn_offset(bbox, stride).to(features.dtype), weight, padding=(1, 1))
