"""HTTP service overhead and throughput against the same model called in-process, in one run.

1. Latency: p50 of `Detector.detect([jpeg])` in this process (decode, resize, backend, filters)
   vs p50 of POST /detect with one client at a time (concurrency 1) on the same image.
2. Throughput: images/s of the best in-process batch size (1, 2, 4, 8; `Detector.detect` on a list)
   vs images/s of the service with 8 concurrent clients (dynamic batching, max batch 8).

The server runs as a real `vfnet serve` process on loopback, with the same ONNX Runtime thread
count as the in-process detector. Goals: overhead <= 1.15x, throughput >= 0.9x.

    python bench/server_overhead.py [--model demo.onnx]      # writes docs/benchmarks.md (its section)
"""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from vfnet.server.runtime import load_detector
from vfnet.server.runtime.load import DEMO_CHECKPOINT

from report import write_section  # bench/report.py

SECTION = "## HTTP service overhead (CPU)"


def test_images(count: int = 8) -> list[bytes]:
    from vfnet.train.synth import render_image

    images = []
    for i in range(count):
        pixels, _ = render_image(np.random.default_rng([31, i]), 384, 512)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=92)
        images.append(buffer.getvalue())
    return images


def start_server(model: Path, threads: int, max_batch: int) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "VFNET_INTRA_OP_THREADS": str(threads), "VFNET_MAX_BATCH_SIZE": str(max_batch), "VFNET_LOG_LEVEL": "warning"}
    process = subprocess.Popen(
        [sys.executable, "-m", "vfnet.server.cli", "serve", "--model", str(model), "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError("server did not become ready")


def in_process(model: Path, threads: int, images: list[bytes], repeats: int) -> tuple[float, dict[int, float]]:
    detector = load_detector(model, intra_op_threads=threads)
    for _ in range(3):
        detector.detect(images[:1])
    latencies = []
    for i in range(repeats):
        start = time.perf_counter()
        detector.detect([images[i % len(images)]], score_threshold=0.3)
        latencies.append((time.perf_counter() - start) * 1000)
    throughput = {}
    for batch in (1, 2, 4, 8):
        chunk = [images[i % len(images)] for i in range(batch)]
        detector.detect(chunk)
        rounds = max(2, 16 // batch)
        start = time.perf_counter()
        for _ in range(rounds):
            detector.detect(chunk, score_threshold=0.3)
        throughput[batch] = rounds * batch / (time.perf_counter() - start)
    return statistics.median(latencies), throughput


def over_http(url: str, images: list[bytes], repeats: int, concurrency: int, requests: int) -> tuple[float, float]:
    client = httpx.Client(timeout=120)
    files = lambda i: {"image": ("i.jpg", images[i % len(images)], "image/jpeg")}  # noqa: E731
    for i in range(3):
        client.post(f"{url}/detect", files=files(i))
    latencies = []
    for i in range(repeats):
        start = time.perf_counter()
        assert client.post(f"{url}/detect", files=files(i)).status_code == 200
        latencies.append((time.perf_counter() - start) * 1000)

    def worker(offset: int) -> None:
        with httpx.Client(timeout=120) as c:
            for i in range(offset, requests, concurrency):
                assert c.post(f"{url}/detect", files=files(i)).status_code == 200

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, range(concurrency)))
    return statistics.median(latencies), requests / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    demo_onnx = DEMO_CHECKPOINT.with_suffix(".onnx")
    parser.add_argument("--model", type=Path, default=demo_onnx, help=f"ONNX model (default {demo_onnx})")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--requests", type=int, default=96, help="requests in the concurrency-8 run")
    args = parser.parse_args()
    images = test_images()

    p50_local, batched = in_process(args.model, args.threads, images, args.repeats)
    server, url = start_server(args.model, args.threads, max_batch=8)
    try:
        p50_http, http_throughput = over_http(url, images, args.repeats, concurrency=8, requests=args.requests)
        batch_metrics = httpx.get(f"{url}/metrics").text
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
    count = sum(float(l.split()[-1]) for l in batch_metrics.splitlines() if l.startswith("vfnet_batch_size_count"))
    total = sum(float(l.split()[-1]) for l in batch_metrics.splitlines() if l.startswith("vfnet_batch_size_sum"))
    best_batch, best = max(batched.items(), key=lambda kv: kv[1])
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name")), "CPU")
    text = "\n".join(
        [
            SECTION,
            "",
            f"`python bench/server_overhead.py` on {cpu}, {args.threads} threads for ONNX Runtime in both cases; model "
            f"`{args.model.name}`; 8 synthetic 512×384 JPEGs; client, server and in-process runs on the same machine, one after "
            "the other in one run.",
            "",
            "| measure | in-process `Detector` | HTTP service | ratio | goal |",
            "|---|---|---|---|---|",
            f"| p50 latency, one image, concurrency 1 | {p50_local:.1f} ms | {p50_http:.1f} ms | **{p50_http / p50_local:.2f}×** | ≤ 1.15× |",
            f"| throughput, images/s (in-process: best batch = {best_batch}; HTTP: 8 clients) | {best:.1f} | {http_throughput:.1f} | "
            f"**{http_throughput / best:.2f}×** | ≥ 0.9× |",
            "",
            "In-process throughput by batch size: " + ", ".join(f"{b}: {v:.1f} img/s" for b, v in batched.items()) + ". "
            f"Average batch formed by the service under 8 clients: {total / max(count, 1):.1f} images.",
            "",
        ]
    )
    print(text)
    write_section(SECTION, text)


if __name__ == "__main__":
    main()
