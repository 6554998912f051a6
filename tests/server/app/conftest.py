"""Real `vfnet serve` processes on loopback ports, talked to over real HTTP."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from vfnet.server.runtime import ModelCard


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `vfnet serve` subprocess (of `command`: another install's `vfnet`, or this Python's; model
    None: the default, the bundled demo). `url` is its base URL; `stop()` sends SIGTERM and returns
    the exit code."""

    def __init__(self, model, command: tuple[str, ...] = (sys.executable, "-m", "vfnet.server.cli"), **settings):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, **{f"VFNET_{k.upper()}": str(v) for k, v in settings.items()}}
        env.setdefault("VFNET_INTRA_OP_THREADS", "2")
        self.output = tempfile.TemporaryFile()  # a file, not a pipe: a full pipe would block the server
        self.process = subprocess.Popen(
            [*command, "serve", *(["--model", str(model)] if model is not None else []), "--port", str(self.port)],
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


def in_threads(work, count: int, timeout_s: float = 120) -> list:
    """work(0) .. work(count - 1) at once, one thread each: their results, or the exception each raised
    (every thread is joined; one still running after `timeout_s` is an AssertionError)."""
    results: list = [None] * count

    def run(index: int) -> None:
        try:
            results[index] = work(index)
        except Exception as exc:  # returned: the test asserts on it
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout_s)
    assert not any(thread.is_alive() for thread in threads), f"a call was still running after {timeout_s:g} s"
    return results


def encode(image: Image.Image | np.ndarray, fmt: str = "JPEG", **options) -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def jpeg(photo_like_images) -> bytes:
    return encode(photo_like_images[0])


class Fatal(BaseException):
    """Escapes `except Exception`: what kills a worker task."""


class ControlledBackend:
    """A fake model for in-process tests of the app and the service: for every image a cat (0.9) at
    [1, 1, 20, 20] and a dog (0.6) at [2, 2, 10, 10], in resized pixels. After warm-up, `mode`
    decides a call: "ok", "hang" (until `release` is set) or "die" (raises Fatal)."""

    name, device, precision = "fake", "cpu", "fp32"

    def __init__(self):
        self.card = ModelCard(
            preset="test", class_names=("cat", "dog"), precision="fp32", input_size=(64, 64), size_divisor=32,
            max_detections=5, score_threshold=0.05, iou_threshold=0.6, pixel_mean=(0, 0, 0), pixel_std=(1, 1, 1),
            version="0",
        )  # fmt: skip
        self.mode = "ok"
        self.release = threading.Event()
        self.hanging = threading.Event()
        self.images_seen = 0

    def run(self, batch, iou_threshold):
        if self.mode == "hang":
            self.hanging.set()
            assert self.release.wait(30)
        if self.mode == "die":
            raise Fatal("segfault-like")
        batch = len(batch.images)
        self.images_seen += batch
        boxes = np.zeros((batch, 5, 4), np.float32)
        boxes[:, :2] = [[1, 1, 20, 20], [2, 2, 10, 10]]
        scores = np.zeros((batch, 5), np.float32)
        scores[:, :2] = [0.9, 0.6]
        labels = np.full((batch, 5), -1, np.int64)
        labels[:, :2] = [0, 1]
        return boxes, scores, labels, np.full(batch, 2, np.int64)


def png(size: tuple[int, int] = (40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def wait_for_readiness(client, status: int) -> None:
    """Poll /readyz of an in-process TestClient until it answers `status` (at most ~10 s)."""
    for _ in range(500):
        if client.get("/readyz").status_code == status:
            return
        time.sleep(0.02)
    raise AssertionError(f"/readyz never answered {status}")
