"""Test-time post-processing: head outputs -> padded, IACS-ranked detections.

The order is the official mmdetection 2.10 one (VFNetHead.get_bboxes + multiclass_nms):

1. per level, take the head's scores (`LevelOutputs.scores`: IACS = sigmoid(logits); times
   sigmoid(centerness) for the ablation's centerness variant); keep the `nms_pre` locations with the
   highest max-over-classes score (before any threshold); decode the final (refined) (l, t, r, b)
   boxes at points (j*s, i*s); clamp to each image's content size (h, w);
2. over all levels, keep every (box, class) pair with score > `score_threshold` (strict);
3. class-aware NMS (`torchvision.ops.batched_nms`), suppressing IoU > `iou_threshold`;
4. keep the best `max_detections` per image, sorted by score, padded to that length.

Differences from the official code, on purpose:
- NMS runs in resized-image pixels; mmdetection 2.10 first divides boxes by the (w, h) scale
  factors. IoU changes by the few-ppm difference between the two axis factors.
- mmdetection 3.x (and 2.18+) differs itself: per level it first keeps pairs with score > 0.05,
  then the top 1000 *pairs* (not locations), and it drops boxes of zero width or height before NMS.
  Expect slightly different detections when comparing against 3.x.

The NMS step is the custom op `vfnet::multiclass_nms` so that exporters can map it to their own
NMS (ONNX NonMaxSuppression, TensorRT INMSLayer); in PyTorch it runs `batched_nms`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torchvision.ops import batched_nms

from .boxes import clamp_to_size, distance2bbox, level_points


class Detections(NamedTuple):
    """Padded detections for a batch (K = max_detections).

    boxes [B, K, 4] float32 xyxy in resized-image pixels; scores [B, K] float32 (the IACS);
    labels [B, K] int64 class index; num_detections [B] int64. Rows at and past num_detections[b]
    are padding: boxes and scores 0, labels -1.
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    num_detections: torch.Tensor


def top_candidates(level_scores: torch.Tensor, bbox_pred: torch.Tensor, stride: int, nms_pre: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One level's candidates: the `nms_pre` locations with the highest max-over-classes score.

    level_scores [B, C, h, w] (probabilities, e.g. the IACS), bbox_pred [B, 4, h, w] (l, t, r, b) ->
    boxes [B, k, 4] xyxy (not clamped) and scores [B, k, C], k = min(nms_pre, h * w); float32
    whatever the head computed in.
    """
    batch, num_classes, height, width = level_scores.shape
    scores = level_scores.float().permute(0, 2, 3, 1).reshape(batch, height * width, num_classes)  # [B, hw, C]
    distances = bbox_pred.float().permute(0, 2, 3, 1).reshape(batch, height * width, 4)  # [B, hw, 4]
    points = level_points(height, width, stride, device=level_scores.device)  # [hw, 2]
    k = torch.sym_min(nms_pre, height * width)
    top = scores.max(dim=2).values.topk(k, dim=1).indices  # [B, k]
    scores = scores.gather(1, top[:, :, None].expand(-1, -1, num_classes))  # [B, k, C]
    distances = distances.gather(1, top[:, :, None].expand(-1, -1, 4))  # [B, k, 4]
    return distance2bbox(points[top], distances), scores


@torch.library.custom_op("vfnet::multiclass_nms", mutates_args=())
def multiclass_nms(
    boxes: torch.Tensor, scores: torch.Tensor, score_threshold: float, iou_threshold: torch.Tensor, max_detections: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Class-aware NMS per image, returning padded `Detections` fields.

    boxes [B, N, 4] xyxy, scores [B, N, C], iou_threshold [1] -> boxes [B, K, 4], scores [B, K],
    labels [B, K] (-1 pads), num_detections [B], with K = max_detections. Candidates are the
    (box, class) pairs with score > score_threshold; images and classes never suppress each other.
    The IoU threshold is a tensor so that exported graphs take it as an input.
    """
    batch, _, num_classes = scores.shape
    image, box, label = torch.nonzero(scores > score_threshold, as_tuple=True)  # [M] each
    cand_boxes, cand_scores = boxes[image, box], scores[image, box, label]  # [M, 4], [M]
    keep = batched_nms(cand_boxes, cand_scores, image * num_classes + label, float(iou_threshold))  # by score
    keep = keep[torch.sort(image[keep], stable=True).indices]  # group by image, keep score order
    kept_image = image[keep]
    counts = torch.bincount(kept_image, minlength=batch)  # [B]
    rank = torch.arange(keep.numel(), device=boxes.device) - (counts.cumsum(0) - counts)[kept_image]
    within = rank < max_detections
    keep, kept_image, rank = keep[within], kept_image[within], rank[within]

    out_boxes = boxes.new_zeros(batch, max_detections, 4)
    out_scores = scores.new_zeros(batch, max_detections)
    out_labels = torch.full((batch, max_detections), -1, dtype=torch.int64, device=boxes.device)
    out_boxes[kept_image, rank] = cand_boxes[keep]
    out_scores[kept_image, rank] = cand_scores[keep]
    out_labels[kept_image, rank] = label[keep]
    return out_boxes, out_scores, out_labels, counts.clamp(max=max_detections)


@multiclass_nms.register_fake
def _(boxes, scores, score_threshold, iou_threshold, max_detections):
    batch = boxes.shape[0]
    return (
        boxes.new_empty(batch, max_detections, 4),
        scores.new_empty(batch, max_detections),
        torch.empty(batch, max_detections, dtype=torch.int64, device=boxes.device),
        torch.empty(batch, dtype=torch.int64, device=boxes.device),
    )


def candidates(
    level_outputs: list[tuple[torch.Tensor, torch.Tensor]], image_sizes: torch.Tensor, strides: tuple[int, ...], nms_pre: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 1 and 2's input: every level's `top_candidates`, concatenated, boxes clamped to each
    image's content (h, w) -> boxes [B, N, 4] xyxy and scores [B, N, C], N = sum of the levels' k."""
    per_level = [top_candidates(scores, bbox, s, nms_pre) for (scores, bbox), s in zip(level_outputs, strides)]
    boxes = clamp_to_size(torch.cat([b for b, _ in per_level], dim=1), image_sizes)  # [B, N, 4]
    scores = torch.cat([s for _, s in per_level], dim=1)  # [B, N, C]
    return boxes, scores


def postprocess(
    level_outputs: list[tuple[torch.Tensor, torch.Tensor]],
    image_sizes: torch.Tensor,
    strides: tuple[int, ...],
    nms_pre: int,
    score_threshold: float,
    iou_threshold: float | torch.Tensor,
    max_detections: int,
) -> Detections:
    """Per-level (scores [B, C, h, w] probabilities, final boxes [B, 4, h, w] (l, t, r, b)) -> padded `Detections`.

    image_sizes [B, 2] holds each image's content (h, w) in input pixels; boxes are clamped to it.
    iou_threshold is a float or a float32 tensor of shape [1].
    """
    boxes, scores = candidates(level_outputs, image_sizes, strides, nms_pre)
    if not isinstance(iou_threshold, torch.Tensor):
        iou_threshold = torch.tensor([iou_threshold], dtype=torch.float32)
    return Detections(*multiclass_nms(boxes, scores, score_threshold, iou_threshold, max_detections))
