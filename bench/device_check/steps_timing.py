"""The timing step: each kernel path against torchvision's deform_conv2d with CUDA events, batch 1 and 8,
float32 and float16, at P3 (TF32 off)."""

from __future__ import annotations

from .kernels import CHANNELS, GPU_DEVICE, LEVELS, cuda_kernels, make_case
from .machine import need_torch
from .report import Report


def step_timing(context: dict, report: Report) -> None:
    import numpy as np

    torch = need_torch()
    from torchvision.ops import deform_conv2d

    from vfnet.model.head import star_dcn_offset

    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # float32 timings are float32
    kernels, rng = cuda_kernels(), np.random.default_rng(0)
    level, stride, height, width = LEVELS[0]
    rows, figures = [], []
    for batch in (1, 8):
        features, bbox, weight = (torch.from_numpy(a).to(GPU_DEVICE) for a in make_case(rng, batch, CHANNELS, height, width, CHANNELS, stride))
        gflop = 2 * CHANNELS * 9 * CHANNELS * height * width * batch / 1e9
        for dtype in ("float32", "float16"):
            f, w = (features.half(), weight.half()) if dtype == "float16" else (features, weight)
            offset = star_dcn_offset(bbox, stride).to(f.dtype)
            timings = {f"ours: {k.name}": (lambda k=k: k(f, bbox, w, stride)) for k in kernels if dtype in k.dtypes}
            timings["torchvision deform_conv2d (offsets given)"] = lambda: deform_conv2d(f, offset, w, padding=(1, 1))
            timings["torchvision, offsets computed too"] = lambda: deform_conv2d(f, star_dcn_offset(bbox, stride).to(f.dtype), w, padding=(1, 1))
            measured = {name: cuda_ms(function) for name, function in timings.items()}
            baseline = measured["torchvision deform_conv2d (offsets given)"]
            for name, ms in measured.items():
                rows.append([batch, dtype, name, f"{ms:.3f}", f"{gflop / ms:.3g}", f"{baseline / ms:.2f}x"])
                figures.append({"level": level, "batch": batch, "type": dtype, "implementation": name, "milliseconds": ms, "tflops": gflop / ms})
    report.figures["timings"] = figures
    report.lines.append(f"\n{level} ({height}x{width} cells, {CHANNELS} -> {CHANNELS} channels), median of 20 calls after 3, CUDA events; TF32 off.")
    report.table(["batch", "type", "implementation", "ms", "TFLOP/s", "speed vs torchvision (offsets given)"], rows)
    report.check("every implementation timed", len(figures) == len(rows) and bool(rows), f"{len(rows)} timings")


def cuda_ms(function, repeats: int = 20, warmups: int = 3) -> float:
    """Median of `repeats` single calls timed with CUDA events, after `warmups` calls."""
    import torch

    for _ in range(warmups):
        function()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        function()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]
