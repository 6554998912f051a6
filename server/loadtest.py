"""`vfnet loadtest`: put a running service under load with Locust's HTTP client and check latency targets.

Each request carries one image: a raw image body to /detect (`--protocol detect`, the default), an
Open Inference Protocol request with the image as binary tensor data to /v2/models/<model>/infer
(`--protocol v2`), or a ModelInfer call of KServe v2 over gRPC (`--protocol v2-grpc`, to
--grpc-target), through the same service and batcher (loadtest_protocols.py says how).

Two modes:
- `--rate R` (open loop): request i is due at start + i/R, evenly spaced, and is sent when it is due
  whatever the server does: it does not wait for earlier answers, so the load offered does not fall
  when the server slows down. Requests in flight are unbounded up to --max-in-flight (default 512);
  an arrival that finds that many requests unanswered is not sent and is counted as skipped_at_cap.
  Each request's latency runs from when it was due to its answer, so a late send counts against it.
- `--concurrency N` (closed loop): N users, each sending its next request as soon as its last one is
  answered; the load follows the server's speed. Latency runs from the send to the answer.

The first --warmup seconds of load are not counted. Every request sent in the --duration seconds
that follow is counted, whenever its answer comes: after the window, the generator waits up to
--drain-timeout seconds (default 60) for those still in flight and counts the ones still unanswered
then as transport errors ("timeout").

The report (one line on stdout, the whole in --out, default .loadtest/loadtest.json):
  protocol, endpoint    "detect", "v2" or "v2-grpc", and the path (or rpc) the requests went to (grpc_target: where)
  mode                  "rate" or "concurrency"
  offered_rate_rps      R (null in concurrency mode)
  sent, sent_rate_rps   requests sent in the window, and per second of it
  completed, completed_rate_rps
                        of those, the ones that got an HTTP answer (any status), and per second of the window
  skipped_at_cap        arrivals in the window not sent because --max-in-flight requests were in flight
  transport_errors      requests sent that got no HTTP answer (connection refused or reset, timeout, ...);
                        transport_error_kinds counts them by kind
  status_codes          the HTTP answers by status, e.g. {"200": 95, "503": 5} (gRPC: {"OK": 95, "RESOURCE_EXHAUSTED": 5})
  latency_ms            p50, p90, p95, p99, mean, max of the successful (2xx) answers
  latency_ms_by_status  the same for each status, e.g. latency_ms_by_status["503"]
  error_rate            (non-2xx answers + transport errors) / sent
  duration_s            the measured window; drain_s: how long the wait for its last answers took
  throughput_rps        successful (2xx) answers per second of the window
  targets, missed, passed
                        the targets given, the ones missed (one sentence each), and whether none was

A run fails (exit 1) when a target is missed: --p50-ms, --p95-ms or --p99-ms by the 2xx latency,
--max-error-rate by error_rate, and in rate mode a sent rate under 90% of R (the generator could
not keep up: in-flight cap reached, or this machine too slow). A server that answers 503 quickly
is caught by --max-error-rate, not by the sent rate. Each miss is printed as a MISSED line on stderr.

Exit codes: 0 every target met; 1 a target missed; 2 the run could not be made (bad arguments, no
images, or no request got an HTTP answer).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vfnet.server.loadtest_protocols import default_grpc_target, requests_for

EXAMPLES = """examples:
  vfnet loadtest --url http://127.0.0.1:8000 --rate 4 --duration 30 --p99-ms 800 --max-error-rate 0.01
  vfnet loadtest --url http://127.0.0.1:8000 --protocol v2 --rate 4 --duration 30 --p99-ms 800
  vfnet loadtest --url http://127.0.0.1:8000 --protocol v2-grpc --grpc-target 127.0.0.1:8001 --concurrency 8 --duration 30
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


@dataclass
class Sample:
    """The outcome of one request sent in the measured window."""

    at_s: float  # when it was due, seconds from the window's start
    latency_ms: float  # from when it was due to its answer (or to giving up on it)
    status: int | str  # HTTP status (gRPC: the status code's name); 0 when no answer came
    error: str | None = None  # the transport error's kind when no answer came

    @property
    def ok(self) -> bool:
        return self.status == "OK" or (isinstance(self.status, int) and 200 <= self.status < 300)


