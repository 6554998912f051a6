"""StarDeformConv on a GPU: our fused kernels (tensor cores for float16, CUDA cores for float32 and as
the float16 reference) against torchvision's CUDA deform_conv2d at the star offsets and against ONNX
Runtime's CUDA DeformConv (the standard graph's operator), float32 and float16, at the official
presets' P3 shape (vfnet_r50_fpn at 1333x800, padded 1344x800: 100x168 cells, 256 -> 256 channels),
batch 1 and 8, with two kinds of boxes:

  smooth  each cell predicts the box of the object it lies in (8 objects per image), as a trained
          head does: neighbouring cells' star points land on the same edges (the realistic case);
  random  every cell an independent random box up to 400 px (the adversarial case: every gather a
          different cache line, for us and torchvision's im2col alike).

    python bench/star_deform_conv_gpu.py [--repeats 50] [--batches 1 8] [--boxes smooth random]
Needs a CUDA GPU, `make plugins` (the CUDA library) and, for the ONNX Runtime column,
onnxruntime-gpu. Writes the "## StarDeformConv (GPU)" section of docs/benchmarks.md, with the
targets (README of trt_plugins/star_deform_conv): float16 at least 2x torchvision's float16, float32
at least as fast as torchvision's float32.
"""

from __future__ import annotations

import argparse
import ctypes
import sys
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import deform_conv2d

sys.path.insert(0, str(Path(__file__).resolve().parent))
from device_check.steps_timing import cuda_ms  # noqa: E402 (bench/device_check/)
from report import gpu_description, publish  # noqa: E402

from vfnet.model.head import star_dcn_offset  # noqa: E402
from vfnet.trt_plugins import ALGORITHMS, library_path  # noqa: E402

TITLE = "## StarDeformConv (GPU)"
CHANNELS, HEIGHT, WIDTH, OUT_CHANNELS, STRIDE = 256, 100, 168, 256, 8
TARGETS = {torch.float16: 2.0, torch.float32: 1.0}  # torchvision ms / our default kernel's ms, at least


def ours(features, bbox_init, weight, stride, algorithm="default"):
    """One of our kernels (vfnet.trt_plugins.ALGORITHMS) on contiguous CUDA tensors, as a callable."""
    function = ctypes.CDLL(str(library_path("vfnet_star_deform_conv_cuda"))).vfnetStarDeformConvCudaWith
    function.argtypes = [ctypes.c_int] * 2 + [ctypes.c_void_p] * 4 + [ctypes.c_int] * 6 + [ctypes.c_void_p]
    batch, channels, height, width = features.shape
    output = torch.empty(batch, weight.shape[0], height, width, dtype=features.dtype, device="cuda")
    kind = 1 if features.dtype == torch.float16 else 0

    def run():
        stream = torch.cuda.current_stream().cuda_stream
        status = function(ALGORITHMS[algorithm], kind, features.data_ptr(), bbox_init.data_ptr(), weight.data_ptr(), output.data_ptr(),
                          batch, channels, height, width, weight.shape[0], stride, stream)  # fmt: skip
        assert status == 0, f"cudaError {status}"

    return run


