"""`vfnet serve`: run the HTTP service with uvicorn (and KServe v2 over gRPC beside it, in its lifespan)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from dataclasses import fields
from pathlib import Path

from vfnet.server.runtime import BackendOptions
from vfnet.server.runtime.load import demo_model
from vfnet.server.zoo import ZooError
from vfnet.server.zoo.resolve import served_file

from .logs import configure_logging
from .settings import ServeSettings

STARTUP_FAILURE = 3  # uvicorn's exit code when the app could not start (e.g. a port taken)

EXAMPLES = """examples:
  vfnet serve                                        # the bundled demo model on CPU, http://127.0.0.1:8000
  vfnet serve --model vfnet_r50.onnx --host 0.0.0.0 --max-batch-size 4
  vfnet serve --model vfnet_r50_fpn_mstrain_2x_coco    # a zoo name (`vfnet models`): pulled and exported once
  VFNET_API_KEY=secret vfnet serve --model vfnet_r50.onnx   # every setting also reads VFNET_<NAME>

  curl -F image=@street.jpg 'http://127.0.0.1:8000/detect?score_threshold=0.4'
"""


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per ServeSettings field, its help made from the field's description and default, so
    that flags, environment variables and documentation cannot drift apart. Values are passed to
    the settings as text, which validate and convert them."""
    for name, field in ServeSettings.model_fields.items():
        shown = "" if field.default_factory is not None or field.default is None else f" (default {field.default})"
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, help=f"{field.description}{shown}")


def resolve_model(settings: ServeSettings, say) -> Path:
    """The model to serve: --model (a file, or a zoo name: pulled and exported on first use, then
    taken from the cache), else the bundled demo model (its ONNX export; the checkpoint for --backend torch)."""
    if settings.model is None:
        return demo_model(settings.backend)
    zoo = None if settings.zoo is None else str(settings.zoo)
    return served_file(settings.model, settings.backend, zoo_file=zoo, mirror=settings.mirror, say=say)


def backend_options(settings: ServeSettings) -> BackendOptions:
    """The settings that say how to run the model, as the runtime's BackendOptions (same names)."""
    return BackendOptions(**{field.name: getattr(settings, field.name) for field in fields(BackendOptions)})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vfnet serve",
        description="Serve VFNet detections over HTTP (FastAPI + uvicorn). Every option can also be set as an "
        "environment variable VFNET_<OPTION> (e.g. VFNET_MAX_BATCH_SIZE=4); flags win. API docs at /docs.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_setting_flags(parser)
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if v is not None}
    if "cors_origins" in overrides:
        overrides["cors_origins"] = [o.strip() for o in overrides["cors_origins"].split(",") if o.strip()]
    from pydantic import ValidationError

    try:
        settings = ServeSettings(**overrides)
    except ValidationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    configure_logging(settings.log_level, settings.log_format)
    import uvicorn

    from vfnet.server.runtime import ModelLoadError, PendingModel, open_model

    from .connections import guarded_protocol
    from .main import create_app, rejected_connection_logger

    log = logging.getLogger("vfnet.server")
    try:
        model = resolve_model(settings, log.info)
        served = open_model(
            model,
            settings.backend,
            backend_options(settings),
            engine_cache=settings.engine_cache,
            max_batch_size=settings.max_batch_size,
            max_pixels=settings.max_pixels,
            progress=log.info,
        )
    except (ModelLoadError, ZooError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if isinstance(served, PendingModel):
        log.info("serving %s (%s) at http://%s:%d once %s", model, served.card.preset, settings.host, settings.port, served.detail)
    else:
        log.info(
            "serving %s (%s) with %s on %s in %s at http://%s:%d",
            model,
            served.card.preset,
            served.loaded.backend,
            served.loaded.device,
            served.loaded.precision,
            settings.host,
            settings.port,
        )
    # uvicorn drains on SIGTERM / SIGINT, then re-raises the signal under the handler that was there
    # before it started. An inert handler makes that re-raise a no-op, so a drained server exits 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: None)
    app = create_app(settings, served)
    protocol = guarded_protocol(settings.header_timeout_s, settings.max_header_bytes, settings.max_connections, rejected_connection_logger(app.state.metrics))
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=protocol,
        log_config=None,  # uvicorn's loggers propagate to ours (configure_logging): one format
        log_level=settings.log_level,
        access_log=False,  # our own access log carries the request id
        timeout_graceful_shutdown=settings.graceful_shutdown_s,
    )

    class Server(uvicorn.Server):
        """uvicorn's server (as uvicorn.run makes it), which on SIGTERM / SIGINT also starts the gRPC
        server's drain, so that both protocols drain at once, each for graceful_shutdown_s."""

        def handle_exit(self, sig, frame) -> None:
            super().handle_exit(sig, frame)
            if app.state.grpc is not None:
                app.state.grpc.begin_drain()

    server = Server(config)
    server.run()
    return 0 if server.started else STARTUP_FAILURE
