"""The warm-up that precedes readiness: it runs whatever upload limit the server has, and if it
fails, readiness and liveness say why instead of the server staying unready in silence. In-process,
with a fake backend."""

from __future__ import annotations

import time
import warnings

from vfnet.server.app.main import create_app
from vfnet.server.app.settings import ServeSettings
from vfnet.server.runtime import Detector

from .conftest import ControlledBackend, png, wait_for_readiness

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


def test_a_pixel_limit_below_the_models_input_size_still_warms_up_and_limits_uploads():
    backend = ControlledBackend()  # input 64 x 64 = 4,096 pixels, above the limit of 1,000
    app = create_app(ServeSettings(max_pixels=1000, max_batch_size=2, _env_file=None), Detector(backend, max_pixels=1000))
    with TestClient(app) as client:
        wait_for_readiness(client, 200)
        assert client.post("/detect", files={"image": ("small.png", png((30, 20)), "image/png")}).status_code == 200
        refused = client.post("/detect", files={"image": ("big.png", png((40, 30)), "image/png")})
        assert refused.status_code == 413 and "1,200 pixels; the limit is 1,000" in refused.json()["detail"]


class FailingWarmUp(ControlledBackend):
    def run(self, batch, iou_threshold):
        raise RuntimeError("CUDA out of memory")


def test_a_failed_warm_up_fails_readiness_and_liveness_with_the_reason():
    app = create_app(ServeSettings(max_batch_size=2, _env_file=None), Detector(FailingWarmUp()))
    with TestClient(app) as client:
        for _ in range(500):  # until the warm-up has failed (bounded: about 10 s)
            if "warm-up failed" in client.get("/readyz").text:
                break
            time.sleep(0.02)
        ready, alive = client.get("/readyz"), client.get("/healthz")
        assert ready.status_code == 503 and ready.json()["detail"] == "not ready: the warm-up failed: CUDA out of memory"
        assert alive.status_code == 503 and alive.json()["detail"] == "not alive: the warm-up failed: CUDA out of memory"
