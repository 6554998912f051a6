"""Detection routes: POST /detect and /detect/annotated, and the request flow they share."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response

from vfnet.server.runtime import DetectionResult, ImageError, PreparedImage

from ..annotate import draw_detections
from ..batcher import Job
from ..budget import BudgetTimeout
from ..schemas import DetectResponse
from ..service import Service
from ..uploads import ClientGone, read_images
from .dependencies import ERRORS, ReadyService, admission, busy, require_api_key

IMAGE_STATUS = {"undecodable": 400, "too_large": 413, "unsupported": 415}

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

class DetectOptions:
    """Query parameters shared by /detect and /detect/annotated. Each may be given once."""

    def __init__(
        self,
        request: Request,
        score_threshold: Annotated[float | None, Query(ge=0.0, le=1.0, allow_inf_nan=False, description="keep detections scoring above this (default: the server's `default_score_threshold`; below the model's `score_floor` it acts as the floor; both in /v1/model)")] = None,
        iou_threshold: Annotated[float | None, Query(ge=0.0, le=1.0, allow_inf_nan=False, description="class-aware NMS IoU threshold (default: the model's `default_iou_threshold` in /v1/model)")] = None,
        max_detections: Annotated[int | None, Query(ge=0, description="at most this many per image, up to the model's own limit (`max_detections` in /v1/model)")] = None,
        classes: Annotated[str | None, Query(description="comma-separated class names to keep, e.g. 'circle,star'", examples=["circle,star"])] = None,
    ):
        names = [name for name, _ in request.query_params.multi_items()]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise HTTPException(422, "bad parameters: " + "; ".join(f"{name}: given {names.count(name)} times, allowed once" for name in repeated))
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold
        self.max_detections = max_detections
        self.classes = [c.strip() for c in (classes or "").split(",") if c.strip()] or None  # empty: no filter


async def prepare_images(service: Service, encoded: list[bytes]) -> list[PreparedImage]:
    """Decode and resize every image of a request (concurrently, under the pixel budget). The first
    failure fails the request and stops the other images' work."""

    async def prepare(index: int, data: bytes) -> PreparedImage:
        try:
            return await service.prepare(data)
        except ImageError as exc:
            where = f"image {index + 1} of {len(encoded)}: " if len(encoded) > 1 else ""
            raise HTTPException(IMAGE_STATUS[exc.kind], where + str(exc)) from None
        except BudgetTimeout:
            raise busy(f"server busy: no room to decode within {service.settings.max_queue_wait_ms:g} ms (pixel budget {service.pixel_budget.budget:,})") from None

    tasks = [asyncio.ensure_future(prepare(i, data)) for i, data in enumerate(encoded)]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # their reservations are released
        raise


async def wait_for_results(request: Request, job: Job, timeout_s: float) -> list[DetectionResult]:
    """The job's results; 504 after `timeout_s`, ClientGone if the client disconnects first. Either
    way the job is cancelled, so its images leave the queue and are never computed."""

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({job.future, watcher}, timeout=max(timeout_s, 0.001), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if job.future.done():
        try:
            return job.future.result()
        except Exception:  # the batcher has logged it once, with the request ids
            raise HTTPException(500, f"inference failed (request id {job.request_id}); the server log has the details") from None
    job.future.cancel()
    if watcher.done() and not watcher.cancelled():
        raise ClientGone("while waiting for the model")
    raise HTTPException(504, f"timed out after {request.app.state.settings.request_timeout_s:g} s waiting for the model")


async def run_detection(
    request: Request, service: Service, options: DetectOptions, single: bool = False
) -> tuple[list[bytes], list[DetectionResult], dict[str, float]]:
    """Read, decode (in threads), queue for a batch, filter. Returns the encoded images, their
    results and the timing (ms)."""
    settings = request.app.state.settings
    started = time.perf_counter()
    detector = service.detector
    try:
        detector.check_options(options.score_threshold, options.iou_threshold, options.max_detections, options.classes)
    except ValueError as exc:
        raise HTTPException(422, f"bad parameters: {exc}") from None
    encoded = await read_images(request, settings.max_body_bytes, settings.max_batch_size, settings.body_timeout_s)
    if single and len(encoded) != 1:
        raise HTTPException(422, f"this route takes exactly one image, got {len(encoded)}")
    with admission():
        service.batcher.admit(len(encoded))  # refuse before spending any decoding on the request
    images = await prepare_images(service, encoded)
    decoded = time.perf_counter()

    iou = detector.metadata.iou_threshold if options.iou_threshold is None else options.iou_threshold
    with admission():
        job = service.batcher.submit(images, iou, request.scope["state"]["request_id"])
    results = await wait_for_results(request, job, settings.request_timeout_s - (decoded - started))

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
    return encoded, results, {k: round(v, 2) for k, v in timing.items()}


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
async def detect(request: Request, service: ReadyService, options: Annotated[DetectOptions, Depends()]) -> dict:
    _, results, timing = await run_detection(request, service, options)
    info = service.detector.metadata
    return {
        "model": {"preset": info.preset, "backend": info.backend, "device": info.device, "precision": info.precision, "version": info.version},
        "results": [
            {
                "width": r.width,
                "height": r.height,
                "frames": r.frames,
                "first_frame_only": r.frames > 1,
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
    service: ReadyService,
    options: Annotated[DetectOptions, Depends()],
    format: Annotated[Literal["jpeg", "png"], Query(description="image format of the answer")] = "jpeg",
) -> Response:
    encoded, results, timing = await run_detection(request, service, options, single=True)
    try:  # decoded again at full resolution, under the pixel budget, to draw on
        image = await service.decode_full(encoded[0])
    except BudgetTimeout:
        raise busy("server busy: no room to decode the image for drawing") from None
    data = await asyncio.get_running_loop().run_in_executor(service.decode_pool, draw_detections, image, results[0], format)
    return Response(data, media_type=f"image/{format}", headers={"X-Timing-Total-Ms": str(timing["total"])})
