"""Detector: decoded images -> one backend call -> detections in original-image pixels.

The pipeline is split so that the HTTP service can run each step where it belongs:
`prepare` (per image, in a worker thread: decode and resize at once), `infer` (backend calls for a
batch gathered across requests), `select` (per-request filters). `detect` composes the three for
library users.

Results never depend on what else is in a batch: `infer` runs images of different padded canvases
in separate backend calls, so every image is computed on exactly the input it would have alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from .artifact import ModelCard
from .backends import Backend
from .images import DEFAULT_MAX_PIXELS, PreparedImage, decode_image, image_pixels, make_batch, prepare_image

ImageInput = bytes | Image.Image | np.ndarray
DEFAULT_SCORE_THRESHOLD = 0.3  # what /detect and `vfnet predict` keep when not told otherwise


@dataclass(frozen=True)
class DetectionResult:
    """Detections for one image, best score first.

    boxes [N, 4] float32 xyxy in original-image pixels (after EXIF orientation), scores [N] float32
    (IACS), labels [N] int64 class indices, class_names N names; width, height of the image;
    frames: frames in the file (an animated image is detected on its first frame only).
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    width: int
    height: int
    frames: int = 1

    def __len__(self) -> int:
        return len(self.scores)

    def as_json(self) -> list[dict]:
        """The detections as /detect answers them and `vfnet predict` records them: box [x1, y1, x2, y2]
        rounded to 0.01 px, score to 1e-5, class_id, class_name."""
        return [
            {"box": [round(float(v), 2) for v in box], "score": round(float(s), 5), "class_id": int(c), "class_name": n}
            for box, s, c, n in zip(self.boxes, self.scores, self.labels, self.class_names)
        ]


@dataclass(frozen=True)
class Loaded:
    """How a card's artifact was loaded: the backend that runs it, on which device, in which
    arithmetic, from which file."""

    backend: str  # one of backends.BACKEND_NAMES (or a test's own)
    device: str  # "cpu" or "cuda"
    precision: str  # what the backend computes in: the card's precision, "bf16" (OpenVINO on an fp32 IR), "int8+bf16" / "int8+fp32" (an int8 IR)
    source: str  # the file it was loaded from


