"""The kernel step: each kernel path against torchvision's deform_conv2d at the five level shapes (float32
and float16), identities that need no reference, an empty batch, and a non-default CUDA stream. On the
GPU the CUDA kernel at VFNet's shapes; with --cpu-standin the host mirror at small shapes."""

from __future__ import annotations

import sys

from .kernels import (
    CHANNELS,
    GPU_DEVICE,
    LEVELS,
    STANDIN_CHANNELS,
    STANDIN_LEVELS,
    bound,
    cuda_kernels,
    host_kernels,
    make_case,
    relative_error,
    torchvision_star,
)
from .machine import need_torch, optional_import
from .report import Report

PARITY_COLUMNS = ("level", "batch", "type", "path", "error vs exact", "torchvision float16's error", "bound", "status")
PARITY_FIELDS = ("level", "batch", "type", "path", "error", "torchvision_float16_error", "bound", "status")


def step_kernel(context: dict, report: Report) -> None:
    import numpy as np

    gpu = context["mode"] == "gpu"
    torch = need_torch() if gpu else optional_import("torch")
    if gpu:
        kernels, device, levels, channels, batches = cuda_kernels(), GPU_DEVICE, LEVELS, CHANNELS, (1, 8)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # float32 means float32
    else:
        kernels, device, levels, channels, batches = host_kernels(), "cpu", STANDIN_LEVELS, STANDIN_CHANNELS, (1, 3)
    rng = np.random.default_rng(0)  # one sequence through the checks below, in their order
    if torch is None:
        report.skip("against torchvision", f"torch is not importable by {sys.executable}: run the stand-in with the venv's python (make device-check-standin)")
    else:
        check_against_torchvision(report, kernels, torch, device, levels, channels, batches, rng)
    check_identities(report, kernels, torch, device, levels, channels, rng)
    check_empty_batch(report, kernels, torch if gpu else None, device, levels[0], channels)
    if not gpu:
        report.skip("a non-default CUDA stream", "--cpu-standin: no CUDA streams")
        return
    level, stride, height, width = levels[0]
    check_streams(report, kernels, *on_device(torch, device, *make_case(rng, 8, channels, height, width, channels, stride)), stride)


def on_device(torch, device: str, *arrays) -> list:
    """numpy arrays as torch tensors on `device`, or the arrays themselves without torch."""
    return [torch.from_numpy(a).to(device) for a in arrays] if torch else list(arrays)


def check_against_torchvision(report: Report, kernels: list, torch, device: str, levels, channels: int, batches, rng) -> None:
    """Each path and type against torchvision at each level (batch 1, and `batches` at P3). float16 against
    the exact float32 result of the float16-rounded inputs, and no worse than torchvision's float16 + 1e-3."""
    rows = []
    for level, stride, height, width in levels:
        for batch in batches if level == "P3" else (1,):
            features, bbox, weight = on_device(torch, device, *make_case(rng, batch, channels, height, width, channels, stride))
            for dtype in ("float32", "float16"):
                users = [kernel for kernel in kernels if dtype in kernel.dtypes]
                if not users:
                    continue
                half = dtype == "float16"
                f, w = (features.half(), weight.half()) if half else (features, weight)
                exact = torchvision_star(f.float(), bbox, w.float(), stride)  # float32 on the float16-rounded inputs
                torchvision_half = relative_error(torchvision_star(f, bbox, w, stride).float(), exact) if half else None
                for kernel in users:
                    error, limit = relative_error(kernel(f, bbox, w, stride).float(), exact), bound(dtype, kernel.tensor_cores)
                    ok = error <= limit and (not half or error <= torchvision_half + 1e-3)
                    torchvision_column = f"{torchvision_half:.2e}" if half else ""
                    rows.append([level, batch, dtype, kernel.name, f"{error:.2e}", torchvision_column, f"{limit:.0e}", "passed" if ok else "FAILED"])
                    report.check(
                        f"{level} b{batch} {dtype} {kernel.name}: against torchvision",
                        ok,
                        f"error {error:.2e} (bound {limit:.0e})" + (f"; torchvision float16's {torchvision_half:.2e}" if half else ""),
                    )
    report.table(list(PARITY_COLUMNS), rows)
    report.figures["parity"] = [dict(zip(PARITY_FIELDS, row)) for row in rows]


