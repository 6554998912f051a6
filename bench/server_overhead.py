"""HTTP service overhead and throughput against the same model called in-process, in one run.

1. Latency: p50 of `Detector.detect([jpeg])` in this process (decode, resize, backend, filters)
   vs p50 of POST /detect with one client at a time (concurrency 1) on the same image, one of
   each in turn.
2. Throughput: images/s of the best in-process batch size (1, 2, 4, 8; `Detector.detect` on a list)
   vs images/s of the service with 8 concurrent clients (dynamic batching, max batch 8).
3. The price of batch-independent results on images of mixed shapes (landscape, portrait, square,
   wide): in-process, 8 such images padded into one backend call (results then depend on the
   company) vs `Detector.infer`, one call per padded canvas (what is served); and the service's
   throughput with 8 clients on the mixed images vs on the same-shape images.

The server runs as a real `vfnet serve` process on loopback, with the same ONNX Runtime thread
count as the in-process detector. Goals: overhead <= 1.15x, throughput >= 0.9x.

With --fast-paths it instead measures the service's throughput (8 clients) on each CPU artifact of
the demo, made by bench/cpu_fast_path.py's `artifacts` (calibrated on 32 synthetic scenes; needs
torch and the export extra): the float32 ONNX file, its int8 versions (`vfnet export onnx --int8`,
with and without --sampled-star), its OpenVINO IR (`vfnet export openvino`) in float32 and, where the
CPU has it, bfloat16, and the int8 IR (`--int8`, NNCF, with and without --sampled-star); one server
each, alive together, measured in alternated rounds.

    python bench/server_overhead.py [--model demo.onnx]      # writes docs/benchmarks.md (its section)
    python bench/server_overhead.py --fast-paths [--artifacts DIR]   # writes its own section
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
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from report import cpu_description, publish, write_section  # bench/report.py

from vfnet.server.runtime import load_detector, make_batch
from vfnet.server.runtime.load import DEMO_CHECKPOINT

SECTION = "## HTTP service overhead (CPU)"
FAST_PATHS_SECTION = "## HTTP service throughput on the CPU fast paths"


MIXED_SHAPES = ((384, 512), (512, 384), (512, 512), (256, 512))  # (h, w): four different padded canvases


def test_images(count: int = 8, shapes=((384, 512),)) -> list[bytes]:
    from vfnet.train.synth import render_image

    images = []
    for i in range(count):
        h, w = shapes[i % len(shapes)]
        pixels, _ = render_image(np.random.default_rng([31, i]), h, w)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=92)
        images.append(buffer.getvalue())
    return images


def start_server(model: Path, threads: int, max_batch: int, **settings) -> tuple[subprocess.Popen, str]:
    """A `vfnet serve` process on a free loopback port, ready; `settings` become VFNET_* variables
    (no gRPC unless `grpc_port` is given: two benchmark servers must not both take 8001)."""
    settings.setdefault("grpc_port", 0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "VFNET_INTRA_OP_THREADS": str(threads), "VFNET_MAX_BATCH_SIZE": str(max_batch), "VFNET_LOG_LEVEL": "warning"}
    env.update({f"VFNET_{name.upper()}": str(value) for name, value in settings.items()})
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


def metric(url: str, name: str) -> float:
    """A Prometheus metric of the running service, summed over its label sets."""
    text = httpx.get(f"{url}/metrics").text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ") or line.startswith(name + "{"))


def interleaved_latency(detector, url: str, images: list[bytes], repeats: int, block: int = 10) -> tuple[float, float]:
    """p50 ms of `Detector.detect([jpeg])` in this process and of POST /detect (concurrency 1), in
    alternating blocks of `block` requests, so that a change in the machine's speed during the run
    affects both alike (blocks, not single requests: each side's idle compute threads spin for a
    while after a call and would slow the other side's next one)."""
    client = httpx.Client(timeout=120)
    files = lambda i: {"image": ("i.jpg", images[i % len(images)], "image/jpeg")}  # noqa: E731
    for i in range(3):
        detector.detect([images[i]])
        client.post(f"{url}/detect", files=files(i))
    local, remote = [], []
    for first in range(0, repeats, block):
        for i in range(first, min(first + block, repeats)):
            start = time.perf_counter()
            detector.detect([images[i % len(images)]], score_threshold=0.3)
            local.append((time.perf_counter() - start) * 1000)
        time.sleep(0.2)
        for i in range(first, min(first + block, repeats)):
            start = time.perf_counter()
            assert client.post(f"{url}/detect", files=files(i)).status_code == 200
            remote.append((time.perf_counter() - start) * 1000)
        time.sleep(0.2)
    return statistics.median(local), statistics.median(remote)


def in_process_throughput(detector, images: list[bytes], sizes=(1, 2, 4, 8)) -> dict[int, float]:
    """images/s of `Detector.detect` on lists of `sizes` images."""
    throughput = {}
    for batch in sizes:
        chunk = [images[i % len(images)] for i in range(batch)]
        detector.detect(chunk)
        rounds = max(2, 16 // batch)
        start = time.perf_counter()
        for _ in range(rounds):
            detector.detect(chunk, score_threshold=0.3)
        throughput[batch] = rounds * batch / (time.perf_counter() - start)
    return throughput


def padding_cost(detector, images: list[bytes], rounds: int = 6) -> tuple[float, float]:
    """images/s of (one padded backend call for all images, `Detector.infer` by canvas), alternated."""
    prepared = [detector.prepare(data) for data in images]
    iou = detector.card.iou_threshold

    def padded_together() -> None:
        batch = make_batch(prepared, detector.card.size_divisor)
        detector.backend.run(batch, iou)

    def by_canvas() -> None:
        detector.infer(prepared, iou)

    seconds = {padded_together: 0.0, by_canvas: 0.0}
    for run in (padded_together, by_canvas):
        run()  # warm-up of each shape
    for _ in range(rounds):
        for run in seconds:
            start = time.perf_counter()
            run()
            seconds[run] += time.perf_counter() - start
    return rounds * len(images) / seconds[padded_together], rounds * len(images) / seconds[by_canvas]


def http_throughput(url: str, images: list[bytes], concurrency: int, requests: int) -> float:
    """images/s of the service with `concurrency` clients sending one image each, back to back."""
    files = lambda i: {"image": ("i.jpg", images[i % len(images)], "image/jpeg")}  # noqa: E731

    def worker(offset: int) -> None:
        with httpx.Client(timeout=120) as c:
            for i in range(offset, requests, concurrency):
                assert c.post(f"{url}/detect", files=files(i)).status_code == 200

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, range(concurrency)))
    return requests / (time.perf_counter() - start)


