"""Triton's perf_analyzer against `vfnet serve`, unchanged, over HTTP and gRPC, beside `vfnet loadtest`
driving the same load, in one run.

perf_analyzer (PyPI `perf-analyzer`, a binary wheel tagged manylinux_2_38) needs glibc 2.38 or newer;
on older systems pip silently picks a 2 kB placeholder. So it runs in a Debian 13 (trixie) root made
with debootstrap and cached under $XDG_CACHE_HOME/vfnet-serve/perf-analyzer (like the container bases
of docker/podman/prepare.sh; built once, into a temporary folder renamed when whole), through chroot:
loopback traffic from the chroot reaches the server on this machine. Needs root (debootstrap, chroot,
mounting /proc there).

For each protocol (HTTP /v2 with binary tensors; gRPC ModelInfer) and each load (closed loop at
concurrency 1, 4, 8; open loop at constant rates below and near capacity, as `vfnet loadtest --rate` sends) it measures throughput and
p50/p99 latency with perf_analyzer and with `vfnet loadtest` (its protocols v2 and v2-grpc), against
one `vfnet serve` of the demo model on 127.0.0.1, and writes the table to docs/benchmarks.md.

    sudo python bench/perf_analyzer.py                        # both protocols; writes docs/benchmarks.md (its section)
    sudo python bench/perf_analyzer.py --protocols http --quick
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from report import cpu_description, publish  # bench/report.py
from server_overhead import start_server, test_images

from vfnet.server.runtime.load import DEMO_CHECKPOINT

SECTION = "## Triton's perf_analyzer and vfnet loadtest (CPU)"
PERF_ANALYZER = "perf-analyzer==2.60.0"
SUITE = "trixie"  # Debian 13: glibc 2.41
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vfnet-serve" / "perf-analyzer" / SUITE
MODEL_NAME = "vfnet_r18_demo"
CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}  # nothing of this machine's pip or proxy settings


HOW_THEY_DIFFER = [
    "How the two measure, and so where they can differ: both drive the same server from the same two cores, so a load generator's own "
    "CPU is taken from the server, and perf_analyzer (C++, one thread per concurrent request) costs less of it per request than "
    "`vfnet loadtest` (Locust's Python users under gevent): in the closed loop, where throughput is whatever the server manages, "
    "that favours perf_analyzer. perf_analyzer repeats windows of N requests until three agree within 25 % and reports the last; "
    "`vfnet loadtest` counts every answer of a fixed window, so its p99 includes stalls a stable window leaves out, and a p99 of a "
    "60-request window is close to its maximum. In the open loop both send on the same constant schedule (perf_analyzer "
    "`--request-rate-range R --request-distribution constant --async`, `vfnet loadtest --rate R`), so below capacity both see "
    "the offered rate and their p50s should agree closely. Throughput at concurrency 4 can be below concurrency 1's for both: the "
    "two orientations share one padded 512×512 canvas in a batch, a third more pixels than either image.",
]


def debian_mirror() -> str:
    """The mirror this machine's apt uses (the first URIs: line), else deb.debian.org."""
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    for line in sources.read_text().splitlines() if sources.exists() else []:
        if line.startswith("URIs:"):
            return line.split()[1]
    return "http://deb.debian.org/debian"


