"""vfnet.server.zoo: the official VFNet checkpoints as data, user zoo files, and the local cache layout.

    from vfnet.server.zoo import lookup, checkpoint_path
    entry = lookup("vfnet_r50_fpn_ms-2x_coco")       # a name or an alias; `zoo_file=` or $VFNET_ZOO adds a user's
    entry.url, entry.sha256, entry.preset, checkpoint_path(entry)

Needs no torch (the `vfnet models` command runs in a serving install).
"""

from .cache import checkpoint_path, converted_path, vfnet_home
from .catalog import BUILT_IN, OFFICIAL, PRESET_NAMES, UNCONVERTIBLE, Unconvertible, ZooEntry, ZooError, hash_from_file_name, load_zoo, lookup

__all__ = [
    "BUILT_IN",
    "OFFICIAL",
    "PRESET_NAMES",
    "UNCONVERTIBLE",
    "Unconvertible",
    "ZooEntry",
    "ZooError",
    "checkpoint_path",
    "converted_path",
    "hash_from_file_name",
    "load_zoo",
    "lookup",
    "vfnet_home",
]
