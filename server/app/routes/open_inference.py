"""The Open Inference Protocol (KServe v2) over HTTP/REST, on the same service, batcher and limits
as /detect: server and model metadata, liveness and readiness, and inference
(`POST /v2/models/{name}[/versions/1]/infer`; the tensors are open_inference_tensors.py's).

The model's name is its preset (as in /v1/model), its one version "1". Every error is answered in
the protocol's form, `{"error": "..."}`, with the status /detect would give the same request (400
undecodable, 413, 415, 422, 503 with Retry-After, 504, 401 without the API key) and 404 for a model
or version this server does not serve.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.responses import JSONResponse, Response

from .. import open_inference_tensors as tensors
from ..errors import RequestFailed, validation_detail
from ..service import Service
from ..uploads import read_body
from .dependencies import liveness_problem, ready_service, require_api_key, until_disconnected


class OpenInferenceRoute(APIRoute):
    """A route whose errors, its dependencies' included, take the protocol's form {"error": ...}."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except HTTPException as exc:
                return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)
            except RequestFailed as exc:
                return JSONResponse({"error": exc.detail}, status_code=exc.status, headers=exc.headers())
            except RequestValidationError as exc:
                return JSONResponse({"error": validation_detail(exc.errors())}, status_code=422)

        return route


ERROR = {"content": {"application/json": {"schema": {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}}}}
ERRORS = {
    status: {**ERROR, "description": text}
    for status, text in {
        400: "malformed request body, or an undecodable image",
        401: "missing or wrong X-API-Key (when the server has one)",
        404: "no such model or version",
        408: "the request body did not arrive within the server's body timeout",
        413: "too many bytes, pixels or images",
        415: "an unsupported image type, or a compressed request body",
        422: "inputs, outputs or parameters this model does not take (with what was wrong)",
        503: "busy (retry after Retry-After seconds), or not ready",
        504: "the request waited longer than the server's request timeout",
    }.items()
}
ModelName = Annotated[str, Path(description="the served model's preset, e.g. vfnet_r18_demo (see /v1/model)")]
ModelVersion = Annotated[str, Path(description="the model's version: its only one is 1")]

INFER_DOC = {
    "requestBody": {
        "required": True,
        "description": "An inference request: JSON, with the input `images` (BYTES [N]) as base64 strings in `data`; "
        "or Triton's binary tensor data extension: the JSON header (its length in the Inference-Header-Content-Length "
        "header) followed by the images, each as a 4-byte little-endian length and its bytes.",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "inputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name", "datatype", "shape"],
                                "properties": {
                                    "name": {"type": "string", "enum": [tensors.INPUT]},
                                    "datatype": {"type": "string", "enum": ["BYTES"]},
                                    "shape": {"type": "array", "items": {"type": "integer"}},
                                    "data": {"type": "array", "items": {"type": "string", "format": "byte"}},
                                    "parameters": {"type": "object"},
                                },
                            },
                        },
                        "outputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {"name": {"type": "string", "enum": list(tensors.OUTPUTS)}, "parameters": {"type": "object"}},
                            },
                        },
                        "parameters": {
                            "type": "object",
                            "properties": {
                                "score_threshold": {"type": "number"},
                                "iou_threshold": {"type": "number"},
                                "max_detections": {"type": "integer"},
                                "classes": {"type": "string", "description": "comma-separated class names"},
                                "binary_data_output": {"type": "boolean"},
                            },
                        },
                    },
                }
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}

router = APIRouter(prefix="/v2", tags=["open inference protocol (KServe v2)"], route_class=OpenInferenceRoute)


def document_served_model(openapi: dict, name: str) -> dict:
    """Name the served model (and its one version) as the only values of the v2 routes' path
    parameters in the OpenAPI document: true for this server, and what a client generator or a
    schema fuzzer needs to reach the model rather than only its 404."""
    values = {"name": [name], "version": [tensors.VERSION]}
    for path, operations in openapi.get("paths", {}).items():
        if path.startswith("/v2/models/"):
            for operation in operations.values():
                for parameter in operation.get("parameters", []):
                    if parameter.get("in") == "path" and parameter.get("name") in values:
                        parameter["schema"] = {**parameter["schema"], "enum": values[parameter["name"]]}
    return openapi


def served_model(request: Request, name: str, version: str | None = None) -> Service:
    """The service if `name` (and `version`) is the served model: 404 otherwise, 503 if not ready."""
    service = ready_service(request)
    served = service.detector.card.preset
    if name != served:
        raise RequestFailed(404, f"unknown model {name!r}; this server serves {served!r}")
    if version is not None and version != tensors.VERSION:
        raise RequestFailed(404, f"model {served!r} has no version {version!r}; its only version is {tensors.VERSION}")
    return service


