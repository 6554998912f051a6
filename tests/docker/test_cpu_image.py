"""The CPU image for real: docker/Dockerfile.cpu built unchanged by buildah and run by podman (no
docker engine here), then compose.yaml's CPU service under podman-compose. `make docker-smoke`
prepares podman and the base images (docker/podman/prepare.sh) and runs this module; the default
test run deselects it (marker `container`).

The containers use the host's network with the service bound to 127.0.0.1 on a free port: bridge
networking would change the host's iptables and forwarding (reference/container_facts.md).
The python base is a local stand-in for python:3.11-slim-bookworm (Debian's Python 3.11), so the
image size measured here is that of the stand-in plus ours.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from vfnet.server.app.settings import ServeSettings
from vfnet.server.runtime import load_detector
from vfnet.server.runtime.load import DEMO_ONNX

from ..server.app.conftest import encode, free_port

pytestmark = pytest.mark.container

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "localhost/vfnet-serve:cpu"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
MAX_IMAGE_BYTES = 600_000_000
USER_ID = "10001"


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done


def wait_ready(url: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url}/readyz did not answer 200 within {seconds:.0f} s")


@pytest.fixture(scope="module")
def image() -> str:
    if shutil.which("podman") is None or "CONTAINERS_CONF" not in os.environ:
        pytest.skip("needs podman prepared by docker/podman/prepare.sh: run `make docker-smoke`")
    secret = ["--secret", f"id=pip_ca,src={CA_BUNDLE}"] if CA_BUNDLE.is_file() else []
    started = time.monotonic()
    build = ["buildah", "bud", "--isolation", "chroot", "--network", "host", "--layers", "--format", "docker", *secret]
    done = subprocess.run([*build, "-t", IMAGE, "-f", "docker/Dockerfile.cpu", "."], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    size = int(podman("image", "inspect", IMAGE, "--format", "{{.Size}}").stdout)
    print(f"\n{IMAGE}: {size / 1e6:.0f} MB, built in {time.monotonic() - started:.0f} s")
    return IMAGE


class Container:
    """`podman run -d` of `image` on the host network, bound to 127.0.0.1:<free port> (HTTP) and
    127.0.0.1:<another free port> (gRPC)."""

    def __init__(self, image: str, name: str, **settings: str):
        self.name, self.port, self.grpc_port = name, free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        podman("rm", "-f", name, check=False)
        env = {"VFNET_HOST": "127.0.0.1", "VFNET_PORT": str(self.port), "VFNET_GRPC_PORT": str(self.grpc_port), "VFNET_INTRA_OP_THREADS": "2"}
        env |= {f"VFNET_{key.upper()}": value for key, value in settings.items()}
        podman("run", "-d", "--name", name, "--network", "host", *(f"--env={k}={v}" for k, v in env.items()), image)

    def wait_ready(self) -> None:
        try:
            wait_ready(self.url)
        except AssertionError as exc:
            logs = podman("logs", self.name, check=False)
            raise AssertionError(f"{exc}; its log ends:\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}") from None

    def stop(self, seconds: int) -> tuple[int, float]:
        """SIGTERM (podman stop), SIGKILL after `seconds`: (exit code, seconds it took)."""
        started = time.monotonic()
        podman("stop", "-t", str(seconds), self.name, timeout=seconds + 30)
        took = time.monotonic() - started
        return int(podman("inspect", self.name, "--format", "{{.State.ExitCode}}").stdout), took

    def remove(self) -> None:
        podman("rm", "-f", self.name, check=False)


@pytest.fixture(scope="module")
def container(image):
    running = Container(image, "vfnet-smoke")
    try:
        running.wait_ready()
        yield running
    finally:
        running.remove()


@pytest.fixture(scope="module")
def scene_jpegs() -> list[bytes]:
    from vfnet.train.synth import render_image

    return [encode(render_image(np.random.default_rng([7, i]), 384, 512, min_side=64, max_objects=4)[0], quality=90) for i in range(3)]


def assert_same_detections(served: list[dict], jpeg: bytes) -> None:
    """The service's detections are those of the runtime outside the container (same labels,
    boxes within 0.5 px, scores within 1e-3: ONNX Runtime builds may differ in the last bits), at
    the service's default score threshold."""
    expected = outside_detector().detect([jpeg], score_threshold=ServeSettings().default_score_threshold)[0]
    assert [d["class_id"] for d in served] == expected.labels.tolist()
    assert len(served) > 0
    np.testing.assert_allclose([d["box"] for d in served], expected.boxes, atol=0.5)
    np.testing.assert_allclose([d["score"] for d in served], expected.scores, atol=1e-3)


