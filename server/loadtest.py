"""`vfnet loadtest`: put a running service under load with Locust (headless) and check latency targets.

Two modes:
- `--rate R` (open loop): enough users that each paces itself at R / users requests per second, so a
  slow answer does not slow the arrivals (up to 2 s of latency per user); their phases are staggered
  so requests arrive evenly spaced, 1/R seconds apart, not in bursts. If the achieved rate falls
  more than 10% short of R, the server did not sustain it and the run fails.
- `--concurrency N` (closed loop): N users sending back to back.

Latency percentiles are computed from every request's own time (not Locust's rounded histogram),
after a warm-up that is not counted. Exits 1 when any target (--p50-ms, --p95-ms, --p99-ms,
--max-error-rate, or the requested rate) is missed, 2 when the run itself could not be made.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

EXAMPLES = """examples:
  vfnet loadtest --url http://127.0.0.1:8000 --rate 4 --duration 30 --p99-ms 800 --max-error-rate 0.01
  vfnet loadtest --url http://127.0.0.1:8000 --images photos/ --concurrency 8 --duration 60 --plot load.png
"""


def synthetic_images(count: int = 8, seed: int = 0) -> list[bytes]:
    """JPEGs of coloured shapes on noise, for when no --images folder is given."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        width, height = int(rng.integers(320, 640)), int(rng.integers(240, 480))
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(2, 7))):
            x, y = int(rng.integers(0, width - 40)), int(rng.integers(0, height - 40))
            size = int(rng.integers(20, min(width - x, height - y, 200) + 1))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x, y, x + size, y + size], fill=colour)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=90)
        images.append(buffer.getvalue())
    return images


def load_images(folder: Path) -> list[tuple[bytes, str]]:
    types = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp", ".bmp": "image/bmp"}
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in types)
    return [(p.read_bytes(), types[p.suffix.lower()]) for p in files]


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    array = np.asarray(values)
    stats = {f"p{q}": float(np.percentile(array, q)) for q in (50, 90, 95, 99)}
    return {**stats, "mean": float(array.mean()), "max": float(array.max())}


def run_load(url: str, images: list[tuple[bytes, str]], path: str, headers: dict, users: int, pace: float | None, warmup: float, duration: float):
    """Run Locust in this process; returns (samples [(t, ms, status, ok)], measured seconds)."""
    import gevent
    from locust import FastHttpUser, task
    from locust.env import Environment

    samples: list[tuple[float, float, int, bool]] = []
    counter = {"next": 0, "started": 0}

    class Client(FastHttpUser):
        host = url
        network_timeout = 60.0
        connection_timeout = 10.0
        next_at = 0.0  # rate mode: when this user sends its next request (perf_counter seconds)

        def on_start(self):
            # Open loop: stagger the users' phases over one pacing period, so that arrivals are
            # spread evenly (users * pace per second) instead of all users firing at once.
            if pace:
                index = counter["started"]
                counter["started"] += 1
                gevent.sleep(index / (users * pace))
                self.next_at = time.perf_counter()

        def wait_time(self):
            """Rate mode: each user fires on its own fixed schedule, one request every 1/pace s
            (Locust's constant_throughput would restart the schedule and undo the stagger)."""
            if not pace:
                return 0.0
            self.next_at += 1.0 / pace
            return max(0.0, self.next_at - time.perf_counter())

        @task
        def detect(self):
            data, media_type = images[counter["next"] % len(images)]
            counter["next"] += 1
            self.client.post(path, data=data, headers={**headers, "Content-Type": media_type}, name="detect")

    env = Environment(user_classes=[Client])
    measuring = {"on": False}

    def on_request(response_time, exception, response=None, **_):
        if measuring["on"]:
            status = getattr(response, "status_code", 0) or 0
            samples.append((time.perf_counter(), float(response_time), int(status), exception is None and 200 <= status < 300))

    env.events.request.add_listener(on_request)
    runner = env.create_local_runner()
    runner.start(users, spawn_rate=users)
    gevent.sleep(warmup)
    measuring["on"] = True
    started = time.perf_counter()
    gevent.sleep(duration)
    measuring["on"] = False
    measured = time.perf_counter() - started
    runner.quit()
    return samples, measured, started


