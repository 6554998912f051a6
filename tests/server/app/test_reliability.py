"""The service under the failures seen on its first busy day, over real HTTP to `vfnet serve`
processes: a batcher that cannot die, cancelled requests that are never computed, client
disconnects, slow and broken clients, admission by time, memory, and batch-independent results."""

from __future__ import annotations

import concurrent.futures
import json
import socket
import time

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw

from .conftest import Server, encode
from .test_service import detect, metric_value


def metrics(srv) -> str:
    return httpx.get(f"{srv.url}/metrics").text


def count(srv, route: str, status: int) -> float:
    return metric_value(metrics(srv), f'vfnet_requests_total{{route="{route}",status="{status}"}}')


def raw_connection(srv, timeout: float = 30.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", srv.port), timeout=timeout)


def read_reply(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def multipart_head(boundary: str, length: int) -> bytes:
    return (f"POST /detect HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {length}\r\n\r\n").encode()


def test_three_ordinary_requests_do_not_freeze_the_service(tiny_onnx, photo_like_images):
    """One 8-image request, then three single-image requests while it runs, the middle one with
    ?iou_threshold=0.5: all are answered, and so is everything after them."""
    srv = Server(tiny_onnx, max_batch_size=8, max_queue_wait_ms=60_000).wait_ready()
    try:
        jpegs = [encode(image) for image in photo_like_images]
        eight = [("image", (f"{i}.jpg", jpegs[i % 3], "image/jpeg")) for i in range(8)]
        one = {"image": ("a.jpg", jpegs[0], "image/jpeg")}
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            big = pool.submit(detect, srv.url, eight)
            small = []
            for params in ({}, {"iou_threshold": 0.5}, {}):  # queued in this order while the big batch runs (~1 s)
                time.sleep(0.15)
                small.append(pool.submit(detect, srv.url, one, params=params))
            codes = [big.result().status_code] + [f.result().status_code for f in small]
        assert codes == [200, 200, 200, 200]
        assert [detect(srv.url, one).status_code for _ in range(3)] == [200, 200, 200]
        assert httpx.get(f"{srv.url}/readyz").status_code == 200
    finally:
        assert srv.stop() == 0
    assert "Traceback" not in srv.log() and "shutdown failed" not in srv.log()


def test_timed_out_requests_leave_the_queue_and_are_never_computed(tiny_onnx, jpeg):
    srv = Server(tiny_onnx, max_batch_size=1, queue_size=64, request_timeout_s=1.0, max_queue_wait_ms=60_000).wait_ready()
    try:
        files = {"image": ("a.jpg", jpeg, "image/jpeg")}
        with concurrent.futures.ThreadPoolExecutor(32) as pool:  # ~0.1 s per image: most of each wave times out
            codes = [r.status_code for r in pool.map(lambda _: detect(srv.url, files), range(64))]
        assert set(codes) <= {200, 504}, codes  # (on a loaded machine every one may time out)
        time.sleep(1.0)  # anything still computing has finished
        inferred = metric_value(metrics(srv), "vfnet_images_total")
        # The old batcher computed every image (120 images for 19 answers in production). Now only
        # the answered ones, plus those whose batch had already started when they timed out.
        print(f"{len(codes)} requests: {codes.count(200)} answered, {codes.count(504)} timed out, {inferred:.0f} images computed")
        assert codes.count(504) >= len(codes) / 2 and inferred <= len(codes) / 2
        assert httpx.get(f"{srv.url}/readyz").json()["queued_images"] == 0
    finally:
        srv.stop()
    assert "Traceback" not in srv.log()


def test_a_client_that_disconnects_mid_upload_is_a_499_not_a_500(server, jpeg):
    before_499, before_500 = count(server, "/detect", 499), count(server, "/detect", 500)
    for _ in range(3):
        with raw_connection(server) as sock:
            sock.sendall(multipart_head("xyz", 100_000) + b"--xyz\r\n" + jpeg[:1000])
            time.sleep(0.2)
    time.sleep(0.5)
    assert count(server, "/detect", 499) - before_499 == 3
    assert count(server, "/detect", 500) == before_500
    log = server.log()
    assert "Traceback" not in log
    lines = [json.loads(line) for line in log.splitlines() if '"status": 499' in line]
    assert len(lines) >= 3 and lines[-1]["note"].startswith("client disconnected while sending the body")


def test_a_body_shorter_than_its_content_length_gets_408(tiny_onnx, jpeg):
    srv = Server(tiny_onnx, body_timeout_s=1).wait_ready()
    try:
        with raw_connection(srv) as sock:
            sock.sendall(multipart_head("xyz", 5000) + b"--xyz\r\n" + jpeg[:100])
            started = time.monotonic()
            reply = read_reply(sock)
        assert reply.startswith(b"HTTP/1.1 408 ")
        assert f"request body not received within 1 s ({7 + 100} bytes of the 5,000 declared arrived)".encode() in reply
        assert time.monotonic() - started < 10  # answered, not held: the bound is the 1 s timeout
        assert count(srv, "/detect", 408) == 1
    finally:
        srv.stop()


def test_slowloris_connections_are_closed_and_capped(tiny_onnx, jpeg):
    """Slow headers get 408 and are closed; slow bodies get 408; beyond max_connections a request
    gets 503; over-long headers get 431."""
    srv = Server(tiny_onnx, header_timeout_s=1, body_timeout_s=2, max_connections=12).wait_ready()
    try:
        slow_headers = [raw_connection(srv) for _ in range(6)]
        for sock in slow_headers:
            sock.sendall(b"POST /detect HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the rest
        slow_bodies = [raw_connection(srv) for _ in range(6)]
        for sock in slow_bodies:
            sock.sendall(multipart_head("xyz", 10_000) + b"--xyz\r\n")
        time.sleep(0.2)
        crowded = detect(srv.url, files={"image": ("a.jpg", jpeg, "image/jpeg")})
        assert crowded.status_code == 503 and "connections open, the limit is 12" in crowded.json()["detail"]
        assert crowded.headers["retry-after"] == "1"
        replies = [read_reply(sock) for sock in slow_headers + slow_bodies]
        assert all(r.startswith(b"HTTP/1.1 408 ") for r in replies), [r[:40] for r in replies]
        assert b"request headers not received within 1 s" in replies[0] and b"request body not received within 2 s" in replies[-1]
        with raw_connection(srv) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n")
            assert read_reply(sock).startswith(b"HTTP/1.1 431 ")
        assert detect(srv.url, files={"image": ("a.jpg", jpeg, "image/jpeg")}).status_code == 200  # room again
        assert count(srv, "other", 408) == 6 and count(srv, "/detect", 408) == 6
    finally:
        srv.stop()
    for sock in slow_headers + slow_bodies:
        sock.close()


def test_admission_by_estimated_wait_answers_503_at_once(tiny_onnx, jpeg):
    srv = Server(tiny_onnx, max_batch_size=2, queue_size=64, max_queue_wait_ms=50).wait_ready()
    try:
        files = {"image": ("a.jpg", jpeg, "image/jpeg")}
        with concurrent.futures.ThreadPoolExecutor(24) as pool:
            responses = list(pool.map(lambda _: detect(srv.url, files), range(48)))
        codes = [r.status_code for r in responses]
        assert set(codes) == {200, 503}, codes
        refused = [r for r in responses if r.status_code == 503]
        assert all("estimated wait" in r.json()["detail"] and int(r.headers["retry-after"]) >= 1 for r in refused)
        assert httpx.get(f"{srv.url}/readyz").status_code == 200
    finally:
        srv.stop()


def rss_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


@pytest.fixture(scope="module")
def huge_png() -> bytes:
    """A 7000 x 7000 PNG (49 MP) that compresses to ~100 kB: flat colours and a few shapes."""
    image = Image.new("RGB", (7000, 7000), (90, 140, 200))
    draw = ImageDraw.Draw(image)
    for i in range(6):
        draw.ellipse([400 + 1000 * i, 500, 1300 + 1000 * i, 1400 + 800 * i], fill=(250 - 30 * i, 80, 40 * i))
    return encode(image, "PNG", compress_level=6)


@pytest.mark.slow
def test_decoded_pixels_are_bounded_in_memory(tiny_onnx, huge_png):
    """Three concurrent requests of 8 x 49-MP PNGs: peak RSS grows < 1.2 GB, and RSS comes back to
    within 300 MB of idle (the old service grew by 2-3.5 GB and stayed there)."""
    # 24 such images take minutes on a loaded 2-core machine: no 504 for the slow one
    srv = Server(tiny_onnx, max_batch_size=8, max_queue_wait_ms=60_000, request_timeout_s=300, decode_threads=2).wait_ready()
    try:
        pid = srv.process.pid
        detect(srv.url, files={"image": ("small.png", encode(Image.new("RGB", (64, 64))), "image/png")})
        idle = rss_kb(pid, "VmRSS")
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")  # reset the peak (VmHWM) to the current RSS
        files = [("image", (f"{i}.png", huge_png, "image/png")) for i in range(8)]
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            responses = list(pool.map(lambda _: detect(srv.url, files, timeout=300), range(3)))
        assert [r.status_code for r in responses] == [200, 200, 200], [r.text[:200] for r in responses]
        assert [len(r.json()["results"]) for r in responses] == [8, 8, 8]
        assert responses[0].json()["results"][0]["width"] == 7000
        peak_growth_mb = (rss_kb(pid, "VmHWM") - idle) / 1024
        time.sleep(1.0)
        after_mb = (rss_kb(pid, "VmRSS") - idle) / 1024
        print(f"idle {idle / 1024:.0f} MB, peak growth {peak_growth_mb:.0f} MB, after {after_mb:.0f} MB above idle")
        assert peak_growth_mb < 1200 and after_mb < 300
    finally:
        srv.stop()


def test_results_are_the_same_alone_and_batched_with_other_requests(tiny_onnx, photo_like_images):
    srv = Server(tiny_onnx, max_batch_size=4, max_queue_wait_ms=60_000, max_batch_delay_ms=20).wait_ready()
    try:
        photo = encode(photo_like_images[0], "PNG")
        tall = encode(photo_like_images[1], "PNG")  # 300 x 200: its canvas is taller than the photo's
        params = {"score_threshold": 0.05}
        alone = detect(srv.url, {"image": ("p.png", photo, "image/png")}, params=params).json()["results"][0]["detections"]
        files = [{"image": ("p.png", photo, "image/png")}, {"image": ("t.png", tall, "image/png")}] * 4
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            mixed = list(pool.map(lambda f: detect(srv.url, f, params=params).json()["results"][0]["detections"], files))
        for together in mixed[::2]:
            assert [d["class_id"] for d in together] == [d["class_id"] for d in alone] and alone
            np.testing.assert_allclose([d["box"] for d in together], [d["box"] for d in alone], atol=1e-5)  # rounded to 0.01 px
            np.testing.assert_allclose([d["score"] for d in together], [d["score"] for d in alone], atol=1e-5)
    finally:
        srv.stop()
