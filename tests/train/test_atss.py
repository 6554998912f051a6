"""ATSS on hand-built cases: the mean + std rule, the centre-inside constraint, ties to the highest IoU."""

from __future__ import annotations

import torch

from vfnet.train.atss import atss_assign, level_anchors

BG = 3  # num_classes: background label


def test_anchor_is_a_square_of_8_strides_on_the_point():
    assert level_anchors(torch.tensor([[16.0, 32.0]]), 8).tolist() == [[-16.0, 0.0, 48.0, 64.0]]


def test_threshold_is_mean_plus_unbiased_std_of_the_candidates():
    # one level, stride 8, points on a row; anchors 64 px wide. The box is 64 px wide and tall.
    points = [torch.tensor([[x * 8.0, 40.0] for x in range(12)])]
    gt = torch.tensor([[40.0, 8.0, 104.0, 72.0]])  # centre (72, 40)
    labels, targets = atss_assign(points, (8,), gt, torch.tensor([1]), BG, topk=3)
    anchors = level_anchors(points[0], 8)
    from torchvision.ops import box_iou

    ious = box_iou(anchors, gt)[:, 0]
    candidates = torch.tensor([8, 9, 10])  # x = 64, 72, 80 are nearest the centre x = 72
    threshold = ious[candidates].mean() + ious[candidates].std()  # unbiased
    expected = [i for i in candidates.tolist() if ious[i] >= threshold]
    assert torch.nonzero(labels == 1).flatten().tolist() == expected == [9]
    assert targets[9].tolist() == gt[0].tolist() and (labels[labels != 1] == BG).all()


def test_candidate_centre_must_be_inside_the_box():
    # a thin box: the nearest point lies on its edge (distance 0 < 0.01), so it is not positive
    points = [torch.tensor([[0.0, 0.0], [8.0, 0.0], [16.0, 0.0]])]
    gt = torch.tensor([[8.0, -30.0, 10.0, 30.0]])
    labels, _ = atss_assign(points, (8,), gt, torch.tensor([2]), BG, topk=3)
    assert (labels == BG).all()
    gt_inside = torch.tensor([[7.0, -30.0, 10.0, 30.0]])
    labels, _ = atss_assign(points, (8,), gt_inside, torch.tensor([2]), BG, topk=1)
    assert labels.tolist() == [BG, 2, BG]


def test_point_claimed_twice_goes_to_the_higher_iou():
    points = [torch.tensor([[32.0, 32.0]])]  # one anchor [0, 0, 64, 64]
    gts = torch.tensor([[10.0, 10.0, 50.0, 50.0], [0.0, 0.0, 60.0, 62.0]])  # the second overlaps it more
    labels, targets = atss_assign(points, (8,), gts, torch.tensor([0, 1]), BG, topk=9)
    assert labels.tolist() == [1] and targets[0].tolist() == gts[1].tolist()


def test_candidates_come_from_every_level():
    points = [torch.tensor([[x * 8.0, 0.0] for x in range(20)]), torch.tensor([[x * 16.0, 0.0] for x in range(10)])]
    gt = torch.tensor([[60.0, -70.0, 196.0, 70.0]])  # large: better matched by the stride-16 anchors
    labels, _ = atss_assign(points, (8, 16), gt, torch.tensor([0]), BG, topk=2)
    positives = torch.nonzero(labels == 0).flatten().tolist()
    assert positives and all(p >= 20 for p in positives)  # only level-2 points win


def test_no_ground_truth_means_all_background():
    labels, targets = atss_assign([torch.zeros(5, 2)], (8,), torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), BG)
    assert (labels == BG).all() and (targets == 0).all()