def plot(samples, started: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = [t - started for t, *_ in samples]
    latencies = [ms for _, ms, *_ in samples]
    colours = ["tab:blue" if ok else "tab:red" for *_, ok in samples]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.scatter(times, latencies, s=6, c=colours)
    left.set(xlabel="time (s)", ylabel="latency (ms)", title="latency over time (red: errors)")
    right.hist(latencies, bins=50)
    for q, style in ((50, "-"), (95, "--"), (99, ":")):
        right.axvline(np.percentile(latencies, q), color="k", linestyle=style, label=f"p{q}")
    right.set(xlabel="latency (ms)", ylabel="requests", title="latency distribution")
    right.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vfnet loadtest", description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="base URL of the service, e.g. http://127.0.0.1:8000")
    parser.add_argument("--images", type=Path, help="folder of images to send (default: synthetic JPEGs)")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--rate", type=float, help="requests per second to offer (open loop)")
    mode.add_argument("--concurrency", type=int, help="users sending back to back (closed loop)")
    parser.add_argument("--duration", type=float, default=30.0, help="measured seconds (default 30)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before measuring (default 3)")
    parser.add_argument("--endpoint", default="/detect", help="path and query, e.g. '/detect?score_threshold=0.5'")
    parser.add_argument("--api-key", help="sent as X-API-Key")
    parser.add_argument("--p50-ms", type=float)
    parser.add_argument("--p95-ms", type=float)
    parser.add_argument("--p99-ms", type=float)
    parser.add_argument("--max-error-rate", type=float, help="largest acceptable share of failed requests, e.g. 0.01")
    parser.add_argument("--out", type=Path, default=Path("loadtest.json"), help="JSON results (default loadtest.json)")
    parser.add_argument("--plot", type=Path, help="PNG with latency over time and its distribution")
    args = parser.parse_args(argv)
    if (args.rate is not None and args.rate <= 0) or (args.concurrency is not None and args.concurrency < 1) or args.duration <= 0:
        parser.error("--rate, --concurrency and --duration must be positive")

    images = load_images(args.images) if args.images else [(data, "image/jpeg") for data in synthetic_images()]
    if not images:
        print(f"error: no .jpg/.png/.webp/.bmp images under {args.images}", file=sys.stderr)
        return 2
    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    if args.rate is not None:
        users = max(4, math.ceil(args.rate * 2))  # each user may wait up to 2 s for its answer
        pace = args.rate / users
    else:
        users, pace = args.concurrency, None

    samples, measured, started = run_load(args.url.rstrip("/"), images, args.endpoint, headers, users, pace, args.warmup, args.duration)
    if not samples:
        print(f"error: no request completed against {args.url}", file=sys.stderr)
        return 2
    failures = sum(not ok for *_, ok in samples)
    statuses: dict[str, int] = {}
    for *_, status, _ok in samples:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    report = {
        "url": args.url,
        "endpoint": args.endpoint,
        "mode": "rate" if args.rate is not None else "concurrency",
        "offered_rate_rps": args.rate,
        "concurrency": args.concurrency,
        "users": users,
        "duration_s": round(measured, 2),
        "requests": len(samples),
        "failures": failures,
        "error_rate": failures / len(samples),
        "throughput_rps": len(samples) / measured,
        "latency_ms": percentiles([ms for _, ms, _, ok in samples if ok]),
        "status_codes": statuses,
    }
    missed = []
    latency = report["latency_ms"]
    for name, limit in (("p50", args.p50_ms), ("p95", args.p95_ms), ("p99", args.p99_ms)):
        if limit is not None and (not latency or latency[name] > limit):
            missed.append(f"{name} {latency.get(name, float('nan')):.1f} ms > {limit:g} ms")
    if args.max_error_rate is not None and report["error_rate"] > args.max_error_rate:
        missed.append(f"error rate {report['error_rate']:.3f} > {args.max_error_rate:g}")
    if args.rate is not None and report["throughput_rps"] < 0.9 * args.rate:
        missed.append(f"achieved {report['throughput_rps']:.2f} req/s < 90% of the offered {args.rate:g}")
    report["targets"] = {"p50_ms": args.p50_ms, "p95_ms": args.p95_ms, "p99_ms": args.p99_ms, "max_error_rate": args.max_error_rate}
    report["missed"] = missed
    report["passed"] = not missed
    args.out.write_text(json.dumps(report, indent=2))
    if args.plot:
        plot(samples, started, args.plot, f"{args.url}{args.endpoint}: {report['throughput_rps']:.1f} req/s")

    lat = " ".join(f"{k}={v:.1f}" for k, v in latency.items())
    print(
        f"{len(samples)} requests in {measured:.1f} s: {report['throughput_rps']:.2f} req/s, "
        f"errors {report['error_rate']:.2%}, latency ms {lat}; written to {args.out}"
    )
    for line in missed:
        print(f"MISSED: {line}", file=sys.stderr)
    return 1 if missed else 0