@router.get("", summary="Server metadata", responses={200: {"description": "name, version, extensions"}})
async def server_metadata(request: Request) -> JSONResponse:
    return JSONResponse({"name": "vfnet-serve", "version": request.app.version, "extensions": ["binary_tensor_data", "model_configuration"]})


@router.get("/health/live", summary="Liveness (as /healthz)", responses={503: ERRORS[503]})
async def live(request: Request) -> JSONResponse:
    problem = liveness_problem(request)
    return JSONResponse({"live": True}) if problem is None else JSONResponse({"error": f"not alive: {problem}"}, status_code=503)


@router.get("/health/ready", summary="Readiness (as /readyz)", responses={503: ERRORS[503]})
async def ready(request: Request) -> JSONResponse:
    ready_service(request)  # 503 with the reason when not ready
    return JSONResponse({"ready": True})


async def _model_ready(request: Request, name: str, version: str | None) -> JSONResponse:
    served_model(request, name, version)
    return JSONResponse({"name": name, "ready": True})


async def _model_metadata(request: Request, name: str, version: str | None) -> JSONResponse:
    service = served_model(request, name, version)
    card, settings = service.detector.card, service.settings
    defaults = {
        "default_score_threshold": settings.default_score_threshold,
        "default_iou_threshold": card.iou_threshold,
        "max_detections": card.max_detections,
        "max_batch_size": settings.max_batch_size,
    }
    return JSONResponse(tensors.model_metadata(card.preset, service.detector.loaded.backend, list(card.class_names), defaults))


async def _model_config(request: Request, name: str, version: str | None) -> JSONResponse:
    service = served_model(request, name, version)
    settings = service.settings
    config = tensors.model_config(name, service.detector.loaded.backend, settings.max_batch_size, settings.max_batch_delay_ms, settings.queue_size)
    return JSONResponse(config)


async def _infer(request: Request, name: str, version: str | None) -> Response:
    started = time.perf_counter()
    service = served_model(request, name, version)
    settings = service.settings
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise RequestFailed(415, f"request Content-Encoding {encoding!r} is not supported; send the body uncompressed")
    body = await read_body(request, settings.max_body_bytes, settings.body_timeout_s)
    infer = tensors.read_request(body, request.headers.get(tensors.HEADER_LENGTH), settings.max_batch_size)
    service.check_options(infer.options)
    request_id = request.scope["state"]["request_id"]  # the sanitised one of the logs; the body's `id` is only echoed
    detections = await service.run_detection(infer.images, infer.options, request_id, started, until_disconnected(request))
    content, headers = tensors.write_response(name, infer, detections.results)
    return Response(content, headers=headers)


MODEL = {"dependencies": [Depends(require_api_key)], "responses": {k: ERRORS[k] for k in (401, 404, 503)}}
INFER = {"dependencies": [Depends(require_api_key)], "responses": ERRORS, "openapi_extra": INFER_DOC, "response_class": Response}


@router.get("/models/{name}", summary="Model metadata: inputs, outputs, class names", **MODEL)
async def model_metadata(request: Request, name: ModelName) -> JSONResponse:
    return await _model_metadata(request, name, None)


@router.get("/models/{name}/versions/{version}", summary="Model metadata of a version", **MODEL)
async def model_version_metadata(request: Request, name: ModelName, version: ModelVersion) -> JSONResponse:
    return await _model_metadata(request, name, version)


@router.get("/models/{name}/ready", summary="Model readiness", **MODEL)
async def model_ready(request: Request, name: ModelName) -> JSONResponse:
    return await _model_ready(request, name, None)


@router.get("/models/{name}/versions/{version}/ready", summary="Model readiness of a version", **MODEL)
async def model_version_ready(request: Request, name: ModelName, version: ModelVersion) -> JSONResponse:
    return await _model_ready(request, name, version)


@router.get("/models/{name}/config", summary="Model configuration (Triton's extension, as perf_analyzer reads it)", **MODEL)
async def model_config(request: Request, name: ModelName) -> JSONResponse:
    return await _model_config(request, name, None)


@router.get("/models/{name}/versions/{version}/config", summary="Model configuration of a version", **MODEL)
async def model_version_config(request: Request, name: ModelName, version: ModelVersion) -> JSONResponse:
    return await _model_config(request, name, version)


@router.post("/models/{name}/infer", summary="Detect objects in N encoded images", **INFER)
async def infer(request: Request, name: ModelName) -> Response:
    return await _infer(request, name, None)


@router.post("/models/{name}/versions/{version}/infer", summary="Detect objects, with a model version", **INFER)
async def infer_version(request: Request, name: ModelName, version: ModelVersion) -> Response:
    return await _infer(request, name, version)
