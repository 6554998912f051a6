"""Where downloaded and converted zoo checkpoints live: the one definition of the cache layout.

$VFNET_HOME                       (default: $XDG_CACHE_HOME/vfnet-serve, else ~/.cache/vfnet-serve)
    checkpoints/<file name>       the published .pth, as downloaded
    models/<name>.safetensors     what `vfnet convert-mmdet` made of it
"""

from __future__ import annotations

import os
from pathlib import Path

from .catalog import ZooEntry


def vfnet_home() -> Path:
    """$VFNET_HOME, else $XDG_CACHE_HOME/vfnet-serve (when absolute, as the XDG spec asks), else ~/.cache/vfnet-serve."""
    home = os.environ.get("VFNET_HOME")
    if home:
        return Path(home).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "vfnet-serve"
    return Path.home() / ".cache" / "vfnet-serve"


def checkpoint_path(entry: ZooEntry) -> Path:
    """Where `entry`'s published checkpoint file is (or will be) downloaded."""
    return vfnet_home() / "checkpoints" / entry.file_name


def converted_path(entry: ZooEntry) -> Path:
    """Where `entry`'s converted .safetensors checkpoint is (or will be) written."""
    return vfnet_home() / "models" / f"{entry.name}.safetensors"
