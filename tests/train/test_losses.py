"""Varifocal Loss against a hand computation, its weighting, and GIoU against torchvision."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import generalized_box_iou

from vfnet.train.losses import aligned_iou, centerness_target, varifocal_loss, vfnet_losses, weighted_giou_loss


def bce(p: float, q: float) -> float:
    return -(q * math.log(p) + (1 - q) * math.log(1 - p))


def test_vfl_matches_hand_computation():
    logits = torch.tensor([[0.3, -1.2], [2.0, 0.5]])
    target = torch.tensor([[0.0, 0.7], [0.0, 0.0]])
    p = [[1 / (1 + math.exp(-v)) for v in row] for row in logits.tolist()]
    expected = [
        [0.75 * p[0][0] ** 2 * bce(p[0][0], 0.0), 0.7 * bce(p[0][1], 0.7)],  # negative, positive
        [0.75 * p[1][0] ** 2 * bce(p[1][0], 0.0), 0.75 * p[1][1] ** 2 * bce(p[1][1], 0.0)],
    ]
    torch.testing.assert_close(varifocal_loss(logits, target), torch.tensor(expected), rtol=1e-6, atol=1e-7)


def test_vfl_weighting_is_asymmetric():
    """Negatives are scaled by alpha * p^gamma (easy ones vanish); positives by their target q."""
    logits = torch.tensor([[-4.0, 4.0]])
    neg = varifocal_loss(logits, torch.zeros(1, 2))[0]
    p = torch.sigmoid(logits[0])
    torch.testing.assert_close(neg / torch.nn.functional.binary_cross_entropy_with_logits(logits[0], torch.zeros(2), reduction="none"), 0.75 * p**2)
    pos_low = varifocal_loss(torch.tensor([[1.0]]), torch.tensor([[0.2]]))
    pos_high = varifocal_loss(torch.tensor([[1.0]]), torch.tensor([[0.9]]))
    bce_low = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor(1.0), torch.tensor(0.2))
    torch.testing.assert_close(pos_low[0, 0], 0.2 * bce_low)
    assert pos_high[0, 0] / 0.9 != pos_low[0, 0] / 0.2  # different targets, different BCE, each weighted by q


def test_vfl_weight_is_not_detached():
    logits = torch.tensor([[1.5]], requires_grad=True)
    varifocal_loss(logits, torch.zeros(1, 1)).sum().backward()
    p = torch.sigmoid(torch.tensor(1.5))
    # d/dx [0.75 p^2 * -log(1-p)] = 0.75 * (2 p^2 (1-p) * -log(1-p) + p^2 * p)
    expected = 0.75 * (2 * p**2 * (1 - p) * -torch.log(1 - p) + p**3)
    torch.testing.assert_close(logits.grad[0, 0], expected)


def test_giou_matches_torchvision_and_is_weighted():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 25.0, 15.0], [0.0, 0.0, 4.0, 4.0]])
    targets = torch.tensor([[2.0, 2.0, 12.0, 12.0], [5.0, 5.0, 25.0, 15.0], [10.0, 10.0, 14.0, 14.0]])
    giou = generalized_box_iou(boxes, targets).diagonal()
    ious = aligned_iou(boxes, targets)
    torch.testing.assert_close(ious, torch.tensor([64 / 136, 1.0, 0.0]))
    weights = ious.clamp(min=1e-6)
    loss = weighted_giou_loss(boxes, targets, weights, loss_weight=1.5)
    expected = 1.5 * (weights * (1 - giou)).sum() / max(weights.sum().item(), 1.0)
    torch.testing.assert_close(loss, expected)


def test_vfnet_losses_targets_use_the_refined_box_iou():
    points = torch.tensor([[10.0, 10.0], [50.0, 50.0]])
    labels = torch.tensor([1, 2])  # 2 classes: label 2 is background
    targets = torch.tensor([[0.0, 0.0, 20.0, 20.0], [0.0, 0.0, 0.0, 0.0]])
    init = torch.tensor([[5.0, 5.0, 5.0, 5.0], [1.0, 1.0, 1.0, 1.0]])  # box [5, 5, 15, 15]: IoU 0.25
    refine = torch.tensor([[10.0, 10.0, 8.0, 8.0], [1.0, 1.0, 1.0, 1.0]])  # box [0, 0, 18, 18]: IoU 0.81
    logits = torch.zeros(2, 2, requires_grad=True)
    losses = vfnet_losses(logits, init, refine, points, labels, targets)
    q = torch.tensor([[0.0, 0.81], [0.0, 0.0]])
    torch.testing.assert_close(losses["loss_cls"], varifocal_loss(logits, q).sum() / 1)
    # one positive: weight w = IoU, divided by max(sum w, 1) = 1; GIoU = IoU for nested boxes
    assert losses["loss_bbox"].item() == pytest.approx(1.5 * 0.25 * (1 - 0.25))
    assert losses["loss_bbox_rf"].item() == pytest.approx(2.0 * 0.81 * (1 - 0.81))


def test_focal_baseline_uses_binary_targets():
    from torchvision.ops import sigmoid_focal_loss

    points, labels = torch.tensor([[10.0, 10.0]]), torch.tensor([0])
    targets = torch.tensor([[0.0, 0.0, 20.0, 20.0]])
    box = torch.tensor([[5.0, 5.0, 5.0, 5.0]])
    logits = torch.tensor([[0.2, -0.4]])
    losses = vfnet_losses(logits, box, box, points, labels, targets, cls_loss="focal")
    expected = sigmoid_focal_loss(logits, torch.tensor([[1.0, 0.0]]), alpha=0.25, gamma=2.0, reduction="sum")
    torch.testing.assert_close(losses["loss_cls"], expected)


def test_centerness_target_by_hand():
    points = torch.tensor([[10.0, 10.0], [5.0, 30.0], [10.0, 20.0]])
    boxes = torch.tensor([[0.0, 0.0, 20.0, 40.0]]).expand(3, 4)
    # (l, r, t, b) = (10, 10, 10, 30): sqrt(1 * 1/3); (5, 15, 30, 10): sqrt(1/3 * 1/3); the centre: 1
    torch.testing.assert_close(centerness_target(points, boxes), torch.tensor([math.sqrt(1 / 3), 1 / 3, 1.0]))


def test_centerness_losses_by_hand():
    """The FCOS/ATSS design: BCE on the centerness target over positives, and the box loss weighted
    by that target (ATSS's 2.0 * GIoU), no refinement term."""
    points = torch.tensor([[10.0, 10.0], [50.0, 50.0]])
    labels = torch.tensor([1, 2])  # 2 classes: the second point is background
    targets = torch.tensor([[0.0, 0.0, 20.0, 40.0], [0.0, 0.0, 0.0, 0.0]])
    init = torch.tensor([[5.0, 5.0, 5.0, 25.0], [1.0, 1.0, 1.0, 1.0]])  # box [5, 5, 15, 35]: IoU 300/800
    centerness = torch.tensor([0.0, 3.0])  # the background point's logit must not count
    logits = torch.zeros(2, 2)
    losses = vfnet_losses(logits, init, None, points, labels, targets, cls_loss="focal", centerness=centerness)
    assert set(losses) == {"loss_cls", "loss_bbox", "loss_centerness"}
    target = math.sqrt(1 / 3)  # the point's centerness in its box (test above)
    assert losses["loss_centerness"].item() == pytest.approx(math.log(2))  # BCE of logit 0, any target
    # one positive, weight = centerness target < 1, divided by max(sum, 1) = 1; GIoU = IoU (nested)
    assert losses["loss_bbox"].item() == pytest.approx(2.0 * target * (1 - 300 / 800))


def test_without_refinement_the_iacs_target_is_the_initial_box_iou():
    points = torch.tensor([[10.0, 10.0]])
    labels, targets = torch.tensor([1]), torch.tensor([[0.0, 0.0, 20.0, 20.0]])
    init = torch.tensor([[5.0, 5.0, 5.0, 5.0]])  # box [5, 5, 15, 15]: IoU 0.25
    logits = torch.zeros(1, 2)
    losses = vfnet_losses(logits, init, None, points, labels, targets)
    assert set(losses) == {"loss_cls", "loss_bbox"}
    torch.testing.assert_close(losses["loss_cls"], varifocal_loss(logits, torch.tensor([[0.0, 0.25]])).sum())
    assert losses["loss_bbox"].item() == pytest.approx(1.5 * 0.25 * (1 - 0.25))
