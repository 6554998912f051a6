"""Service settings: environment variables `VFNET_*` (or a `.env` file), overridden by `vfnet serve` flags."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VFNET_", env_file=".env", extra="ignore")

    model: Path | None = Field(None, description="checkpoint or ONNX file; default: the bundled demo model")
    backend: Literal["auto", "onnxruntime", "torch"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)

    max_batch_size: int = Field(8, ge=1, le=256, description="images per backend call, and per request")
    max_batch_delay_ms: float = Field(0.0, ge=0, description="extra wait for company; 0: batch whatever queued while the model was busy")
    queue_size: int = Field(64, ge=1, description="images that may wait; beyond that requests get 503")
    request_timeout_s: float = Field(30.0, gt=0, description="a request waiting longer gets 504")
    max_body_bytes: int = Field(20 * 1024 * 1024, ge=1, description="413 beyond this many request bytes")
    max_pixels: int = Field(50_000_000, ge=1, description="413 for an image with more pixels (checked from its header)")
    default_score_threshold: float = Field(0.3, ge=0, le=1, description="score threshold when a request gives none")

    api_key: SecretStr | None = Field(None, description="when set, /detect and /v1/model need header X-API-Key")
    cors_origins: list[str] = Field(default_factory=list, description='e.g. ["https://app.example.com"] or ["*"]')
    intra_op_threads: int | None = Field(None, ge=1)
    inter_op_threads: int | None = Field(None, ge=1)
    decode_threads: int = Field(4, ge=1, description="threads decoding images")
    graceful_shutdown_s: float = Field(30.0, ge=0, description="on SIGTERM, time to finish accepted requests")
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @model_validator(mode="after")
    def _queue_holds_a_full_request(self) -> ServeSettings:
        if self.queue_size < self.max_batch_size:
            raise ValueError(f"queue_size ({self.queue_size}) must be at least max_batch_size ({self.max_batch_size})")
        return self
