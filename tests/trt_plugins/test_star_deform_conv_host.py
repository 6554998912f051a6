"""The host build of StarDeformConv against torchvision's deform_conv2d fed with the star offsets
(the reference model's path), and its errors; and the host mirror of the CUDA kernels (the kernels'
own tiling code run on the CPU: star_deform_conv_tiled) against exact and torchvision references."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
import torch
from torchvision.ops import deform_conv2d

from vfnet.model.head import star_dcn_offset
from vfnet.trt_plugins import PluginNotBuilt, _host_library, float16_round_trip, library_path, star_deform_conv, star_deform_conv_tiled


def reference(features, bbox_init, weight, stride):
    offset = star_dcn_offset(torch.from_numpy(bbox_init), stride)  # [B, 18, H, W]
    return deform_conv2d(torch.from_numpy(features), offset, torch.from_numpy(weight), padding=(1, 1)).numpy()


def random_case(seed, batch, channels, height, width, out_channels, stride, reach=1.5):
    """Boxes up to `reach` times the map's size: many star points fall past the border."""
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((batch, channels, height, width), dtype=np.float32)
    bbox_init = (rng.random((batch, 4, height, width), dtype=np.float32) * reach * max(height, width) * stride).astype(np.float32)
    weight = rng.standard_normal((out_channels, channels, 3, 3), dtype=np.float32)
    return features, bbox_init, weight


@pytest.mark.parametrize(
    "seed, batch, channels, height, width, out_channels, stride",
    [(0, 2, 5, 7, 9, 6, 8), (1, 1, 16, 13, 11, 8, 16), (2, 3, 3, 4, 20, 2, 32), (3, 1, 64, 40, 24, 64, 8), (4, 2, 1, 1, 1, 1, 128)],
)
def test_matches_torchvision_at_star_offsets(seed, batch, channels, height, width, out_channels, stride):
    features, bbox_init, weight = random_case(seed, batch, channels, height, width, out_channels, stride)
    got = star_deform_conv(features, bbox_init, weight, stride)
    want = reference(features, bbox_init, weight, stride)
    assert got.shape == want.shape == (batch, out_channels, height, width)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def test_star_points_on_cell_centres_and_borders_sample_exactly():
    """Boxes of whole cells put every tap on a cell (bilinear weights 0 and 1), and taps one cell or
    more past the border read zero: the result is an exact sum of neighbours."""
    features = np.arange(1 * 2 * 5 * 6, dtype=np.float32).reshape(1, 2, 5, 6)
    bbox_init = np.full((1, 4, 5, 6), 8.0, np.float32)  # l = t = r = b = one cell at stride 8
    weight = np.zeros((1, 2, 3, 3), np.float32)
    weight[0, 1, 0, 2] = 1.0  # tap k = 2: row y - t, column x + r, channel 1
    out = star_deform_conv(features, bbox_init, weight, stride=8)[0, 0]
    expected = np.zeros((5, 6), np.float32)
    expected[1:, :-1] = features[0, 1, :-1, 1:]  # shifted up-right; the first row and last column read outside
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_allclose(out, reference(features, bbox_init, weight, 8)[0, 0], atol=1e-6)


def test_threads_do_not_change_the_result():
    features, bbox_init, weight = random_case(5, 2, 8, 33, 17, 4, 16)
    np.testing.assert_array_equal(star_deform_conv(features, bbox_init, weight, 16, threads=1), star_deform_conv(features, bbox_init, weight, 16, threads=3))


@pytest.mark.parametrize(
    "shapes, stride, message",
    [
        (((1, 2, 4, 4), (1, 3, 4, 4), (1, 2, 3, 3)), 8, r"bbox_init must be \[B, 4, H, W\] = \[1, 4, 4, 4\], got \[1, 3, 4, 4\]"),
        (((1, 2, 4, 4), (1, 4, 4, 4), (1, 3, 3, 3)), 8, r"weight must be \[C_out, 2, 3, 3\], got \[1, 3, 3, 3\]"),
        (((2, 4, 4), (1, 4, 4, 4), (1, 2, 3, 3)), 8, "must be 4-D"),
        (((1, 2, 4, 4), (1, 4, 4, 4), (1, 2, 3, 3)), 0, "stride must be a positive whole number of pixels, got 0"),
        (((1, 2, 4, 4), (1, 4, 4, 4), (1, 2, 3, 3)), 2.5, "got 2.5"),
    ],
)
def test_bad_inputs_name_the_problem(shapes, stride, message):
    arrays = [np.zeros(shape, np.float32) for shape in shapes]
    with pytest.raises(ValueError, match=message):
        star_deform_conv(*arrays, stride=stride)


