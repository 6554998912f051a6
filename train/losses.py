"""VFNet's training losses: Varifocal Loss on the IACS, IoU-weighted GIoU on both boxes.

Over all points of a batch (P), with positives from ATSS:

    loss_cls     = sum VFL(logits, q) / num_pos,       q[pos, gt class] = IoU(refined box, gt), else 0
    loss_bbox    = 1.5 * sum w_ini * (1 - GIoU(initial, gt)) / max(sum w_ini, 1),  w_ini = IoU(initial, gt)
    loss_bbox_rf = 2.0 * sum w_rf  * (1 - GIoU(refined, gt)) / max(sum w_rf, 1),   w_rf  = IoU(refined, gt)

IoU weights and targets are detached (and at least 1e-6); the VFL weight is not. The ablation's
alternative `focal_cls_loss` uses binary targets (torchvision's sigmoid focal loss, alpha 0.25,
gamma 2): no IoU in the target, no centerness. Boxes are xyxy in input pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss


def varifocal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.75, gamma: float = 2.0) -> torch.Tensor:
    """Element-wise VFL (Zhang et al., CVPR 2021). logits and target (IoU-aware, in [0, 1]) [P, C].

    Positives (q > 0) are weighted by q; negatives by alpha * p^gamma (p = sigmoid(logit)), which
    down-weights easy negatives only. Returns [P, C] (not reduced).
    """
    p = logits.sigmoid()
    weight = torch.where(target > 0, target, alpha * (p - target).abs().pow(gamma))
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none") * weight


def aligned_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """IoU of boxes1[i] with boxes2[i]: [N, 4] xyxy each -> [N]."""
    lt = torch.maximum(boxes1[:, :2], boxes2[:, :2])
    rb = torch.minimum(boxes1[:, 2:], boxes2[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=1)
    area1 = (boxes1[:, 2:] - boxes1[:, :2]).prod(dim=1)
    area2 = (boxes2[:, 2:] - boxes2[:, :2]).prod(dim=1)
    return inter / (area1 + area2 - inter).clamp(min=1e-6)


def weighted_giou_loss(boxes: torch.Tensor, targets: torch.Tensor, weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """IoU-weighted GIoU loss and the detached IoUs (>= 1e-6) used as weights."""
    ious = aligned_iou(boxes, targets).clamp(min=1e-6).detach()
    loss = (ious * generalized_box_iou_loss(boxes, targets, reduction="none")).sum() / ious.sum().clamp(min=1.0)
    return weight * loss, ious


def focal_cls_loss(logits: torch.Tensor, labels: torch.Tensor, num_pos: float) -> torch.Tensor:
    """The ablation's baseline: sigmoid focal loss with binary one-hot targets, / num_pos."""
    target = F.one_hot(labels, logits.shape[1] + 1)[:, :-1].to(logits.dtype)  # background -> all zeros
    return sigmoid_focal_loss(logits, target, alpha=0.25, gamma=2.0, reduction="sum") / num_pos


def vfnet_losses(
    cls_logits: torch.Tensor,
    bbox_init: torch.Tensor,
    bbox_refine: torch.Tensor,
    points: torch.Tensor,
    labels: torch.Tensor,
    targets: torch.Tensor,
    cls_loss: str = "varifocal",
) -> dict[str, torch.Tensor]:
    """Flattened over the batch: cls_logits [P, C], bbox_init / bbox_refine [P, 4] (l, t, r, b),
    points [P, 2] (x, y), labels [P] (C = background), targets [P, 4] xyxy ground truth.
    cls_loss: "varifocal" (VFNet) or "focal" (the ablation's binary-target baseline)."""
    cls_logits, bbox_init, bbox_refine = cls_logits.float(), bbox_init.float(), bbox_refine.float()  # losses in float32
    num_classes = cls_logits.shape[1]
    pos = torch.nonzero(labels < num_classes).squeeze(1)
    num_pos = max(float(pos.numel()), 1.0)

    def decode(distances: torch.Tensor) -> torch.Tensor:
        xy = points[pos]
        return torch.cat([xy - distances[pos, :2], xy + distances[pos, 2:]], dim=1)

    if pos.numel() > 0:
        loss_bbox, _ = weighted_giou_loss(decode(bbox_init), targets[pos], 1.5)
        loss_bbox_rf, iou_refine = weighted_giou_loss(decode(bbox_refine), targets[pos], 2.0)
    else:  # keep the graph connected, with zero value
        loss_bbox, loss_bbox_rf = bbox_init.sum() * 0, bbox_refine.sum() * 0
        iou_refine = cls_logits.new_zeros(0)

    if cls_loss == "varifocal":
        quality = torch.zeros_like(cls_logits)
        quality[pos, labels[pos]] = iou_refine  # IoU of the refined box: the IACS target
        loss_cls = varifocal_loss(cls_logits, quality).sum() / num_pos
    elif cls_loss == "focal":
        loss_cls = focal_cls_loss(cls_logits, labels, num_pos)
    else:
        raise ValueError(f"cls_loss must be 'varifocal' or 'focal', got {cls_loss!r}")
    return {"loss_cls": loss_cls, "loss_bbox": loss_bbox, "loss_bbox_rf": loss_bbox_rf}
