"""The HTTP service over real HTTP: schema, batching, every error code, overload, timeouts, drain."""

from __future__ import annotations

import concurrent.futures
import json
import struct
import time
import zlib

import httpx
import numpy as np
import pytest
from PIL import Image

from .conftest import Server, encode


def detect(url, files=None, content=None, headers=None, params=None, timeout=60):
    return httpx.post(f"{url}/detect", files=files, content=content, headers=headers, params=params, timeout=timeout)


def test_response_schema(server, jpeg):
    response = detect(server.url, files={"image": ("a.jpg", jpeg, "image/jpeg")}, params={"score_threshold": 0.5})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"model", "results", "timing_ms"}
    assert body["model"]["preset"] == "vfnet_r18_demo" and body["model"]["backend"] == "onnxruntime"
    assert set(body["timing_ms"]) == {"decode", "queue", "inference", "total"}
    [result] = body["results"]
    assert (result["width"], result["height"]) == (320, 240)
    assert result["detections"], "the tiny model's zeroed bias gives scores near 0.5"
    for d in result["detections"]:
        assert set(d) == {"box", "score", "class_id", "class_name"}
        x1, y1, x2, y2 = d["box"]
        assert 0 <= x1 <= x2 <= 320 and 0 <= y1 <= y2 <= 240 and d["score"] > 0.5
        assert d["class_name"] in ("circle", "square", "triangle", "star", "ring", "cross", "hex", "bar")
    scores = [d["score"] for d in result["detections"]]
    assert scores == sorted(scores, reverse=True)
    assert len(response.headers["x-request-id"]) >= 16


def test_options_filter(server, jpeg):
    files = {"image": ("a.jpg", jpeg, "image/jpeg")}
    all_dets = detect(server.url, files=files, params={"score_threshold": 0.05}).json()["results"][0]["detections"]
    two = detect(server.url, files=files, params={"score_threshold": 0.05, "max_detections": 2}).json()["results"][0]["detections"]
    assert two == all_dets[:2]
    names = {d["class_name"] for d in all_dets}
    keep = sorted(names)[0]
    only = detect(server.url, files=files, params={"score_threshold": 0.05, "classes": keep}).json()["results"][0]["detections"]
    assert only and {d["class_name"] for d in only} == {keep}
    strict = detect(server.url, files=files, params={"score_threshold": 0.05, "iou_threshold": 0.2}).json()["results"][0]["detections"]
    assert max_same_class_iou(strict) <= 0.2 < max_same_class_iou(all_dets)  # the request's IoU reached NMS


def max_same_class_iou(detections) -> float:
    worst = 0.0
    for i, a in enumerate(detections):
        for b in detections[i + 1 :]:
            if a["class_id"] != b["class_id"]:
                continue
            (ax1, ay1, ax2, ay2), (bx1, by1, bx2, by2) = a["box"], b["box"]
            inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
            union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
            worst = max(worst, inter / union if union > 0 else 0.0)
    return worst


def test_raw_body_and_batch_requests(server, photo_like_images):
    jpegs = [encode(image) for image in photo_like_images]
    raw = detect(server.url, content=jpegs[1], headers={"Content-Type": "image/jpeg"})
    assert raw.status_code == 200 and raw.json()["results"][0]["width"] == 200
    batch = detect(server.url, files=[("image", (f"{i}.jpg", data, "image/jpeg")) for i, data in enumerate(jpegs)])
    assert batch.status_code == 200
    sizes = [(r["width"], r["height"]) for r in batch.json()["results"]]
    assert sizes == [(320, 240), (200, 300), (413, 97)]
    single = [detect(server.url, files={"image": ("x.jpg", data, "image/jpeg")}).json()["results"][0] for data in jpegs]
    assert [len(r["detections"]) for r in single] == [len(r["detections"]) for r in batch.json()["results"]]


def png_bomb(side: int = 100_000) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 1024)) + chunk(b"IEND", b"")


