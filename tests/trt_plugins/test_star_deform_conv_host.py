"""The host build of StarDeformConv against torchvision's deform_conv2d fed with the star offsets
(the reference model's path), and its errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.ops import deform_conv2d

from vfnet.model.head import star_dcn_offset
from vfnet.trt_plugins import PluginNotBuilt, library_path, star_deform_conv


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
