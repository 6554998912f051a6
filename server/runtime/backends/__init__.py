"""The backend seam: every backend runs the exported inference contract on arrays.

    run(images uint8 [B, 3, H, W], image_sizes int64 [B, 2], iou_threshold float)
      -> boxes [B, K, 4] float32 xyxy (resized pixels), scores [B, K] float32 (IACS),
         labels [B, K] int64 (-1 for padding), num_detections [B] int64

A backend is constructed as `Backend(path, device="auto", intra_op_threads=None,
inter_op_threads=None)` (the openvino backend also takes `precision`) and raises ModelLoadError
with the reason when it cannot serve the file.
It reads the artifact's facts into a `ModelCard` (model_card.py), the one reader of our metadata.
Each module imports its library lazily, inside the constructor, and is named after the library
with a `_backend` suffix so that it never shadows it.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ..model_card import ModelCard

BACKEND_NAMES = ("onnxruntime", "openvino", "tensorrt", "torch")  # every backend of this runtime
BACKEND_CHOICES = ("auto", *BACKEND_NAMES)  # what a user may ask for: "auto" picks from the file
DEVICES = ("auto", "cpu", "cuda")
# Inference precision: "auto" runs the artifact's own; fp32 / bf16 choose OpenVINO's (openvino_backend.py).
INFERENCE_PRECISIONS = ("auto", "fp32", "bf16")


class Backend(Protocol):
    """What `Detector` needs of a backend."""

    name: str  # one of BACKEND_NAMES
    device: str  # where it runs: "cpu" or "cuda" (what "auto" turned into)
    card: ModelCard  # the facts of the artifact it serves
    precision: str  # the arithmetic it runs: card.precision, or "bf16" for OpenVINO on an fp32 IR

    def run(self, images: np.ndarray, image_sizes: np.ndarray, iou_threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One backend call on a padded batch (shapes in the module docstring)."""
        ...
