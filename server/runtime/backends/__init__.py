"""The backend seam: every backend runs the exported inference contract (artifact.py) on arrays.

    run(batch: Batch (images uint8 [B, 3, H, W], image_sizes int64 [B, 2]), iou_threshold float)
      -> boxes [B, K, 4] float32 xyxy (resized pixels), scores [B, K] float32 (IACS),
         labels [B, K] int64 (-1 for padding), num_detections [B] int64

A backend is constructed as `Backend(path, options)`, `options` being the one `BackendOptions` the
user gave, passed whole: each backend takes what applies to it, refuses what cannot (with the
reason, as ModelLoadError), and raises ModelLoadError when it cannot serve the file. It hands its
library `artifact.graph_inputs(batch, iou)` and reads the artifact's card with artifact.py's reader
for its container, so that every backend serves the same card. Each module imports its library
lazily, inside the constructor, and is named after the library with a `_backend` suffix (or is a
package of its own, as tensorrt/ is) so that it never shadows it.

A new backend: a module here with a class of this shape, its name in BACKEND_NAMES, and a line in
load.py that picks it. A new option: a field of BackendOptions, read by the backends it applies to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..artifact import ModelCard, ModelLoadError
from ..images import Batch

BACKEND_NAMES = ("onnxruntime", "openvino", "tensorrt", "torch")  # every backend of this runtime
BACKEND_CHOICES = ("auto", *BACKEND_NAMES)  # what a user may ask for: "auto" picks from the file
DEVICES = ("auto", "cpu", "cuda")
# Inference precision: "auto" runs the artifact's own (float32 as float32 on GPUs too: no TF32);
# fp32 / bf16 choose OpenVINO's (openvino_backend.py); tf32 lets a float32 model multiply in TF32 on CUDA.
INFERENCE_PRECISIONS = ("auto", "fp32", "bf16", "tf32")


@dataclass(frozen=True)
class BackendOptions:
    """How the user asked for a model to be run, whatever the backend. Each backend validates the
    fields that apply to it; the names are validated here.

    device: "auto" (CUDA where the backend can use it), "cpu" or "cuda".
    intra_op_threads / inter_op_threads: the backend's thread pools (None: its defaults).
    precision: "auto" (the artifact's own; a float32 model computes in float32 on a GPU too, TF32
      off), "fp32" / "bf16": OpenVINO's inference precision, or "tf32": a float32 model on CUDA
      (torch, onnxruntime, tensorrt) may multiply in TF32, which Loaded.precision then reports.
    """

    device: str = "auto"
    intra_op_threads: int | None = None
    inter_op_threads: int | None = None
    precision: str = "auto"

    def __post_init__(self):
        if self.device not in DEVICES:
            raise ModelLoadError(f"unknown device {self.device!r}; choose one of {', '.join(DEVICES)}")
        if self.precision not in INFERENCE_PRECISIONS:
            raise ModelLoadError(f"unknown precision {self.precision!r}; choose one of {', '.join(INFERENCE_PRECISIONS)}")
        for name in ("intra_op_threads", "inter_op_threads"):
            threads = getattr(self, name)
            if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
                raise ModelLoadError(f"{name} must be a whole number of at least 1, got {threads!r}")

    def artifact_precision(self, backend: str, card: ModelCard, device: str) -> str:
        """What a backend that runs the artifact's own arithmetic (onnxruntime, tensorrt, torch)
        computes in on `device`: the card's precision, or "tf32" when asked for a float32 model on
        CUDA. ModelLoadError for what it cannot run (OpenVINO's fp32 / bf16; tf32 elsewhere)."""
        if self.precision in ("fp32", "bf16"):
            raise ModelLoadError(
                f"precision {self.precision} applies to the openvino backend (an OpenVINO IR); {backend} runs the artifact's own precision: leave it auto"
            )
        if self.precision != "tf32":
            return card.precision
        if device != "cuda":
            raise ModelLoadError(f"precision tf32 is a GPU arithmetic (NVIDIA Ampere or newer); {backend} runs this model on the CPU here")
        if card.precision != "fp32":
            raise ModelLoadError(f"precision tf32 applies to a float32 model; this one computes in {card.precision}")
        return "tf32"


class Backend(Protocol):
    """What `Detector` needs of a backend."""

    name: str  # one of BACKEND_NAMES
    device: str  # where it runs: "cpu" or "cuda" (what "auto" turned into)
    card: ModelCard  # the facts of the artifact it serves
    precision: str  # the arithmetic it runs: card.precision, "bf16" for OpenVINO on an fp32 IR, "int8+bf16" / "int8+fp32" on an int8 IR

    def run(self, batch: Batch, iou_threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One backend call on a padded batch (shapes in the module docstring)."""
        ...