def test_a_missing_build_says_to_run_make_plugins(tmp_path, monkeypatch):
    monkeypatch.setenv("VFNET_PLUGIN_DIR", str(tmp_path))
    with pytest.raises(PluginNotBuilt, match=r"libvfnet_trt_plugins.so is missing .*run `make plugins`"):
        library_path("vfnet_trt_plugins")


def test_an_empty_batch_is_a_success_even_with_null_pointers():
    """B = 0 (or H or W 0): nothing to read or write, so the C functions accept null buffers."""
    library, error = _host_library(), ctypes.create_string_buffer(256)
    assert library.vfnetStarDeformConvF32(None, None, None, None, 0, 8, 5, 7, 4, 8, 0, error, len(error)) == 0, error.value
    assert library.vfnetStarDeformConvF32(None, None, None, None, 2, 8, 0, 7, 4, 8, 0, error, len(error)) == 0, error.value
    for algorithm, kind in ((0, 0), (1, 1), (2, 1)):
        assert library.vfnetStarDeformConvTiled(algorithm, kind, None, None, None, None, 0, 8, 5, 7, 4, 8, 0, error, len(error)) == 0, error.value
    # a batch that is not empty still refuses a null buffer
    assert library.vfnetStarDeformConvF32(None, None, None, None, 1, 8, 5, 7, 4, 8, 0, error, len(error)) == 1
    assert error.value == b"StarDeformConv: a null buffer"
    features, bbox_init, weight = random_case(0, 0, 3, 5, 7, 4, 8)
    assert star_deform_conv(features, bbox_init, weight, 8).shape == (0, 4, 5, 7)
    assert star_deform_conv_tiled(features.astype(np.float16), bbox_init, weight, 8).shape == (0, 4, 5, 7)


# ---- the host mirror of the CUDA kernels ---------------------------------------------------------