NOISE = np.random.default_rng(1).integers(0, 256, (200, 200, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    "name, body, media_type, status, message",
    [
        ("truncated JPEG", encode(NOISE)[:4000], "image/jpeg", 400, "cannot decode"),
        ("zero bytes", b"", "image/jpeg", 400, "zero bytes"),
        ("text as an image", b"just some words", "image/png", 400, "cannot identify"),
        ("PNG decompression bomb", png_bomb(), "image/png", 413, "too many pixels"),
        ("oversized pixel count", png_bomb(9000), "image/png", 413, "limit is 50,000,000"),
    ],
)
def test_bad_images(server, name, body, media_type, status, message):
    for response in (
        detect(server.url, content=body, headers={"Content-Type": media_type}),
        detect(server.url, files={"image": ("f", body, media_type)}),
    ):
        assert response.status_code == status, (name, response.text)
        assert message in response.json()["detail"]
    assert httpx.get(f"{server.url}/readyz").status_code == 200


@pytest.mark.parametrize(
    "name, image, expected_size",
    [
        ("CMYK JPEG", Image.new("CMYK", (64, 48), (0, 255, 255, 0)), (64, 48)),
        ("16-bit PNG", Image.fromarray(np.full((40, 30), 40000, np.uint16)), (30, 40)),
        ("palette with transparency", Image.new("P", (50, 20), 1), (50, 20)),
        ("1x1 pixel", Image.new("RGB", (1, 1), (255, 0, 0)), (1, 1)),
        ("8000x20 strip", Image.new("RGB", (8000, 20), (0, 128, 255)), (8000, 20)),
    ],
)
def test_unusual_images_are_served(server, name, image, expected_size):
    fmt = "JPEG" if image.mode == "CMYK" else "PNG"
    options = {"transparency": 0} if image.mode == "P" else {}
    response = detect(server.url, files={"image": ("f", encode(image, fmt, **options), f"image/{fmt.lower()}")})
    assert response.status_code == 200, (name, response.text)
    result = response.json()["results"][0]
    assert (result["width"], result["height"]) == expected_size
    for d in result["detections"]:
        assert 0 <= d["box"][0] <= d["box"][2] <= expected_size[0] and 0 <= d["box"][1] <= d["box"][3] <= expected_size[1]


def test_exif_rotation_gives_boxes_in_the_rotated_frame(server):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 300x100, displayed 100x300
    data = encode(Image.fromarray(NOISE).resize((300, 100)), "JPEG", exif=exif)
    result = detect(server.url, files={"image": ("r.jpg", data, "image/jpeg")}, params={"score_threshold": 0.05}).json()["results"][0]
    assert (result["width"], result["height"]) == (100, 300)
    assert result["detections"] and max(d["box"][2] for d in result["detections"]) <= 100


@pytest.mark.parametrize(
    "params, message",
    [
        ({"score_threshold": "1.5"}, "score_threshold"),
        ({"iou_threshold": "-1"}, "iou_threshold"),
        ({"max_detections": "many"}, "max_detections"),
        ({"classes": "circle,unicorn"}, "unknown class 'unicorn'"),
    ],
)
def test_bad_parameters_are_422(server, jpeg, params, message):
    response = detect(server.url, files={"image": ("a.jpg", jpeg, "image/jpeg")}, params=params)
    assert response.status_code == 422 and message in response.json()["detail"]


@pytest.mark.parametrize(
    "query, message",
    [
        ("score_threshold=0.5&score_threshold=0.9", "bad parameters: score_threshold: given 2 times, allowed once"),
        ("classes=circle&iou_threshold=0.5&classes=star", "classes: given 2 times, allowed once"),
        ("score_threshold=nan", "bad parameters: score_threshold: Input should be a finite number"),
        ("iou_threshold=inf", "bad parameters: iou_threshold: Input should be a finite number"),
        ("max_detections=101", "bad parameters: max_detections must be a whole number from 0 to 100 (the model's limit), got 101"),
    ],
)
def test_ambiguous_or_out_of_range_parameters_are_422(server, jpeg, query, message):
    response = httpx.post(f"{server.url}/detect?{query}", files={"image": ("a.jpg", jpeg, "image/jpeg")}, timeout=60)
    assert response.status_code == 422 and message in response.json()["detail"]


def test_an_animated_image_says_only_its_first_frame_was_used(server):
    frames = [Image.new("RGB", (60, 40), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buffer = __import__("io").BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100)
    animated = detect(server.url, files={"image": ("a.gif", buffer.getvalue(), "image/gif")}).json()["results"][0]
    assert (animated["frames"], animated["first_frame_only"]) == (3, True)
    still = detect(server.url, files={"image": ("a.png", encode(frames[0], "PNG"), "image/png")}).json()["results"][0]
    assert (still["frames"], still["first_frame_only"]) == (1, False)


def test_every_log_line_is_one_json_object(server):
    lines = [line for line in server.log().splitlines() if line.strip()]
    assert len(lines) > 10
    records = [json.loads(line) for line in lines]  # uvicorn's own lines included
    assert {"uvicorn.error", "vfnet.access", "vfnet.server"} <= {r["logger"] for r in records}
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)


def test_media_type_and_form_errors(server, jpeg):
    assert detect(server.url, content=b"{}", headers={"Content-Type": "application/json"}).status_code == 415
    assert detect(server.url, content=jpeg, headers={}).status_code == 415  # no content type at all
    missing = detect(server.url, files={"picture": ("a.jpg", jpeg, "image/jpeg")})
    assert missing.status_code == 422 and "'image'" in missing.json()["detail"]
    broken = detect(server.url, content=b"--xyz\r\nnot a real part", headers={"Content-Type": "multipart/form-data; boundary=xyz"})
    assert broken.status_code == 400 and "no closing boundary '--xyz--'" in broken.json()["detail"]
    part = b'--xyz\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\nContent-Type: image/jpeg\r\n\r\n' + jpeg
    cut = detect(server.url, content=part + b"\r\n", headers={"Content-Type": "multipart/form-data; boundary=xyz"})
    assert cut.status_code == 400 and "body cut off?" in cut.json()["detail"]  # used to be 422 "no 'image' field"
    whole = detect(server.url, content=part + b"\r\n--xyz--\r\n", headers={"Content-Type": "multipart/form-data; boundary=xyz"})
    assert whole.status_code == 200
    no_boundary = detect(server.url, content=part, headers={"Content-Type": "multipart/form-data"})
    assert no_boundary.status_code == 400 and "no boundary parameter" in no_boundary.json()["detail"]
    five = [("image", (f"{i}.jpg", jpeg, "image/jpeg")) for i in range(5)]  # max_batch_size is 4
    assert detect(server.url, files=five).status_code == 413


def test_annotated_image(server, jpeg):
    response = httpx.post(f"{server.url}/detect/annotated", files={"image": ("a.jpg", jpeg, "image/jpeg")}, params={"format": "png"}, timeout=60)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    drawn = np.asarray(Image.open(__import__("io").BytesIO(response.content)).convert("RGB"))
    original = np.asarray(Image.open(__import__("io").BytesIO(jpeg)).convert("RGB"))
    assert drawn.shape == original.shape and np.abs(drawn.astype(int) - original).max() > 100  # boxes drawn
    two = [("image", ("a.jpg", jpeg, "image/jpeg"))] * 2
    assert httpx.post(f"{server.url}/detect/annotated", files=two, timeout=60).status_code == 422


def test_operations_endpoints(server):
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "alive"}
    model = httpx.get(f"{server.url}/v1/model").json()
    assert model["class_names"][:2] == ["circle", "square"] and model["default_score_threshold"] == 0.3
    assert model["score_floor"] == 0.05 and model["max_batch_size"] == 4 and model["score"] == "iacs"
    metrics = httpx.get(f"{server.url}/metrics").text
    for name in (
        "vfnet_requests_total",
        "vfnet_request_duration_seconds_bucket",
        "vfnet_queue_duration_seconds_bucket",
        "vfnet_inference_duration_seconds_bucket",
        "vfnet_batch_size_bucket",
        "vfnet_queue_depth",
        "vfnet_in_flight_requests",
        'vfnet_model_info{backend="onnxruntime"',
    ):
        assert name in metrics, name
    openapi = httpx.get(f"{server.url}/openapi.json").json()
    assert "multipart/form-data" in openapi["paths"]["/detect"]["post"]["requestBody"]["content"]
    assert httpx.get(f"{server.url}/docs").status_code == 200