def fast_path_throughput(args, images: list[bytes]) -> None:
    """The --fast-paths table (see the module docstring)."""
    import tempfile

    import openvino
    from cpu_fast_path import artifacts  # bench/cpu_fast_path.py: the demo's CPU artifacts, made once

    from vfnet.server.runtime.backends.openvino_backend import native_bf16

    native = native_bf16(openvino.Core())
    with tempfile.TemporaryDirectory() as tmp:
        files = artifacts("vfnet_r18_demo", (args.artifacts or Path(tmp)) / "vfnet_r18_demo")
        paths = ["ORT fp32", "ORT int8", "ORT int8 sampled", "OV fp32", *(["OV bf16"] if native else []), "OV int8", "OV int8 sampled"]
        precision = {"OV fp32": {"precision": "fp32"}, "OV bf16": {"precision": "bf16"}}
        artifacts = {name: (files[name], precision.get(name, {})) for name in paths}  # OV int8: its float rest in bf16 where native
        servers = {name: start_server(path, args.threads, max_batch=8, max_queue_wait_ms=60_000, **extra) for name, (path, extra) in artifacts.items()}
        try:
            rates = {name: [] for name in servers}
            for _ in range(3):  # alternated rounds
                for name, (_, url) in servers.items():
                    http_throughput(url, images, concurrency=8, requests=8)  # warm
                    rates[name].append(http_throughput(url, images, concurrency=8, requests=args.requests // 3))
        finally:
            for process, _ in servers.values():
                process.send_signal(signal.SIGTERM)
                process.wait(60)
    reference = statistics.mean(rates["ORT fp32"])
    lines = [
        FAST_PATHS_SECTION,
        "",
        f"`python bench/server_overhead.py --fast-paths` on {cpu_description()}: `vfnet serve` with {args.threads} backend threads and max "
        "batch 8 on each artifact of the demo, 8 concurrent clients sending 512×384 JPEGs, three alternated rounds of "
        f"{args.requests // 3} requests per server. " + ("" if native else "OpenVINO bf16: not measured (this CPU has no native bfloat16)."),
        "",
        "| artifact | images/s (mean of 3 rounds) | rounds | **vs ORT fp32** |",
        "|---|---|---|---|",
    ]
    for name, values in rates.items():
        lines.append(f"| {name} | {statistics.mean(values):.1f} | {' / '.join(f'{v:.1f}' for v in values)} | **{statistics.mean(values) / reference:.2f}×** |")
    publish(FAST_PATHS_SECTION, lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    demo_onnx = DEMO_CHECKPOINT.with_suffix(".onnx")
    parser.add_argument("--model", type=Path, default=demo_onnx, help=f"ONNX model (default {demo_onnx})")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--requests", type=int, default=144, help="requests in the concurrency-8 runs (over 3 rounds)")
    parser.add_argument("--fast-paths", action="store_true", help="the service's throughput on each CPU artifact of the demo instead")
    parser.add_argument("--artifacts", type=Path, help="--fast-paths: where the exported files are kept and reused (bench/cpu_fast_path.py's)")
    args = parser.parse_args()
    images = test_images()
    if args.fast_paths:
        return fast_path_throughput(args, images)

    mixed = test_images(shapes=MIXED_SHAPES)

    # Admission by estimated wait would refuse some of 8 back-to-back clients on a slow CPU; it has
    # its own benchmark (bench/overload.py), so here it is set out of the way.
    server, url = start_server(args.model, args.threads, max_batch=8, max_queue_wait_ms=60_000)
    try:
        detector = load_detector(args.model, intra_op_threads=args.threads)
        p50_local, p50_http = interleaved_latency(detector, url, images, args.repeats)
        batched = in_process_throughput(detector, images)
        best_batch = max(batched, key=batched.get)
        local_rates, http_rates, mixed_rates = [], [], []
        for _ in range(3):  # alternated rounds, for the same reason as the latency blocks
            local_rates.append(in_process_throughput(detector, images, sizes=(best_batch,))[best_batch])
            http_rates.append(http_throughput(url, images, concurrency=8, requests=args.requests // 3))
            mixed_rates.append(http_throughput(url, mixed, concurrency=8, requests=args.requests // 3))
        best, http_rate, mixed_rate = (statistics.mean(r) for r in (local_rates, http_rates, mixed_rates))
        batches, batched_images = metric(url, "vfnet_batch_size_count"), metric(url, "vfnet_batch_size_sum")
        padded_rate, grouped_rate = padding_cost(detector, mixed)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
    text = "\n".join(
        [
            SECTION,
            "",
            f"`python bench/server_overhead.py` on {cpu_description()}, {args.threads} threads for ONNX Runtime in both cases; model "
            f"`{args.model.name}`; 8 synthetic 512×384 JPEGs; client, server and in-process detector on the same "
            "machine in one run, the latency of the two measured in turn, request by request.",
            "",
            "| measure | in-process `Detector` | HTTP service | ratio | goal |",
            "|---|---|---|---|---|",
            f"| p50 latency, one image, concurrency 1 | {p50_local:.1f} ms | {p50_http:.1f} ms | **{p50_http / p50_local:.2f}×** | ≤ 1.15× |",
            f"| throughput, images/s (in-process: best batch = {best_batch}; HTTP: 8 clients) | {best:.1f} | {http_rate:.1f} | "
            f"**{http_rate / best:.2f}×** | ≥ 0.9× |",
            "",
            "In-process throughput by batch size: " + ", ".join(f"{b}: {v:.1f} img/s" for b, v in batched.items()) + ". "
            f"Average batch formed by the service under 8 clients: {batched_images / max(batches, 1):.1f} images.",
            "",
            "The price of batch-independent results: the service batches only images of the same padded canvas, so that "
            "an image's detections never depend on its company (padding to a larger canvas changes GroupNorm statistics "
            "and the coarse levels). On 8 images of four shapes " + ", ".join(f"{w}×{h}" for h, w in MIXED_SHAPES) + ":",
            "",
            "| measure | images/s | ratio |",
            "|---|---|---|",
            f"| in-process, all 8 padded into one call (results depend on the batch) | {padded_rate:.1f} | 1.00× |",
            f"| in-process, `Detector.infer`: one call per canvas (what is served) | {grouped_rate:.1f} | **{grouped_rate / padded_rate:.2f}×** |",
            f"| HTTP, 8 clients, same-shape images | {http_rate:.1f} | 1.00× |",
            f"| HTTP, 8 clients, mixed shapes | {mixed_rate:.1f} | **{mixed_rate / http_rate:.2f}×** |",
            "",
            "One call per canvas computes each image on its own canvas only, while one padded call also computes the "
            "padding; on this CPU that outweighs the extra calls, so batch independence costs no throughput here. On a GPU, "
            "where larger batches are cheaper per image, the balance can differ (not measured here).",
            "",
        ]
    )
    print(text)
    write_section(SECTION, text)


if __name__ == "__main__":
    main()
