"""Prometheus metrics of one app (own registry, so several apps in one process do not collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .quality import QualityMetrics
from .schemas import ModelSummary

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("vfnet_requests", "HTTP requests by route and status", ["route", "status"], registry=r)
        self.grpc_requests = Counter("vfnet_grpc_requests", "gRPC calls by method and status code", ["method", "code"], registry=r)
        self.request_seconds = Histogram("vfnet_request_duration_seconds", "Total request time", ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_seconds = Histogram("vfnet_queue_duration_seconds", "Time images wait for a batch", buckets=LATENCY_BUCKETS, registry=r)
        self.inference_seconds = Histogram("vfnet_inference_duration_seconds", "Backend call time per batch", buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("vfnet_batch_size", "Images per backend call", buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64), registry=r)
        self.images = Counter("vfnet_images", "Images detected", registry=r)
        self.queue_depth = Gauge("vfnet_queue_depth", "Images waiting for a batch", registry=r)
        self.in_flight = Gauge("vfnet_in_flight_requests", "Requests being handled", registry=r)
        self.pixels_in_flight = Gauge("vfnet_pixels_in_flight", "Decoded pixels reserved in the pixel budget", registry=r)
        self.seconds_per_image = Gauge("vfnet_seconds_per_image", "Measured backend seconds per image (the wait estimate)", registry=r)
        self.model_info = Gauge("vfnet_model_info", "The served model (value 1)", list(ModelSummary.model_fields), registry=r)
        self.quality = QualityMetrics.register(r)  # vfnet_top_score, vfnet_detections_per_image (see quality.py)

    def set_model(self, summary: ModelSummary) -> None:
        self.model_info.labels(**summary.model_dump()).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)
