"""A model made after the server starts listening (a TensorRT engine build): /readyz says
building_engine with the reason, requests are refused with it, liveness holds; then the service
warms up and serves. A failed build fails liveness too. In-process, with a fake backend."""

from __future__ import annotations

import threading
import time
import warnings

from vfnet.server.app.main import create_app
from vfnet.server.app.settings import ServeSettings
from vfnet.server.runtime import Detector, PendingModel

from .conftest import ControlledBackend, png, wait_for_readiness

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


def serve(load):
    backend = ControlledBackend()
    pending = PendingModel(backend.card, lambda: load(backend), "building_engine", "building the TensorRT engine for demo.onnx")
    return TestClient(create_app(ServeSettings(max_batch_size=2, _env_file=None), pending))


def test_readiness_says_building_engine_until_the_model_is_made_then_it_serves():
    made = threading.Event()

    def load(backend):
        assert made.wait(30)
        return Detector(backend)

    with serve(load) as client:
        backend_preset = ControlledBackend().card.preset
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.headers["retry-after"] == "1"
        assert ready.json() == {"status": "building_engine", "detail": "not ready: building the TensorRT engine for demo.onnx"}
        assert client.get("/healthz").json() == {"status": "alive"}
        refused = client.post("/detect", files={"image": ("a.png", png(), "image/png")})
        assert refused.status_code == 503 and refused.json()["detail"] == "not ready: building the TensorRT engine for demo.onnx"
        for response in (client.get("/v2/health/ready"), client.post(f"/v2/models/{backend_preset}/infer", content=b"{}")):
            assert response.status_code == 503 and response.headers["retry-after"] == "1"  # the Open Inference Protocol's form
            assert response.json() == {"error": "not ready: building the TensorRT engine for demo.onnx"}
        assert client.get("/v2/health/live").json() == {"live": True}
        made.set()
        wait_for_readiness(client, 200)
        answer = client.post("/detect", files={"image": ("a.png", png(), "image/png")})
        assert answer.status_code == 200 and answer.json()["model"]["backend"] == "fake"
        assert 'vfnet_model_info{backend="fake"' in client.get("/metrics").text


def test_a_failed_build_fails_readiness_and_liveness_with_the_reason():
    def load(backend):
        raise RuntimeError("TensorRT ran out of GPU memory")

    with serve(load) as client:
        wait_for_readiness(client, 503)
        for _ in range(500):
            if client.get("/readyz").json()["status"] == "failed":
                break
            time.sleep(0.02)
        ready, alive = client.get("/readyz"), client.get("/healthz")
        assert ready.json() == {"status": "failed", "detail": "not ready: the model could not be made: TensorRT ran out of GPU memory"}
        assert alive.status_code == 503 and "TensorRT ran out of GPU memory" in alive.json()["detail"]
        live = client.get("/v2/health/live")
        assert live.status_code == 503 and "TensorRT ran out of GPU memory" in live.json()["error"]
