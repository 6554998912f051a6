"""The service under load, in one run on this machine: overload, SIGTERM under load, and a soak.

A real `vfnet serve` (the demo ONNX model, default settings) on loopback, loaded by `vfnet loadtest`
(open loop unless said) with its synthetic JPEGs of mixed sizes; the server's RSS is sampled from
/proc every 0.5 s. Phases:

1. capacity C: closed loop, 4 clients (enough to keep the model busy), successful answers per second;
2. overload: open loop at 3 x C for --overload-s (60): status mix, accepted (200) p50/p99 against
   the goal max_queue_wait_ms + 2 x the latency of one full batch, 503 p50/p99 (goal < 50 ms), RSS
   growth (goal < 10 %), and only 200/503 answers;
3. SIGTERM under load: open loop at 0.7 x C, SIGTERM half-way through: every request the server
   accepted must be answered (lost = requests that got no HTTP answer on a connection the server
   had accepted; refused connections after the listener closed are counted apart);
4. soak: open loop at 0.7 x C for --soak-s (600): errors, p99, RSS growth from its first minute
   to its end (goal < 5 %).

    python bench/overload.py [--model M.onnx] [--overload-s 60] [--soak-s 600]   # writes docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from report import cpu_description, write_section  # bench/report.py
from server_overhead import metric, start_server  # bench/server_overhead.py

from vfnet.server.runtime.load import DEMO_CHECKPOINT

SECTION = "## Reliability under load (CPU)"
MAX_QUEUE_WAIT_MS = 1000.0  # the service's default


class RssSampler:
    """Samples a process's resident memory (MB) every `period` s in a thread until stopped."""

    def __init__(self, pid: int, period: float = 0.5):
        self.pid, self.period, self.samples = pid, period, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic(), rss_mb(self.pid)))
            except (FileNotFoundError, ProcessLookupError, StopIteration):
                return
            self._stop.wait(self.period)

    def stop(self) -> list[tuple[float, float]]:
        self._stop.set()
        self._thread.join()
        return self.samples


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def loadtest(url: str, *args: str, timeout: float = 1200) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "report.json"
        command = [sys.executable, "-m", "vfnet.server.cli", "loadtest", "--url", url, "--out", str(out), *args]
        subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        return json.loads(out.read_text())


def p(report: dict, status: str, q: str) -> float:
    return report["latency_ms_by_status"].get(status, {}).get(q, float("nan"))


