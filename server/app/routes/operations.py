"""Operations routes: liveness, readiness, Prometheus metrics, the served model's metadata."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from starlette.responses import JSONResponse

from ..errors import RETRY_AFTER_S
from ..schemas import ErrorBody, ModelMetadata
from .dependencies import ERRORS, ReadyService, liveness_problem, ready_service, require_api_key

router = APIRouter(tags=["operations"])


@router.get(
    "/healthz", summary="Liveness: 200 while the process can serve; 503 when its batch worker has stopped or is stuck", responses={503: {"model": ErrorBody}}
)
async def healthz(request: Request) -> JSONResponse:
    problem = liveness_problem(request)
    if problem is not None:
        return JSONResponse({"detail": f"not alive: {problem}"}, status_code=503)
    return JSONResponse({"status": "alive"})


@router.get(
    "/readyz",
    summary="Readiness: 200 once the model is loaded and warmed up for every batch size, and while the batch worker serves",
    responses={503: {"model": ErrorBody}},
)
async def readyz(request: Request) -> JSONResponse:
    pending = request.app.state.pending
    if pending is not None:  # still being made (a TensorRT engine build), or failed to be
        return JSONResponse({"status": pending.state, "detail": f"not ready: {pending.detail}"}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})
    service = ready_service(request)
    return JSONResponse({"status": "ready", "queued_images": service.batcher.queued_images})


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    app_metrics = request.app.state.metrics
    service = request.app.state.service
    if service is not None:
        app_metrics.queue_depth.set(service.batcher.queued_images)
        app_metrics.pixels_in_flight.set(service.pixel_budget.in_use)
        app_metrics.seconds_per_image.set(service.batcher.estimate.seconds_per_image)
    return Response(app_metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get(
    "/v1/model",
    response_model=ModelMetadata,
    dependencies=[Depends(require_api_key)],
    responses={401: ERRORS[401], 503: ERRORS[503]},
    summary="The served model",
)
async def model_metadata(request: Request, service: ReadyService) -> ModelMetadata:
    return ModelMetadata.of(service.detector, request.app.state.settings)
