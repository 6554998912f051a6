"""This machine: its tools (nvcc, cmake, cuobjdump, compute-sanitizer, ncu, ...) and this python's modules."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from . import REPOSITORY
from .report import SkipStep


def find_tool(name: str, context: dict | None = None) -> str | None:
    """An executable: beside the chosen nvcc, on PATH, beside this python, in the CUDA toolkit, Nsight
    Compute's folder, or NVIDIA's PyPI wheels (this python's, the repository's .venv, `make cuda-toolchain`'s)."""
    nvcc = (context or {}).get("nvcc")
    candidates = [Path(nvcc).parent / name] if nvcc else []
    if shutil.which(name):
        candidates.append(Path(shutil.which(name)))
    candidates += [Path(sys.executable).parent / name, Path(sys.prefix) / "bin" / name]  # e.g. the cmake wheel beside this python
    candidates += [Path("/usr/local/cuda/bin") / name, *sorted(Path("/usr/local/cuda").glob(f"*/{name}"))]
    candidates += sorted(Path("/opt/nvidia").glob(f"nsight-compute/*/{name}"), reverse=True)
    for root in (Path(sys.prefix), REPOSITORY / ".venv", REPOSITORY / "build" / "cuda-toolchain"):
        candidates += sorted(root.glob(f"lib/python*/site-packages/nvidia/cu*/bin/{name}"))
        candidates += sorted(root.glob(f"lib/python*/site-packages/triton/backends/nvidia/bin/{name}"))
    return next((str(p) for p in candidates if p.is_file() and os.access(p, os.X_OK)), None)


def optional_import(name: str):
    """The module, or None where this python lacks it."""
    try:
        return __import__(name)
    except ImportError:
        return None


def need_torch(reason: str = ""):
    """torch, or SkipStep where this python lacks it."""
    torch = optional_import("torch")
    if torch is None:
        raise SkipStep(f"torch is not importable by {sys.executable}{reason}: the stand-in's references need the venv's python (make device-check-standin)")
    return torch
