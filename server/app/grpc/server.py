"""The gRPC server beside the HTTP app: grpc.aio in the same process and event loop, on the
settings' host and `grpc_port`, started and stopped by the app's lifespan (main.py) when grpc_port
is not 0. It serves inference.GRPCInferenceService (servicer.py) and the standard health service
grpc.health.v1.Health (grpcio-health-checking), so Kubernetes' gRPC probes work.

Health: the overall service ("") and inference.GRPCInferenceService are SERVING exactly when the
server is ready (/readyz's 200: model loaded and warmed up, batch worker running), else NOT_SERVING;
a Check reads readiness at that moment, a Watch hears of changes within WATCH_PERIOD_S.

Limits: a message received may hold max_body_bytes (gRPC answers RESOURCE_EXHAUSTED beyond it),
and at most max_connections calls run at once (the HTTP connection cap; gRPC multiplexes calls on
connections). The port is bound exclusively (no SO_REUSEPORT), so a second server on the same port
fails to start instead of sharing it.

Drain: on SIGTERM (or SIGINT) `begin_drain()`, called from uvicorn's signal handling (cli.py), turns
health NOT_SERVING, refuses new calls (UNAVAILABLE) and gives the calls in flight up to
graceful_shutdown_s, at the same time as uvicorn drains HTTP; the lifespan's end waits for it
before the batcher drains.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from ..routes.dependencies import readiness_problem
from . import inference_pb2_grpc
from .servicer import SERVICE, CallView, InferenceServicer

log = logging.getLogger("vfnet.server")
WATCH_PERIOD_S = 1.0
HEALTH_SERVICES = ("", SERVICE)  # "": the server as a whole (what a probe without a service asks)


def address(host: str, port: int) -> str:
    """host:port for grpc (an IPv6 address in brackets)."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


class Health(health.aio.HealthServicer):
    """grpc.health.v1 with the app's readiness as every service's status."""

    def __init__(self, app):
        super().__init__()
        self.app = app

    async def refresh(self) -> None:
        ready = readiness_problem(CallView(self.app, {})) is None
        status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in HEALTH_SERVICES:
            await self.set(name, status)  # ignored once draining: NOT_SERVING stays

    async def Check(self, request, context):
        await self.refresh()
        return await super().Check(request, context)

    async def watch_readiness(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(WATCH_PERIOD_S)


class GrpcServer:
    """KServe v2 over gRPC for one app (FastAPI), on its settings' host and grpc_port."""

    def __init__(self, app):
        settings = app.state.settings
        self.grace_s = settings.graceful_shutdown_s
        self.address = address(settings.host, settings.grpc_port)
        options = [("grpc.max_receive_message_length", settings.max_body_bytes), ("grpc.so_reuseport", 0)]
        self.server = grpc.aio.server(options=options, maximum_concurrent_rpcs=settings.max_connections)
        self.health = Health(app)
        inference_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(app), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.watching: asyncio.Task | None = None
        self.stopping: asyncio.Future | None = None

    async def start(self) -> None:
        """Bind and serve (RuntimeError when the port cannot be bound)."""
        self.loop = asyncio.get_running_loop()
        await self.health.refresh()
        try:
            self.server.add_insecure_port(self.address)
        except RuntimeError:
            raise RuntimeError(f"cannot listen for gRPC on {self.address}: the port is taken or not allowed (--grpc-port; 0: no gRPC)") from None
        await self.server.start()
        self.watching = asyncio.create_task(self.health.watch_readiness())
        log.info("KServe v2 over gRPC at %s", self.address)

    def begin_drain(self) -> None:
        """Start the drain; safe to call from a signal handler or another thread, and more than once."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> asyncio.Future:
        if self.stopping is None:
            log.info("gRPC: draining, up to %g s for the calls in flight", self.grace_s)
            self.stopping = asyncio.ensure_future(self._stop())
        return self.stopping

    async def _stop(self) -> None:
        if self.watching is not None:
            self.watching.cancel()
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.grace_s)  # refuses new calls now; cancels those left after grace_s

    async def stop(self) -> None:
        """Drain (if not begun) and wait until the server has stopped."""
        await self._drain()
