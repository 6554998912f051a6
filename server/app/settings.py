"""Service settings: environment variables `VFNET_*` (or a `.env` file), overridden by `vfnet serve` flags."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from vfnet.server.runtime.backends import BACKEND_CHOICES, BACKEND_NAMES, DEVICES, INFERENCE_PRECISIONS
from vfnet.server.runtime.detector import DEFAULT_SCORE_THRESHOLD


class ServeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VFNET_", env_file=".env", extra="ignore", populate_by_name=True)

    model: str | None = Field(
        None,
        description="checkpoint, ONNX file, OpenVINO IR (.xml), TensorRT engine, or a zoo model name (`vfnet models`), pulled and "
        "exported on first use, then served from the cache; default: the bundled demo model",
    )
    zoo: Path | None = Field(None, description="a zoo file (JSON) adding to or replacing the built-in model names")
    mirror: str | None = Field(
        None,
        validation_alias="VFNET_ZOO_MIRROR",  # the variable `vfnet pull` reads too
        description="download zoo models from this http(s):// or file:// base instead (read from VFNET_ZOO_MIRROR)",
    )
    backend: Literal[BACKEND_CHOICES] = Field("auto", description="auto (from the file) | " + " | ".join(BACKEND_NAMES))
    device: Literal[DEVICES] = Field("auto", description=" | ".join(DEVICES) + " (auto: CUDA when available)")
    precision: Literal[INFERENCE_PRECISIONS] = Field(
        "auto",
        description="auto (the model's own; float32 stays float32 on GPUs) | fp32 | bf16: with an OpenVINO IR, its inference precision "
        "(auto: bf16 where the CPU has AVX512_BF16 or AMX) | tf32: a float32 model on CUDA may multiply in TF32",
    )
    engine_cache: Path | None = Field(
        None,
        description="with --backend tensorrt and an ONNX --model: the folder of engines built from it, once per TensorRT, GPU and "
        "file (default ~/.cache/vfnet-serve/engines); while one builds, /readyz says building_engine",
    )
    host: str = Field("127.0.0.1", description="address to bind (0.0.0.0: every interface)")
    port: int = Field(8000, ge=0, le=65535, description="port to listen on")
    grpc_port: int = Field(
        8001, ge=0, le=65535, description="port of KServe v2 over gRPC (GRPCInferenceService and grpc.health.v1), on the same host; 0: no gRPC"
    )

    max_batch_size: int = Field(8, ge=1, le=256, description="images per backend call, and per request")
    max_batch_delay_ms: float = Field(0.0, ge=0, description="extra wait for company; 0: batch whatever queued while the model was busy")
    queue_size: int = Field(64, ge=1, description="images that may wait; beyond that requests get 503")
    max_queue_wait_ms: float = Field(
        1000.0, gt=0, description="503 at once for a request whose estimated wait (images ahead x measured seconds per image) exceeds this"
    )
    request_timeout_s: float = Field(30.0, gt=0, description="a request waiting longer gets 504; a backend call running longer marks the worker stuck")
    max_body_bytes: int = Field(20 * 1024 * 1024, ge=1, description="413 beyond this many request bytes (gRPC: the largest message)")
    max_pixels: int = Field(50_000_000, ge=1, description="413 for an image with more pixels (checked from its header)")
    pixel_budget: int | None = Field(
        None, ge=1, description="decoded pixels in flight across requests (default decode_threads x max_pixels); beyond it requests wait, then 503"
    )
    header_timeout_s: float = Field(5.0, gt=0, description="408 and close when a request's headers take longer")
    body_timeout_s: float = Field(15.0, gt=0, description="408 when a request's body takes longer to arrive")
    max_header_bytes: int = Field(32 * 1024, ge=1024, description="431 and close beyond this many header bytes")
    max_connections: int = Field(256, ge=1, description="open connections; a request arriving beyond them gets 503")
    default_score_threshold: float = Field(DEFAULT_SCORE_THRESHOLD, ge=0, le=1, description="score threshold when a request gives none")

    api_key: SecretStr | None = Field(
        None, description="when set, /detect, /v1/model and the /v2/models routes need header X-API-Key (gRPC: metadata x-api-key)"
    )
    cors_origins: list[str] = Field(
        default_factory=list, description='allowed origins; a flag takes them comma-separated, the variable as JSON, e.g. ["https://app.example.com"] or ["*"]'
    )
    intra_op_threads: int | None = Field(None, ge=1, description="backend compute threads (default: the backend's)")
    inter_op_threads: int | None = Field(None, ge=1, description="backend inter-op threads (default: the backend's)")
    decode_threads: int = Field(
        default_factory=lambda: min(4, os.cpu_count() or 1), ge=1, description="threads decoding images (default: CPU count, at most 4)"
    )
    graceful_shutdown_s: float = Field(30.0, ge=0, description="on SIGTERM, time to finish accepted requests")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="debug | info | warning | error")
    log_format: Literal["json", "text"] = Field("json", description="json | text: every log line (ours and uvicorn's) as a JSON object, or as text")

    @model_validator(mode="after")
    def _limits_fit_together(self) -> ServeSettings:
        if self.queue_size < self.max_batch_size:
            raise ValueError(f"queue_size ({self.queue_size}) must be at least max_batch_size ({self.max_batch_size})")
        if self.pixel_budget is not None and self.pixel_budget < self.max_pixels:
            raise ValueError(f"pixel_budget ({self.pixel_budget:,}) must hold one image of max_pixels ({self.max_pixels:,})")
        return self

    @property
    def pixels_in_flight(self) -> int:
        """The pixel budget in force: `pixel_budget`, or room for every decode thread at `max_pixels`."""
        return self.pixel_budget if self.pixel_budget is not None else self.decode_threads * self.max_pixels
