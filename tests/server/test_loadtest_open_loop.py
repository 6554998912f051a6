"""`vfnet loadtest --rate R` is a true open loop: arrivals go out on schedule, evenly spaced, however
slowly the server answers.

The server here answers every fifth request 503 at once and the others 200 only after SLOW_S seconds,
longer than the whole measured window, so a generator that waited for answers would send far fewer
requests than rate x duration. All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import http.server
import json
import statistics
import subprocess
import sys
import threading
import time

import pytest

SLOW_S = 3.0  # how long a 200 takes
EVERY_503 = 5  # every fifth request is answered 503 at once
RATE, DURATION, WARMUP = 10.0, 3.0, 0.5


class SlowHandler(http.server.BaseHTTPRequestHandler):
    """Every EVERY_503-th request: 503 at once; the others: 200 after SLOW_S. Records each arrival."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with self.server.lock:
            status = 503 if len(self.server.arrivals) % EVERY_503 == EVERY_503 - 1 else 200
            self.server.arrivals.append((time.perf_counter(), status))
        if status == 200:
            time.sleep(SLOW_S)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


class SlowServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # many connections open at once

    def __init__(self):
        super().__init__(("127.0.0.1", 0), SlowHandler)
        self.lock = threading.Lock()
        self.arrivals: list[tuple[float, int]] = []  # (time.perf_counter(), status it was answered)

    def handle_error(self, request, client_address):
        pass  # the generator hangs up on requests it stopped waiting for; that is expected here

    def in_window(self) -> list[int]:
        """Statuses of the arrivals in the measured window, timed from the first arrival (the generator's start)."""
        first = self.arrivals[0][0]
        return [status for at, status in self.arrivals if WARMUP <= at - first < WARMUP + DURATION]


@pytest.fixture
def slow_server():
    server = SlowServer()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def loadtest(server, tmp_path, *extra):
    out = tmp_path / "load.json"
    done = subprocess.run(
        [sys.executable, "-m", "vfnet.server.cli", "loadtest", "--url", f"http://127.0.0.1:{server.server_port}",
         "--rate", str(RATE), "--duration", str(DURATION), "--warmup", str(WARMUP), "--out", str(out), *extra],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return done, json.loads(out.read_text())


def test_arrivals_keep_to_the_schedule_while_answers_are_slow(slow_server, tmp_path):
    done, report = loadtest(slow_server, tmp_path, "--drain-timeout", "10")
    assert done.returncode == 0, done.stderr[-2000:]
    window = slow_server.in_window()
    # No 200 comes back within the window, yet about rate x duration requests reached the server in it
    # (a closed loop of 2R users waiting for their answers gets about 20 here).
    assert len(window) >= 0.8 * RATE * DURATION, f"{len(window)} arrivals in the window"
    assert abs(report["sent"] - len(window)) <= 2 and report["skipped_at_cap"] == 0
    assert report["completed"] == report["sent"] and report["transport_errors"] == 0  # all drained
    codes = report["status_codes"]
    assert set(codes) == {"200", "503"} and sum(codes.values()) == report["sent"]
    assert abs(codes["503"] - window.count(503)) <= 2
    assert report["error_rate"] == pytest.approx(codes["503"] / report["sent"])
    assert report["latency_ms"]["p50"] >= SLOW_S * 1000 - 100  # timed from the scheduled send
    assert report["latency_ms_by_status"]["200"]["p50"] == report["latency_ms"]["p50"]
    assert report["latency_ms_by_status"]["503"]["p50"] < 1000
    assert report["mode"] == "rate" and report["offered_rate_rps"] == RATE and report["passed"]
    # Evenly spaced, 1/R apart, not in bursts (users firing together put most gaps near 0); half of
    # 1/R leaves room for scheduling jitter.
    times = [at for at, _ in slow_server.arrivals]
    assert statistics.median(later - earlier for earlier, later in zip(times, times[1:])) > 0.5 / RATE


def test_arrivals_over_the_in_flight_cap_are_skipped_and_fail_the_run(slow_server, tmp_path):
    done, report = loadtest(slow_server, tmp_path, "--max-in-flight", "5", "--drain-timeout", "1")
    assert done.returncode == 1, done.stderr[-2000:]
    assert report["skipped_at_cap"] > 0 and report["sent"] + report["skipped_at_cap"] == RATE * DURATION
    assert report["sent_rate_rps"] < 0.9 * RATE and not report["passed"]
    assert "MISSED: sent" in done.stderr
    assert abs(report["sent"] - len(slow_server.in_window())) <= 2
    # 200s sent late in the window are still unanswered when the 1 s drain ends: timeouts.
    assert report["transport_errors"] > 0 and report["transport_error_kinds"] == {"timeout": report["transport_errors"]}
    assert report["completed"] + report["transport_errors"] == report["sent"]