def check_identities(report: Report, kernels: list, torch, device: str, levels, channels: int, rng) -> None:
    """At P4 and P7, batch 2: boxes that turn the star convolution into a plain one, against a plain
    convolution (torch's, or conv2d_numpy without torch)."""
    import numpy as np

    rows = []
    for level, stride, height, width in (levels[1], levels[4]):
        features, bbox, weight = make_case(rng, 2, channels, height, width, channels, stride)
        for label, box, taps in (
            ("boxes of one stride each side = a plain 3x3 conv", float(stride), lambda w: w),
            ("boxes of 0 = a 1x1 conv with the taps' sum", 0.0, lambda w: w.sum(axis=(2, 3), keepdims=True)),
            ("boxes far outside = the centre tap alone", 1e6, lambda w: w[:, :, 1:2, 1:2]),
        ):
            boxes = np.full_like(bbox, box)
            for kernel in kernels:
                for dtype in kernel.dtypes:
                    f, w = (a.astype(np.float16).astype(np.float32) for a in (features, weight)) if dtype == "float16" else (features, weight)
                    if torch:
                        f_d, b_d, w_d = on_device(torch, device, f, boxes, w)
                        cast = (lambda t: t.half()) if dtype == "float16" else (lambda t: t)
                        got = kernel(cast(f_d), b_d, cast(w_d), stride).float()
                        want = torch.nn.functional.conv2d(f_d.double(), torch.from_numpy(taps(w.astype(np.float64))).to(device), padding=taps(w).shape[-1] // 2)
                    else:
                        typed = (a.astype(np.float16) if dtype == "float16" else a for a in (f, w))
                        got, want = kernel(next(typed), boxes, next(typed), stride).astype(np.float32), conv2d_numpy(f, taps(w))
                    error, limit = relative_error(got, want), bound(dtype, kernel.tensor_cores)
                    rows.append([level, label, dtype, kernel.name, f"{error:.2e}", f"{limit:.0e}"])
                    report.check(f"{level} {dtype} {kernel.name}: {label}", error <= limit, f"error {error:.2e} (bound {limit:.0e})")
    report.table(["level", "identity", "type", "path", "error", "bound"], rows)
    report.figures["identities"] = rows


def conv2d_numpy(x, w):
    """A plain convolution, stride 1, padding k // 2, in float64: the identities' reference without torch."""
    import numpy as np

    k = w.shape[-1]
    padded = np.pad(np.asarray(x, np.float64), ((0, 0), (0, 0), (k // 2, k // 2), (k // 2, k // 2)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (k, k), axis=(2, 3))  # [B, C, H, W, k, k]
    return np.einsum("bchwij,ocij->bohw", windows, np.asarray(w, np.float64), optimize=True)


def check_empty_batch(report: Report, kernels: list, torch, device: str, level, channels: int) -> None:
    """Batch 0 at P3: an empty output, not an error (torch CUDA tensors on the GPU, numpy arrays in the stand-in)."""
    import numpy as np

    _, stride, height, width = level
    shapes = ((0, channels, height, width), (0, 4, height, width), (channels, channels, 3, 3))  # features, bbox (float32), weight
    for kernel in kernels:
        for dtype in kernel.dtypes:
            if torch:
                empty = [torch.zeros(s, device=device, dtype=torch.float16 if dtype == "float16" and i != 1 else torch.float32) for i, s in enumerate(shapes)]
            else:
                empty = [np.zeros(s, np.float16 if dtype == "float16" and i != 1 else np.float32) for i, s in enumerate(shapes)]
            try:
                output = kernel(*empty, stride)
                ok, detail = tuple(output.shape) == (0, channels, height, width), f"output shape {tuple(output.shape)}"
            except Exception as exc:  # the empty batch must not be an error
                ok, detail = False, f"{type(exc).__name__}: {exc}"
            report.check(f"empty batch ({dtype}, {kernel.name})", ok, detail)


def check_streams(report: Report, kernels: list, features, bbox, weight, stride: int) -> None:
    """Each path on a non-default stream: the default stream's result, and the work queued on that stream."""
    import torch

    for kernel in kernels:
        for dtype in kernel.dtypes:
            f, w = (features.half(), weight.half()) if dtype == "float16" else (features, weight)
            default = kernel(f, bbox, w, stride)
            torch.cuda.synchronize()
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                outputs = [kernel(f, bbox, w, stride, stream=stream) for _ in range(3)]  # batch 8 at P3: milliseconds of work
                busy, default_idle = not stream.query(), torch.cuda.default_stream().query()
            stream.synchronize()
            difference = relative_error(outputs[-1].float(), default.float())
            report.check(
                f"a non-default stream ({dtype}, {kernel.name})",
                difference <= 1e-6 and busy and default_idle,
                f"P3 batch 8: error against the default stream's result {difference:.1e} (bound 1e-6); right after the launches the stream was "
                f"{'busy' if busy else 'idle'} and the default stream {'idle' if default_idle else 'busy'}",
            )
