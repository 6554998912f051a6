"""Liveness and readiness follow the batch worker: the app in-process (create_app) with a real
Detector over a fake backend that can hang or kill the worker on demand."""

from __future__ import annotations

import concurrent.futures
import warnings

import pytest

from vfnet.server.app.main import create_app
from vfnet.server.app.settings import ServeSettings
from vfnet.server.runtime import Detector

from .conftest import ControlledBackend, png, wait_for_readiness

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


@pytest.fixture
def app_and_backend():
    backend = ControlledBackend()
    settings = ServeSettings(max_batch_size=2, request_timeout_s=0.2, _env_file=None)
    with TestClient(create_app(settings, Detector(backend))) as client:
        wait_for_readiness(client, 200)
        yield client, backend
        backend.release.set()


def post(client):
    return client.post("/detect", files={"image": ("a.png", png(), "image/png")})


def test_a_stuck_backend_call_makes_readiness_and_liveness_fail_with_the_reason(app_and_backend):
    client, backend = app_and_backend
    assert post(client).status_code == 200 and client.get("/healthz").json() == {"status": "alive"}
    client.app.state.service.batcher.stuck_after_s = 0.2  # the service's floor is 5 s; no test should wait that long
    backend.mode = "hang"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        hung = pool.submit(post, client)
        assert backend.hanging.wait(10)
        wait_for_readiness(client, 503)
        ready, alive = client.get("/readyz"), client.get("/healthz")
        assert ready.status_code == 503 and ready.json()["detail"].startswith("not ready: the batch worker is stuck: a backend call of 1 images")
        assert alive.status_code == 503 and "stuck" in alive.json()["detail"]
        refused = post(client)
        assert refused.status_code == 503 and "not ready: the batch worker is stuck" in refused.json()["detail"]
        backend.mode = "ok"
        backend.release.set()
        assert hung.result().status_code == 504  # its own timeout (0.2 s) passed while it hung
    wait_for_readiness(client, 200)  # the call has returned: serving again
    assert post(client).status_code == 200


def test_a_dead_worker_fails_its_requests_at_once_and_readiness_says_why(app_and_backend):
    client, backend = app_and_backend
    backend.mode = "die"
    answer = post(client)
    assert answer.status_code == 500 and "inference failed" in answer.json()["detail"]
    ready, alive = client.get("/readyz"), client.get("/healthz")
    assert ready.status_code == 503 and ready.json()["detail"] == "not ready: the batch worker stopped (Fatal('segfault-like'))"
    assert alive.status_code == 503
    assert post(client).status_code == 503  # refused with the reason, not queued for ever


def test_metrics_are_labelled_by_the_route_template_that_matched(app_and_backend):
    client, _ = app_and_backend
    assert post(client).status_code == 200
    assert client.get("/no/such/route").status_code == 404
    text = client.get("/metrics").text
    assert 'vfnet_requests_total{route="/detect",status="200"} 1.0' in text
    assert 'vfnet_requests_total{route="other",status="404"} 1.0' in text
    assert 'route="/readyz"' in text  # the fixture's readiness polls
