"""build/pythonpath: a folder that makes `vfnet` importable without pip (no venv on the GPU machine).
`python3 bench/device_check --pythonpath` makes it and prints its path (the Makefile's gpu-check uses it)."""

from __future__ import annotations

import os
from pathlib import Path

from . import REPOSITORY

PACKAGES = ("model", "export", "train", "server", "trt_plugins")  # pyproject.toml's package-dir: vfnet.<name> -> <name>/
PYTHONPATH_DIR = REPOSITORY / "build" / "pythonpath"


def make_pythonpath(root: Path = PYTHONPATH_DIR) -> Path:
    """root/vfnet/<name> -> <repository>/<name> for each of pyproject.toml's packages, and a
    vfnet/__init__.py. Returns root."""
    package = root / "vfnet"
    package.mkdir(parents=True, exist_ok=True)
    for name in PACKAGES:
        link, target = package / name, os.path.relpath(REPOSITORY / name, package)
        if link.is_symlink() and os.readlink(link) == target:
            continue
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target, target_is_directory=True)
    init = package / "__init__.py"
    text = '"""vfnet, importable without pip: bench/device_check made this folder of symlinks onto the repository."""\n'
    if not init.is_file() or init.read_text() != text:
        init.write_text(text)
    return root
