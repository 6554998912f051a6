"""Bulk detection throughput: `vfnet predict` against the ways a user would otherwise do it, in one run.

1. In-process, same detector, same images on disk: the best loop over `Detector.detect` (read the
   files, call `detect` on lists of 1, 2, 4 or 8; the best size kept) against `predict()` (the code
   behind `vfnet predict`: decoding in a pool overlapped with the backend, batches by canvas, the
   records journalled to JSON Lines), in alternated rounds. Goal: predict >= 0.95x the loop.
2. The service: the same images POSTed to a real `vfnet serve` on 127.0.0.1 at concurrency 2, 4 and
   8 (dynamic batching, max batch 8), the best kept, against the same `predict()` rate.
3. Whole commands: `vfnet predict DIR --out X.jsonl` against `vfnet predict DIR --ray --actors 2`
   (a local Ray instance started by the command, two model actors with fractional CPUs, decoding in
   Ray tasks), wall time of each process including its start (model load; Ray's start), on the
   images and on twice as many: the difference gives each command's marginal rate, its fixed cost apart.

The images are photo-like synthetic scenes saved as JPEG at two sizes, so that decoding and
resizing cost what they cost on camera images. Every figure here is from one run on one CPU.

    python bench/bulk_predict.py [--model demo.onnx] [--images 64]     # writes docs/benchmarks.md (its section)
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import cpu_description, publish  # bench/report.py
from server_overhead import http_throughput, start_server, test_images

from vfnet.server.predict import Journal, PredictOptions, expand_sources, predict
from vfnet.server.runtime import load_detector
from vfnet.server.runtime.load import DEMO_CHECKPOINT

SECTION = "## Bulk detection: vfnet predict (CPU)"
SHAPES = ((768, 1024), (480, 640))  # (h, w) of the JPEGs: camera-like and small


def write_images(folder: Path, count: int) -> list[Path]:
    """`count` synthetic scenes as JPEG files, alternating the two SHAPES."""
    paths = [folder / f"scene{i:04d}.jpg" for i in range(count)]
    for path, data in zip(paths, test_images(count, shapes=SHAPES)):
        path.write_bytes(data)
    return paths


def loop_rate(detector, paths: list[Path], batch: int) -> float:
    """images/s of reading the files and calling `Detector.detect` on lists of `batch`."""
    start = time.perf_counter()
    for i in range(0, len(paths), batch):
        detector.detect([p.read_bytes() for p in paths[i : i + batch]], score_threshold=0.3)
    return len(paths) / (time.perf_counter() - start)


def predict_rate(detector, folder: Path, out: Path, threads: int, batch: int) -> float:
    """images/s of `predict()` over the folder into a fresh JSON Lines file."""
    out.unlink(missing_ok=True)
    journal = Journal(out, resume=False)
    summary = predict(detector, expand_sources([str(folder)]), journal, PredictOptions(batch_size=batch, threads=threads))
    journal.finish()
    assert summary.failed == 0, summary.errors
    return summary.detected / summary.seconds


def command_seconds(arguments: list[str]) -> float:
    """Wall seconds of `vfnet predict ARGUMENTS` as its own process."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "vfnet.server.cli", "predict", *arguments], capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"vfnet predict {' '.join(arguments)} exited {done.returncode}: {done.stderr[-2000:]}")
    return seconds


