"""Summarise a `make plugins` build: what was built and skipped (with why), and ptxas' resource
usage per kernel, type and GPU architecture (registers, shared memory, spills).

    python trt_plugins/build_report.py CONFIGURE_LOG BUILD_LOG
Exits non-zero when a kernel spills registers to local memory.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ENTRY = re.compile(r"Compiling entry function '(?P<name>[^']+)' for '(?P<arch>sm_\d+a?)'")
SPILLS = re.compile(r"(?P<stack>\d+) bytes stack frame, (?P<stores>\d+) bytes spill stores, (?P<loads>\d+) bytes spill loads")
USAGE = re.compile(r"Used (?P<registers>\d+) registers.*?(?P<smem>\d+) bytes smem")
KERNEL_TYPES = {"IfE": "float32", "I6__halfE": "float16"}


def kernel_label(mangled: str) -> str:
    name = re.search(r"(\d+)(starDeformConvKernel)(I\w+?E)", mangled)
    kind = next((label for code, label in KERNEL_TYPES.items() if name and name.group(3).startswith(code)), "?")
    return f"starDeformConvKernel<{kind}>" if name else mangled


def resource_rows(build_log: str) -> list[tuple[str, str, int, int, int]]:
    """(kernel, arch, registers, shared bytes, spill bytes) for every entry function ptxas compiled."""
    rows, current = [], None
    spill = 0
    for line in build_log.splitlines():
        if entry := ENTRY.search(line):
            current, spill = (kernel_label(entry["name"]), entry["arch"]), 0
        elif current and (s := SPILLS.search(line)):
            spill = int(s["stores"]) + int(s["loads"])
        elif current and (u := USAGE.search(line)):
            rows.append((*current, int(u["registers"]), int(u["smem"]), spill))
            current = None
    return sorted(set(rows), key=lambda r: (r[0], int(re.sub(r"\D", "", r[1]))))


def main(configure_log: str, build_log: str) -> int:
    print("vfnet trt_plugins build:")
    for line in Path(configure_log).read_text().splitlines():
        if line.startswith("-- vfnet: "):
            print("  " + line[len("-- vfnet: ") :])
    rows = resource_rows(Path(build_log).read_text())
    if rows:
        print("\nptxas resource usage (per thread; 256 threads per block):")
        print(f"  {'kernel':<32} {'arch':<7} {'registers':>9} {'smem bytes':>10} {'spill bytes':>11}")
        for kernel, arch, registers, smem, spill in rows:
            print(f"  {kernel:<32} {arch:<7} {registers:>9} {smem:>10} {spill:>11}")
    spilling = [r for r in rows if r[4] > 0]
    if spilling:
        print(f"\nerror: {len(spilling)} kernel builds spill registers: {spilling}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
