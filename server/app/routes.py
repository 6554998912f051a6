"""The HTTP routes: /detect, /detect/annotated, /healthz, /readyz, /metrics, /v1/model."""

from __future__ import annotations

import asyncio
import hmac
import io
import time
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from starlette.responses import JSONResponse

from vfnet.server.runtime import DetectionResult, ImageError

from .annotate import draw_detections
from .batcher import QueueFull, ShuttingDown
from .schemas import DetectResponse, ErrorBody, ModelMetadata
from .uploads import read_images

IMAGE_STATUS = {"undecodable": 400, "too_large": 413, "unsupported": 415}
RETRY_AFTER_S = 1

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
ERRORS = {
    status: {"model": ErrorBody, "description": text}
    for status, text in {
        400: "undecodable image or malformed multipart body",
        401: "missing or wrong X-API-Key (when the server has one)",
        413: "too many bytes, pixels or images",
        415: "neither multipart/form-data nor image/*, or an unsupported image type",
        422: "bad parameters (with what was wrong)",
        503: "queue full (retry after Retry-After seconds) or model not ready",
        504: "the request waited longer than the server's request timeout",
    }.items()
}


def require_api_key(request: Request) -> None:
    key = request.app.state.settings.api_key
    if key is None:
        return
    given = request.headers.get("x-api-key", "")
    if not hmac.compare_digest(given.encode(), key.get_secret_value().encode()):
        raise HTTPException(401, "missing or wrong X-API-Key header", headers={"WWW-Authenticate": "ApiKey"})


def ready_service(request: Request):
    service = request.app.state.service
    if service is None or not service.ready:
        raise HTTPException(503, "the model is still loading and warming up", headers={"Retry-After": str(RETRY_AFTER_S)})
    return service


Service = Annotated[object, Depends(ready_service)]


class DetectOptions:
    """Query parameters shared by /detect and /detect/annotated."""

    def __init__(
        self,
        score_threshold: Annotated[float | None, Query(ge=0.0, le=1.0, description="keep detections scoring above this (default: the server's, 0.3)")] = None,
        iou_threshold: Annotated[float | None, Query(ge=0.0, le=1.0, description="class-aware NMS IoU threshold (default: the model's, 0.6)")] = None,
        max_detections: Annotated[int | None, Query(ge=0, le=10_000, description="at most this many per image (the model returns at most 100)")] = None,
        classes: Annotated[str | None, Query(description="comma-separated class names to keep, e.g. 'circle,star'", examples=["circle,star"])] = None,
    ):
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold
        self.max_detections = max_detections
        self.classes = [c.strip() for c in (classes or "").split(",") if c.strip()] or None  # empty: no filter


async def run_detection(
    request: Request, service, options: DetectOptions, single: bool = False
) -> tuple[list, list[DetectionResult], dict[str, float]]:
    """Read, decode (in threads), queue for a batch, filter. Returns the decoded images, their
    results and the timing (ms)."""
    settings = request.app.state.settings
    started = time.perf_counter()
    detector = service.detector
    if options.classes is not None:
        try:
            detector.class_indices(options.classes)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
    encoded = await read_images(request, settings.max_body_bytes, settings.max_batch_size)
    if single and len(encoded) != 1:
        raise HTTPException(422, f"this route takes exactly one image, got {len(encoded)}")
    loop = asyncio.get_running_loop()

    async def decode(index: int, data: bytes):
        try:
            return await loop.run_in_executor(service.decode_pool, detector.decode, data)
        except ImageError as exc:
            where = f"image {index + 1} of {len(encoded)}: " if len(encoded) > 1 else ""
            raise HTTPException(IMAGE_STATUS[exc.kind], where + str(exc)) from None

    arrays = list(await asyncio.gather(*(decode(i, data) for i, data in enumerate(encoded))))
    decoded = time.perf_counter()

    iou = detector.metadata.iou_threshold if options.iou_threshold is None else options.iou_threshold
    try:
        job = await service.batcher.submit(arrays, iou)
    except QueueFull:
        raise HTTPException(503, "server busy: the queue is full", headers={"Retry-After": str(RETRY_AFTER_S)}) from None
    except ShuttingDown:
        raise HTTPException(503, "server shutting down", headers={"Retry-After": str(RETRY_AFTER_S)}) from None
    remaining = settings.request_timeout_s - (decoded - started)
    try:
        results = await asyncio.wait_for(job.future, timeout=max(remaining, 0.001))
    except asyncio.TimeoutError:
        raise HTTPException(504, f"timed out after {settings.request_timeout_s:g} s waiting for the model") from None

    score = settings.default_score_threshold if options.score_threshold is None else options.score_threshold
    results = [detector.select(r, score, options.max_detections, options.classes) for r in results]
    finished = time.perf_counter()
    service.metrics.queue_seconds.observe(job.started - job.enqueued)
    timing = {
        "decode": (decoded - started) * 1000,
        "queue": (job.started - job.enqueued) * 1000,
        "inference": (job.finished - job.started) * 1000,
        "total": (finished - started) * 1000,
    }
    return arrays, results, {k: round(v, 2) for k, v in timing.items()}


