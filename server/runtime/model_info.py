"""What a served model is: class names, input policy, NMS defaults. Read from the model file."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass


class ModelLoadError(ValueError):
    """A model file that cannot be served; the message says why."""


@dataclass(frozen=True)
class ModelInfo:
    """Metadata of a loaded model. Boxes are always returned as xyxy in original-image pixels."""

    class_names: tuple[str, ...]
    preset: str
    backend: str  # "onnxruntime" or "torch"
    device: str  # e.g. "cpu", "cuda"
    precision: str  # "fp32" or "fp16"
    input_size: tuple[int, int]  # keep-ratio fit: long side <= [0], short side <= [1]
    size_divisor: int
    max_detections: int  # K: the most detections per image the model returns
    score_threshold: float  # the score floor inside the model: lower request thresholds act as this
    iou_threshold: float  # default class-aware NMS IoU threshold
    version: str  # vfnet-serve version that wrote the model file
    source: str  # the file it was loaded from

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_metadata(cls, meta: dict[str, str], backend: str, device: str, source: str) -> ModelInfo:
        """From the string metadata our exporter writes (ONNX metadata_props)."""
        try:
            return cls(
                class_names=tuple(json.loads(meta["class_names"])),
                preset=meta["preset"],
                backend=backend,
                device=device,
                precision=meta.get("precision", "fp32"),
                input_size=tuple(json.loads(meta["input_size"])),
                size_divisor=int(meta["size_divisor"]),
                max_detections=int(meta["max_detections"]),
                score_threshold=float(meta["score_threshold"]),
                iou_threshold=float(meta["iou_threshold"]),
                version=meta.get("version", "unknown"),
                source=source,
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise ModelLoadError(f"{source}: incomplete vfnet-serve metadata ({type(exc).__name__}: {exc})") from None
