"""The CUDA kernels of StarDeformConv on a GPU (skipped without one): the CUDA-core kernel against
torchvision's CUDA deform_conv2d at the star offsets in float32; both kernels in float16 against the
exact result of the float16 inputs, each within a bound derived from its rounding, and no worse than
torchvision's own float16; the tensor-core kernel against the CUDA-core kernel; and each kernel
against its host mirror (the same tiling code run on the CPU, star_deform_conv_tiled)."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from vfnet.trt_plugins import ALGORITHMS, library_path, star_deform_conv_tiled

pytestmark = pytest.mark.gpu

SHAPES = [(2, 5, 7, 9, 6, 8), (1, 64, 40, 24, 64, 8), (3, 256, 25, 42, 256, 16), (1, 32, 1, 1, 16, 128), (2, 13, 9, 11, 300, 16), (1, 256, 50, 84, 256, 16)]
HALF_PATHS = ["tensor_cores", "cuda_cores"]


def run_kernel(features, bbox_init, weight, stride, algorithm="default"):
    import torch

    function = ctypes.CDLL(str(library_path("vfnet_star_deform_conv_cuda"))).vfnetStarDeformConvCudaWith
    function.argtypes = [ctypes.c_int] * 2 + [ctypes.c_void_p] * 4 + [ctypes.c_int] * 6 + [ctypes.c_void_p]
    batch, channels, height, width = features.shape
    output = torch.empty(batch, weight.shape[0], height, width, dtype=features.dtype, device=features.device)
    stream = torch.cuda.current_stream().cuda_stream
    kind = 1 if features.dtype == torch.float16 else 0
    status = function(ALGORITHMS[algorithm], kind, features.data_ptr(), bbox_init.data_ptr(), weight.data_ptr(), output.data_ptr(),
                      batch, channels, height, width, weight.shape[0], stride, stream)  # fmt: skip
    assert status == 0, f"cudaError {status}"
    torch.cuda.synchronize()
    return output


def case(shape, seed):
    import torch

    batch, channels, height, width, out_channels, stride = shape
    generator = torch.Generator(device="cuda").manual_seed(seed)
    features = torch.randn(batch, channels, height, width, device="cuda", generator=generator)
    bbox_init = torch.rand(batch, 4, height, width, device="cuda", generator=generator) * 1.5 * max(height, width) * stride
    weight = torch.randn(out_channels, channels, 3, 3, device="cuda", generator=generator) / (channels * 9) ** 0.5
    return features, bbox_init, weight, stride


def reference(features, bbox_init, weight, stride):
    """torchvision's deform_conv2d at the star offsets, in the features' type; the offsets computed
    from the float32 boxes in float32 (float64 for a float64 reference) and then cast, as the model does."""
    import torch
    from torchvision.ops import deform_conv2d

    from vfnet.model.head import star_dcn_offset

    offset = star_dcn_offset(bbox_init.to(torch.float64 if features.dtype == torch.float64 else torch.float32), stride)
    return deform_conv2d(features, offset.to(features.dtype), weight, padding=(1, 1))


def half_bound(half_features, bbox_init, half_weight, stride, exact, algorithm):
    """Elementwise bound on |kernel - exact|, exact = the float64 result of the float16 inputs.

    u = 2^-11, e = 2^-24, K = 9 C, S = sum_k |w_k| sum_i b_i |x_i| (deform_conv2d of |x| and |W|):
    - both kernels sample in float32 (4 fused products, <= 4 e |c| per column value) and sum in
      float32 (<= K e S; the tensor cores' 16-term sums may align their terms with truncation: 32 e S
      more), then round the result to float16 once (<= u |y| + 2^-25);
    - the tensor-core kernel also rounds each column value to float16: <= (u |c| + 2^-25) per value,
      so u S + K max|w| 2^-25 more.
    (torchvision's float16 keeps the sample positions in float16 too: 1/32 of a cell in [32, 64).)"""
    u, e = 2.0**-11, 2.0**-24
    depth = half_weight.shape[1] * 9
    s = reference(half_features.double().abs(), bbox_init.double(), half_weight.double().abs(), stride)
    bound = u * exact.abs() + (depth + 8 + 32) * e * s * (1 + u) + 2.0**-25
    if algorithm == "tensor_cores":
        bound = bound + u * s * (1 + u) + depth * half_weight.abs().max() * 2.0**-25
    return bound


@pytest.mark.parametrize("shape", SHAPES)
def test_float32_matches_torchvision_cuda(shape):
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    features, bbox_init, weight, stride = case(shape, 0)
    got, want = run_kernel(features, bbox_init, weight, stride), reference(features, bbox_init, weight, stride)
    assert ((got - want).abs().max() / want.abs().max()).item() <= 1e-5


@pytest.mark.parametrize("algorithm", HALF_PATHS)
@pytest.mark.parametrize("shape", SHAPES)
def test_float16_is_within_its_rounding_of_the_exact_result(shape, algorithm):
    """The kernel's float16 result against the exact (float64) result of the same float16-rounded
    inputs, elementwise within half_bound; and no worse than torchvision's float16 against the same
    exact result (up to one float16 rounding of the largest output: both round their outputs)."""
    features, bbox_init, weight, stride = case(shape, 1)
    half_features, half_weight = features.half(), weight.half()
    exact = reference(half_features.double(), bbox_init, half_weight.double(), stride)
    got = run_kernel(half_features, bbox_init, half_weight, stride, algorithm).double()
    bound = half_bound(half_features, bbox_init, half_weight, stride, exact, algorithm)
    assert ((got - exact).abs() <= bound).all(), ((got - exact).abs() - bound).max().item()
    torchvision_half = reference(half_features, bbox_init, half_weight, stride).double()
    assert (got - exact).abs().max() <= (torchvision_half - exact).abs().max() + 2.0**-11 * exact.abs().max()


@pytest.mark.parametrize("shape", SHAPES)
def test_tensor_cores_against_cuda_cores(shape):
    """The tensor-core kernel against the CUDA-core kernel (float16 inputs widened, float32 all
    through) on the same inputs: within the sum of their bounds on random inputs, and equal bit for
    bit on inputs whose every sum is exact (integer features, weights in eighths, boxes in quarter
    cells): then both results are the float16 rounding of the exact result."""
    import torch

    features, bbox_init, weight, stride = case(shape, 2)
    half_features, half_weight = features.half(), weight.half()
    exact = reference(half_features.double(), bbox_init, half_weight.double(), stride)
    tensor = run_kernel(half_features, bbox_init, half_weight, stride, "tensor_cores").double()
    cuda = run_kernel(half_features, bbox_init, half_weight, stride, "cuda_cores").double()
    bounds = sum(half_bound(half_features, bbox_init, half_weight, stride, exact, algorithm) for algorithm in HALF_PATHS)
    assert ((tensor - cuda).abs() <= bounds).all()

    generator = torch.Generator(device="cuda").manual_seed(3)
    batch, channels, height, width, out_channels, _ = shape
    integers = torch.randint(-4, 5, (batch, channels, height, width), device="cuda", generator=generator).half()
    quarters = torch.randint(0, 4 * int(1.5 * max(height, width)) + 1, (batch, 4, height, width), device="cuda", generator=generator)
    boxes = (quarters * (stride / 4)).float()
    eighths = (torch.randint(-8, 9, (out_channels, channels, 3, 3), device="cuda", generator=generator) / 8).half()
    exact = reference(integers.double(), boxes, eighths.double(), stride).half()
    for algorithm in HALF_PATHS:
        got = run_kernel(integers, boxes, eighths, stride, algorithm)
        assert torch.equal(got.view(torch.int16), exact.view(torch.int16)), algorithm


@pytest.mark.parametrize("shape", SHAPES[:3])
def test_each_kernel_equals_its_host_mirror(shape):
    """The GPU kernels against the host build's mirror of them (the same tile code on the CPU):
    bit for bit on exact inputs for every path; on random inputs the CUDA-core kernel within 1e-6
    (the mirror fuses the same products: it is meant to be bitwise), the tensor-core kernel within
    its accumulation's rounding (the tensor cores sum in their own order)."""
    import torch

    features, bbox_init, weight, stride = case(shape, 4)
    for dtype, algorithm in ((torch.float32, "cuda_cores"), (torch.float16, "cuda_cores"), (torch.float16, "tensor_cores")):
        x, w = features.to(dtype), weight.to(dtype)
        got = run_kernel(x, bbox_init, w, stride, algorithm).cpu().numpy()
        mirror = star_deform_conv_tiled(x.cpu().numpy(), bbox_init.cpu().numpy(), w.cpu().numpy(), stride, algorithm=algorithm)
        scale = np.abs(mirror.astype(np.float64)).max()
        tolerance = 1e-6 if algorithm == "cuda_cores" and dtype == torch.float32 else 2.0**-10
        assert np.abs(got.astype(np.float64) - mirror.astype(np.float64)).max() <= tolerance * scale, (dtype, algorithm)
    rng = np.random.default_rng(5)
    batch, channels, height, width, out_channels, _ = shape
    integers = rng.integers(-4, 5, (batch, channels, height, width)).astype(np.float32)
    boxes = (rng.integers(0, 4 * int(1.5 * max(height, width)) + 1, (batch, 4, height, width)) * (stride / 4)).astype(np.float32)
    eighths = (rng.integers(-8, 9, (out_channels, channels, 3, 3)) / 8).astype(np.float32)
    for dtype, algorithm in ((np.float32, "cuda_cores"), (np.float16, "cuda_cores"), (np.float16, "tensor_cores")):
        x, w = integers.astype(dtype), eighths.astype(dtype)
        got = run_kernel(torch.from_numpy(x).cuda(), torch.from_numpy(boxes).cuda(), torch.from_numpy(w).cuda(), stride, algorithm).cpu().numpy()
        np.testing.assert_array_equal(got, star_deform_conv_tiled(x, boxes, w, stride, algorithm=algorithm), err_msg=f"{dtype.__name__} {algorithm}")