router = APIRouter()


@router.post(
    "/detect",
    response_model=DetectResponse,
    responses=ERRORS,
    openapi_extra=UPLOAD_DOC,
    dependencies=[Depends(require_api_key)],
    summary="Detect objects in one or more images",
    description="Boxes are xyxy in original-image pixels, ranked by IACS. Several `image` fields form one "
    "batch. The default score threshold is the server's `default_score_threshold` (0.3 unless configured); "
    "thresholds below the model's floor (0.05) act as the floor.",
)
async def detect(request: Request, service: Service, options: Annotated[DetectOptions, Depends()]) -> dict:
    _, results, timing = await run_detection(request, service, options)
    info = service.detector.metadata
    return {
        "model": {"preset": info.preset, "backend": info.backend, "device": info.device, "precision": info.precision, "version": info.version},
        "results": [
            {
                "width": r.width,
                "height": r.height,
                "detections": [
                    {"box": [round(float(v), 2) for v in box], "score": round(float(s), 5), "class_id": int(c), "class_name": n}
                    for box, s, c, n in zip(r.boxes, r.scores, r.labels, r.class_names)
                ],
            }
            for r in results
        ],
        "timing_ms": timing,
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
    service: Service,
    options: Annotated[DetectOptions, Depends()],
    format: Annotated[Literal["jpeg", "png"], Query(description="image format of the answer")] = "jpeg",
) -> Response:
    images, results, timing = await run_detection(request, service, options, single=True)
    loop = asyncio.get_running_loop()
    data = await loop.run_in_executor(service.decode_pool, draw_detections, images[0], results[0], format)
    return Response(data, media_type=f"image/{format}", headers={"X-Timing-Total-Ms": str(timing["total"])})


@router.get("/healthz", summary="Liveness: the process is up")
async def healthz() -> dict:
    return {"status": "alive"}


@router.get("/readyz", summary="Readiness: 200 once the model is loaded and warmed up for every batch size", responses={503: {"model": ErrorBody}})
async def readyz(request: Request) -> JSONResponse:
    service = request.app.state.service
    if service is None or not service.ready:
        return JSONResponse({"detail": "not ready: the model is loading or warming up"}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})
    return JSONResponse({"status": "ready", "queued_images": service.batcher.queued_images})


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    app_metrics = request.app.state.metrics
    service = request.app.state.service
    if service is not None:
        app_metrics.queue_depth.set(service.batcher.queued_images)
    return Response(app_metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/v1/model", response_model=ModelMetadata, dependencies=[Depends(require_api_key)], responses={401: ERRORS[401], 503: ERRORS[503]}, summary="The served model")
async def model_metadata(request: Request, service: Service) -> dict:
    info = service.detector.metadata
    settings = request.app.state.settings
    return {
        "preset": info.preset,
        "backend": info.backend,
        "device": info.device,
        "precision": info.precision,
        "version": info.version,
        "class_names": list(info.class_names),
        "input_size": list(info.input_size),
        "size_divisor": info.size_divisor,
        "max_detections": info.max_detections,
        "score_floor": info.score_threshold,
        "default_score_threshold": settings.default_score_threshold,
        "default_iou_threshold": info.iou_threshold,
        "max_batch_size": settings.max_batch_size,
    }
