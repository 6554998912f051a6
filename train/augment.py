"""The training-time augmentation of COCO-format samples (read by vfnet.server.coco).

Boxes are xyxy in image pixels and follow the image through every step.
"""

from __future__ import annotations

import cv2
import numpy as np

from vfnet.server.coco import Sample
from vfnet.server.runtime.images import fit_size


def augment(sample: Sample, input_size: tuple[int, int], scale: float, flip: bool) -> Sample:
    """Keep-ratio resize to fit `input_size` * scale (the official sizing rule), optional
    horizontal flip; boxes follow with per-axis factors."""
    h, w = sample.image.shape[:2]
    new_h, new_w = fit_size(h, w, (round(input_size[0] * scale), round(input_size[1] * scale)))
    image = cv2.resize(sample.image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    boxes = sample.boxes * np.array([new_w / w, new_h / h, new_w / w, new_h / h], dtype=np.float32)
    if flip:
        image = image[:, ::-1]
        boxes = np.stack([new_w - boxes[:, 2], boxes[:, 1], new_w - boxes[:, 0], boxes[:, 3]], axis=1)
    return Sample(np.ascontiguousarray(image), boxes.astype(np.float32), sample.labels, sample.image_id)
