"""COCO-format detection data, read one way for training, evaluation and bulk detection.

Boxes are xyxy in image pixels; labels are contiguous 0..C-1 in the order of sorted category ids
(so COCO's 80 ids with gaps map to 0..79, and our synthetic ids 1..8 to 0..7). Crowd annotations
are dropped, as the official ATSS setting (ignore_iof_thr = -1) does. No torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vfnet.server.runtime.images import decode_image


@dataclass(frozen=True)
class Sample:
    image: np.ndarray  # HxWx3 uint8 RGB
    boxes: np.ndarray  # [N, 4] float32 xyxy pixels
    labels: np.ndarray  # [N] int64 in 0..C-1
    image_id: int


class CocoDetection:
    """`annotations.json` in COCO format; image paths are relative to `images_dir`
    (default: the folder holding the annotation file)."""

    def __init__(self, annotations: str | Path, images_dir: str | Path | None = None):
        self.annotations = Path(annotations)
        if self.annotations.is_dir():
            self.annotations = self.annotations / "annotations.json"
        if not self.annotations.is_file():
            raise FileNotFoundError(f"{self.annotations}: no such annotation file")
        self.images_dir = Path(images_dir) if images_dir else self.annotations.parent
        data = json.loads(self.annotations.read_text())
        categories = sorted(data["categories"], key=lambda c: c["id"])
        self.category_ids = [c["id"] for c in categories]
        self.class_names = [c["name"] for c in categories]
        label_of = {cid: i for i, cid in enumerate(self.category_ids)}
        self.images = sorted(data["images"], key=lambda im: im["id"])
        boxes: dict[int, list] = {im["id"]: [] for im in self.images}
        for ann in data["annotations"]:
            x, y, w, h = ann["bbox"]
            if ann.get("iscrowd", 0) or w < 1 or h < 1:
                continue
            boxes[ann["image_id"]].append((x, y, x + w, y + h, label_of[ann["category_id"]]))
        self._targets = {
            image_id: (
                np.array([r[:4] for r in rows], dtype=np.float32).reshape(-1, 4),
                np.array([r[4] for r in rows], dtype=np.int64),
            )
            for image_id, rows in boxes.items()
        }

    def __len__(self) -> int:
        return len(self.images)

    def targets(self, image_id: int) -> tuple[np.ndarray, np.ndarray]:
        """(boxes [N, 4] float32 xyxy, labels [N] int64) of an image id."""
        return self._targets[image_id]

    def image_bytes(self, index: int) -> bytes:
        return (self.images_dir / self.images[index]["file_name"]).read_bytes()

    def __getitem__(self, index: int) -> Sample:
        info = self.images[index]
        boxes, labels = self.targets(info["id"])
        return Sample(decode_image(self.image_bytes(index), max_pixels=None), boxes, labels, info["id"])