# VFNet's five FPN levels at 800x1344 (P3-P7: H, W, stride), and the test shapes: the maps a quarter
# of the size (rounded up) and 32 channels instead of 256, so that the mirror stays quick.
VFNET_LEVELS = [(100, 168, 8), (50, 84, 16), (25, 42, 32), (13, 21, 64), (7, 11, 128)]
SCALED_LEVELS = [(1, 32, -(-h // 4), -(-w // 4), 40, s) for h, w, s in VFNET_LEVELS]  # (B, C, H, W, C_out, stride)
# Odd sizes and edges: C not a multiple of the kernels' channel groups (8 and 4), C_out above one
# row tile (256 and 128) and below one, H * W odd and below one cell tile, a 1x1 map, batch 3.
ODD_SHAPES = [(2, 13, 9, 11, 300, 16), (3, 5, 1, 1, 3, 128), (1, 16, 17, 23, 129, 8), (2, 3, 4, 20, 2, 32), (1, 12, 31, 3, 257, 64)]


def exact_case(seed, batch, channels, height, width, out_channels, stride):
    """Inputs whose every intermediate is exact in float16 and float32: integer features in [-4, 4],
    weights in eighths in [-1, 1], boxes in quarters of a cell (bilinear weights in sixteenths), so
    the samples are sixteenths of magnitude <= 4 and the sums exact in float32; only the final
    rounding to float16 remains, the same on any correct path."""
    rng = np.random.default_rng(seed)
    features = rng.integers(-4, 5, (batch, channels, height, width)).astype(np.float32)
    quarters = rng.integers(0, 4 * int(1.5 * max(height, width)) + 1, (batch, 4, height, width))
    bbox_init = (quarters * (stride / 4)).astype(np.float32)
    weight = (rng.integers(-8, 9, (out_channels, channels, 3, 3)) / 8).astype(np.float32)
    return features, bbox_init, weight


def exact_reference(features, bbox_init, weight, stride):
    """torchvision's deform_conv2d in float64: exact for exact_case's inputs."""
    as64 = (torch.from_numpy(a.astype(np.float64)) for a in (features, bbox_init, weight))
    x, box, w = as64
    return deform_conv2d(x, star_dcn_offset(box, stride), w, padding=(1, 1)).numpy()


@pytest.mark.parametrize("shape", SCALED_LEVELS + ODD_SHAPES, ids=str)
def test_the_kernels_tiling_is_exact_where_the_arithmetic_is(shape):
    """Every index of the kernels' tiling at once: with exact inputs any misplaced weight, column,
    tap, channel, fragment register or output cell changes the result, and the mirror's shared
    memory is NaN before each load phase, so a word read but not written shows. The float16 paths
    must give the float16 rounding of the exact result, bit for bit; the float32 path the float32."""
    features, bbox_init, weight = exact_case(1, *shape)
    exact = exact_reference(features, bbox_init, weight, shape[-1])
    half_features, half_weight = features.astype(np.float16), weight.astype(np.float16)
    for algorithm in ("tensor_cores", "cuda_cores"):
        got = star_deform_conv_tiled(half_features, bbox_init, half_weight, shape[-1], algorithm=algorithm)
        np.testing.assert_array_equal(got.view(np.uint16), exact.astype(np.float16).view(np.uint16), err_msg=algorithm)
    got = star_deform_conv_tiled(features, bbox_init, weight, shape[-1])
    np.testing.assert_array_equal(got, exact.astype(np.float32))


def half_bound(features16, bbox_init, weight16, stride, reference):
    """Elementwise bound on |tensor-core result - torchvision float32 on the same float16 inputs|.

    With u = 2^-11 (float16's unit roundoff), e = 2^-24 (float32's) and K = 9 C: each column value
    (the bilinear sample, float32 with 4 fused products) is rounded once to float16, |error| <= u |c|
    + 2^-25 (subnormal spacing / 2) + 4 e |c|; the products of float16 values are exact and summed in
    float32 by both sides (<= K e S each, S = sum |w| |c|); the result is rounded once to float16
    (<= u |y|, y within the bound of the reference). So |got - ref| <= u |ref| + (u + (2K + 8) e) S
    (1 + u) + K max|w| 2^-25 + 2^-24, with S <= deform_conv2d(|x|, offsets, |W|) (computed here in float64)."""
    u, e = 2.0**-11, 2.0**-24
    depth = weight16.shape[1] * 9
    absolute = (torch.from_numpy(np.abs(a.astype(np.float64))) for a in (features16, weight16))
    x, w = absolute
    s = deform_conv2d(x, star_dcn_offset(torch.from_numpy(bbox_init.astype(np.float64)), stride), w, padding=(1, 1)).numpy()
    return u * np.abs(reference) + (u + (2 * depth + 8) * e) * s * (1 + u) + depth * np.abs(weight16).max() * 2.0**-25 + e


@pytest.mark.parametrize("shape", SCALED_LEVELS + ODD_SHAPES[:3], ids=str)
def test_the_tensor_core_tiling_matches_torchvision_within_float16_rounding(shape):
    """Random inputs (fractional star points, boxes reaching 1.5 maps past the border): the tensor-core
    mirror against torchvision's float32 deform_conv2d on the same float16-rounded inputs, within
    half_bound, which a misplaced term exceeds (one term is ~|w| |c| ~ 0.03 here; the bound ~3e-3
    relative to the largest output). The CUDA-core path (float16 inputs, float32 all through)
    differs from the same reference by the final rounding only."""
    features, bbox_init, weight = random_case(2, *shape)
    half_features, half_weight = features.astype(np.float16), (weight / np.sqrt(9 * shape[1])).astype(np.float16)
    widened_features, widened_weight = half_features.astype(np.float32), half_weight.astype(np.float32)
    torchvision32 = reference(widened_features, bbox_init, widened_weight, shape[-1])
    exact = exact_reference(widened_features, bbox_init, widened_weight, shape[-1])
    bound = half_bound(half_features, bbox_init, half_weight, shape[-1], torchvision32)
    assert bound.max() <= 5e-3 * np.abs(exact).max()  # tight enough that a misplaced term exceeds it
    got = star_deform_conv_tiled(half_features, bbox_init, half_weight, shape[-1], algorithm="tensor_cores").astype(np.float32)
    assert (np.abs(got - torchvision32) <= bound).all(), np.abs(got - torchvision32).max()
    widened = star_deform_conv_tiled(half_features, bbox_init, half_weight, shape[-1], algorithm="cuda_cores").astype(np.float64)
    assert np.abs(widened - exact).max() <= (2.0**-11 + 1e-5) * np.abs(exact).max()


def test_the_tensor_core_tiling_is_no_worse_than_torchvision_float16():
    """torchvision's own float16 deform_conv2d (on the CPU here; its CUDA kernel keeps positions in
    float16 too) against the exact result of the float16 inputs: the mirror is at least as close."""
    features, bbox_init, weight = random_case(3, 1, 32, 25, 42, 40, 8)
    half_features, half_weight = features.astype(np.float16), (weight / np.sqrt(9 * 32)).astype(np.float16)
    exact = exact_reference(half_features.astype(np.float32), bbox_init, half_weight.astype(np.float32), 8)
    offset = star_dcn_offset(torch.from_numpy(bbox_init), 8).half()
    theirs = deform_conv2d(torch.from_numpy(half_features), offset, torch.from_numpy(half_weight), padding=(1, 1)).float().numpy()
    ours = star_deform_conv_tiled(half_features, bbox_init, half_weight, 8).astype(np.float32)
    assert np.abs(ours - exact).max() <= np.abs(theirs - exact).max()


def test_the_tiled_float32_path_matches_torchvision():
    features, bbox_init, weight = random_case(4, 2, 13, 17, 19, 130, 16)
    got = star_deform_conv_tiled(features, bbox_init, weight, 16)
    want = reference(features, bbox_init, weight, 16)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def test_the_element_by_element_weight_path_gives_the_vector_paths_result():
    """A weight buffer off 16-byte alignment makes the kernels load it element by element (C % 8 == 0
    here, so aligned it goes 16 bytes at a time): the same values land in the same places."""
    features, bbox_init, weight = exact_case(5, 1, 16, 11, 13, 24, 8)
    for dtype, algorithms in ((np.float16, ("tensor_cores", "cuda_cores")), (np.float32, ("cuda_cores",))):
        buffer = np.zeros(weight.size + 8, dtype=dtype)
        misaligned = buffer[1 : 1 + weight.size].reshape(weight.shape)
        misaligned[...] = weight
        assert misaligned.ctypes.data % 16 != 0
        aligned = np.zeros(weight.shape, dtype=dtype)  # numpy aligns new arrays to 16 bytes
        aligned[...] = weight
        assert aligned.ctypes.data % 16 == 0
        for algorithm in algorithms:
            vectors = star_deform_conv_tiled(features.astype(dtype), bbox_init, aligned, 8, algorithm=algorithm)
            elements = star_deform_conv_tiled(features.astype(dtype), bbox_init, misaligned, 8, algorithm=algorithm)
            np.testing.assert_array_equal(vectors, elements)


def test_the_tiled_paths_do_not_depend_on_threads():
    features, bbox_init, weight = random_case(6, 2, 9, 21, 17, 20, 16)
    for dtype in (np.float16, np.float32):
        one = star_deform_conv_tiled(features.astype(dtype), bbox_init, weight, 16, threads=1)
        np.testing.assert_array_equal(one, star_deform_conv_tiled(features.astype(dtype), bbox_init, weight, 16, threads=3))


def test_float16_rounding_is_round_to_nearest_even():
    """The mirror's conversions (the device uses __float2half_rn / __half2float) against numpy's on
    every float16 value, every tie between neighbours, subnormals, the overflow edge and random floats."""
    every = np.arange(65536, dtype=np.uint16).view(np.float16)
    finite = every[np.isfinite(every)]
    up = np.nextafter(finite, np.float16(np.inf), dtype=np.float16)
    keep = np.isfinite(up)
    ties = (finite[keep].astype(np.float64) + up[keep].astype(np.float64)) / 2  # exact in float32
    rng = np.random.default_rng(7)
    randoms = np.concatenate([rng.standard_normal(100000) * 10.0 ** rng.integers(-9, 6, 100000), [65519.996, 65520.0, 65504.0, 1e-8, 2.0**-25, 3 * 2.0**-26]])
    values = np.concatenate([finite.astype(np.float32), ties.astype(np.float32), randoms.astype(np.float32), [np.inf, -np.inf]]).astype(np.float32)
    values = np.concatenate([values, -values])
    halves, widened = float16_round_trip(values)
    np.testing.assert_array_equal(halves.view(np.uint16), values.astype(np.float16).view(np.uint16))
    np.testing.assert_array_equal(widened, halves.astype(np.float32))
    nan_halves, nan_widened = float16_round_trip(np.array([np.nan], np.float32))
    assert np.isnan(nan_halves[0]) and np.isnan(nan_widened[0])


@pytest.mark.parametrize(
    "features_dtype, algorithm, message",
    [(np.float32, "tensor_cores", "takes float16"), (np.float16, "fastest", "algorithm must be one of default, cuda_cores, tensor_cores")],
)
def test_the_tiled_entry_point_names_a_wrong_algorithm(features_dtype, algorithm, message):
    features, bbox_init, weight = random_case(0, 1, 2, 4, 4, 1, 8)
    with pytest.raises(ValueError, match=message):
        star_deform_conv_tiled(features.astype(features_dtype), bbox_init, weight, 8, algorithm=algorithm)
