"""ATSS assignment (Zhang et al., CVPR 2020) as VFNet trains with it (mmdetection ATSSAssigner, topk 9).

Each point (x, y) = (j * s, i * s) of a level with stride s carries one square anchor of side 8 * s
centred on it. For every ground-truth box:

1. on each level, the `topk` anchors whose centres are closest (L2) to the box centre are candidates;
2. threshold = mean + standard deviation (unbiased) of the candidates' IoUs with the box;
3. a candidate is positive if its IoU >= threshold and its centre lies strictly inside the box
   (min of the l, t, r, b distances > 0.01);
4. a point claimed by several boxes goes to the one with the highest IoU.

Boxes are xyxy in input pixels.
"""

from __future__ import annotations

import torch
from torchvision.ops import box_iou


def level_anchors(points: torch.Tensor, stride: int, octave_scale: int = 8) -> torch.Tensor:
    """Square anchors [P, 4] xyxy of side octave_scale * stride centred on points [P, 2] (x, y)."""
    half = octave_scale * stride / 2
    return torch.cat([points - half, points + half], dim=1)


def atss_assign(
    points_per_level: list[torch.Tensor],
    strides: tuple[int, ...],
    gt_boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    num_classes: int,
    topk: int = 9,
) -> tuple[torch.Tensor, torch.Tensor]:
    """-> labels [P] (num_classes = background) and target boxes [P, 4] xyxy (the assigned ground
    truth; zeros for background), over the points of all levels concatenated.

    points_per_level: [P_l, 2] (x, y) per level; gt_boxes [G, 4] xyxy; gt_labels [G].
    """
    points = torch.cat(points_per_level)  # [P, 2]
    num_points = points.shape[0]
    labels = torch.full((num_points,), num_classes, dtype=torch.int64, device=points.device)
    targets = torch.zeros(num_points, 4, device=points.device)
    if gt_boxes.numel() == 0:
        return labels, targets

    anchors = torch.cat([level_anchors(p, s) for p, s in zip(points_per_level, strides)])  # [P, 4]
    ious = box_iou(anchors, gt_boxes)  # [P, G]
    gt_centres = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2  # [G, 2]
    distances = torch.cdist(points, gt_centres)  # [P, G]

    candidates = []
    start = 0
    for level_points in points_per_level:
        end = start + level_points.shape[0]
        k = min(topk, end - start)
        candidates.append(distances[start:end].topk(k, dim=0, largest=False).indices + start)  # [k, G]
        start = end
    candidates = torch.cat(candidates)  # [K, G]: up to topk per level for each box

    candidate_ious = ious.gather(0, candidates)  # [K, G]
    # [G]; unbiased std, taken as 0 when there is a single candidate (torch.std would give NaN)
    spread = candidate_ious.std(dim=0) if candidate_ious.shape[0] > 1 else torch.zeros_like(candidate_ious[0])
    threshold = candidate_ious.mean(dim=0) + spread
    x, y = points[candidates, 0], points[candidates, 1]  # [K, G] each
    inside = torch.stack([x - gt_boxes[:, 0], y - gt_boxes[:, 1], gt_boxes[:, 2] - x, gt_boxes[:, 3] - y], dim=-1).amin(dim=-1) > 0.01  # [K, G]
    positive = (candidate_ious >= threshold) & inside  # [K, G]

    # IoU of each (point, box) pair that survived; -1 elsewhere. The best box per point wins.
    claimed = torch.full_like(ious, -1.0)
    gt_index = torch.arange(gt_boxes.shape[0], device=points.device).expand_as(candidates)
    claimed[candidates[positive], gt_index[positive]] = candidate_ious[positive]
    best_iou, best_gt = claimed.max(dim=1)  # [P]
    assigned = best_iou > -1.0
    labels[assigned] = gt_labels[best_gt[assigned]]
    targets[assigned] = gt_boxes[best_gt[assigned]]
    return labels, targets
