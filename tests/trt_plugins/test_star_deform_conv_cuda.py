"""The CUDA kernel of StarDeformConv on a GPU, against torchvision's CUDA deform_conv2d at the star
offsets: float32, and float16 with float32 accumulation (skipped without a GPU)."""

from __future__ import annotations

import ctypes

import pytest

from vfnet.trt_plugins import library_path

pytestmark = pytest.mark.gpu

SHAPES = [(2, 5, 7, 9, 6, 8), (1, 64, 40, 24, 64, 8), (3, 256, 25, 42, 256, 16), (1, 32, 1, 1, 16, 128)]


def run_kernel(features, bbox_init, weight, stride):
    import torch

    function = ctypes.CDLL(str(library_path("vfnet_star_deform_conv_cuda"))).vfnetStarDeformConvCuda
    function.argtypes = [ctypes.c_int] + [ctypes.c_void_p] * 4 + [ctypes.c_int] * 6 + [ctypes.c_void_p]
    batch, channels, height, width = features.shape
    output = torch.empty(batch, weight.shape[0], height, width, dtype=features.dtype, device=features.device)
    stream = torch.cuda.current_stream().cuda_stream
    kind = 1 if features.dtype == torch.float16 else 0
    status = function(kind, features.data_ptr(), bbox_init.data_ptr(), weight.data_ptr(), output.data_ptr(),
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
    from torchvision.ops import deform_conv2d

    from vfnet.model.head import star_dcn_offset

    return deform_conv2d(features, star_dcn_offset(bbox_init, stride).to(features.dtype), weight, padding=(1, 1))


@pytest.mark.parametrize("shape", SHAPES)
def test_float32_matches_torchvision_cuda(shape):
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    features, bbox_init, weight, stride = case(shape, 0)
    got, want = run_kernel(features, bbox_init, weight, stride), reference(features, bbox_init, weight, stride)
    assert ((got - want).abs().max() / want.abs().max()).item() <= 1e-5


@pytest.mark.parametrize("shape", SHAPES)
def test_float16_accumulates_in_float32(shape):
    """float16 inputs: within 1e-2 relative of torchvision's float16 result, and at least as close to
    the float32 result of the same (float16-rounded) inputs as torchvision's float16 is."""
    features, bbox_init, weight, stride = case(shape, 1)
    half_features, half_weight = features.half(), weight.half()
    got = run_kernel(half_features, bbox_init, half_weight, stride).float()
    torchvision_half = reference(half_features, bbox_init, half_weight, stride).float()
    exact = reference(half_features.float(), bbox_init, half_weight.float(), stride)
    scale = exact.abs().max()
    assert ((got - torchvision_half).abs().max() / scale).item() <= 1e-2
    assert (got - exact).abs().max() <= (torchvision_half - exact).abs().max() + 1e-3 * scale
