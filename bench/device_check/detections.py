"""Two models' detections compared: one to one, the same label, IoU >= 0.99 and scores within 1e-3,
excused only where a cut (the score threshold, a full top-K) may drop one on either side."""

from __future__ import annotations

IOU_AT_LEAST, SCORE_WITHIN = 0.99, 1e-3


def box_iou(a, b):
    """IoU of xyxy boxes a [N, 4] and b [M, 4] -> [N, M]; two empty boxes within 1e-3 px count as 1."""
    import numpy as np

    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)

    def area(x):
        return np.clip(x[:, 2] - x[:, 0], 0, None) * np.clip(x[:, 3] - x[:, 1], 0, None)

    top_left, bottom_right = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    union = area(a)[:, None] + area(b)[None, :] - inter
    same = (np.abs(a[:, None, :] - b[None, :, :]).max(axis=2) <= 1e-3).astype(np.float64)
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), same)


def match_detections(
    got, want, score_threshold: float | None = None, limit: int | None = None, iou_at_least: float = IOU_AT_LEAST, score_within: float = SCORE_WITHIN
) -> dict:
    """got, want: (boxes [N, 4] xyxy, scores [N], labels [N]), best first. Matches them one to one: the
    same label, IoU >= iou_at_least, |score difference| <= score_within, each with the nearest free index
    (so the order may differ only among scores that close). Passes when every detection is matched,
    except one that a cut may have dropped from the other side: within score_within of the model's
    score_threshold, or, where the other side holds `limit` detections (its top-K is full), within
    score_within of the other side's lowest score."""
    import numpy as np

    (boxes_a, scores_a, labels_a), (boxes_b, scores_b, labels_b) = ([np.asarray(x) for x in side] for side in (got, want))
    iou = box_iou(boxes_a, boxes_b)
    difference = np.abs(scores_a.astype(np.float64)[:, None] - scores_b.astype(np.float64)[None, :])
    fits = (labels_a[:, None] == labels_b[None, :]) & (difference <= score_within) & (iou >= iou_at_least)
    free, pairs, lonely_a = set(range(len(scores_b))), [], []
    for i in range(len(scores_a)):
        j = min((j for j in free if fits[i, j]), key=lambda j: abs(i - j), default=None)
        if j is None:
            lonely_a.append(i)
        else:
            free.remove(j)
            pairs.append((i, j))
    lonely_b = sorted(free)

    def excused(score: float, other) -> bool:
        near_threshold = score_threshold is not None and score <= score_threshold + score_within
        near_top_k = limit is not None and len(other) >= limit and score <= float(np.min(other)) + score_within
        return near_threshold or near_top_k

    excuses = [excused(float(scores_a[i]), scores_b) for i in lonely_a] + [excused(float(scores_b[j]), scores_a) for j in lonely_b]
    return {
        "count": [len(scores_a), len(scores_b)],
        "matched": len(pairs),
        "unmatched": [len(lonely_a), len(lonely_b)],
        "min_iou": min((float(iou[i, j]) for i, j in pairs), default=1.0),
        "max_score_difference": max((float(difference[i, j]) for i, j in pairs), default=0.0),
        "labels_in_order": len(labels_a) == len(labels_b) and bool((labels_a == labels_b).all()),
        "passed": all(excuses),
    }


def describe_matches(matches: list[dict]) -> str:
    count = sum(m["count"][0] for m in matches)
    unmatched = sum(sum(m["unmatched"]) for m in matches)
    iou = min((m["min_iou"] for m in matches), default=1.0)
    score = max((m["max_score_difference"] for m in matches), default=0.0)
    in_order = sum(m["labels_in_order"] for m in matches)
    return (
        f"{len(matches)} images, {count} detections: min IoU {iou:.4f}, max |dscore| {score:.1e}, labels in the same order in "
        f"{in_order}/{len(matches)} images, {unmatched} unmatched (allowed only at the score threshold or a full top-K)"
    )


def detections_of(result) -> tuple:
    """(boxes, scores, labels) of a runtime DetectionResult."""
    return result.boxes, result.scores, result.labels
