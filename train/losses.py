"""VFNet's training losses: Varifocal Loss on the IACS, IoU-weighted GIoU on both boxes.

Over all points of a batch (P), with positives from ATSS:

    loss_cls     = sum VFL(logits, q) / num_pos,       q[pos, gt class] = IoU(refined box, gt), else 0
    loss_bbox    = 1.5 * sum w_ini * (1 - GIoU(initial, gt)) / max(sum w_ini, 1),  w_ini = IoU(initial, gt)
    loss_bbox_rf = 2.0 * sum w_rf  * (1 - GIoU(refined, gt)) / max(sum w_rf, 1),   w_rf  = IoU(refined, gt)

IoU weights and targets are detached (and at least 1e-6); the VFL weight is not. The ablation's
alternative `focal_cls_loss` uses binary targets (torchvision's sigmoid focal loss, alpha 0.25,
gamma 2): no IoU in the target. Its heads without refinement or with a centerness branch change
the box terms (see `vfnet_losses`). Boxes are xyxy in input pixels.
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


def weighted_giou_loss(boxes: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, loss_weight: float) -> torch.Tensor:
    """loss_weight * sum w * (1 - GIoU(boxes, targets)) / max(sum w, 1): boxes, targets [N, 4] xyxy, weights [N]."""
    return loss_weight * (weights * generalized_box_iou_loss(boxes, targets, reduction="none")).sum() / weights.sum().clamp(min=1.0)


def centerness_target(points: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """FCOS's centerness of points [N, 2] (x, y) inside their boxes targets [N, 4] xyxy -> [N] in [0, 1]:
    sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b)), with (l, t, r, b) the distances to the edges."""
    left_right = torch.stack([points[:, 0] - targets[:, 0], targets[:, 2] - points[:, 0]], dim=1)  # [N, 2]
    top_bottom = torch.stack([points[:, 1] - targets[:, 1], targets[:, 3] - points[:, 1]], dim=1)  # [N, 2]
    ratio = (left_right.amin(1) / left_right.amax(1)) * (top_bottom.amin(1) / top_bottom.amax(1))
    return ratio.clamp(min=0).sqrt()


def focal_cls_loss(logits: torch.Tensor, labels: torch.Tensor, num_pos: float) -> torch.Tensor:
    """The ablation's baseline: sigmoid focal loss with binary one-hot targets, / num_pos."""
    target = F.one_hot(labels, logits.shape[1] + 1)[:, :-1].to(logits.dtype)  # background -> all zeros
    return sigmoid_focal_loss(logits, target, alpha=0.25, gamma=2.0, reduction="sum") / num_pos


def vfnet_losses(
    cls_logits: torch.Tensor,
    bbox_init: torch.Tensor,
    bbox_refine: torch.Tensor | None,
    points: torch.Tensor,
    labels: torch.Tensor,
    targets: torch.Tensor,
    cls_loss: str = "varifocal",
    centerness: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Flattened over the batch: cls_logits [P, C], bbox_init / bbox_refine [P, 4] (l, t, r, b),
    points [P, 2] (x, y), labels [P] (C = background), targets [P, 4] xyxy ground truth.
    cls_loss: "varifocal" (VFNet) or "focal" (the ablation's binary-target baseline).

    The ablation's heads (model/head.py):
    - bbox_refine None (no refinement): the IACS target is the IoU of the initial box and there is
      no loss_bbox_rf;
    - centerness [P] logits (the FCOS/ATSS design): loss_centerness = sum BCE(centerness, its target)
      over positives / num_pos, and the initial box's loss is ATSS's, 2.0 * GIoU weighted by the
      centerness target instead of 1.5 * GIoU weighted by the IoU.
    """
    cls_logits, bbox_init = cls_logits.float(), bbox_init.float()  # losses in float32
    num_classes = cls_logits.shape[1]
    pos = torch.nonzero(labels < num_classes).squeeze(1)
    num_pos = max(float(pos.numel()), 1.0)

    def decode(distances: torch.Tensor) -> torch.Tensor:
        xy = points[pos]
        return torch.cat([xy - distances[pos, :2], xy + distances[pos, 2:]], dim=1)

    def iou_weights(distances: torch.Tensor) -> torch.Tensor:
        return aligned_iou(decode(distances), targets[pos]).clamp(min=1e-6).detach()  # [num_pos]

    losses = {}
    iou_init = iou_weights(bbox_init)
    if centerness is None:
        losses["loss_bbox"] = weighted_giou_loss(decode(bbox_init), targets[pos], iou_init, 1.5)
    else:
        centerness_targets = centerness_target(points[pos], targets[pos])  # [num_pos]
        losses["loss_bbox"] = weighted_giou_loss(decode(bbox_init), targets[pos], centerness_targets, 2.0)
        bce = F.binary_cross_entropy_with_logits(centerness.float()[pos], centerness_targets, reduction="sum")
        losses["loss_centerness"] = bce / num_pos
    if bbox_refine is None:
        quality = iou_init  # the IACS target: IoU of the final box, here the initial one
    else:
        quality = iou_weights(bbox_refine.float())
        losses["loss_bbox_rf"] = weighted_giou_loss(decode(bbox_refine.float()), targets[pos], quality, 2.0)

    if cls_loss == "varifocal":
        q = torch.zeros_like(cls_logits)
        q[pos, labels[pos]] = quality
        losses["loss_cls"] = varifocal_loss(cls_logits, q).sum() / num_pos
    elif cls_loss == "focal":
        losses["loss_cls"] = focal_cls_loss(cls_logits, labels, num_pos)
    else:
        raise ValueError(f"cls_loss must be 'varifocal' or 'focal', got {cls_loss!r}")
    return losses
