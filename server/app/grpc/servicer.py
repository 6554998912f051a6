"""inference.GRPCInferenceService (inference.proto) over the app's one Service: the same batcher,
limits, admission, API key, thresholds and class filters as /detect and HTTP /v2, and the same
checks, through the same code (routes/dependencies.py, routes/open_inference.py's served_model,
open_inference_tensors.py by way of tensors.py).

A call is seen as what those HTTP helpers read of a request (`CallView`): the app, and the call's
metadata as headers (gRPC metadata keys are lower-case, as HTTP/2 header names are): the API key
is metadata `x-api-key`, a request id `x-request-id` (else one is made; either way it comes back in
the trailing metadata, and names the call in the logs).

Errors: the HTTP status each failure has everywhere else, as a gRPC status code, with the same words:

    HTTP status                                        gRPC status code
    400 malformed, undecodable image                   INVALID_ARGUMENT
    413 too many images or pixels                      INVALID_ARGUMENT (as sent it can never succeed)
    415 unsupported image type                         INVALID_ARGUMENT
    422 bad inputs, outputs or parameters              INVALID_ARGUMENT
    401 missing or wrong API key                       UNAUTHENTICATED
    404 no such model or version                       NOT_FOUND
    503 busy (queue full, estimated wait too long,     RESOURCE_EXHAUSTED, with trailing metadata
        no room to decode)                             `retry-after`: seconds after which to retry
    503 not ready (loading, warming up, worker down)   UNAVAILABLE
    504 waited longer than the request timeout         DEADLINE_EXCEEDED
    500 inference failed                               INTERNAL
gRPC itself answers RESOURCE_EXHAUSTED without a retry hint for a message over max_body_bytes or a
call beyond max_connections concurrent ones, and UNIMPLEMENTED for an rpc we do not serve.

A call whose deadline passes or whose client cancels it leaves the batcher's queue, as a
disconnected HTTP request does; it is counted as DEADLINE_EXCEEDED or CANCELLED.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from dataclasses import dataclass

import grpc
from fastapi import HTTPException
from google.protobuf import json_format

from .. import open_inference_tensors as open_tensors
from ..errors import RETRY_AFTER_S, ClientGone, RequestFailed
from ..main import REQUEST_ID
from ..routes.dependencies import liveness_problem, readiness_problem, require_api_key
from ..routes.open_inference import served_model
from . import inference_pb2 as pb
from . import inference_pb2_grpc
from .tensors import read_request, write_response

log = logging.getLogger("vfnet.server")
access_log = logging.getLogger("vfnet.access")
SERVICE = "inference.GRPCInferenceService"
EXTENSIONS = ["model_configuration"]  # Triton's ModelConfig; binary tensors are gRPC's own raw contents
Code = grpc.StatusCode
STATUS_CODES = {
    400: Code.INVALID_ARGUMENT,
    413: Code.INVALID_ARGUMENT,
    415: Code.INVALID_ARGUMENT,
    422: Code.INVALID_ARGUMENT,
    401: Code.UNAUTHENTICATED,
    404: Code.NOT_FOUND,
    503: Code.RESOURCE_EXHAUSTED,  # busy; a server that is not ready answers UNAVAILABLE (NotReady)
    504: Code.DEADLINE_EXCEEDED,
}


class NotReady(Exception):
    """The server cannot serve now (loading, warming up, worker down): UNAVAILABLE."""


@dataclass(frozen=True)
class CallView:
    """A gRPC call as the HTTP dependencies read a request: its app, and its metadata as headers."""

    app: object
    headers: dict[str, str]


def rpc(handler):
    """An rpc of the servicer: `handler(self, request, context, call, request_id, started)` runs
    under `self.run` (errors to status codes, metrics, the access log); `started` is its
    time.perf_counter() arrival, from which the request timeout counts."""

    @functools.wraps(handler)
    async def method(self, request, context):
        return await self.run(handler.__name__, handler, request, context)

    return method


class InferenceServicer(inference_pb2_grpc.GRPCInferenceServiceServicer):
    """The GRPCInferenceService of one app (FastAPI): its state holds the service, settings, metrics."""

    def __init__(self, app):
        self.app = app
        self.metrics = app.state.metrics

    async def run(self, name: str, handler, request, context: grpc.aio.ServicerContext):
        started = time.perf_counter()
        headers = {key: value for key, value in (context.invocation_metadata() or ()) if isinstance(value, str)}
        given = headers.get("x-request-id", "")
        call = CallView(self.app, headers)
        request_id = given if REQUEST_ID.match(given) else uuid.uuid4().hex
        trailers = [("x-request-id", request_id)]
        code, detail = Code.OK, None
        self.metrics.in_flight.inc()
        try:
            context.set_trailing_metadata(trailers)
            return await handler(self, request, context, call, request_id, started)
        except RequestFailed as exc:
            code, detail = STATUS_CODES.get(exc.status, Code.INTERNAL), exc.detail
            if code is Code.RESOURCE_EXHAUSTED:
                trailers.append(("retry-after", str(exc.retry_after_s or RETRY_AFTER_S)))
        except HTTPException as exc:  # require_api_key's 401
            code, detail = STATUS_CODES.get(exc.status_code, Code.INTERNAL), str(exc.detail)
        except NotReady as exc:
            code, detail = Code.UNAVAILABLE, str(exc)
        except (ClientGone, asyncio.CancelledError):
            remaining = context.time_remaining()
            code = Code.DEADLINE_EXCEEDED if remaining is not None and remaining <= 0 else Code.CANCELLED
            raise asyncio.CancelledError from None  # nobody reads an answer now
        except Exception:
            log.exception("unexpected error", extra={"fields": {"request_id": request_id}})
            code, detail = Code.INTERNAL, f"internal error (request id {request_id})"
        finally:
            self.metrics.in_flight.dec()
            self.record(name, code, time.perf_counter() - started, request_id, context.peer())
        await context.abort(code, detail, trailing_metadata=tuple(trailers))

    def record(self, name: str, code: grpc.StatusCode, seconds: float, request_id: str, peer: str) -> None:
        """A call's metrics sample and access-log line (HTTP's fields; method "gRPC", path the rpc's)."""
        path = f"/{SERVICE}/{name}"
        self.metrics.grpc_requests.labels(name, code.name).inc()
        self.metrics.request_seconds.labels(path).observe(seconds)
        fields = {"status": code.name, "ms": round(seconds * 1000, 2), "request_id": request_id, "method": "gRPC", "path": path, "client": peer}
        access_log.info("request", extra={"fields": fields})

    def served(self, call: CallView, name: str, version: str):
        """The service if `name` (and `version`, "" for any) is the served model: NotReady, or 404."""
        problem = readiness_problem(call)
        if problem is not None:
            raise NotReady(f"not ready: {problem}")
        return served_model(call, name, version or None)

    @rpc
    async def ServerLive(self, request, context, call, request_id, started):
        return pb.ServerLiveResponse(live=liveness_problem(call) is None)

    @rpc
    async def ServerReady(self, request, context, call, request_id, started):
        return pb.ServerReadyResponse(ready=readiness_problem(call) is None)

    @rpc
    async def ModelReady(self, request, context, call, request_id, started):
        require_api_key(call)
        try:
            self.served(call, request.name, request.version)
        except NotReady:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    @rpc
    async def ServerMetadata(self, request, context, call, request_id, started):
        return pb.ServerMetadataResponse(name="vfnet-serve", version=self.app.version, extensions=EXTENSIONS)

    @rpc
    async def ModelMetadata(self, request, context, call, request_id, started):
        require_api_key(call)
        service = self.served(call, request.name, request.version)
        card = service.detector.card
        metadata = open_tensors.model_metadata(card.preset, service.detector.loaded.backend, list(card.class_names), {})
        fields = ("name", "versions", "platform", "inputs", "outputs")  # the message has no class names: see /v2/models/{name}
        return json_format.ParseDict({key: metadata[key] for key in fields}, pb.ModelMetadataResponse())

    @rpc
    async def ModelConfig(self, request, context, call, request_id, started):
        require_api_key(call)
        service = self.served(call, request.name, request.version)
        settings = service.settings
        config = open_tensors.model_config(
            request.name, service.detector.loaded.backend, settings.max_batch_size, settings.max_batch_delay_ms, settings.queue_size
        )
        return json_format.ParseDict({"config": config}, pb.ModelConfigResponse())  # a field our proto lacks raises: keep them in step

    @rpc
    async def ModelInfer(self, request, context, call, request_id, started):
        require_api_key(call)
        service = self.served(call, request.model_name, request.model_version)
        infer = read_request(request, service.settings.max_batch_size)
        service.check_options(infer.options)
        gone = asyncio.Event()
        context.add_done_callback(lambda _: gone.set())  # the call ended early: cancelled, or its deadline passed
        work = asyncio.ensure_future(service.run_detection(infer.images, infer.options, request_id, started, gone.wait))
        try:
            detections = await asyncio.shield(work)  # a cancelled call must not cancel the job mid-step
        except asyncio.CancelledError:
            gone.set()
            await asyncio.wait([work])  # it leaves the queue (ClientGone), or had just finished
            if not work.cancelled():
                work.exception()  # seen: not logged as never retrieved
            raise
        return write_response(request.model_name, infer, detections.results)
