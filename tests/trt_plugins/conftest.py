"""Where this machine's CUDA toolkit is, for the plugin build tests: $CUDA_HOME, /usr/local/cuda, the
toolkit behind nvcc on PATH, or the wheels `make cuda-toolchain` installs (same layout: bin/, include/)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]


def _cuda_root() -> Path | None:
    candidates = [Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")), Path("/usr/local/cuda")]
    if shutil.which("nvcc"):
        candidates.append(Path(shutil.which("nvcc")).resolve().parents[1])
    candidates += REPOSITORY.glob("build/cuda-toolchain/lib/python*/site-packages/nvidia/cu13")
    return next((root for root in candidates if (root / "include" / "cuda_runtime_api.h").is_file() and (root / "bin" / "nvcc").is_file()), None)


CUDA = _cuda_root()  # None: no CUDA toolkit here
NVCC = str(CUDA / "bin" / "nvcc") if CUDA else None