def transport_error_kind(error: BaseException | None) -> str:
    """Why a request got no HTTP answer: "timeout", or the exception's name (ConnectionRefusedError, ...)."""
    import gevent

    if isinstance(error, str):
        return error  # already a kind (gRPC calls: loadtest_protocols.Answer)
    error = getattr(error, "original", None) or error  # geventhttpclient wraps a timeout in RetriesExceeded
    return "timeout" if isinstance(error, (TimeoutError, gevent.Timeout)) else type(error).__name__


class LoadGenerator:
    """Sends requests through one Locust FastHttpSession and records those due in the measured window.

    Times are time.perf_counter() seconds; the window is [window_start, window_end).
    """

    def __init__(self, session, bodies: list[tuple[bytes, dict]], path: str, headers: dict, start: float, warmup: float, duration: float):
        self.session, self.bodies, self.path, self.headers = session, bodies, path, headers  # bodies: (bytes, their headers)
        self.start, self.window_start, self.window_end = start, start + warmup, start + warmup + duration
        self.issued = 0  # requests sent, warm-up included
        self.sent = 0  # of those, the ones due in the window
        self.skipped_at_cap = 0
        self.samples: list[Sample] = []
        self.unanswered: dict[int, float] = {}  # measured requests in flight: number -> when it was due

    def in_window(self, due: float) -> bool:
        return self.window_start <= due < self.window_end

    def send(self, due: float) -> None:
        """Send one request due at `due` and, if that falls in the window, record its outcome."""
        number = self.issued
        self.issued += 1
        data, body_headers = self.bodies[number % len(self.bodies)]
        measured = self.in_window(due)
        if measured:
            self.sent += 1
            self.unanswered[number] = due
        response = self.session.post(self.path, data=data, headers={**self.headers, **body_headers}, name=self.path)
        if measured:
            del self.unanswered[number]
            status = response.status_code or 0
            error = None if status else transport_error_kind(getattr(response, "error", None))
            self.samples.append(Sample(due - self.window_start, (time.perf_counter() - due) * 1000, status, error))

    def open_loop(self, rate: float, max_in_flight: int):
        """Send request i at start + i/R until the window ends, each in its own greenlet, never waiting
        for answers; skip an arrival while max_in_flight requests are in flight.
        Returns (the pool of all requests' greenlets, those of the measured requests)."""
        import gevent
        import gevent.pool

        pool = gevent.pool.Pool(max_in_flight)
        measured = []
        for i in range(math.ceil((self.window_end - self.start) * rate)):
            due = self.start + i / rate
            if due >= self.window_end or time.perf_counter() >= self.window_end:
                break  # the schedule is done, or this machine fell so far behind that the window is over
            gevent.sleep(max(0.0, due - time.perf_counter()))
            if pool.full():
                if self.in_window(due):
                    self.skipped_at_cap += 1
                continue
            greenlet = pool.spawn(self.send, due)
            if self.in_window(due):
                measured.append(greenlet)
        return pool, measured

    def closed_loop(self, users: int):
        """`users` greenlets, each sending back to back until the window ends.
        Returns (the group of their greenlets, the same greenlets as a list)."""
        import gevent
        import gevent.pool

        def user() -> None:
            while time.perf_counter() < self.window_end:
                self.send(time.perf_counter())

        group = gevent.pool.Group()
        for _ in range(users):
            group.spawn(user)
        gevent.sleep(max(0.0, self.window_end - time.perf_counter()))
        return group, list(group)

    def drain(self, group, waited: list, timeout: float) -> float:
        """Wait up to `timeout` s for the `waited` greenlets, stop everything in `group`, and count the
        measured requests still unanswered as transport errors ("timeout"). Returns the seconds waited."""
        import gevent

        began = time.perf_counter()
        gevent.joinall(waited, timeout=timeout)
        waited_s = time.perf_counter() - began
        group.kill(block=True, timeout=5)
        now = time.perf_counter()
        for due in self.unanswered.values():
            self.samples.append(Sample(due - self.window_start, (now - due) * 1000, 0, "timeout"))
        self.unanswered.clear()
        return waited_s