def metric_value(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ") or line.startswith(name + "{"))


def test_parallel_clients_are_batched(server, jpeg):
    before = httpx.get(f"{server.url}/metrics").text
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda _: detect(server.url, files={"image": ("a.jpg", jpeg, "image/jpeg")}), range(32)))
    assert [r.status_code for r in responses] == [200] * 32
    after = httpx.get(f"{server.url}/metrics").text
    batches = metric_value(after, "vfnet_batch_size_count") - metric_value(before, "vfnet_batch_size_count")
    images = metric_value(after, "vfnet_batch_size_sum") - metric_value(before, "vfnet_batch_size_sum")
    assert images == 32 and batches < 32  # several requests shared a backend call
    print(f"32 parallel requests ran in {batches:.0f} batches")


def test_full_queue_answers_503_fast_and_stays_ready(tiny_onnx, jpeg):
    # max_queue_wait_ms: only the full queue refuses here, not a loaded machine's long estimated wait
    srv = Server(tiny_onnx, max_batch_size=1, queue_size=1, max_batch_delay_ms=0, max_queue_wait_ms=60_000).wait_ready()
    try:
        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            started = time.monotonic()
            futures = [pool.submit(lambda: (detect(srv.url, files={"image": ("a.jpg", jpeg, "image/jpeg")}), time.monotonic())) for _ in range(12)]
            results = [f.result() for f in futures]
        codes = [r.status_code for r, _ in results]
        assert codes.count(200) >= 1 and codes.count(503) >= 1 and set(codes) <= {200, 503}
        busy = [(r, t) for r, t in results if r.status_code == 503]
        assert all(r.headers["retry-after"] == "1" and "queue is full" in r.json()["detail"] for r, _ in busy)
        slowest_ok = max(t for r, t in results if r.status_code == 200) - started
        assert min(t for _, t in busy) - started < slowest_ok  # rejected before the work finished
        assert httpx.get(f"{srv.url}/readyz").status_code == 200
        assert detect(srv.url, files={"image": ("a.jpg", jpeg, "image/jpeg")}).status_code == 200
    finally:
        assert srv.stop() == 0


