"""Summarise a `make plugins` build: what was built, what was skipped and why (e.g. the autoregister
library without a libnvinfer to link), the libraries the build folder holds, and ptxas' resource
usage per kernel, type and GPU architecture (registers, shared memory, spills).

    python trt_plugins/build_report.py CONFIGURE_LOG BUILD_LOG
Exits non-zero when a kernel spills registers to local memory.
"""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path

ENTRY = re.compile(r"Compiling entry function '(?P<name>[^']+)' for '(?P<arch>sm_\d+a?)'")
SPILLS = re.compile(r"(?P<stack>\d+) bytes stack frame, (?P<stores>\d+) bytes spill stores, (?P<loads>\d+) bytes spill loads")
USAGE = re.compile(r"Used (?P<registers>\d+) registers.*?(?P<smem>\d+) bytes smem")
KERNEL = re.compile(r"\d+(?P<name>starDeformConv\w+?Cores)(?:I(?P<type>[ft])E)?")
PROBLEM_TYPE = re.compile(r"ProblemI(?P<type>[ft])E")
TYPE_CODES = {"f": "float32", "t": "float16"}  # float, unsigned short (float16 bit patterns)


def kernel_label(mangled: str) -> str:
    """starDeformConvCudaCores<float32>, ...<float16>, starDeformConvTensorCores<float16>: the kernel
    template's type argument, else (a kernel that is not a template) its Problem's."""
    name = KERNEL.search(mangled)
    if not name:
        return mangled
    code = name["type"] or (problem["type"] if (problem := PROBLEM_TYPE.search(mangled)) else None)
    return f"{name['name']}<{TYPE_CODES.get(code, '?')}>"


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


STATUS = "-- vfnet: "
SKIPPED = "SKIPPED "


def configure_notes(configure_log: str) -> tuple[list[str], list[str]]:
    """CMake's "vfnet:" STATUS lines: (what was built and other notes, what was skipped with why)."""
    notes = [line[len(STATUS) :] for line in configure_log.splitlines() if line.startswith(STATUS)]
    return [n for n in notes if not n.startswith(SKIPPED)], [n[len(SKIPPED) :] for n in notes if n.startswith(SKIPPED)]


def main(configure_log: str, build_log: str) -> int:
    built, skipped = configure_notes(Path(configure_log).read_text())
    print("vfnet trt_plugins build:")
    for note in built:
        print("  " + note)
    if skipped:
        print("\nskipped, and why:")
        for note in skipped:
            print(textwrap.fill(note, width=110, initial_indent="  - ", subsequent_indent="    ", break_long_words=False, break_on_hyphens=False))
    folder = Path(configure_log).parent
    libraries = sorted(p.name for p in folder.glob("lib*.so"))
    print(f"\nlibraries in {folder}: {', '.join(libraries) or 'none'}")
    rows = resource_rows(Path(build_log).read_text())
    if rows:
        print("\nptxas resource usage (per thread; 256 threads per block):")
        print(f"  {'kernel':<36} {'arch':<7} {'registers':>9} {'smem bytes':>10} {'spill bytes':>11}")
        for kernel, arch, registers, smem, spill in rows:
            print(f"  {kernel:<36} {arch:<7} {registers:>9} {smem:>10} {spill:>11}")
    spilling = [r for r in rows if r[4] > 0]
    if spilling:
        print(f"\nerror: {len(spilling)} kernel builds spill registers: {spilling}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