def ray_start_seconds() -> float:
    """Wall seconds of a process that only starts a local Ray instance and shuts it down."""
    start = time.perf_counter()
    code = "import ray; ray.init(include_dashboard=False, log_to_driver=False); ray.shutdown()"
    subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, timeout=300)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    demo_onnx = DEMO_CHECKPOINT.with_suffix(".onnx")
    parser.add_argument("--model", type=Path, default=demo_onnx, help=f"ONNX model (default {demo_onnx})")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="ONNX Runtime threads, and predict's decoding threads")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="16 images, one round, no Ray; docs/ left alone")
    args = parser.parse_args()
    count, rounds = (16, 1) if args.quick else (args.images, args.rounds)
    with tempfile.TemporaryDirectory(prefix="vfnet-bulk-") as temporary:
        folder = Path(temporary) / "images"
        folder.mkdir()
        paths = write_images(folder, count)
        detector = load_detector(args.model, intra_op_threads=args.threads)
        loop_rate(detector, paths[:4], 2)  # settle: first calls of each shape
        by_batch = {batch: loop_rate(detector, paths, batch) for batch in (1, 2, 4, 8)}
        best = max(by_batch, key=by_batch.get)
        out = Path(temporary) / "dets.jsonl"
        loops, predicts = [], []
        for _ in range(rounds):  # alternated, so a change in the machine's speed affects both alike
            loops.append(loop_rate(detector, paths, best))
            predicts.append(predict_rate(detector, folder, out, args.threads, best))
        loop, bulk = statistics.mean(loops), statistics.mean(predicts)

        server, url = start_server(args.model, args.threads, max_batch=8, max_queue_wait_ms=60_000)
        try:
            images = [p.read_bytes() for p in paths]
            http = {c: http_throughput(url, images, concurrency=c, requests=count) for c in (2, 4, 8)}
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(60)
        best_http = max(http, key=http.get)
        bulk_after = predict_rate(detector, folder, out, args.threads, best)

        commands = {}  # (way, images) -> wall seconds
        if not args.quick:
            doubled = Path(temporary) / "doubled"
            doubled.mkdir()
            write_images(doubled, 2 * count)
            for images, source in ((count, folder), (2 * count, doubled)):
                common = [str(source), "--model", str(args.model), "--batch-size", str(best), "--threads", str(args.threads)]
                commands["local", images] = command_seconds([*common, "--out", str(Path(temporary) / f"local{images}.jsonl")])
                commands["ray", images] = command_seconds([*common, "--out", str(Path(temporary) / f"ray{images}.jsonl"), "--ray", "--actors", "2"])
            ray_alone = ray_start_seconds()

    lines = [
        SECTION,
        "",
        f"`python bench/bulk_predict.py` on {cpu_description()}, {os.cpu_count()} CPUs, {args.threads} ONNX Runtime threads everywhere; "
        f"model `{args.model.name}`; {count} synthetic JPEG scenes, half 1024×768 and half 640×480, read from disk; "
        f"means of {rounds} alternated rounds in one process.",
        "",
        "| way | images/s | vs best `Detector.detect` loop | goal |",
        "|---|---|---|---|",
        f"| loop over `Detector.detect`, best batch ({best}) | {loop:.1f} | 1.00× | |",
        f"| `vfnet predict` (`predict()`, batch {best}, {args.threads} decoding threads) | {bulk:.1f} | **{bulk / loop:.2f}×** | ≥ 0.95× |",
        f"| `/detect` on `vfnet serve`, best concurrency ({best_http}) | {http[best_http]:.1f} | {http[best_http] / loop:.2f}× | |",
        "",
        "`/detect` by concurrency: " + ", ".join(f"{c}: {v:.1f} img/s" for c, v in http.items()) + f" (`predict()` right after: {bulk_after:.1f} img/s, "
        f"so `vfnet predict` is **{bulk_after / http[best_http]:.2f}×** the service at its best). "
        "`Detector.detect` loop by batch size: " + ", ".join(f"{b}: {v:.1f}" for b, v in by_batch.items()) + " img/s.",
    ]
    if commands:
        rows = []
        for way, command in (("local", "`vfnet predict DIR --out dets.jsonl`"), ("ray", "`vfnet predict DIR --out dets.jsonl --ray --actors 2`")):
            once, twice = commands[way, count], commands[way, 2 * count]
            marginal = count / (twice - once)
            rows.append((command, once, twice, marginal, once - count / marginal))
        local, ray = rows
        lines += [
            "",
            f"Whole commands, each its own process, wall time from start to exit on {count} and on {2 * count} images; the difference "
            "gives the marginal rate, the rest is fixed cost (imports and model load; for Ray also starting a local instance, "
            "two model actors with 0.66 CPU and one ONNX Runtime thread each, decoding in Ray tasks):",
            "",
            f"| command | wall s, {count} images | wall s, {2 * count} images | marginal images/s | fixed s | marginal rate vs local |",
            "|---|---|---|---|---|---|",
            *(f"| {c} | {a:.1f} | {b:.1f} | {m:.1f} | {f:.1f} | **{m / local[3]:.2f}×** |" for c, a, b, m, f in rows),
            f"| a process that only starts and stops a local Ray instance | {ray_alone:.1f} | | | | |",
            "",
            f"On {os.cpu_count()} cores Ray can only add cost (its start, the pixels through its object store, the actors and the "
            "decoding tasks sharing the cores); its point is more machines: each node added brings its own actors and decoders.",
        ]
    return publish(SECTION, lines, write=not args.quick)


if __name__ == "__main__":
    sys.exit(main())