def run_load(url: str, bodies, path: str, headers: dict, args) -> tuple[LoadGenerator, float]:
    """Run the load of `args` (rate or concurrency, warm-up, window, drain). Returns (the generator, drain s)."""
    deadline = args.warmup + args.duration + args.drain_timeout  # the drain is the deadline
    if args.protocol == "v2-grpc":
        from vfnet.server.loadtest_protocols import GrpcSession

        session = GrpcSession(args.grpc_target, deadline)
    else:
        from locust.contrib.fasthttp import FastHttpSession  # imports gevent and monkey-patches this process
        from locust.event import EventHook

        pool_size = args.max_in_flight if args.rate is not None else args.concurrency
        session = FastHttpSession(
            url, request_event=EventHook(), user=None, concurrency=pool_size, max_retries=0, connection_timeout=10.0, network_timeout=deadline
        )
    generator = LoadGenerator(session, bodies, path, headers, time.perf_counter(), args.warmup, args.duration)
    if args.rate is not None:
        group, waited = generator.open_loop(args.rate, args.max_in_flight)
    else:
        group, waited = generator.closed_loop(args.concurrency)
    drain_s = generator.drain(group, waited, args.drain_timeout)
    return generator, drain_s


def count_by(keys) -> dict[str, int]:
    counts: dict[str, int] = {}
    for key in keys:
        counts[str(key)] = counts.get(str(key), 0) + 1
    return counts


def build_report(args, generator: LoadGenerator, drain_s: float) -> dict:
    """Everything the module docstring lists, except targets / missed / passed."""
    samples, duration = generator.samples, args.duration
    answered = [s for s in samples if s.error is None]
    sent, ok = len(samples), [s for s in answered if s.ok]
    statuses = sorted({s.status for s in answered})
    return {
        "url": args.url,
        "endpoint": args.endpoint,
        "mode": "rate" if args.rate is not None else "concurrency",
        "offered_rate_rps": args.rate,
        "concurrency": args.concurrency,
        "max_in_flight": args.max_in_flight if args.rate is not None else None,
        "duration_s": duration,
        "drain_s": round(drain_s, 2),
        "sent": sent,
        "sent_rate_rps": sent / duration,
        "completed": len(answered),
        "completed_rate_rps": len(answered) / duration,
        "skipped_at_cap": generator.skipped_at_cap,
        "transport_errors": sent - len(answered),
        "transport_error_kinds": count_by(s.error for s in samples if s.error is not None),
        "status_codes": count_by(s.status for s in answered),
        "error_rate": (sent - len(ok)) / sent if sent else 0.0,
        "throughput_rps": len(ok) / duration,
        "latency_ms": percentiles([s.latency_ms for s in ok]),
        "latency_ms_by_status": {str(code): percentiles([s.latency_ms for s in answered if s.status == code]) for code in statuses},
    }


def missed_targets(args, report: dict) -> list[str]:
    """One sentence per target missed."""
    missed = []
    latency = report["latency_ms"]
    for name, limit in (("p50", args.p50_ms), ("p95", args.p95_ms), ("p99", args.p99_ms)):
        if limit is not None and (not latency or latency[name] > limit):
            missed.append(f"{name} {latency.get(name, float('nan')):.1f} ms > {limit:g} ms")
    if args.max_error_rate is not None and report["error_rate"] > args.max_error_rate:
        missed.append(f"error rate {report['error_rate']:.3f} > {args.max_error_rate:g}")
    if args.rate is not None and report["sent_rate_rps"] < 0.9 * args.rate:
        why = (
            f"{report['skipped_at_cap']} arrivals skipped at --max-in-flight {args.max_in_flight}"
            if report["skipped_at_cap"]
            else "this machine could not keep the schedule"
        )
        missed.append(f"sent {report['sent_rate_rps']:.2f} req/s < 90% of the offered {args.rate:g} req/s ({why})")
    return missed


