"""`vfnet loadtest --rate R`: an open loop whose requests arrive evenly spaced, 1/R s apart, not in bursts."""

from __future__ import annotations

import http.server
import statistics
import subprocess
import sys
import threading
import time


class ArrivalRecorder(http.server.BaseHTTPRequestHandler):
    """Answers every POST with 200 {} and records when it arrived."""

    arrivals: list[float] = []

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        ArrivalRecorder.arrivals.append(time.perf_counter())
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def test_rate_mode_spaces_arrivals_evenly(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ArrivalRecorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    rate = 16.0  # 32 users at 0.5 requests/s each
    try:
        done = subprocess.run(
            [sys.executable, "-m", "vfnet.server.cli", "loadtest", "--url", f"http://127.0.0.1:{server.server_port}",
             "--rate", str(rate), "--duration", "3", "--warmup", "0.5", "--out", str(tmp_path / "load.json")],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        server.shutdown()
    assert done.returncode == 0, done.stderr[-2000:]
    arrivals = ArrivalRecorder.arrivals
    assert len(arrivals) >= 40
    gaps = [later - earlier for earlier, later in zip(arrivals, arrivals[1:])]
    # Users firing together would put most gaps near 0 (bursts of 32 every 2 s); evenly spaced
    # arrivals put the median gap at 1/rate. Half of that leaves room for scheduling jitter.
    assert statistics.median(gaps) > 0.5 / rate, f"median gap {statistics.median(gaps) * 1000:.1f} ms"