def onnxruntime_deform_conv(features, offset, weight):
    """A one-node DeformConv model on ONNX Runtime's CUDA provider with IO binding (None without it)."""
    try:
        import onnx
        import onnxruntime as ort
    except ImportError:
        return None
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return None
    elem = onnx.TensorProto.FLOAT16 if features.dtype == torch.float16 else onnx.TensorProto.FLOAT
    node = onnx.helper.make_node("DeformConv", ["x", "w", "offset"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    graph = onnx.helper.make_graph(
        [node], "g", [onnx.helper.make_tensor_value_info(n, elem, None) for n in ("x", "w", "offset")], [onnx.helper.make_tensor_value_info("y", elem, None)]
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 19)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CUDAExecutionProvider"])
    output = torch.empty(features.shape[0], weight.shape[0], *features.shape[2:], dtype=features.dtype, device="cuda")
    binding = session.io_binding()
    dtype = np.float16 if features.dtype == torch.float16 else np.float32
    for name, tensor in (("x", features), ("w", weight), ("offset", offset)):
        binding.bind_input(name, "cuda", 0, dtype, list(tensor.shape), tensor.data_ptr())
    binding.bind_output("y", "cuda", 0, dtype, list(output.shape), output.data_ptr())
    return lambda: session.run_with_iobinding(binding)


def boxes(kind: str, batch: int, generator: torch.Generator) -> torch.Tensor:
    """bbox_init [batch, 4, H, W] in pixels: "random" (independent per cell, up to 400 px) or "smooth"
    (each cell the distances from its anchor to the edges of the nearest of 8 objects, 2% noise)."""
    if kind == "random":
        return torch.rand(batch, 4, HEIGHT, WIDTH, device="cuda", generator=generator) * 400
    size = torch.tensor([WIDTH * STRIDE, HEIGHT * STRIDE, WIDTH * STRIDE, HEIGHT * STRIDE], device="cuda", dtype=torch.float32)
    corners = torch.rand(batch, 8, 2, 2, device="cuda", generator=generator).sort(dim=2).values  # [B, object, (x1 x2)/(y1 y2) sorted]
    objects = torch.stack([corners[..., 0, 0], corners[..., 0, 1], corners[..., 1, 0], corners[..., 1, 1]], dim=-1) * size  # x1 y1 x2 y2
    ys, xs = torch.meshgrid(torch.arange(HEIGHT, device="cuda") * STRIDE, torch.arange(WIDTH, device="cuda") * STRIDE, indexing="ij")
    centres = (objects[..., :2] + objects[..., 2:]) / 2  # [B, 8, 2]
    distance = (xs[None, None] - centres[..., 0, None, None]) ** 2 + (ys[None, None] - centres[..., 1, None, None]) ** 2
    nearest = objects.gather(1, distance.argmin(dim=1).flatten(1)[..., None].expand(-1, -1, 4)).view(batch, HEIGHT, WIDTH, 4)
    ltrb = torch.stack([xs - nearest[..., 0], ys - nearest[..., 1], nearest[..., 2] - xs, nearest[..., 3] - ys], dim=1).abs()
    noise = 1 + 0.02 * torch.randn(ltrb.shape, device="cuda", generator=generator)
    return (ltrb * noise).float().contiguous()


def measure(batch: int, kind: str, dtype: torch.dtype, repeats: int) -> dict[str, float]:
    """{implementation: ms}, our default kernel first."""
    generator = torch.Generator(device="cuda").manual_seed(0)
    features = torch.randn(batch, CHANNELS, HEIGHT, WIDTH, device="cuda", generator=generator).to(dtype)
    bbox_init = boxes(kind, batch, generator)
    weight = (torch.randn(OUT_CHANNELS, CHANNELS, 3, 3, device="cuda", generator=generator) / 48).to(dtype)
    offset = star_dcn_offset(bbox_init, STRIDE).to(dtype)
    default = "ours, default (tensor cores)" if dtype == torch.float16 else "ours, default (CUDA cores)"
    timings = {default: cuda_ms(ours(features, bbox_init, weight, STRIDE), repeats, warmups=5)}
    if dtype == torch.float16:
        timings["ours, CUDA cores (float32 multiplies)"] = cuda_ms(ours(features, bbox_init, weight, STRIDE, "cuda_cores"), repeats, warmups=5)
    timings["torchvision deform_conv2d (offsets given)"] = cuda_ms(lambda: deform_conv2d(features, offset, weight, padding=(1, 1)), repeats, warmups=5)
    timings["torchvision, offsets computed too"] = cuda_ms(
        lambda: deform_conv2d(features, star_dcn_offset(bbox_init, STRIDE).to(dtype), weight, padding=(1, 1)), repeats, warmups=5
    )
    session = onnxruntime_deform_conv(features, offset, weight)
    if session is not None:
        timings["ONNX Runtime CUDA DeformConv (offsets given)"] = cuda_ms(session, repeats, warmups=5)
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--boxes", nargs="+", choices=["smooth", "random"], default=["smooth", "random"])
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU: this benchmark runs on a GPU host", file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32 (torchvision's GEMM is cuBLAS)
    torch.backends.cudnn.allow_tf32 = False
    rows, verdicts = [], []
    for batch in args.batches:
        gflop = 2 * CHANNELS * 9 * OUT_CHANNELS * HEIGHT * WIDTH * batch / 1e9
        for kind in args.boxes:
            for dtype in (torch.float32, torch.float16):
                timings = measure(batch, kind, dtype, args.repeats)
                name = str(dtype).split(".")[-1]
                for label, ms in timings.items():
                    rows.append(f"| {batch} | {kind} | {name} | {label} | {ms:.3f} | {gflop / ms:.2f} |")
                ratio = timings["torchvision deform_conv2d (offsets given)"] / next(iter(timings.values()))
                met = "met" if ratio >= TARGETS[dtype] else "**missed**"
                verdicts.append(f"- batch {batch}, {kind} boxes, {name}: torchvision / ours = {ratio:.2f} (target >= {TARGETS[dtype]:g}: {met})")
                torch.cuda.empty_cache()
    lines = [
        TITLE,
        "",
        f"GPU: {gpu_description()}. `python bench/star_deform_conv_gpu.py` (median of {args.repeats}, CUDA events; TF32 off). "
        f"Shape: features [B, {CHANNELS}, {HEIGHT}, {WIDTH}] -> {OUT_CHANNELS} channels, stride {STRIDE}, "
        f"{2 * CHANNELS * 9 * OUT_CHANNELS * HEIGHT * WIDTH / 1e9:.1f} GFLOP per image.",
        "",
        "| batch | boxes | type | implementation | ms | TFLOP/s |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        "Targets (our default kernel against torchvision with the offsets given):",
        "",
        *verdicts,
    ]
    return publish(TITLE, lines)


if __name__ == "__main__":
    sys.exit(main())
