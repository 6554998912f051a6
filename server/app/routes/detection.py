"""Detection routes: POST /detect and /detect/annotated (multipart or raw image uploads, query
options); the detection itself is `Service.run_detection`."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response

from vfnet.server.runtime.annotate import draw_detections

from ..budget import BudgetTimeout
from ..errors import busy
from ..schemas import DetectResponse, ModelSummary
from ..service import Detections, DetectOptions, Service
from ..uploads import read_images
from .dependencies import ERRORS, ReadyService, require_api_key, until_disconnected

UPLOAD_DOC = {
    "requestBody": {
        "required": True,
        "description": "Either multipart/form-data with one or more `image` fields (several images are "
        "detected as one batch), or the raw bytes of one image with an image/* content type.",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"image": {"type": "array", "items": {"type": "string", "format": "binary"}}},
                    "required": ["image"],
                }
            },
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            "image/png": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


class DetectQuery:
    """The query parameters of /detect and /detect/annotated, each allowed once, as DetectOptions."""

    def __init__(
        self,
        request: Request,
        score_threshold: Annotated[
            float | None,
            Query(
                ge=0.0,
                le=1.0,
                allow_inf_nan=False,
                description="keep detections scoring above this (default: the server's `default_score_threshold`; below the model's `score_floor` it acts as the floor; both in /v1/model)",
            ),
        ] = None,
        iou_threshold: Annotated[
            float | None,
            Query(ge=0.0, le=1.0, allow_inf_nan=False, description="class-aware NMS IoU threshold (default: the model's `default_iou_threshold` in /v1/model)"),
        ] = None,
        max_detections: Annotated[
            int | None, Query(ge=0, description="at most this many per image, up to the model's own limit (`max_detections` in /v1/model)")
        ] = None,
        classes: Annotated[str | None, Query(description="comma-separated class names to keep, e.g. 'circle,star'", examples=["circle,star"])] = None,
    ):
        names = [name for name, _ in request.query_params.multi_items()]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise HTTPException(422, "bad parameters: " + "; ".join(f"{name}: given {names.count(name)} times, allowed once" for name in repeated))
        wanted = tuple(c.strip() for c in (classes or "").split(",") if c.strip()) or None  # empty: no filter
        self.options = DetectOptions(score_threshold, iou_threshold, max_detections, wanted)


async def detect_uploaded(request: Request, service: Service, query: DetectQuery, single: bool = False) -> tuple[list[bytes], Detections]:
    """Check the options, read the uploaded images, run them through the service."""
    started = time.perf_counter()
    service.check_options(query.options)  # before reading a body that would be refused anyway
    settings = service.settings
    encoded = await read_images(request, settings.max_body_bytes, settings.max_batch_size, settings.body_timeout_s)
    if single and len(encoded) != 1:
        raise HTTPException(422, f"this route takes exactly one image, got {len(encoded)}")
    request_id = request.scope["state"]["request_id"]
    return encoded, await service.run_detection(encoded, query.options, request_id, started, until_disconnected(request))


router = APIRouter(tags=["detection"])


@router.post(
    "/detect",
    response_model=DetectResponse,
    responses=ERRORS,
    openapi_extra=UPLOAD_DOC,
    dependencies=[Depends(require_api_key)],
    summary="Detect objects in one or more images",
    description="Boxes are xyxy in original-image pixels, ranked by IACS. Several `image` fields form one "
    "batch. The thresholds' defaults and limits are the served model's and the server's: see /v1/model.",
)
async def detect(request: Request, service: ReadyService, query: Annotated[DetectQuery, Depends()]) -> dict:
    _, detections = await detect_uploaded(request, service, query)
    return {
        "model": ModelSummary.of(service.detector),
        "results": [
            {
                "width": r.width,
                "height": r.height,
                "frames": r.frames,
                "first_frame_only": r.frames > 1,
                "detections": r.as_json(),
            }
            for r in detections.results
        ],
        "timing_ms": detections.timing_ms,
    }


@router.post(
    "/detect/annotated",
    responses={**ERRORS, 200: {"content": {"image/jpeg": {}, "image/png": {}}, "description": "the image with boxes drawn"}},
    response_class=Response,
    openapi_extra=UPLOAD_DOC,
    dependencies=[Depends(require_api_key)],
    summary="Detect objects in one image and get it back with boxes, names and scores drawn",
)
async def detect_annotated(
    request: Request,
    service: ReadyService,
    query: Annotated[DetectQuery, Depends()],
    format: Annotated[Literal["jpeg", "png"], Query(description="image format of the answer")] = "jpeg",
) -> Response:
    encoded, detections = await detect_uploaded(request, service, query, single=True)
    try:  # decoded again at full resolution, under the pixel budget, to draw on
        image = await service.decode_full(encoded[0])
    except BudgetTimeout:
        raise busy("server busy: no room to decode the image for drawing") from None
    data = await asyncio.get_running_loop().run_in_executor(service.decode_pool, draw_detections, image, detections.results[0], format)
    return Response(data, media_type=f"image/{format}", headers={"X-Timing-Total-Ms": str(detections.timing_ms["total"])})