def test_timeout_is_504_and_frees_the_queue(tiny_onnx, jpeg):
    srv = Server(tiny_onnx, max_batch_size=1, queue_size=8, request_timeout_s=0.05, max_queue_wait_ms=60_000).wait_ready()
    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            codes = [r.status_code for r in pool.map(lambda _: detect(srv.url, files={"image": ("a.jpg", jpeg, "image/jpeg")}), range(8))]
        assert 504 in codes and set(codes) <= {200, 504}
        time.sleep(0.5)
        ready = httpx.get(f"{srv.url}/readyz").json()
        assert ready["status"] == "ready" and ready["queued_images"] == 0
    finally:
        srv.stop()


def test_api_key(tiny_onnx, jpeg):
    srv = Server(tiny_onnx, api_key="s3cret").wait_ready()
    try:
        files = {"image": ("a.jpg", jpeg, "image/jpeg")}
        assert detect(srv.url, files=files).status_code == 401
        assert detect(srv.url, files=files, headers={"X-API-Key": "s3creT"}).status_code == 401
        assert detect(srv.url, files=files, headers={"X-API-Key": "s3cret"}).status_code == 200
        assert httpx.get(f"{srv.url}/v1/model").status_code == 401
        assert httpx.get(f"{srv.url}/healthz").status_code == 200  # probes stay open
    finally:
        srv.stop()


def test_body_size_limit(tiny_onnx):
    srv = Server(tiny_onnx, max_body_bytes=50_000).wait_ready()
    try:
        big = encode(np.random.default_rng(2).integers(0, 256, (400, 400, 3), dtype=np.uint8), "PNG")
        assert len(big) > 50_000
        response = detect(srv.url, content=big, headers={"Content-Type": "image/png"})
        assert response.status_code == 413 and "the limit is 50,000" in response.json()["detail"]
        assert httpx.get(f"{srv.url}/readyz").status_code == 200
    finally:
        srv.stop()


def test_sigterm_drains_accepted_requests(tiny_onnx, jpeg):
    # a generous queue-wait bound: on a loaded machine (two test workers) the measured time per image
    # would otherwise get the sixth request a 503 before it is accepted, which is not what is tested
    srv = Server(tiny_onnx, max_batch_size=2, max_queue_wait_ms=60_000).wait_ready()
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(detect, srv.url, {"image": ("a.jpg", jpeg, "image/jpeg")}) for _ in range(6)]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and metric_value(httpx.get(f"{srv.url}/metrics").text, "vfnet_in_flight_requests") < 7:
            time.sleep(0.01)  # wait until all six are accepted (7 with the /metrics request itself)
        code = srv.stop()
        statuses = [f.result().status_code for f in futures]
    assert statuses == [200] * 6
    assert code == 0
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{srv.url}/healthz", timeout=2)


def test_bad_model_fails_before_binding(tmp_path):
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"not a model")
    srv = Server(bogus)
    code = srv.process.wait(60)
    assert code == 1 and "cannot load it as an ONNX model" in srv.log() and "Traceback" not in srv.log()


def test_schemathesis_finds_no_server_errors(server):
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", f"{server.url}/openapi.json", "--checks", "not_a_server_error",
         "--max-examples", "25", "--seed", "1", "--request-timeout", "60"],
        capture_output=True,
        text=True,
        timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:]


def test_loadtest_reports_and_fails_on_missed_targets(server, tmp_path):
    import json
    import subprocess
    import sys

    def loadtest(*extra):
        out = tmp_path / "load.json"
        done = subprocess.run(
            [sys.executable, "-m", "vfnet.server.cli", "loadtest", "--url", server.url, "--concurrency", "2",
             "--duration", "3", "--warmup", "1", "--out", str(out), *extra],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        return done, json.loads(out.read_text())

    done, report = loadtest("--p99-ms", "60000", "--max-error-rate", "0.01", "--plot", str(tmp_path / "load.png"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert report["passed"] and report["sent"] > 0 and report["completed"] == report["sent"] and report["error_rate"] == 0.0
    assert set(report["latency_ms"]) >= {"p50", "p90", "p95", "p99"} and report["status_codes"] == {"200": report["sent"]}
    assert (tmp_path / "load.png").read_bytes()[:4] == b"\x89PNG"

    done, report = loadtest("--p50-ms", "0.01")
    assert done.returncode == 1 and not report["passed"] and "MISSED: p50" in done.stderr
