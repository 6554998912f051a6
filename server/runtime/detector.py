"""Detector: decoded images -> one backend call -> detections in original-image pixels.

The pipeline is split so that the HTTP service can run each step where it belongs:
`decode` (per request, in a worker thread), `infer` (one backend call for a batch gathered across
requests), `select` (per request filters). `detect` composes the three for library users.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .images import DEFAULT_MAX_PIXELS, decode_image, make_batch
from .model_info import ModelInfo

ImageInput = bytes | Image.Image | np.ndarray


@dataclass(frozen=True)
class DetectionResult:
    """Detections for one image, best score first.

    boxes [N, 4] float32 xyxy in original-image pixels (after EXIF orientation), scores [N] float32
    (IACS), labels [N] int64 class indices, class_names N names; width, height of the image.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    width: int
    height: int

    def __len__(self) -> int:
        return len(self.scores)


class Detector:
    """A loaded model plus the shared pre- and post-processing. Use `load_detector` to make one.

    `metadata` (a ModelInfo) gives class names, preset, backend, device, input policy and NMS defaults.
    """

    def __init__(self, backend, max_pixels: int | None = DEFAULT_MAX_PIXELS):
        self.backend = backend
        self.metadata: ModelInfo = backend.info
        self.max_pixels = max_pixels

    def decode(self, image: ImageInput) -> np.ndarray:
        """bytes / PIL image / HxWx3 uint8 array -> HxWx3 uint8 RGB (raises ImageError)."""
        return decode_image(image, self.max_pixels)

    def infer(self, arrays: list[np.ndarray], iou_threshold: float | None = None) -> list[DetectionResult]:
        """Run decoded RGB arrays as one batch; all of the model's detections, in original pixels."""
        info = self.metadata
        iou = info.iou_threshold if iou_threshold is None else check_iou_threshold(iou_threshold)
        batch = make_batch(arrays, info.input_size, info.size_divisor)
        boxes, scores, labels, num = self.backend.run(batch.images, batch.image_sizes, iou)
        results = []
        for b in range(len(arrays)):
            n = int(num[b])
            (h, w), (orig_h, orig_w) = batch.image_sizes[b], batch.original_sizes[b]
            scale = np.array([w / orig_w, h / orig_h, w / orig_w, h / orig_h], dtype=np.float32)  # per-axis factors
            picked = labels[b, :n].astype(np.int64)
            results.append(
                DetectionResult(
                    boxes=(boxes[b, :n] / scale).astype(np.float32),
                    scores=scores[b, :n].astype(np.float32),
                    labels=picked,
                    class_names=[info.class_names[i] for i in picked],
                    width=int(orig_w),
                    height=int(orig_h),
                )
            )
        return results

    def select(
        self,
        result: DetectionResult,
        score_threshold: float | None = None,
        max_detections: int | None = None,
        classes: Sequence[str | int] | None = None,
    ) -> DetectionResult:
        """Per-request filters on one result: a score threshold (below the model's floor it acts as
        the floor), a class filter (names or indices), and the best `max_detections`."""
        keep = np.ones(len(result), dtype=bool)
        if score_threshold is not None:
            keep &= result.scores > check_score_threshold(score_threshold)
        if classes is not None:
            keep &= np.isin(result.labels, self.class_indices(classes))
        index = np.flatnonzero(keep)
        if max_detections is not None:
            index = index[: check_max_detections(max_detections)]
        return DetectionResult(
            boxes=result.boxes[index],
            scores=result.scores[index],
            labels=result.labels[index],
            class_names=[result.class_names[i] for i in index],
            width=result.width,
            height=result.height,
        )

    def class_indices(self, classes: Sequence[str | int]) -> list[int]:
        """Class names or indices -> indices; unknown ones raise ValueError naming the valid names."""
        names = self.metadata.class_names
        indices = []
        for c in classes:
            if isinstance(c, (int, np.integer)) and 0 <= c < len(names):
                indices.append(int(c))
            elif isinstance(c, str) and c in names:
                indices.append(names.index(c))
            else:
                raise ValueError(f"unknown class {c!r}; this model knows: {', '.join(names)}")
        return indices

    def detect(
        self,
        images: Sequence[ImageInput],
        score_threshold: float | None = None,
        max_detections: int | None = None,
        classes: Sequence[str | int] | None = None,
        iou_threshold: float | None = None,
    ) -> list[DetectionResult]:
        """Detect objects in each image (bytes, PIL images or HxWx3 uint8 RGB arrays), as one batch."""
        if isinstance(images, (bytes, Image.Image, np.ndarray)):
            raise TypeError("detect() takes a list of images; wrap a single image in a list")
        if classes is not None:
            self.class_indices(classes)  # fail before doing any work
        results = self.infer([self.decode(image) for image in images], iou_threshold)
        return [self.select(r, score_threshold, max_detections, classes) for r in results]


def check_score_threshold(value: float) -> float:
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"score_threshold must be between 0 and 1, got {value}")
    return float(value)


def check_iou_threshold(value: float) -> float:
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"iou_threshold must be between 0 and 1, got {value}")
    return float(value)


def check_max_detections(value: int) -> int:
    if int(value) != value or value < 0:
        raise ValueError(f"max_detections must be a non-negative integer, got {value}")
    return int(value)
