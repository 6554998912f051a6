"""Localisation quality without labels: per class, the distribution of each image's best score and
of its count of detections, as Prometheus histograms.

VFNet's score (the IACS) is trained to be the IoU of the box with the object of its class (0 where
there is none), so where the images look like the training set, the best score of a class in an
image estimates how well the model localises that class; a falling distribution means the model
localises worse, or sees other images. It is no accuracy measurement: it is calibrated only on the
training distribution, and it cannot see objects the model missed (see the README, "Localisation
quality without labels").

What is recorded, per image and per class with at least one detection scoring above the server's
default score threshold (`default_score_threshold`, strictly above, as /detect filters):

    vfnet_top_score{class_name}             the best score of that class in the image
    vfnet_detections_per_image{class_name}  how many of its detections score above the threshold

Both are computed on the image's detections as the model returned them, before the request's own
filters (score threshold, classes, max_detections), so what a client asks does not change them.
The NMS IoU threshold is inside the model: a request that sets its own changes which boxes survive,
but never the best box of a class (class-aware NMS keeps it), so such images add to `top_score` but
not to `detections_per_image`, which counts only images under the model's default NMS.
Absent classes are not observed as zeros: the series of a class appear with its first detection
(at most classes x buckets series, class names from the model, never from a client), and the share
of images with a class is rate(vfnet_top_score_count{class_name="c"}) / rate(vfnet_images_total).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Histogram

from vfnet.server.runtime import DetectionResult

TOP_SCORE_BUCKETS = tuple(round(0.30 + 0.05 * i, 2) for i in range(15))  # 0.30, 0.35, ..., 1.00: IoU-like steps
COUNT_BUCKETS = (1, 2, 3, 4, 5, 7, 10, 15, 20, 30, 50, 100)

SCORE_MEANINGS = {
    "iacs": (
        "IACS, VFNet's IoU-aware classification score: trained to equal the IoU of the box with the object of its class "
        "it covers (0 where there is none), so it estimates class confidence and localisation quality at once; "
        "calibrated on the training distribution"
    ),
    "cls_x_centerness": (
        "sigmoid(class logit) x sigmoid(centerness), the FCOS/ATSS ranking of the ablation's variant: "
        "not trained to equal an IoU, so its level says less about localisation quality than the IACS"
    ),
}
QUALITY_METRICS = (
    "GET /metrics: vfnet_top_score{class_name} (each image's best score per detected class, buckets 0.30..1.00 "
    "in 0.05 steps) and vfnet_detections_per_image{class_name} (its detections above the default score threshold), "
    "recorded before each request's own filters; see the README, 'Localisation quality without labels'"
)


def class_summary(result: DetectionResult, threshold: float) -> dict[str, tuple[float, int]]:
    """class name -> (best score, count) of the image's detections scoring strictly above
    `threshold`; classes without such a detection are absent."""
    summary: dict[str, tuple[float, int]] = {}
    above = result.scores > threshold  # in the scores' float32, exactly as Detector.select filters
    for score, name in zip(result.scores[above].tolist(), [n for n, keep in zip(result.class_names, above) if keep]):
        best, count = summary.get(name, (score, 0))
        summary[name] = (max(best, score), count + 1)
    return summary


@dataclass(frozen=True)
class QualityMetrics:
    """The two histograms of one registry; `record` observes a request's images."""

    top_score: Histogram
    detections_per_image: Histogram

    @classmethod
    def register(cls, registry: CollectorRegistry) -> QualityMetrics:
        return cls(
            top_score=Histogram(
                "vfnet_top_score",
                "Each image's best score (IACS) per class detected above the default score threshold, before request filters",
                ["class_name"],
                buckets=TOP_SCORE_BUCKETS,
                registry=registry,
            ),
            detections_per_image=Histogram(
                "vfnet_detections_per_image",
                "Detections per image of each class detected, above the default score threshold, before request filters (default NMS only)",
                ["class_name"],
                buckets=COUNT_BUCKETS,
                registry=registry,
            ),
        )

    def record(self, results: Iterable[DetectionResult], threshold: float, counts: bool = True) -> None:
        """Observe each image's per-class best score, and, when `counts`, its per-class count
        (pass counts=False for images whose NMS ran at a request's own IoU threshold)."""
        for result in results:
            for name, (best, count) in class_summary(result, threshold).items():
                self.top_score.labels(name).observe(best)
                if counts:
                    self.detections_per_image.labels(name).observe(count)
