"""The FastAPI app factory: `create_app(settings, detector)`.

The detector is loaded by the caller (so a bad model file fails before the server binds its port);
the app warms it up in the background for every batch size 1..max_batch_size, and /readyz says 503
until that is done. A model that takes minutes to make (a TensorRT engine build) is given as a
`PendingModel` (vfnet.server.runtime) instead: the server listens at once, makes it in a thread, and /readyz answers 503
with {"status": "building_engine", "detail": ...} until it is made and warmed up. Requests flow: upload limits -> decode under the pixel budget, in threads ->
dynamic batcher -> one backend call per batch in the inference thread -> per-request filters.
Every response carries an X-Request-ID, and every request is logged as one access-log record.
With settings.grpc_port the lifespan also serves KServe v2 over gRPC (grpc/server.py) on the same service.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from vfnet.server.runtime import Detector, PendingModel

from .connections import OVER_CAPACITY
from .errors import RETRY_AFTER_S, ClientGone, RequestFailed, validation_detail
from .metrics import Metrics
from .routes import open_inference, router
from .schemas import ModelSummary
from .service import Service
from .settings import ServeSettings

log = logging.getLogger("vfnet.server")
access_log = logging.getLogger("vfnet.access")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
CLIENT_CLOSED = 499  # nginx's status for a client that went away before its answer


def log_access(metrics: Metrics, route: str, status: int, seconds: float, **fields) -> None:
    """The one record every request leaves: a metrics sample and an access-log line."""
    metrics.requests.labels(route, str(status)).inc()
    metrics.request_seconds.labels(route).observe(seconds)
    access_log.info("request", extra={"fields": {"status": status, "ms": round(seconds * 1000, 2), **fields}})


def error_body(detail: str) -> dict[str, str]:
    """The body of an answer made before any route runs: both protocols' error keys, /detect's
    `detail` and the Open Inference Protocol's `error`."""
    return {"detail": detail, "error": detail}


class RequestContext:
    """Pure ASGI middleware: request id, access log, request metrics, the connection cap's 503, and
    the last word on unexpected errors (one log record with the request id, a JSON 500)."""

    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if REQUEST_ID.match(given) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = {"code": 500, "started": False}
        started = time.perf_counter()

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            if scope.get(OVER_CAPACITY):
                detail = f"server busy: {scope[OVER_CAPACITY]} connections open, the limit is {scope['app'].state.settings.max_connections}"
                headers = {"Retry-After": str(RETRY_AFTER_S), "Connection": "close"}
                await JSONResponse(error_body(detail), status_code=503, headers=headers)(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unexpected error", extra={"fields": {"request_id": request_id}})
            if not status["started"]:
                response = JSONResponse(error_body(f"internal error (request id {request_id})"), status_code=500)
                await response(scope, receive, send_with_id)
        finally:
            self.metrics.in_flight.dec()
            client = scope.get("client") or ("-", 0)
            fields = {"request_id": request_id, "method": scope["method"], "path": scope["path"], "client": client[0]}
            if "note" in state:
                fields["note"] = state["note"]
            route = scope.get("route")  # the route template the app matched, e.g. /v2/models/{name}/infer
            log_access(self.metrics, getattr(route, "path", "other"), status["code"], time.perf_counter() - started, **fields)


def create_app(settings: ServeSettings, model: Detector | PendingModel) -> FastAPI:
    metrics = Metrics()

    async def start(app: FastAPI) -> None:
        detector = model
        if isinstance(model, PendingModel):
            started = time.perf_counter()
            try:
                detector = await asyncio.get_running_loop().run_in_executor(None, model.load)
            except Exception as exc:
                log.exception("the model could not be made")
                model.state, model.detail = "failed", f"the model could not be made: {exc}"
                return
            log.info("model made in %.0f s", time.perf_counter() - started)
        metrics.set_model(ModelSummary.of(detector))
        app.state.service = Service(detector, settings, metrics)
        app.state.pending = None
        await app.state.service.start()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if settings.grpc_port:
            from .grpc.server import GrpcServer  # grpc is imported only by a server that serves it

            app.state.grpc = GrpcServer(app)
            await app.state.grpc.start()  # a port that cannot be bound fails the start, as HTTP's does
        starting = asyncio.create_task(start(app))
        try:
            yield
        finally:
            starting.cancel()
            if app.state.grpc is not None:
                await app.state.grpc.stop()  # its calls in flight finish first (the drain began at SIGTERM)
            if app.state.service is not None:
                await app.state.service.stop()

    app = FastAPI(
        title="vfnet-serve",
        version=model.card.version,
        summary="VarifocalNet object detection: boxes ranked by IoU-aware classification score (IACS)",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.service = None
    app.state.grpc = None  # the gRPC server (grpc/server.py) while the lifespan runs, when settings.grpc_port
    app.state.pending = model if isinstance(model, PendingModel) else None
    app.include_router(router)
    default_openapi = app.openapi
    app.openapi = lambda: open_inference.document_served_model(default_openapi(), model.card.preset)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def no_route(request: Request, exc: StarletteHTTPException) -> JSONResponse:  # 404, 405: no route matched
        return JSONResponse(error_body(exc.detail), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestFailed)
    async def request_failed(request: Request, exc: RequestFailed) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers())

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_detail(exc.errors())}, status_code=422)

    @app.exception_handler(ClientGone)
    async def client_gone(request: Request, exc: ClientGone) -> Response:
        request.scope["state"]["note"] = str(exc)  # the access-log line says what happened
        return Response(status_code=CLIENT_CLOSED)  # nobody reads it; the status goes to the log and metrics

    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"], allow_headers=["*"])
    app.add_middleware(RequestContext, metrics=metrics)
    return app


def rejected_connection_logger(metrics: Metrics):
    """`on_reject` for connections.guarded_protocol: a connection answered 408/431 before any
    request started still leaves its access record."""

    def on_reject(status: int, detail: str) -> None:
        log_access(metrics, "other", status, 0.0, note=detail)

    return on_reject
