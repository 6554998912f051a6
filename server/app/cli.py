"""`vfnet serve`: run the HTTP service with uvicorn."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from .logs import configure_logging
from .settings import ServeSettings

EXAMPLES = """examples:
  vfnet serve                                        # the bundled demo model on CPU, http://127.0.0.1:8000
  vfnet serve --model vfnet_r50.onnx --host 0.0.0.0 --max-batch-size 4
  VFNET_API_KEY=secret vfnet serve --model vfnet_r50.onnx   # every setting also reads VFNET_<NAME>

  curl -F image=@street.jpg 'http://127.0.0.1:8000/detect?score_threshold=0.4'
"""

FLAGS = {  # flag -> (settings field, type, help)
    "--model": ("model", Path, "checkpoint (.safetensors) or ONNX file (default: the bundled demo model)"),
    "--backend": ("backend", str, "auto | onnxruntime | torch"),
    "--device": ("device", str, "auto | cpu | cuda"),
    "--host": ("host", str, "address to bind (default 127.0.0.1)"),
    "--port": ("port", int, "port (default 8000)"),
    "--max-batch-size": ("max_batch_size", int, "images per backend call and per request (default 8)"),
    "--max-batch-delay-ms": ("max_batch_delay_ms", float, "extra wait for company, ms (default 0: batches form while the model is busy)"),
    "--queue-size": ("queue_size", int, "images that may wait before requests get 503 (default 64)"),
    "--max-queue-wait-ms": ("max_queue_wait_ms", float, "503 at once when a request's estimated wait exceeds this (default 1000)"),
    "--request-timeout-s": ("request_timeout_s", float, "504 after this long; a backend call running longer marks the worker stuck (default 30)"),
    "--max-body-bytes": ("max_body_bytes", int, "413 above this request size (default 20 MiB)"),
    "--max-pixels": ("max_pixels", int, "413 above this many pixels per image (default 50,000,000)"),
    "--pixel-budget": ("pixel_budget", int, "decoded pixels in flight across requests (default decode threads x max pixels)"),
    "--header-timeout-s": ("header_timeout_s", float, "408 and close when headers take longer (default 5)"),
    "--body-timeout-s": ("body_timeout_s", float, "408 when the body takes longer to arrive (default 15)"),
    "--max-header-bytes": ("max_header_bytes", int, "431 and close above this many header bytes (default 32 KiB)"),
    "--max-connections": ("max_connections", int, "open connections before requests get 503 (default 256)"),
    "--default-score-threshold": ("default_score_threshold", float, "when a request gives none (default 0.3)"),
    "--api-key": ("api_key", str, "require this X-API-Key on /detect and /v1/model"),
    "--cors-origins": ("cors_origins", str, "comma-separated allowed origins, or *"),
    "--intra-op-threads": ("intra_op_threads", int, "backend compute threads"),
    "--inter-op-threads": ("inter_op_threads", int, "ONNX Runtime inter-op threads"),
    "--decode-threads": ("decode_threads", int, "image decoding threads (default: CPU count, at most 4)"),
    "--graceful-shutdown-s": ("graceful_shutdown_s", float, "on SIGTERM, time to finish accepted requests (default 30)"),
    "--log-level": ("log_level", str, "debug | info | warning | error"),
    "--log-format": ("log_format", str, "json (default: one JSON object per line) | text"),
}


def resolve_model(settings: ServeSettings) -> Path:
    """The model to serve: --model, else the demo model, preferring its ONNX export (`make serve`
    builds it next to the checkpoint) so that CPU serving uses ONNX Runtime."""
    from vfnet.server.runtime.load import DEMO_CHECKPOINT

    if settings.model is not None:
        return settings.model
    demo_onnx = DEMO_CHECKPOINT.with_suffix(".onnx")
    fresh = demo_onnx.is_file() and demo_onnx.stat().st_mtime >= DEMO_CHECKPOINT.stat().st_mtime
    return demo_onnx if fresh and settings.backend in ("auto", "onnxruntime") else DEMO_CHECKPOINT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vfnet serve",
        description="Serve VFNet detections over HTTP (FastAPI + uvicorn). Every option can also be set as an "
        "environment variable VFNET_<OPTION> (e.g. VFNET_MAX_BATCH_SIZE=4); flags win. API docs at /docs.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for flag, (field, kind, text) in FLAGS.items():
        parser.add_argument(flag, dest=field, type=kind, help=text)
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

    from vfnet.server.runtime import ModelLoadError, load_detector

    from .connections import guarded_protocol
    from .main import create_app, rejected_connection_logger

    model = resolve_model(settings)
    try:
        detector = load_detector(
            model,
            backend=settings.backend,
            device=settings.device,
            intra_op_threads=settings.intra_op_threads,
            inter_op_threads=settings.inter_op_threads,
            max_pixels=settings.max_pixels,
        )
    except ModelLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    info = detector.metadata
    logging.getLogger("vfnet.server").info(
        "serving %s (%s) with %s on %s at http://%s:%d", model, info.preset, info.backend, info.device, settings.host, settings.port
    )
    # uvicorn drains on SIGTERM / SIGINT, then re-raises the signal under the handler that was there
    # before it started. An inert handler makes that re-raise a no-op, so a drained server exits 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: None)
    app = create_app(settings, detector)
    protocol = guarded_protocol(
        settings.header_timeout_s, settings.max_header_bytes, settings.max_connections, rejected_connection_logger(app.state.metrics)
    )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        http=protocol,
        log_config=None,  # uvicorn's loggers propagate to ours (configure_logging): one format
        log_level=settings.log_level,
        access_log=False,  # our own access log carries the request id
        timeout_graceful_shutdown=settings.graceful_shutdown_s,
    )
    return 0