class Detector:
    """A loaded model plus the shared pre- and post-processing. Use `load_detector` to make one.

    `card` (a ModelCard) is what the model is: class names, preset, precision, input policy, NMS
    defaults. `loaded` is how it was loaded: backend, device, the precision it computes in, source file.
    """

    def __init__(self, backend: Backend, source: str = "memory", max_pixels: int | None = DEFAULT_MAX_PIXELS):
        self.backend = backend
        self.card: ModelCard = backend.card
        self.loaded = Loaded(backend=backend.name, device=backend.device, precision=backend.precision, source=source)
        self.max_pixels = max_pixels

    @property
    def metadata(self) -> ModelCard:
        """The card, under the name of the Python contract in design.md."""
        return self.card

    def decode(self, image: ImageInput) -> np.ndarray:
        """bytes / PIL image / HxWx3 uint8 array -> HxWx3 uint8 RGB at full resolution (raises ImageError)."""
        return decode_image(image, self.max_pixels)

    def pixels(self, image: ImageInput) -> int:
        """Pixels `prepare` will decode, read from the header alone (raises ImageError for a bad
        header or too many pixels)."""
        return image_pixels(image, self.max_pixels)

    def prepare(self, image: ImageInput) -> PreparedImage:
        """Decode and resize to the model's input at once (raises ImageError)."""
        card = self.card
        return prepare_image(image, card.input_size, card.size_divisor, self.max_pixels)

    def infer(self, images: Sequence[PreparedImage], iou_threshold: float | None = None) -> list[DetectionResult]:
        """All of the model's detections for each image, in original pixels, in input order. One
        backend call per padded canvas among the images (one call when they share it)."""
        iou = self.card.iou_threshold if iou_threshold is None else check_iou_threshold(iou_threshold)
        results: list[DetectionResult | None] = [None] * len(images)
        for canvas in dict.fromkeys(image.canvas for image in images):  # canvases in order of appearance
            positions = [i for i, image in enumerate(images) if image.canvas == canvas]
            for i, result in zip(positions, self._run([images[i] for i in positions], iou)):
                results[i] = result
        return results

    def _run(self, images: list[PreparedImage], iou_threshold: float) -> list[DetectionResult]:
        """One backend call for images of one canvas."""
        card = self.card
        batch = make_batch(images, card.size_divisor)
        boxes, scores, labels, num = self.backend.run(batch, iou_threshold)
        if len(num) != len(images):
            raise RuntimeError(f"the backend returned {len(num)} results for {len(images)} images")
        results = []
        for b, image in enumerate(images):
            n = int(num[b])
            (h, w), (orig_h, orig_w) = batch.image_sizes[b], image.original_size
            scale = np.array([w / orig_w, h / orig_h, w / orig_w, h / orig_h], dtype=np.float32)  # per-axis factors
            picked = labels[b, :n].astype(np.int64)
            results.append(
                DetectionResult(
                    boxes=(boxes[b, :n] / scale).astype(np.float32),
                    scores=scores[b, :n].astype(np.float32),
                    labels=picked,
                    class_names=[card.class_names[i] for i in picked],
                    width=int(orig_w),
                    height=int(orig_h),
                    frames=image.frames,
                )
            )
        return results

    def check_options(
        self,
        score_threshold: float | None = None,
        iou_threshold: float | None = None,
        max_detections: int | None = None,
        classes: Sequence[str | int] | None = None,
    ) -> None:
        """Raise ValueError naming the first bad option, before any work is done."""
        if score_threshold is not None:
            check_score_threshold(score_threshold)
        if iou_threshold is not None:
            check_iou_threshold(iou_threshold)
        if max_detections is not None:
            check_max_detections(max_detections, self.card.max_detections)
        if classes is not None:
            self.class_indices(classes)

    def select(
        self,
        result: DetectionResult,
        score_threshold: float | None = None,
        max_detections: int | None = None,
        classes: Sequence[str | int] | None = None,
    ) -> DetectionResult:
        """Per-request filters on one result: a score threshold (below the model's floor it acts as
        the floor), a class filter (names or indices), and the best `max_detections` (at most the
        model's own limit, `metadata.max_detections`)."""
        keep = np.ones(len(result), dtype=bool)
        if score_threshold is not None:
            keep &= result.scores > check_score_threshold(score_threshold)
        if classes is not None:
            keep &= np.isin(result.labels, self.class_indices(classes))
        index = np.flatnonzero(keep)
        if max_detections is not None:
            index = index[: check_max_detections(max_detections, self.card.max_detections)]
        return replace(
            result,
            boxes=result.boxes[index],
            scores=result.scores[index],
            labels=result.labels[index],
            class_names=[result.class_names[i] for i in index],
        )

    def class_indices(self, classes: Sequence[str | int]) -> list[int]:
        """Class names or indices -> indices; unknown ones raise ValueError naming the valid names."""
        names = self.card.class_names
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
        self.check_options(score_threshold, iou_threshold, max_detections, classes)  # fail before any work
        results = self.infer([self.prepare(image) for image in images], iou_threshold)
        return [self.select(r, score_threshold, max_detections, classes) for r in results]


def _check_fraction(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number between 0 and 1, got {value}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value}")
    return value


def check_score_threshold(value: float) -> float:
    return _check_fraction("score_threshold", value)


def check_iou_threshold(value: float) -> float:
    return _check_fraction("iou_threshold", value)


def check_max_detections(value: int, limit: int) -> int:
    """A whole number from 0 to `limit`, the most detections the model returns per image."""
    try:
        whole = not isinstance(value, bool) and int(value) == value
    except (TypeError, ValueError, OverflowError):  # nan, inf, text
        whole = False
    if not whole or not 0 <= value <= limit:
        raise ValueError(f"max_detections must be a whole number from 0 to {limit} (the model's limit), got {value}")
    return int(value)
