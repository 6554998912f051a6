"""The official VFNet checkpoints as one table, user zoo files, and name lookup.

The built-in table is the mmdetection v2.0 model zoo (also what mmdetection 3.x points at, under
renamed configs): each entry's name is its 2.x config, its alias the 3.x config name, and its
`sha256` the 8 hex digits that mmdetection's publish_model.py appended to the file name (the first
8 of the file's SHA-256), read from the file name itself.

A user zoo file (`--zoo FILE` or $VFNET_ZOO) is a JSON list of objects with `name`, `url`, `sha256`
(the full digest or at least its first 8 hex digits) and `preset`, and optionally `aliases`,
`file_name` (default: the URL's last path part), `ap_val`, `ap_test_dev` and `input_size`
([width, height]). Its entries win over built-in ones of the same name.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

BUILT_IN = "built-in"
ZOO_ENV = "VFNET_ZOO"

# The keys of vfnet.model.presets.PRESETS (importing it imports torch; `vfnet models` must not).
# tests/server/test_zoo.py keeps the two equal.
PRESET_NAMES = (
    "vfnet_r50_fpn",
    "vfnet_r50_fpn_mdconv",
    "vfnet_r101_fpn",
    "vfnet_r101_fpn_mdconv",
    "vfnet_x101_32x4d_fpn",
    "vfnet_x101_32x4d_fpn_mdconv",
    "vfnet_x101_64x4d_fpn",
    "vfnet_x101_64x4d_fpn_mdconv",
    "vfnet_r18_demo",
)

COCO_INPUT_SIZE = (1333, 800)
OPENMMLAB = "https://download.openmmlab.com/mmdetection/v2.0/vfnet"
_HASH_SUFFIX = re.compile(r"-([0-9a-f]{8})\.pth$")
_HEX = re.compile(r"[0-9a-f]{8,64}")


class ZooError(ValueError):
    """A bad zoo file, or a name that is not in the zoo."""


@dataclass(frozen=True)
class ZooEntry:
    """One downloadable checkpoint: where it is, what its hash starts with, and which preset reads it."""

    name: str
    url: str
    sha256: str  # lower-case hex: the full digest or its leading digits (at least 8)
    preset: str
    aliases: tuple[str, ...] = ()
    file_name: str = ""  # "" means the URL's last path part
    ap_val: float | None = None  # COCO box AP, as published
    ap_test_dev: float | None = None
    input_size: tuple[int, int] | None = None  # (width, height) it was evaluated at
    source: str = BUILT_IN  # "built-in" or the zoo file's path

    def __post_init__(self):
        if not self.file_name:
            object.__setattr__(self, "file_name", unquote(urlparse(self.url).path.rsplit("/", 1)[-1]))

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["aliases"] = list(self.aliases)
        d["input_size"] = list(self.input_size) if self.input_size else None
        return d


@dataclass(frozen=True)
class Unconvertible:
    """A published VFNet that no preset of ours can hold (listed, never pulled)."""

    name: str
    reason: str
    ap_test_dev: float | None = None
    input_size: tuple[int, int] | None = None


def hash_from_file_name(file_name: str) -> str:
    """The 8 hex digits after the last '-' before '.pth' (publish_model.py's sha256[:8])."""
    found = _HASH_SUFFIX.search(file_name)
    if not found:
        raise ValueError(f"{file_name!r} does not end in -<8 hex digits>.pth")
    return found.group(1)


def _official(config_2x: str, config_3x: str, ap_val: float, ap_test_dev: float, file_name: str, preset: str) -> ZooEntry:
    return ZooEntry(
        name=config_2x,
        url=f"{OPENMMLAB}/{config_2x}/{file_name}",
        sha256=hash_from_file_name(file_name),
        preset=preset,
        aliases=(config_3x,) if config_3x != config_2x else (),
        file_name=file_name,
        ap_val=ap_val,
        ap_test_dev=ap_test_dev,
        input_size=COCO_INPUT_SIZE,
    )


# fmt: off
# 2.x config (the URL folder), 3.x config, AP val, AP test-dev (as published), file, our preset
OFFICIAL: tuple[ZooEntry, ...] = (
    _official("vfnet_r50_fpn_1x_coco", "vfnet_r50_fpn_1x_coco", 41.6, 41.6, "vfnet_r50_fpn_1x_coco_20201027-38db6f58.pth", "vfnet_r50_fpn"),
    _official("vfnet_r50_fpn_mstrain_2x_coco", "vfnet_r50_fpn_ms-2x_coco", 44.5, 44.8, "vfnet_r50_fpn_mstrain_2x_coco_20201027-7cc75bd2.pth", "vfnet_r50_fpn"),
    _official("vfnet_r50_fpn_mdconv_c3-c5_mstrain_2x_coco", "vfnet_r50-mdconv-c3-c5_fpn_ms-2x_coco", 47.8, 48.0, "vfnet_r50_fpn_mdconv_c3-c5_mstrain_2x_coco_20201027pth-6879c318.pth", "vfnet_r50_fpn_mdconv"),
    _official("vfnet_r101_fpn_1x_coco", "vfnet_r101_fpn_1x_coco", 43.0, 43.6, "vfnet_r101_fpn_1x_coco_20201027pth-c831ece7.pth", "vfnet_r101_fpn"),
    _official("vfnet_r101_fpn_mstrain_2x_coco", "vfnet_r101_fpn_ms-2x_coco", 46.2, 46.7, "vfnet_r101_fpn_mstrain_2x_coco_20201027pth-4a5d53f1.pth", "vfnet_r101_fpn"),
    _official("vfnet_r101_fpn_mdconv_c3-c5_mstrain_2x_coco", "vfnet_r101-mdconv-c3-c5_fpn_ms-2x_coco", 49.0, 49.2, "vfnet_r101_fpn_mdconv_c3-c5_mstrain_2x_coco_20201027pth-7729adb5.pth", "vfnet_r101_fpn_mdconv"),
    _official("vfnet_x101_32x4d_fpn_mdconv_c3-c5_mstrain_2x_coco", "vfnet_x101-32x4d-mdconv-c3-c5_fpn_ms-2x_coco", 49.7, 50.0, "vfnet_x101_32x4d_fpn_mdconv_c3-c5_mstrain_2x_coco_20201027pth-d300a6fc.pth", "vfnet_x101_32x4d_fpn_mdconv"),
    _official("vfnet_x101_64x4d_fpn_mdconv_c3-c5_mstrain_2x_coco", "vfnet_x101-64x4d-mdconv-c3-c5_fpn_ms-2x_coco", 50.4, 50.8, "vfnet_x101_64x4d_fpn_mdconv_c3-c5_mstrain_2x_coco_20201027pth-b5f6da5e.pth", "vfnet_x101_64x4d_fpn_mdconv"),
)
# fmt: on

_RES2NET = "Res2Net-101 backbone (hierarchical split blocks): no preset of ours builds it"
UNCONVERTIBLE: tuple[Unconvertible, ...] = (
    Unconvertible("vfnet_r2_101_fpn_mstrain_2x_coco", _RES2NET),
    Unconvertible("vfnet_r2_101_fpn_mdconv_c3-c5_mstrain_2x_coco", _RES2NET),
    Unconvertible("vfnetx", "VFNet-X: Res2Net-101 backbone and PAFPNX neck, neither of which our presets build", ap_test_dev=55.1, input_size=(1800, 1200)),
)

_REQUIRED = ("name", "url", "sha256", "preset")
_OPTIONAL = ("aliases", "file_name", "ap_val", "ap_test_dev", "input_size")


def _user_entry(raw: object, index: int, where: str) -> ZooEntry:
    """One validated entry of a zoo file; `where` names the file in every error."""
    if not isinstance(raw, dict):
        raise ZooError(f"zoo file {where}: entry {index} is a {type(raw).__name__}, not an object")
    label = f"entry {index}" + (f" ({raw['name']!r})" if isinstance(raw.get("name"), str) else "")

    def bad(problem: str) -> ZooError:
        return ZooError(f"zoo file {where}: {label}: {problem}")

    missing = [f for f in _REQUIRED if f not in raw]
    if missing:
        raise bad(f"missing field(s) {', '.join(missing)} (required: {', '.join(_REQUIRED)})")
    unknown = sorted(set(raw) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise bad(f"unknown field(s) {', '.join(unknown)} (known: {', '.join(_REQUIRED + _OPTIONAL)})")
    for field in ("name", "url", "sha256", "preset", "file_name"):
        if field in raw and (not isinstance(raw[field], str) or not raw[field].strip()):
            raise bad(f"{field} must be a non-empty string, not {raw[field]!r}")
    url = urlparse(raw["url"])
    if url.scheme not in ("https", "http", "file") or not url.path.rsplit("/", 1)[-1]:
        raise bad(f"url {raw['url']!r} is not an http(s):// or file:// URL of a file")
    sha256 = raw["sha256"].strip().lower()
    if not _HEX.fullmatch(sha256):
        raise bad(f"sha256 {raw['sha256']!r} is not hex digits of a SHA-256 (the full 64, or at least the first 8)")
    if raw["preset"] not in PRESET_NAMES:
        close = difflib.get_close_matches(raw["preset"], PRESET_NAMES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise bad(f"unknown preset {raw['preset']!r}{hint} (presets: {', '.join(PRESET_NAMES)})")
    if "file_name" in raw and "/" in raw["file_name"]:
        raise bad(f"file_name {raw['file_name']!r} must be a bare file name")
    aliases = raw.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a for a in aliases):
        raise bad(f"aliases must be a list of names, not {aliases!r}")
    for field in ("ap_val", "ap_test_dev"):
        if raw.get(field) is not None and (isinstance(raw[field], bool) or not isinstance(raw[field], (int, float))):
            raise bad(f"{field} must be a number, not {raw[field]!r}")
    size = raw.get("input_size")
    if size is not None and not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
        raise bad(f"input_size must be [width, height] in pixels, not {size!r}")
    return ZooEntry(
        name=raw["name"],
        url=raw["url"],
        sha256=sha256,
        preset=raw["preset"],
        aliases=tuple(aliases),
        file_name=raw.get("file_name", ""),
        ap_val=raw.get("ap_val"),
        ap_test_dev=raw.get("ap_test_dev"),
        input_size=tuple(size) if size else None,
        source=where,
    )


def read_zoo_file(path: str | os.PathLike) -> tuple[ZooEntry, ...]:
    """The validated entries of a user zoo file; any problem is one ZooError naming the file."""
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ZooError(f"zoo file {where}: cannot read it ({e})") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise ZooError(f"zoo file {where}: not JSON ({e})") from None
    if not isinstance(raw, list):
        raise ZooError(f"zoo file {where}: expected a JSON list of model objects, got a JSON {type(raw).__name__}")
    entries = tuple(_user_entry(item, i, where) for i, item in enumerate(raw))
    seen: dict[str, str] = {}
    for entry in entries:
        for name in (entry.name, *entry.aliases):
            if name in seen:
                raise ZooError(f"zoo file {where}: duplicate name {name!r} (in {seen[name]!r} and {entry.name!r})")
            seen[name] = entry.name
    return entries


def load_zoo(zoo_file: str | os.PathLike | None = None) -> tuple[ZooEntry, ...]:
    """The user's entries (from `zoo_file`, else $VFNET_ZOO when set), then the built-in ones they do not replace."""
    zoo_file = zoo_file or os.environ.get(ZOO_ENV) or None
    user = read_zoo_file(zoo_file) if zoo_file else ()
    replaced = {e.name for e in user}
    return user + tuple(e for e in OFFICIAL if e.name not in replaced)


def lookup(name: str, zoo_file: str | os.PathLike | None = None) -> ZooEntry:
    """The zoo entry called `name` (a name, else an alias; the user's file first); unknown names suggest the closest."""
    zoo = load_zoo(zoo_file)
    for entry in zoo:
        if entry.name == name:
            return entry
    for entry in zoo:
        if name in entry.aliases:
            return entry
    for model in UNCONVERTIBLE:
        if model.name == name:
            raise ZooError(f"{name!r} cannot be converted: {model.reason}")
    known = [n for entry in zoo for n in (entry.name, *entry.aliases)]
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
    raise ZooError(f"unknown model {name!r}{hint} (`vfnet models` lists them all)")
