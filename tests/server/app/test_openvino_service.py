"""The service on an OpenVINO IR: /v1/model and vfnet_model_info say the precision the backend
runs, and concurrent, mixed requests batched onto the backend's one infer request each get their
own detections."""

from __future__ import annotations

import concurrent.futures
import io
import warnings

import numpy as np
import pytest
from PIL import Image

ov = pytest.importorskip("openvino")

from vfnet.server.app.main import create_app  # noqa: E402
from vfnet.server.app.settings import ServeSettings  # noqa: E402
from vfnet.server.runtime import load_detector  # noqa: E402
from vfnet.server.runtime.backends.openvino_backend import native_bf16  # noqa: E402

from .conftest import wait_for_readiness  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

NATIVE_BF16 = native_bf16(ov.Core())


def test_model_summary_and_model_info_report_the_precision_it_runs(demo_ir):
    detector = load_detector(demo_ir)
    with TestClient(create_app(ServeSettings(max_batch_size=2, _env_file=None), detector)) as client:
        wait_for_readiness(client, 200)
        model = client.get("/v1/model").json()
        metrics = client.get("/metrics").text
    expected = "bf16" if NATIVE_BF16 else "fp32"
    assert (model["backend"], model["device"], model["precision"]) == ("openvino", "cpu", expected)
    assert 'backend="openvino"' in metrics and f'precision="{expected}"' in metrics and "vfnet_model_info{" in metrics


def jpeg(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def test_concurrent_mixed_requests_through_the_service_get_their_own_detections(demo_ir):
    """Eight clients at once, images of four sizes, batched by the service onto the backend's one
    infer request: each response equals that image's detections computed alone beforehand."""
    from vfnet.train.synth import render_image

    detector = load_detector(demo_ir, precision="fp32", intra_op_threads=2)
    sizes = [(240, 320), (480, 360), (200, 600), (384, 512)]
    files = [jpeg(render_image(np.random.default_rng([5, i]), *sizes[i % 4], min_side=32, max_objects=4)[0]) for i in range(8)]
    alone = [detector.detect([data], score_threshold=0.3)[0] for data in files]
    assert sum(len(result) for result in alone) >= 8
    settings = ServeSettings(max_batch_size=4, max_batch_delay_ms=20, max_queue_wait_ms=60_000, request_timeout_s=120, _env_file=None)
    with TestClient(create_app(settings, detector)) as client:
        wait_for_readiness(client, 200)

        def post(i: int):
            return client.post("/detect?score_threshold=0.3", files={"image": (f"{i}.jpg", files[i], "image/jpeg")})

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(post, range(8)))
        metrics = client.get("/metrics").text
    for i, (response, expected) in enumerate(zip(responses, alone)):
        assert response.status_code == 200, response.text
        [result] = response.json()["results"]
        assert [d["class_id"] for d in result["detections"]] == expected.labels.tolist(), i
        np.testing.assert_allclose(np.reshape([d["box"] for d in result["detections"]], (-1, 4)), expected.boxes, atol=0.05)
        np.testing.assert_allclose([d["score"] for d in result["detections"]], expected.scores, atol=1e-3)
    batches = float(next(line.split()[-1] for line in metrics.splitlines() if line.startswith("vfnet_batch_size_count")))
    assert batches < 8  # some requests shared a backend call