_detector = []


def outside_detector():
    if not _detector:
        _detector.append(load_detector(DEMO_ONNX, backend="onnxruntime", device="cpu"))
    return _detector[0]


def wait_in_flight(url: str, requests: int, seconds: float = 30) -> None:
    """Until the service is handling `requests` requests (its vfnet_in_flight_requests gauge, which
    also counts the /metrics request asking)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        metrics = httpx.get(f"{url}/metrics", timeout=5).text
        gauge = next(line for line in metrics.splitlines() if line.startswith("vfnet_in_flight_requests "))
        if float(gauge.split()[1]) >= requests + 1:
            return
        time.sleep(0.05)
    raise AssertionError(f"{url} was not handling {requests} requests within {seconds:.0f} s")


def detect(url: str, jpeg: bytes) -> httpx.Response:
    return httpx.post(f"{url}/detect", files={"image": ("scene.jpg", jpeg, "image/jpeg")}, timeout=60)


def test_the_image_is_small_and_holds_no_torch_and_no_build_secret(image):
    size = int(podman("image", "inspect", image, "--format", "{{.Size}}").stdout)
    assert size < MAX_IMAGE_BYTES, f"{image} is {size / 1e6:.0f} MB"
    no_torch = podman("run", "--rm", "--network", "host", "--entrypoint", "python", image, "-c", "import importlib.util as u; print(u.find_spec('torch'))")
    assert no_torch.stdout.strip() == "None"
    mount = Path(podman("image", "mount", image).stdout.strip())
    try:
        assert not (mount / "run/secrets/pip_ca").exists()
        if CA_BUNDLE.is_file():  # no copy of the CA bundle given as the build secret, anywhere
            size, digest = CA_BUNDLE.stat().st_size, hashlib.sha256(CA_BUNDLE.read_bytes()).hexdigest()
            copies = [
                path
                for path in mount.rglob("*")
                if path.is_file() and not path.is_symlink() and path.stat().st_size == size and hashlib.sha256(path.read_bytes()).hexdigest() == digest
            ]
            assert copies == []
        history = podman("history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout
        assert "BEGIN CERTIFICATE" not in history
    finally:
        podman("image", "unmount", image, check=False)


def test_the_service_answers_ready_healthy_as_a_non_root_user(container):
    assert httpx.get(f"{container.url}/readyz", timeout=5).status_code == 200
    assert podman("healthcheck", "run", container.name, check=False).returncode == 0
    status = podman("exec", container.name, "cat", "/proc/1/status").stdout
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    assert uid_line.split()[1:] == [USER_ID] * 4, uid_line  # real, effective, saved, filesystem
    model = httpx.get(f"{container.url}/v1/model", timeout=5).json()
    assert model["backend"] == "onnxruntime" and model["device"] == "cpu"


def test_detections_in_the_container_are_the_runtimes_outside_it(container, scene_jpegs):
    for jpeg in scene_jpegs:
        response = detect(container.url, jpeg)
        assert response.status_code == 200, response.text
        assert_same_detections(response.json()["results"][0]["detections"], jpeg)


def test_grpc_in_the_container_answers_health_and_infer_like_detect(container, scene_jpegs):
    """The image serves KServe v2 over gRPC too: grpc.health.v1 says SERVING (what a Kubernetes gRPC
    probe asks), and ModelInfer's detections are /detect's."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from vfnet.server.app.grpc import inference_pb2_grpc
    from vfnet.server.app.grpc.tensors import infer_request

    with grpc.insecure_channel(f"127.0.0.1:{container.grpc_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        model = httpx.get(f"{container.url}/v1/model", timeout=5).json()["preset"]
        answer = inference_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(infer_request(model, [scene_jpegs[0]]), timeout=60)
    outputs = {tensor.name: (tensor, raw) for tensor, raw in zip(answer.outputs, answer.raw_output_contents)}
    count = int(np.frombuffer(outputs["num_detections"][1], "<i4")[0])
    served = detect(container.url, scene_jpegs[0]).json()["results"][0]["detections"]
    assert count == len(served) > 0
    boxes = np.frombuffer(outputs["boxes"][1], "<f4").reshape(list(outputs["boxes"][0].shape))[0, :count]  # [N, K, 4] -> image 0's rows
    np.testing.assert_allclose(boxes, [d["box"] for d in served], atol=0.006)  # /detect rounds to 0.01 px
    np.testing.assert_array_equal(np.frombuffer(outputs["class_ids"][1], "<i4")[:count], [d["class_id"] for d in served])


def test_sigterm_during_requests_loses_none_and_exits_0_in_time(image, scene_jpegs):
    """Concurrent requests are in flight (received, queued behind the batch worker) when podman sends
    SIGTERM: every one gets its detections, and the process exits 0 well within the graceful-
    shutdown time. A connection whose request has not arrived when SIGTERM comes is closed, as by
    every HTTP server: a load balancer stops sending first (the k8s preStop sleep). (The queue-wait limit is raised
    so that admission accepts all of them rather than answering some 503 busy.)"""
    running = Container(image, "vfnet-smoke-sigterm", max_queue_wait_ms="60000")
    try:
        running.wait_ready()
        jpegs = [scene_jpegs[i % len(scene_jpegs)] for i in range(12)]
        answers: list[tuple[float, httpx.Response | Exception]] = [None] * len(jpegs)  # (finished at, response)

        together = threading.Barrier(len(jpegs))

        def post(index: int) -> None:
            with httpx.Client(timeout=60) as client:  # made first: the requests then leave together
                together.wait(timeout=30)
                try:
                    response = client.post(f"{running.url}/detect", files={"image": ("scene.jpg", jpegs[index], "image/jpeg")})
                    answers[index] = (time.monotonic(), response)
                except Exception as exc:  # recorded: a lost request fails the test below
                    answers[index] = (time.monotonic(), exc)

        threads = [threading.Thread(target=post, args=(i,)) for i in range(len(jpegs))]
        for thread in threads:
            thread.start()
        wait_in_flight(running.url, len(jpegs))  # every request is received: SIGTERM now
        sigterm_at = time.monotonic()
        code, took = running.stop(int(ServeSettings().graceful_shutdown_s) + 10)
        for thread in threads:
            thread.join(timeout=60)
        lost = [
            f"request {i}: {a[1]!r} {getattr(a[1], 'text', '')}"
            for i, a in enumerate(answers)
            if not isinstance(a[1], httpx.Response) or a[1].status_code != 200
        ]
        assert lost == []
        assert any(finished > sigterm_at for finished, _ in answers), "no request was still in flight at SIGTERM"
        for jpeg, (_, response) in zip(jpegs, answers):
            assert_same_detections(response.json()["results"][0]["detections"], jpeg)
        assert code == 0
        assert took < ServeSettings().graceful_shutdown_s
    finally:
        running.remove()


def test_compose_runs_the_cpu_service_with_the_same_probes(image, scene_jpegs, tmp_path):
    """`podman-compose --profile cpu up -d vfnet-cpu` on compose.yaml (plus an override for the host network,
    bound to 127.0.0.1), the probes, then `down`."""
    port, grpc_port = free_port(), free_port()
    override = tmp_path / "compose.smoke.yaml"
    override.write_text(
        "services:\n  vfnet-cpu:\n    network_mode: host\n    environment:\n"
        f"      VFNET_HOST: 127.0.0.1\n      VFNET_PORT: '{port}'\n      VFNET_GRPC_PORT: '{grpc_port}'\n      VFNET_INTRA_OP_THREADS: '2'\n"
    )
    compose = ["podman-compose", "--profile", "cpu", "-f", str(ROOT / "compose.yaml"), "-f", str(override)]
    up = subprocess.run([*compose, "up", "-d", "--no-build", "vfnet-cpu"], cwd=ROOT, capture_output=True, text=True, timeout=180)
    try:
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
        url = f"http://127.0.0.1:{port}"
        wait_ready(url)
        name = podman("ps", "--filter", "label=com.docker.compose.service=vfnet-cpu", "--format", "{{.Names}}").stdout.split()[0]
        assert podman("healthcheck", "run", name, check=False).returncode == 0
        response = detect(url, scene_jpegs[0])
        assert response.status_code == 200
        assert_same_detections(response.json()["results"][0]["detections"], scene_jpegs[0])
    finally:
        down = subprocess.run([*compose, "down", "-t", "40"], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert down.returncode == 0, down.stderr[-2000:]
    assert podman("ps", "-a", "--filter", "label=com.docker.compose.service=vfnet-cpu", "--format", "{{.Names}}").stdout.strip() == ""
