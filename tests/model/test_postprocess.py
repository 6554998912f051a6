"""Post-processing against a plain per-image, per-class reference loop on random head outputs."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import nms

from vfnet.model.postprocess import postprocess

STRIDES = (8, 16, 32, 64, 128)


def random_head_outputs(batch: int, num_classes: int, height: int, width: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    levels = []
    for s in STRIDES:
        h, w = -(-height // s), -(-width // s)
        logits = torch.randn(batch, num_classes, h, w, generator=g) * 2 - 1.5
        ltrb = torch.rand(batch, 4, h, w, generator=g) * 3 * s + 1  # overlapping boxes: NMS has work
        levels.append((logits, ltrb))
    return levels


def scored(levels):
    """postprocess takes the head's scores (probabilities): the IACS, sigmoid(logits)."""
    return [(logits.sigmoid(), ltrb) for logits, ltrb in levels]


def reference(levels, image_sizes, nms_pre, score_thr, iou_thr, max_det):
    """mmdetection 2.10 get_bboxes + multiclass_nms, one image and one class at a time."""
    results = []
    for b, (h_img, w_img) in enumerate(image_sizes.tolist()):
        all_boxes, all_scores = [], []
        for (logits, ltrb), s in zip(levels, STRIDES):
            h, w = logits.shape[-2:]
            scores = logits[b].sigmoid().permute(1, 2, 0).reshape(-1, logits.shape[1])
            dist = ltrb[b].permute(1, 2, 0).reshape(-1, 4)
            ys, xs = torch.meshgrid(torch.arange(h) * s, torch.arange(w) * s, indexing="ij")
            px, py = xs.reshape(-1).float(), ys.reshape(-1).float()
            if scores.shape[0] > nms_pre:
                top = scores.max(dim=1).values.topk(nms_pre).indices
                scores, dist, px, py = scores[top], dist[top], px[top], py[top]
            boxes = torch.stack([px - dist[:, 0], py - dist[:, 1], px + dist[:, 2], py + dist[:, 3]], dim=1)
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w_img)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h_img)
            all_boxes.append(boxes)
            all_scores.append(scores)
        boxes, scores = torch.cat(all_boxes), torch.cat(all_scores)
        kept = []
        for c in range(scores.shape[1]):
            mask = scores[:, c] > score_thr
            for i in nms(boxes[mask], scores[mask, c], iou_thr).tolist():
                kept.append((scores[mask, c][i].item(), c, boxes[mask][i]))
        kept.sort(key=lambda item: -item[0])
        results.append(kept[:max_det])
    return results


@pytest.mark.parametrize("max_det", [25, 1000])
def test_matches_reference_loop(max_det):
    levels = random_head_outputs(batch=3, num_classes=4, height=160, width=224, seed=1)
    image_sizes = torch.tensor([[160, 224], [150, 200], [97, 131]])
    det = postprocess(scored(levels), image_sizes, STRIDES, nms_pre=60, score_threshold=0.3, iou_threshold=0.5, max_detections=max_det)
    expected = reference(levels, image_sizes, nms_pre=60, score_thr=0.3, iou_thr=0.5, max_det=max_det)
    for b, kept in enumerate(expected):
        n = det.num_detections[b].item()
        assert n == len(kept) > 0
        assert det.scores[b, :n].tolist() == pytest.approx([k[0] for k in kept], abs=1e-6)  # sigmoid may differ by 1 ulp
        assert det.labels[b, :n].tolist() == [k[1] for k in kept]
        torch.testing.assert_close(det.boxes[b, :n], torch.stack([k[2] for k in kept]), rtol=0, atol=1e-5)
    assert (det.num_detections == max_det).any() == (max_det == 25)  # truncation really happened


def test_padding_rows():
    levels = random_head_outputs(batch=2, num_classes=3, height=64, width=64, seed=2)
    image_sizes = torch.tensor([[64, 64], [40, 30]])
    det = postprocess(scored(levels), image_sizes, STRIDES, nms_pre=1000, score_threshold=0.6, iou_threshold=0.6, max_detections=50)
    assert det.boxes.shape == (2, 50, 4) and det.scores.shape == (2, 50) and det.labels.dtype == torch.int64
    for b in range(2):
        n = det.num_detections[b].item()
        assert 0 < n < 50
        assert (det.labels[b, n:] == -1).all() and (det.scores[b, n:] == 0).all() and (det.boxes[b, n:] == 0).all()
        assert (det.labels[b, :n] >= 0).all() and (det.scores[b, :n] > 0.6).all()
        assert (det.scores[b, :n].diff() <= 0).all()  # sorted by IACS
        h, w = image_sizes[b].tolist()
        assert det.boxes[b, :n, 0::2].max() <= w and det.boxes[b, :n, 1::2].max() <= h and det.boxes[b, :n].min() >= 0


def test_no_candidates_gives_all_padding():
    levels = [(logits.fill_(-10.0), ltrb) for logits, ltrb in random_head_outputs(2, 3, 64, 64, seed=3)]
    det = postprocess(scored(levels), torch.tensor([[64, 64], [64, 64]]), STRIDES, 1000, 0.05, 0.6, 100)
    assert det.num_detections.tolist() == [0, 0] and (det.labels == -1).all()