def stop(server: subprocess.Popen) -> int:
    server.send_signal(signal.SIGTERM)
    return server.wait(120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    demo_onnx = DEMO_CHECKPOINT.with_suffix(".onnx")
    parser.add_argument("--model", type=Path, default=demo_onnx, help=f"ONNX model (default {demo_onnx}; `make demo-onnx` builds it)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--overload-s", type=float, default=60.0)
    parser.add_argument("--soak-s", type=float, default=600.0)
    args = parser.parse_args()
    if not args.model.is_file():
        sys.exit(f"error: {args.model} not found (make demo-onnx)")
    lines: list[str] = []

    # 1-2: capacity, then 3x overload
    server, url = start_server(args.model, args.threads, max_batch=8)
    try:
        closed = loadtest(url, "--concurrency", "4", "--duration", "20", "--warmup", "3")
        capacity = closed["throughput_rps"]
        batches, batch_s = metric(url, "vfnet_inference_duration_seconds_count"), metric(url, "vfnet_inference_duration_seconds_sum")
        images = metric(url, "vfnet_batch_size_sum")
        per_image_s = batch_s / images
        full_batch_ms = per_image_s * 8 * 1000
        rss = RssSampler(server.pid)
        before = rss_mb(server.pid)
        over = loadtest(url, "--rate", f"{3 * capacity:.2f}", "--duration", f"{args.overload_s:g}", "--warmup", "3")
        samples = rss.stop()
        time.sleep(2)
        after = rss_mb(server.pid)
    finally:
        stop(server)
    peak = max(mb for _, mb in samples)
    bound = MAX_QUEUE_WAIT_MS + 2 * full_batch_ms
    statuses = over["status_codes"]
    lines += [
        f"Capacity C (closed loop, 4 clients, 20 s; answers {closed['status_codes']}): **{capacity:.1f} requests/s** of one image; measured "
        f"{per_image_s * 1000:.1f} ms of backend time per image over {batches:.0f} batches, so a full batch of 8 takes "
        f"~{full_batch_ms:.0f} ms.",
        "",
        "| phase | offered | sent | answers | status mix | 200 p50 / p99 | 503 p50 / p99 | RSS (MB) | goal |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| overload 3×C, {args.overload_s:g} s | {over['offered_rate_rps']:.1f}/s | {over['sent_rate_rps']:.1f}/s | "
        f"{over['completed']} | {', '.join(f'{k}: {v}' for k, v in sorted(statuses.items()))}; transport errors {over['transport_errors']} | "
        f"{p(over, '200', 'p50'):.0f} / **{p(over, '200', 'p99'):.0f}** ms | {p(over, '503', 'p50'):.1f} / **{p(over, '503', 'p99'):.1f}** ms | "
        f"{before:.0f} → {after:.0f} (peak {peak:.0f}): **{(after - before) / before:+.1%}** | only 200/503; 200 p99 ≤ {bound:.0f} ms; "
        "503 p99 < 50 ms; RSS < +10 % |",
    ]

    # 3: SIGTERM under load
    server, url = start_server(args.model, args.threads, max_batch=8)
    rate = 0.7 * capacity
    holder: dict = {}
    runner = threading.Thread(
        target=lambda: holder.update(loadtest(url, "--rate", f"{rate:.2f}", "--duration", "10", "--warmup", "1", "--drain-timeout", "60"))
    )
    runner.start()
    time.sleep(6)
    code = stop(server)
    runner.join()
    term = holder
    kinds = term.get("transport_error_kinds", {})
    refused = sum(v for k, v in kinds.items() if "Refused" in k)
    lost = term["transport_errors"] - refused
    lines.append(
        f"| SIGTERM ~5 s into a 10 s run at 0.7×C | {rate:.1f}/s | {term['sent_rate_rps']:.1f}/s | {term['completed']} | "
        f"{', '.join(f'{k}: {v}' for k, v in sorted(term['status_codes'].items()))}; refused after the listener closed {refused} | "
        f"{p(term, '200', 'p50'):.0f} / {p(term, '200', 'p99'):.0f} ms | – | exit code {code} | **accepted requests lost: {lost}** (goal 0) |"
    )

    # 4: soak
    server, url = start_server(args.model, args.threads, max_batch=8)
    try:
        rss = RssSampler(server.pid, period=5.0)
        soak = loadtest(url, "--rate", f"{rate:.2f}", "--duration", f"{args.soak_s:g}", "--warmup", "3", timeout=args.soak_s + 600)
        samples = rss.stop()
    finally:
        stop(server)
    start_at = samples[0][0]
    settled = [mb for t, mb in samples if t - start_at >= 60] or [samples[-1][1]]
    first_minute = [mb for t, mb in samples if t - start_at < 60]
    growth = (samples[-1][1] - settled[0]) / settled[0]
    lines.append(
        f"| soak 0.7×C, {args.soak_s / 60:g} min | {rate:.1f}/s | {soak['sent_rate_rps']:.1f}/s | {soak['completed']} | "
        f"{', '.join(f'{k}: {v}' for k, v in sorted(soak['status_codes'].items()))}; transport errors {soak['transport_errors']} | "
        f"{p(soak, '200', 'p50'):.0f} / {p(soak, '200', 'p99'):.0f} ms | – | first minute {min(first_minute):.0f}–{max(first_minute):.0f}, "
        f"at 1 min {settled[0]:.0f}, end {samples[-1][1]:.0f}, max {max(mb for _, mb in samples):.0f}: **{growth:+.1%}** | RSS < +5 % |"
    )

    text = "\n".join(
        [
            SECTION,
            "",
            f"`python bench/overload.py` on {cpu_description()}, 2 cores shared by the server ({args.threads} ONNX Runtime threads) "
            f"and the load generator; model `{args.model.name}`, `vfnet serve` defaults (max batch 8, max_queue_wait_ms "
            f"{MAX_QUEUE_WAIT_MS:g}, queue 64 images); `vfnet loadtest` open loop with its synthetic JPEGs (320–640 × 240–480 px, "
            "so several padded canvases).",
            "",
            *lines,
            "",
        ]
    )
    print(text)
    write_section(SECTION, text)


if __name__ == "__main__":
    main()
