"""The service on a TensorRT engine under load (GPU hosts with TensorRT; skipped elsewhere with the
reason): `vfnet serve --backend tensorrt` builds the demo's engine in its cache while /readyz says
building_engine, then serves it, and `vfnet loadtest` meets a latency target with no errors."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

from vfnet.server.runtime.load import DEMO_ONNX

from .conftest import Server

pytestmark = [pytest.mark.gpu, pytest.mark.trt]


def test_the_engine_is_built_while_listening_then_served_under_load(tmp_path):
    server = Server(DEMO_ONNX, backend="tensorrt", engine_cache=tmp_path / "engines", max_batch_size=4)
    try:
        states = set()
        for _ in range(3000):  # the build takes minutes; poll for at most ~10 minutes
            try:
                reply = httpx.get(f"{server.url}/readyz", timeout=1)
            except httpx.TransportError:
                time.sleep(0.2)
                continue
            states.add(reply.json().get("status"))
            if reply.status_code == 200:
                break
            assert server.process.poll() is None, server.log()
            time.sleep(0.2)
        assert "building_engine" in states and "ready" in states, (states, server.log())
        assert httpx.get(f"{server.url}/v1/model").json()["backend"] == "tensorrt"
        load = subprocess.run(
            [
                sys.executable,
                "-m",
                "vfnet.server.cli",
                "loadtest",
                "--url",
                server.url,
                "--concurrency",
                "4",
                "--duration",
                "20",
                "--p99-ms",
                "500",
                "--max-error-rate",
                "0",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert load.returncode == 0, load.stdout + load.stderr
        assert list((tmp_path / "engines").glob("*.engine")) and list((tmp_path / "engines").glob("*.engine.json"))
    finally:
        assert server.stop() == 0, server.log()