def debian_root() -> Path:
    """The cached Debian 13 root with perf_analyzer in /opt/pa; made on first use (about two minutes)."""
    if (CACHE / ".ready").exists():
        return CACHE
    if os.geteuid() != 0:
        sys.exit("bench/perf_analyzer.py: making the Debian 13 root needs root (debootstrap, chroot)")
    partial = CACHE.with_name(CACHE.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    print(f"debootstrap {SUITE} into {partial} (a few minutes) ...", file=sys.stderr)
    command = ["debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates", SUITE, str(partial), debian_mirror()]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    # This machine reaches PyPI through a TLS proxy whose CA is in its bundle; the bundle is a superset of Debian's.
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", partial / "etc/ssl/certs/ca-certificates.crt")
    shutil.copy("/etc/resolv.conf", partial / "etc/resolv.conf")
    chroot(partial, "python3", "-m", "venv", "/opt/pa")
    chroot(partial, "/opt/pa/bin/pip", "install", "--quiet", "--disable-pip-version-check", PERF_ANALYZER)
    (partial / ".ready").write_text(PERF_ANALYZER + "\n")
    partial.rename(CACHE)
    return CACHE


def chroot(root: Path, *command: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(["chroot", str(root), *command], env=CLEAN_ENV, check=True, capture_output=True, text=True, timeout=timeout)


@contextlib.contextmanager
def proc_mounted(root: Path):
    """/proc inside the root while perf_analyzer runs (it reads the CPU count and its own status there)."""
    target = root / "proc"
    mounted = subprocess.run(["mountpoint", "-q", str(target)]).returncode == 0
    if not mounted:
        subprocess.run(["mount", "-t", "proc", "proc", str(target)], check=True)
    try:
        yield
    finally:
        if not mounted:
            subprocess.run(["umount", str(target)], check=False)


def input_data(images: list[bytes]) -> dict:
    """perf_analyzer's --input-data for the BYTES input `images`, one image a request: each step's
    content is the base64 of Triton's serialised tensor (a 4-byte little-endian length, then the bytes)."""
    steps = [{"images": {"content": {"b64": base64.b64encode(len(i).to_bytes(4, "little") + i).decode()}, "shape": [1]}} for i in images]
    return {"data": steps}


def perf_analyzer(root: Path, protocol: str, port: int, load: tuple[str, float], window: int) -> dict:
    """One perf_analyzer measurement: {"rps", "p50_ms", "p99_ms"} from its CSV (latencies in microseconds)."""
    kind, value = load
    sweep = (
        ["--concurrency-range", f"{int(value)}"]
        if kind == "concurrency"
        else ["--request-rate-range", f"{value:g}", "--request-distribution", "constant", "--async"]
    )
    command = ["/opt/pa/bin/perf_analyzer", "-m", MODEL_NAME, "-i", protocol, "-u", f"127.0.0.1:{port}", "--input-data", "/tmp/vfnet-pa/images.json"]
    command += [*sweep, "--percentile", "99", "--measurement-mode", "count_windows", "--measurement-request-count", str(window)]
    command += ["--stability-percentage", "25", "--max-trials", "8", "-f", "/tmp/vfnet-pa/out.csv"]
    (root / "tmp/vfnet-pa/out.csv").unlink(missing_ok=True)
    done = chroot(root, *command, timeout=600)
    if "had error" in done.stdout or not (root / "tmp/vfnet-pa/out.csv").exists():  # it exits 0 when its requests fail
        sys.exit(f"perf_analyzer -i {protocol} at {kind} {value:g} failed; its output ends:\n{done.stdout[-3000:]}{done.stderr[-2000:]}")
    [row] = list(csv.DictReader((root / "tmp/vfnet-pa/out.csv").read_text().splitlines()))
    return {"rps": float(row["Inferences/Second"]), "p50_ms": float(row["p50 latency"]) / 1000, "p99_ms": float(row["p99 latency"]) / 1000}


def loadtest(url: str, grpc_port: int, protocol: str, load: tuple[str, float], folder: Path, seconds: float) -> dict:
    """One `vfnet loadtest` run at the same load: {"rps", "p50_ms", "p99_ms"} of its 2xx answers."""
    kind, value = load
    out = folder.parent / "loadtest.json"
    target = ["--url", url] if protocol == "http" else ["--url", url, "--grpc-target", f"127.0.0.1:{grpc_port}"]
    command = [sys.executable, "-m", "vfnet.server.cli", "loadtest", *target, "--images", str(folder), f"--{kind}", f"{value:g}"]
    command += ["--duration", f"{seconds:g}", "--warmup", "3", "--protocol", "v2" if protocol == "http" else "v2-grpc", "--out", str(out)]
    subprocess.run(command, check=True, capture_output=True, timeout=600)
    report = json.loads(out.read_text())
    return {"rps": report["throughput_rps"], "p50_ms": report["latency_ms"]["p50"], "p99_ms": report["latency_ms"]["p99"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    demo_onnx = DEMO_CHECKPOINT.with_suffix(".onnx")
    parser.add_argument("--model", type=Path, default=demo_onnx, help=f"ONNX model (default {demo_onnx})")
    parser.add_argument("--protocols", default="http,grpc", help="comma-separated: http, grpc (default both)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--quick", action="store_true", help="concurrency 2 and one rate, short windows; docs/ left alone")
    args = parser.parse_args()
    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    loads = [("concurrency", 2), ("rate", 4)] if args.quick else [("concurrency", 1), ("concurrency", 4), ("concurrency", 8), ("rate", 4), ("rate", 8)]
    window, seconds = (20, 8) if args.quick else (60, 25)
    root = debian_root()
    (root / "tmp/vfnet-pa").mkdir(parents=True, exist_ok=True)
    images = test_images(8, shapes=((384, 512), (512, 384)))
    (root / "tmp/vfnet-pa/images.json").write_text(json.dumps(input_data(images)))
    rows = []
    with tempfile.TemporaryDirectory(prefix="vfnet-pa-") as temporary, proc_mounted(root):
        folder = Path(temporary) / "images"
        folder.mkdir()
        for i, image in enumerate(images):
            (folder / f"{i}.jpg").write_bytes(image)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            grpc_port = s.getsockname()[1]
        server, url = start_server(args.model, args.threads, max_batch=8, max_queue_wait_ms=60_000, grpc_port=grpc_port)
        try:
            port = {"http": int(url.rsplit(":", 1)[1]), "grpc": grpc_port}
            for protocol in protocols:
                for kind, value in loads:
                    pa_load = ("concurrency" if kind == "concurrency" else "request-rate", value)
                    measured = perf_analyzer(root, protocol, port[protocol], pa_load, window)
                    ours = loadtest(url, grpc_port, protocol, (kind, value), folder, seconds)
                    rows.append((protocol, kind, value, measured, ours))
                    print(protocol, kind, value, measured, ours, file=sys.stderr)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(60)
    version = (root / ".ready").read_text().strip()
    lines = [
        SECTION,
        "",
        f"`sudo python bench/perf_analyzer.py` on {cpu_description()}, {args.threads} ONNX Runtime threads; `vfnet serve` of "
        f"`{args.model.name}` (max batch 8) on 127.0.0.1, the load generators on the same cores; 8 synthetic JPEGs (512×384, 384×512), "
        f"one image a request. perf_analyzer: {version} in a Debian {SUITE} chroot, unchanged (count windows of {window} requests, "
        f"stable within 25 %); `vfnet loadtest`: {seconds:g} s after a 3 s warm-up. Latencies in ms.",
        "",
        "| protocol | load | perf_analyzer req/s | p50 | p99 | `vfnet loadtest` req/s | p50 | p99 | req/s ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for protocol, kind, value, pa, ours in rows:
        load = f"concurrency {value}" if kind == "concurrency" else f"{value:g} req/s, open loop"
        lines.append(
            f"| {'HTTP /v2' if protocol == 'http' else 'gRPC'} | {load} | {pa['rps']:.2f} | {pa['p50_ms']:.0f} | {pa['p99_ms']:.0f} "
            f"| {ours['rps']:.2f} | {ours['p50_ms']:.0f} | {ours['p99_ms']:.0f} | {ours['rps'] / pa['rps']:.2f}× |"
        )
    lines += ["", *HOW_THEY_DIFFER]
    return publish(SECTION, lines, write=not args.quick)


if __name__ == "__main__":
    sys.exit(main())
