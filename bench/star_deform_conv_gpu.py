"""StarDeformConv on a GPU: our fused kernel against torchvision's CUDA deform_conv2d at the star
offsets and against ONNX Runtime's CUDA DeformConv (the standard graph's operator), float32 and
float16, at the official presets' P3 shape (1333x800 input: 100x168 cells, 256 channels).

    python bench/star_deform_conv_gpu.py [--repeats 50]
Needs a CUDA GPU, `make plugins` (the CUDA library) and, for the ONNX Runtime column,
onnxruntime-gpu. Writes the "## StarDeformConv (GPU)" section of docs/benchmarks.md.
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
from report import gpu_description, publish  # noqa: E402

from vfnet.model.head import star_dcn_offset  # noqa: E402
from vfnet.trt_plugins import library_path  # noqa: E402

TITLE = "## StarDeformConv (GPU)"
SHAPE = (1, 256, 100, 168, 256, 8)  # B, C, H, W, C_out, stride


def cuda_ms(function, repeats: int) -> float:
    """Median of `repeats` timings with CUDA events, after 5 warm-up calls."""
    for _ in range(5):
        function()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        function()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return float(np.median(times))


def ours(features, bbox_init, weight, stride):
    function = ctypes.CDLL(str(library_path("vfnet_star_deform_conv_cuda"))).vfnetStarDeformConvCuda
    function.argtypes = [ctypes.c_int] + [ctypes.c_void_p] * 4 + [ctypes.c_int] * 6 + [ctypes.c_void_p]
    batch, channels, height, width = features.shape
    output = torch.empty(batch, weight.shape[0], height, width, dtype=features.dtype, device="cuda")
    kind = 1 if features.dtype == torch.float16 else 0

    def run():
        stream = torch.cuda.current_stream().cuda_stream
        status = function(kind, features.data_ptr(), bbox_init.data_ptr(), weight.data_ptr(), output.data_ptr(),
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU: this benchmark runs on a GPU host", file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False
    batch, channels, height, width, out_channels, stride = SHAPE
    gflop = 2 * channels * 9 * out_channels * height * width * batch / 1e9
    rows = []
    for dtype in (torch.float32, torch.float16):
        generator = torch.Generator(device="cuda").manual_seed(0)
        features = torch.randn(batch, channels, height, width, device="cuda", generator=generator).to(dtype)
        bbox_init = torch.rand(batch, 4, height, width, device="cuda", generator=generator) * 400
        weight = (torch.randn(out_channels, channels, 3, 3, device="cuda", generator=generator) / 48).to(dtype)
        offset = star_dcn_offset(bbox_init, stride).to(dtype)
        timings = {
            "ours (fused, float32 accumulation)": cuda_ms(ours(features, bbox_init, weight, stride), args.repeats),
            "torchvision deform_conv2d (offsets given)": cuda_ms(lambda: deform_conv2d(features, offset, weight, padding=(1, 1)), args.repeats),
            "torchvision, offsets computed too": cuda_ms(
                lambda: deform_conv2d(features, star_dcn_offset(bbox_init, stride).to(dtype), weight, padding=(1, 1)), args.repeats
            ),
        }
        session = onnxruntime_deform_conv(features, offset, weight)
        if session is not None:
            timings["ONNX Runtime CUDA DeformConv (offsets given)"] = cuda_ms(session, args.repeats)
        for name, ms in timings.items():
            rows.append(f"| {str(dtype).split('.')[-1]} | {name} | {ms:.3f} | {gflop / ms:.2f} |")
    lines = [
        TITLE,
        "",
        f"GPU: {gpu_description()}. `python bench/star_deform_conv_gpu.py` "
        f"(median of {args.repeats}, CUDA events). Shape: features [{batch}, {channels}, {height}, {width}] -> "
        f"{out_channels} channels, {gflop:.1f} GFLOP per call.",
        "",
        "| type | implementation | ms | TFLOP/s |",
        "|---|---|---|---|",
        *rows,
    ]
    return publish(TITLE, lines)


if __name__ == "__main__":
    sys.exit(main())
