"""The FastAPI app factory: `create_app(settings, detector)`.

The detector is loaded by the caller (so a bad model file fails before the server binds its port);
the app warms it up in the background for every batch size 1..max_batch_size, and /readyz says 503
until that is done. Requests flow: upload limits -> decode in a thread pool -> dynamic batcher ->
one backend call per batch in a worker thread -> per-request filters. Every response carries an
X-Request-ID, and every request is logged as one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse

from vfnet.server.runtime import Detector

from .batcher import Batcher, BatchStats
from .metrics import Metrics
from .routes import router
from .settings import ServeSettings

log = logging.getLogger("vfnet.server")
access_log = logging.getLogger("vfnet.access")
ROUTES = {"/detect", "/detect/annotated", "/healthz", "/readyz", "/metrics", "/v1/model", "/docs", "/openapi.json"}
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


class Service:
    """What the routes need: the detector, the batcher, the decode threads, the metrics, readiness."""

    def __init__(self, detector: Detector, settings: ServeSettings, metrics: Metrics):
        self.detector = detector
        self.metrics = metrics
        self.ready = False
        self.decode_pool = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="decode")
        self.batcher = Batcher(
            detector.infer,
            max_batch_size=settings.max_batch_size,
            max_delay_s=settings.max_batch_delay_ms / 1000,
            queue_size=settings.queue_size,
            on_batch=self._record_batch,
        )

    def _record_batch(self, stats: BatchStats) -> None:
        self.metrics.batch_size.observe(stats.images)
        self.metrics.inference_seconds.observe(stats.seconds)
        self.metrics.images.inc(stats.images)

    def warm_up(self, max_batch_size: int) -> None:
        """One backend call per batch size the batcher can form, at the model's full input size."""
        long_side, short_side = self.detector.metadata.input_size
        blank = np.zeros((short_side, long_side, 3), dtype=np.uint8)
        for size in range(1, max_batch_size + 1):
            self.detector.infer([blank] * size)


class RequestContext:
    """Pure ASGI middleware: request id, access log line, request counters and latency."""

    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        route = scope["path"] if scope["path"] in ROUTES else "other"
        status = {"code": 500}
        started = time.perf_counter()

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self.metrics.in_flight.dec()
            seconds = time.perf_counter() - started
            self.metrics.requests.labels(route, str(status["code"])).inc()
            self.metrics.request_seconds.labels(route).observe(seconds)
            client = scope.get("client") or ("-", 0)
            access_log.info(
                json.dumps(
                    {
                        "request_id": request_id,
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status["code"],
                        "ms": round(seconds * 1000, 2),
                        "client": client[0],
                    }
                )
            )


def create_app(settings: ServeSettings, detector: Detector) -> FastAPI:
    metrics = Metrics()
    metrics.set_model(detector.metadata)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service = Service(detector, settings, metrics)
        service.batcher.start()
        app.state.service = service

        async def warm_up():
            started = time.perf_counter()
            await asyncio.get_running_loop().run_in_executor(None, service.warm_up, settings.max_batch_size)
            service.ready = True
            log.info("ready: warmed up batch sizes 1..%d in %.1f s", settings.max_batch_size, time.perf_counter() - started)

        warming = asyncio.create_task(warm_up())
        try:
            yield
        finally:
            service.ready = False
            warming.cancel()
            await service.batcher.drain()  # finish every accepted request
            service.decode_pool.shutdown(wait=True)

    app = FastAPI(
        title="vfnet-serve",
        version=detector.metadata.version,
        summary="VarifocalNet object detection: boxes ranked by IoU-aware classification score (IACS)",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.service = None
    app.include_router(router)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or e['loc'][0]}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"detail": f"bad parameters: {problems}"}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        request_id = request.scope.get("state", {}).get("request_id", "-")
        log.exception("unexpected error in request %s", request_id)
        return JSONResponse({"detail": f"internal error (request id {request_id})"}, status_code=500)

    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"], allow_headers=["*"])
    app.add_middleware(RequestContext, metrics=metrics)
    return app
