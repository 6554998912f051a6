"""The tiny driver that compute-sanitizer and ncu run (python3 bench/device_check --driver SPEC): the kernel
through vfnet.trt_plugins' library on buffers of the CUDA runtime alone (no torch: nothing else launches
a kernel), optionally checked against the host build.

SPEC, JSON: {"shapes": [[B, C, H, W, C_out, stride], ...], "paths": [kernel path names], "streams":
["created" and/or "default"], "check": bool, "seed": int}. The launches, in order: each shape, path, type
the path takes, stream (expand_launches)."""

from __future__ import annotations

import ctypes
import ctypes.util
import json
from pathlib import Path

from .kernels import KernelPath, bound, kernel_paths, make_case, relative_error
from .processes import this_package


def driver_command(spec: dict) -> list[str]:
    return this_package("--driver", json.dumps(spec))


def expand_launches(spec: dict) -> list[tuple[tuple, str, KernelPath, str]]:
    """The driver's launches, in order: (shape, dtype, path, stream)."""
    paths = [path for path in kernel_paths() if path.name in spec["paths"]]
    return [
        (tuple(shape), dtype, path, stream)
        for shape in spec["shapes"]
        for path in paths
        for dtype in ("float32", "float16")
        if dtype in path.kinds
        for stream in spec["streams"]
    ]


def cuda_runtime() -> ctypes.CDLL:
    """The libcudart that the kernel library loaded (so that both share one runtime)."""
    path = None
    with open("/proc/self/maps") as maps:
        for line in maps:
            candidate = line.split()[-1]
            if candidate.startswith("/") and Path(candidate).name.startswith("libcudart.so"):
                path = candidate
                break
    runtime = ctypes.CDLL(path or ctypes.util.find_library("cudart") or "libcudart.so")
    runtime.cudaMalloc.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t]
    runtime.cudaMemcpy.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    runtime.cudaFree.argtypes = [ctypes.c_void_p]
    runtime.cudaStreamCreate.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
    runtime.cudaStreamSynchronize.argtypes = [ctypes.c_void_p]
    runtime.cudaStreamDestroy.argtypes = [ctypes.c_void_p]
    runtime.cudaGetErrorString.argtypes = [ctypes.c_int]
    runtime.cudaGetErrorString.restype = ctypes.c_char_p
    return runtime


def run_driver(spec: dict) -> int:
    """Every launch of `spec`; prints a line per launch, then "driver: ok" when every launch succeeded
    (and matched the host build, where spec["check"])."""
    import numpy as np

    from vfnet.trt_plugins import library_path, star_deform_conv

    library = ctypes.CDLL(str(library_path("vfnet_star_deform_conv_cuda")))
    runtime = cuda_runtime()

    def ok(status: int, what: str) -> None:
        if status != 0:
            raise RuntimeError(f"{what}: {runtime.cudaGetErrorString(status).decode()} (cudaError {status})")

    created = ctypes.c_void_p()
    ok(runtime.cudaStreamCreate(ctypes.byref(created)), "cudaStreamCreate")
    rng, failures = np.random.default_rng(spec.get("seed", 0)), 0
    for shape, dtype, path, stream_kind in expand_launches(spec):
        batch, channels, height, width, out_channels, stride = shape
        features, bbox, weight = make_case(rng, *shape)
        host_type = np.float16 if dtype == "float16" else np.float32
        inputs = [features.astype(host_type), bbox, weight.astype(host_type)]
        output = np.empty((batch, out_channels, height, width), host_type)
        buffers = []
        for array in [*inputs, output]:
            pointer = ctypes.c_void_p()
            ok(runtime.cudaMalloc(ctypes.byref(pointer), array.nbytes), "cudaMalloc")
            buffers.append(pointer)
        for pointer, array in zip(buffers, inputs):
            ok(runtime.cudaMemcpy(pointer, array.ctypes.data, array.nbytes, 1), "cudaMemcpy to the device")
        stream = created if stream_kind == "created" else ctypes.c_void_p(None)
        ok(path.bind(library)(dtype, buffers, shape, stream), path.symbol)
        ok(runtime.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        ok(runtime.cudaMemcpy(output.ctypes.data, buffers[3], output.nbytes, 2), "cudaMemcpy to the host")
        for pointer in buffers:
            ok(runtime.cudaFree(pointer), "cudaFree")
        line = f"driver: {path.name} {dtype} {list(shape)} on the {stream_kind} stream"
        if spec.get("check"):
            want = star_deform_conv(inputs[0].astype(np.float32), bbox, inputs[2].astype(np.float32), stride)
            error, limit = relative_error(output, want), bound(dtype, path.tensor_cores)
            failures += not error <= limit
            line += f": error {error:.2e} against the host build (bound {limit:.0e})"
        print(line, flush=True)
    ok(runtime.cudaStreamDestroy(created), "cudaStreamDestroy")
    print("driver: ok" if not failures else f"driver: {failures} launches differ from the host build", flush=True)
    return 1 if failures else 0