def plot(samples: list[Sample], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    latencies = [s.latency_ms for s in samples]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.scatter([s.at_s for s in samples], latencies, s=6, c=["tab:blue" if s.ok else "tab:red" for s in samples])
    left.set(xlabel="due at (s)", ylabel="latency (ms)", title="latency over time (red: errors)")
    right.hist(latencies, bins=50)
    for q, style in ((50, "-"), (95, "--"), (99, ":")):
        right.axvline(np.percentile(latencies, q), color="k", linestyle=style, label=f"p{q}")
    right.set(xlabel="latency (ms)", ylabel="requests", title="latency distribution")
    right.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def summary(report: dict, out: Path) -> str:
    """The one line printed after a run."""
    offered = f"offered {report['offered_rate_rps']:g} req/s, " if report["mode"] == "rate" else ""
    codes = " ".join(f"{code}={n}" for code, n in sorted(report["status_codes"].items()))
    lat = " ".join(f"{k}={v:.1f}" for k, v in report["latency_ms"].items())
    return (
        f"{report['mode']} mode, {report['duration_s']:g} s: {offered}sent {report['sent']} ({report['sent_rate_rps']:.2f}/s), "
        f"completed {report['completed']} ({report['completed_rate_rps']:.2f}/s), skipped at cap {report['skipped_at_cap']}, "
        f"transport errors {report['transport_errors']}, status {codes or '-'}, errors {report['error_rate']:.2%}, "
        f"2xx {report['throughput_rps']:.2f}/s, 2xx latency ms {lat or '-'}; written to {out}"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vfnet loadtest", description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="base URL of the service, e.g. http://127.0.0.1:8000")
    parser.add_argument("--images", type=Path, help="folder of images to send (default: synthetic JPEGs)")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--rate", type=float, help="requests per second to offer (open loop)")
    mode.add_argument("--concurrency", type=int, help="users sending back to back (closed loop)")
    parser.add_argument("--max-in-flight", type=int, default=512, help="rate mode: most requests unanswered at once; arrivals beyond are skipped (default 512)")
    parser.add_argument("--duration", type=float, default=30.0, help="measured seconds (default 30)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before measuring (default 3)")
    parser.add_argument("--drain-timeout", type=float, default=60.0, help="seconds to wait after the window for its last answers (default 60)")
    protocols = "detect: raw image bodies to /detect (default); v2: Open Inference Protocol requests (binary tensors); v2-grpc: ModelInfer over gRPC"
    parser.add_argument("--protocol", choices=("detect", "v2", "v2-grpc"), default="detect", help=protocols)
    parser.add_argument("--endpoint", help="path and query (default /detect, or /v2/models/<model>/infer), e.g. '/detect?score_threshold=0.5'")
    parser.add_argument("--grpc-target", help="v2-grpc: HOST:PORT of the gRPC port (default: --url's host, port 8001)")
    parser.add_argument("--api-key", help="sent as X-API-Key (gRPC: metadata x-api-key)")
    parser.add_argument("--p50-ms", type=float)
    parser.add_argument("--p95-ms", type=float)
    parser.add_argument("--p99-ms", type=float)
    parser.add_argument("--max-error-rate", type=float, help="largest acceptable share of failed requests, e.g. 0.01")
    parser.add_argument("--out", type=Path, default=Path(".loadtest/loadtest.json"), help="JSON results (default .loadtest/loadtest.json)")
    parser.add_argument("--plot", type=Path, help="PNG with latency over time and its distribution")
    args = parser.parse_args(argv)
    if (args.rate is not None and args.rate <= 0) or (args.concurrency is not None and args.concurrency < 1) or args.duration <= 0:
        parser.error("--rate, --concurrency and --duration must be positive")
    if args.max_in_flight < 1 or args.warmup < 0 or args.drain_timeout < 0:
        parser.error("--max-in-flight must be positive, --warmup and --drain-timeout not negative")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    images = load_images(args.images) if args.images else [(data, "image/jpeg") for data in synthetic_images()]
    if not images:
        print(f"error: no .jpg/.png/.webp/.bmp images under {args.images}", file=sys.stderr)
        return 2
    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    url = args.url.rstrip("/")
    args.grpc_target = args.grpc_target or default_grpc_target(url)
    try:
        bodies, args.endpoint = requests_for(args.protocol, images, url, headers, args.endpoint)
    except OSError as exc:
        print(f"error: cannot read the served model's name from {url}/v1/model: {exc}", file=sys.stderr)
        return 2

    generator, drain_s = run_load(url, bodies, args.endpoint, headers, args)
    target = {"grpc_target": args.grpc_target} if args.protocol == "v2-grpc" else {}
    report = {"protocol": args.protocol, "endpoint": args.endpoint, **target, **build_report(args, generator, drain_s)}
    missed = missed_targets(args, report)
    report["targets"] = {"p50_ms": args.p50_ms, "p95_ms": args.p95_ms, "p99_ms": args.p99_ms, "max_error_rate": args.max_error_rate}
    report["missed"] = missed
    report["passed"] = not missed and report["completed"] > 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(summary(report, args.out))
    if not report["completed"]:
        print(f"error: no request got an HTTP answer from {args.url}", file=sys.stderr)
        return 2
    if args.plot:
        plot(generator.samples, args.plot, f"{args.url}{args.endpoint}: {report['throughput_rps']:.1f} req/s")
    for line in missed:
        print(f"MISSED: {line}", file=sys.stderr)
    return 1 if missed else 0
