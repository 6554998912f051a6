"""The star-shaped deformable convolution: sampling positions and parity with hand-built offsets."""

from __future__ import annotations

import pytest
import torch
from torchvision import ops
from torchvision.ops import deform_conv2d as tv_deform_conv2d

from vfnet.model import build_vfnet
from vfnet.model.head import star_dcn_offset
from vfnet.model.layers import deform_conv2d

STRIDE = 16
Y, X = 5, 7  # feature cell of the anchor: pixel (x, y) = (112, 80)
LTRB = (32.0, 48.0, 64.0, 16.0)  # whole cells: exact in float32, and one-hot sampling is exact


def expected_positions() -> list[tuple[float, float]]:
    """The 9 star points (row, col) in feature cells, tap order k = 3*i + j."""
    l, t, r, b = (v / STRIDE for v in LTRB)
    rows = (Y - t, Y, Y + b)  # top edge, anchor row, bottom edge
    cols = (X - l, X, X + r)  # left edge, anchor column, right edge
    return [(row, col) for row in rows for col in cols]


def offsets_for_box() -> torch.Tensor:
    bbox = torch.zeros(1, 4, 10, 12)
    bbox[0, :, Y, X] = torch.tensor(LTRB)
    return star_dcn_offset(bbox, STRIDE)  # [1, 18, 10, 12]


def test_star_positions_are_corners_anchor_and_edge_crossings():
    offset = offsets_for_box()[0, :, Y, X]
    positions = []
    for k in range(9):
        i, j = divmod(k, 3)
        dy, dx = offset[2 * k].item(), offset[2 * k + 1].item()  # interleaved: even = dy, odd = dx
        positions.append((Y + i - 1 + dy, X + j - 1 + dx))  # regular grid + learned offset, padding 1
    assert positions == expected_positions()
    l, t, r, b = (v / STRIDE for v in LTRB)
    corners = {positions[k] for k in (0, 2, 6, 8)}
    assert corners == {(Y - t, X - l), (Y - t, X + r), (Y + b, X - l), (Y + b, X + r)}
    assert positions[4] == (Y, X)  # the anchor point itself
    assert {positions[k] for k in (1, 3, 5, 7)} == {(Y - t, X), (Y, X - l), (Y, X + r), (Y + b, X)}


def test_deform_conv_really_samples_the_star():
    """A one-hot feature map and a one-tap kernel: tap k responds exactly at its star point."""
    offset = offsets_for_box()
    for k, (row, col) in enumerate(expected_positions()):
        feature = torch.zeros(1, 1, 10, 12)
        feature[0, 0, int(row), int(col)] = 1.0
        weight = torch.zeros(1, 1, 3, 3)
        weight[0, 0, k // 3, k % 3] = 1.0
        out = tv_deform_conv2d(feature, offset, weight, padding=(1, 1))
        assert out[0, 0, Y, X].item() == 1.0, k


def official_star_offset(bbox_pred: torch.Tensor, stride: int) -> torch.Tensor:
    """mmdetection's star_dcn_offset, written as the official code does it: in-place channel writes."""
    base = torch.tensor([-1, -1, -1, 0, -1, 1, 0, -1, 0, 0, 0, 1, 1, -1, 1, 0, 1, 1], dtype=torch.float64)
    g = (0.9 * bbox_pred.detach() + 0.1 * bbox_pred) / stride
    x1, y1, x2, y2 = g[:, 0], g[:, 1], g[:, 2], g[:, 3]
    n, _, h, w = bbox_pred.shape
    out = bbox_pred.new_zeros(n, 18, h, w)
    for channel, value in {0: -y1, 1: -x1, 2: -y1, 4: -y1, 5: x2, 7: -x1, 11: x2, 12: y2, 13: -x1, 14: y2, 16: y2, 17: x2}.items():
        out[:, channel] = value
    return out - base.to(bbox_pred).reshape(1, 18, 1, 1)


def test_head_deform_convs_equal_hand_built_reference():
    torch.manual_seed(0)
    model = build_vfnet("vfnet_r18_demo")
    head = model.bbox_head
    x = torch.randn(2, 64, 12, 17)
    worst = 0.0
    with torch.no_grad():
        for level, stride in enumerate(head.strides):
            cls_logits, bbox_init, bbox_refine, _ = head.forward_level(x, level)

            cls_feat, reg_feat = x, x
            for conv in head.cls_convs:
                cls_feat = conv(cls_feat)
            for conv in head.reg_convs:
                reg_feat = conv(reg_feat)
            init = torch.exp(head.vfnet_reg(head.vfnet_reg_conv(reg_feat)) * head.scales[level].scale) * head.reg_denoms[level]
            offset = official_star_offset(init, stride)
            refine_feat = torch.relu(tv_deform_conv2d(reg_feat, offset, head.vfnet_reg_refine_dconv.weight, padding=(1, 1)))
            refine = torch.exp(head.vfnet_reg_refine(refine_feat) * head.scales_refine[level].scale) * init
            cls_feat = torch.relu(tv_deform_conv2d(cls_feat, offset, head.vfnet_cls_dconv.weight, padding=(1, 1)))
            logits = head.vfnet_cls(cls_feat)

            for ours, ref in ((bbox_init, init), (bbox_refine, refine), (cls_logits, logits)):
                diff = (ours - ref).abs().max().item()
                worst = max(worst, diff / ref.abs().max().item())
                torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)
    print(f"largest relative raw-output difference vs the hand-built reference: {worst:.3g}")


def test_only_gradient_mul_of_the_offset_gradient_reaches_the_box():
    bbox = torch.full((1, 4, 2, 2), 32.0, requires_grad=True)
    star_dcn_offset(bbox, STRIDE, gradient_mul=0.1)[:, 0].sum().backward()  # channel 0 = -top / stride
    expected = torch.zeros(1, 4, 2, 2)
    expected[:, 1] = -0.1 / STRIDE
    torch.testing.assert_close(bbox.grad, expected)


@pytest.mark.parametrize(
    "shape, stride, groups, with_mask",
    [((2, 8, 12, 17), 1, 1, False), ((1, 8, 2, 1), 1, 1, False), ((2, 16, 11, 14), 2, 4, True)],
)
def test_training_path_matches_torchvision_values_and_gradients(shape, stride, groups, with_mask):
    """With gradients on, deform_conv2d samples with grid_sample (fast CPU backward); it must equal
    torchvision's op in value and in every gradient, including at the map borders."""
    g = torch.Generator().manual_seed(1)
    batch, channels, height, width = shape
    out_h, out_w = -(-height // stride), -(-width // stride)
    x = torch.randn(shape, generator=g)
    offset = torch.randn(batch, 18, out_h, out_w, generator=g) * 2.5  # many taps land outside the map
    weight = torch.randn(12, channels // groups, 3, 3, generator=g) * 0.1
    bias = torch.randn(12, generator=g)
    mask = torch.rand(batch, 9, out_h, out_w, generator=g) if with_mask else None
    results = []
    for fn in (deform_conv2d, lambda *a, **k: ops.deform_conv2d(*a[:4], stride=(stride, stride), padding=(1, 1), mask=k.get("mask"))):
        inputs = [t.clone().requires_grad_() for t in (x, offset, weight, bias)]
        out = fn(*inputs, stride=stride, mask=mask)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        results.append((out.detach(), *(t.grad for t in inputs)))
    for name, ours, reference in zip(("value", "d_x", "d_offset", "d_weight", "d_bias"), *results):
        torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-4, msg=name)
