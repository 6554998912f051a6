"""Real `vfnet serve` processes on loopback ports, talked to over real HTTP."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import httpx
import numpy as np
import pytest
from PIL import Image


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `vfnet serve` subprocess. `url` is its base URL; `stop()` sends SIGTERM and returns the exit code."""

    def __init__(self, model, **settings):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, **{f"VFNET_{k.upper()}": str(v) for k, v in settings.items()}}
        env.setdefault("VFNET_INTRA_OP_THREADS", "2")
        self.output = tempfile.TemporaryFile()  # a file, not a pipe: a full pipe would block the server
        self.process = subprocess.Popen(
            [sys.executable, "-m", "vfnet.server.cli", "serve", "--model", str(model), "--port", str(self.port)],
            env=env,
            stdout=self.output,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 120.0) -> Server:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError("server did not become ready")

    def stop(self, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise

    def log(self) -> str:
        self.output.seek(0)
        return self.output.read().decode(errors="replace")


@pytest.fixture(scope="module")
def server(tiny_onnx):
    """The tiny random model behind a default-configured server, except that admission by estimated
    wait is off (60 s), so that bursts of parallel test requests are all served; the admission
    tests have servers of their own."""
    srv = Server(tiny_onnx, max_batch_size=4, max_queue_wait_ms=60_000).wait_ready()
    yield srv
    srv.stop()


def encode(image: Image.Image | np.ndarray, fmt: str = "JPEG", **options) -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def jpeg(photo_like_images) -> bytes:
    return encode(photo_like_images[0])
