"""Response bodies of the HTTP API (they also document the OpenAPI schema at /docs).

The model's parts are built from the detector's card and load facts here, and only here.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from vfnet.server.runtime import Detector

from .quality import QUALITY_METRICS, SCORE_MEANINGS
from .settings import ServeSettings


class Detection(BaseModel):
    box: list[float] = Field(..., description="[x1, y1, x2, y2] in original-image pixels (after EXIF orientation)", examples=[[48.2, 31.0, 210.7, 188.4]])
    score: float = Field(..., description="IoU-aware classification score (IACS), 0..1", examples=[0.87])
    class_id: int = Field(..., examples=[3])
    class_name: str = Field(..., examples=["star"])


class ImageResult(BaseModel):
    width: int = Field(..., description="image width in pixels", examples=[640])
    height: int = Field(..., examples=[480])
    frames: int = Field(1, description="frames in the file (animated GIF, PNG or WebP; multi-page TIFF)", examples=[1])
    first_frame_only: bool = Field(False, description="true when the file has several frames: only the first was detected")
    detections: list[Detection] = Field(..., description="best score first")


class ModelSummary(BaseModel):
    preset: str = Field(..., examples=["vfnet_r18_demo"])
    backend: str = Field(..., examples=["onnxruntime"])
    device: str = Field(..., examples=["cpu"])
    precision: str = Field(
        ...,
        description="what the backend computes in: fp32, fp16, int8 (int8 convolutions), bf16, or for an int8 OpenVINO IR int8+bf16 / int8+fp32 (the rest in that)",
        examples=["fp32"],
    )
    version: str = Field(..., examples=["0.1.0"])

    @classmethod
    def of(cls, detector: Detector) -> ModelSummary:
        card, loaded = detector.card, detector.loaded
        return cls(preset=card.preset, backend=loaded.backend, device=loaded.device, precision=loaded.precision, version=card.version)


class Timing(BaseModel):
    decode: float = Field(..., description="reading and decoding the images, ms")
    queue: float = Field(..., description="waiting for a batch, ms")
    inference: float = Field(..., description="the backend call of the batch, ms")
    total: float = Field(..., description="whole request, ms")


class DetectResponse(BaseModel):
    model: ModelSummary
    results: list[ImageResult] = Field(..., description="one entry per uploaded image, in upload order")
    timing_ms: Timing


class ModelMetadata(ModelSummary):
    class_names: list[str]
    input_size: list[int] = Field(..., description="keep-ratio fit: long side <= [0], short side <= [1]")
    size_divisor: int
    max_detections: int = Field(..., description="most detections per image")
    score_floor: float = Field(..., description="the model never returns scores at or below this")
    score: str = Field(
        ...,
        description="what the scores are: iacs (VFNet's IoU-aware classification score) or cls_x_centerness (sigmoid(cls) x sigmoid(centerness), the ablation's FCOS/ATSS variant)",
        examples=["iacs"],
    )
    score_meaning: str = Field(..., description="what a score says, in words: for iacs, the model's estimate of the IoU of the box with its object")
    quality_metrics: str = Field(..., description="where the label-free localisation-quality metrics are (per class top score and detections per image)")
    default_score_threshold: float = Field(..., description="used when a request gives no score_threshold")
    default_iou_threshold: float
    max_batch_size: int

    @classmethod
    def of(cls, detector: Detector, settings: ServeSettings) -> ModelMetadata:
        card = detector.card
        return cls(
            **ModelSummary.of(detector).model_dump(),
            class_names=list(card.class_names),
            input_size=list(card.input_size),
            size_divisor=card.size_divisor,
            max_detections=card.max_detections,
            score_floor=card.score_threshold,
            score=card.score,
            score_meaning=SCORE_MEANINGS[card.score],
            quality_metrics=QUALITY_METRICS,
            default_score_threshold=settings.default_score_threshold,
            default_iou_threshold=card.iou_threshold,
            max_batch_size=settings.max_batch_size,
        )


class ErrorBody(BaseModel):
    detail: str = Field(..., examples=["cannot identify the image format (not an image, or an unsupported format)"])
