"""`pull`: a zoo entry, or a .pth the user downloaded, to one of our checkpoints in the cache, once.

    pulled = pull(lookup("vfnet_r50_fpn_1x_coco"))      # download, verify, convert; again: returns at once
    pulled.converted                                     # $VFNET_HOME/models/vfnet_r50_fpn_1x_coco.safetensors
    pull_file(Path("~/Downloads/vfnet_r50_fpn_1x_coco_20201027-38db6f58.pth"))

A file lock per checkpoint (checkpoints/<file>.lock) makes concurrent pulls of one model, from any
number of processes, download and convert it once: the others wait, then find it done. A converted
checkpoint records its source's SHA-256 (`source_sha256`), which is how a pull knows it is done.
Converting imports torch (`vfnet.model`), and only then: a cached model needs no torch.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse, urlunparse

from filelock import FileLock, Timeout

from .cache import checkpoint_path, converted_path, vfnet_home
from .catalog import ZooEntry, ZooError, hash_from_file_name, load_zoo
from .download import MIRROR_ENV, DownloadError, download, sha256_of, writable_folder


def say_on_stderr(message: str) -> None:
    print(message, file=sys.stderr)


@dataclass(frozen=True)
class Pulled:
    """A model in the cache: our checkpoint, the published file it came from, and that file's SHA-256."""

    name: str
    converted: Path  # our .safetensors
    source: Path  # the published .pth (in the cache, or where the user keeps it)
    sha256: str  # the full hex digest of `source`


def mirrored(url: str, mirror: str | None) -> str:
    """`url` with its scheme and host replaced by `mirror`'s, which may add a path prefix and keeps
    the original path below it (the layout `wget -r -nH` makes); unchanged without a mirror.
    mirrored("https://download.openmmlab.com/mmdetection/v2.0/vfnet/a/b.pth", "http://10.0.0.5/zoo")
      -> "http://10.0.0.5/zoo/mmdetection/v2.0/vfnet/a/b.pth" """
    if not mirror:
        return url
    base, original = urlparse(mirror), urlparse(url)
    if base.scheme not in ("http", "https", "file"):
        raise ZooError(f"mirror {mirror!r} is not an http(s):// or file:// URL")
    return urlunparse(base._replace(path=base.path.rstrip("/") + original.path, query="", fragment=""))


def source_sha256(converted: Path) -> str | None:
    """The SHA-256 of the file `converted` was made from (its `source_sha256` metadata), or None."""
    from safetensors import safe_open

    if not converted.is_file():
        return None
    try:
        with safe_open(str(converted), framework="numpy") as f:
            return (f.metadata() or {}).get("source_sha256")
    except Exception:  # a torn or foreign file: pull makes it again
        return None


class _Locked:
    """Holds `<path>.lock` (waiting, and saying so, while another process holds it)."""

    def __init__(self, path: Path, say: Callable[[str], None]):
        self.lock, self.path, self.say = FileLock(f"{path}.lock"), path, say

    def __enter__(self):
        try:
            self.lock.acquire(timeout=0)
        except Timeout:
            self.say(f"waiting for another vfnet pull of {self.path.name} to finish ...")
            self.lock.acquire()
        return self

    def __exit__(self, *exc):
        self.lock.release()


class UnusableCheckpoint(ZooError):
    """A whole, verified file that is not a VFNet of the zoo entry's preset (or not a checkpoint at all)."""


def _convert(source: Path, converted: Path, preset: str | None) -> None:
    """`vfnet convert-mmdet` into a temporary file, checked against `preset`, then renamed into place."""
    try:
        from safetensors import SafetensorError

        from vfnet.model import CheckpointError, convert_mmdet
    except ImportError:
        raise ZooError(
            f"converting a checkpoint needs torch: pip install 'vfnet-serve[torch]' (or pull on a machine that has it and copy {vfnet_home()} here)"
        ) from None
    temporary = converted.with_name(f".{converted.name}.{os.getpid()}.tmp")
    try:
        model = convert_mmdet(source, temporary)
        if preset is not None and model.preset != preset:
            raise UnusableCheckpoint(f"{source.name} holds a {model.preset} network, but the zoo says {preset}: the zoo entry is wrong")
        os.replace(temporary, converted)
    except CheckpointError as e:
        raise UnusableCheckpoint(str(e)) from None
    except (OSError, SafetensorError) as e:  # e.g. a full disk while safetensors writes
        raise ZooError(f"cannot write {converted}: {e}") from None
    finally:
        temporary.unlink(missing_ok=True)


def _convert_or_forget(source: Path, converted: Path, preset: str) -> None:
    """`_convert` a file in the cache; one that cannot be this entry is deleted (nothing unusable is
    kept). A failure that is not the file's (no torch, a full disk) keeps it for the next try."""
    try:
        _convert(source, converted, preset)
    except UnusableCheckpoint as e:
        source.unlink(missing_ok=True)
        raise UnusableCheckpoint(f"{e}; the downloaded file was deleted") from None


def pull(entry: ZooEntry, *, mirror: str | None = None, progress: bool = True, say: Callable[[str], None] = say_on_stderr) -> Pulled:
    """Download (unless cached), verify and convert `entry`. `mirror` (default $VFNET_ZOO_MIRROR)
    replaces the URL's scheme and host. Raises ZooError (DownloadError for the transfer)."""
    mirror = os.environ.get(MIRROR_ENV) if mirror is None else mirror
    source, converted = checkpoint_path(entry), converted_path(entry)
    writable_folder(converted.parent)
    writable_folder(source.parent)
    with _Locked(source, say):
        done = source_sha256(converted)
        if done is not None and done.startswith(entry.sha256):
            return Pulled(entry.name, converted, source, done)
        sha256 = sha256_of(source) if source.is_file() else ""
        if sha256 and not sha256.startswith(entry.sha256):
            say(f"{source} does not match its SHA-256 prefix {entry.sha256}; downloading it again")
            source.unlink()
            sha256 = ""
        if not sha256:
            url = mirrored(entry.url, mirror)
            say(f"downloading {entry.name} from {url}")
            sha256 = download(url, source, entry.sha256, progress=progress)
        _convert_or_forget(source, converted, entry.preset)
    return Pulled(entry.name, converted, source, sha256)


def pull_file(path: Path, *, zoo_file: str | os.PathLike | None = None, say: Callable[[str], None] = say_on_stderr) -> Pulled:
    """Convert a .pth the user downloaded: its SHA-256 checked against the prefix its name carries
    (if any); a file of the zoo (by file name) is copied into the cache and converted under its zoo
    name, any other into models/<file stem>.safetensors. The user's file is never changed."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ZooError(f"{path}: no such file")
    sha256 = sha256_of(path)
    try:
        expected = hash_from_file_name(path.name)
    except ValueError:
        say(f"{path.name} carries no -<8 hex digits>.pth hash in its name: its SHA-256 ({sha256[:8]}) is not checked")
        expected = ""
    if not sha256.startswith(expected):
        raise ZooError(f"{path}: SHA-256 mismatch: its name says it starts with {expected}, it is {sha256}; the file is damaged or renamed")
    entry = next((e for e in load_zoo(zoo_file) if e.file_name == path.name), None)
    if entry is None:
        converted = vfnet_home() / "models" / f"{path.name.removesuffix('.pth')}.safetensors"
        writable_folder(converted.parent)
        with _Locked(converted, say):
            _convert(path, converted, None)
        return Pulled(converted.stem, converted, path, sha256)
    if not sha256.startswith(entry.sha256):
        raise ZooError(f"{path}: SHA-256 mismatch: zoo entry {entry.name} expects it to start with {entry.sha256}, it is {sha256}")
    source, converted = checkpoint_path(entry), converted_path(entry)
    writable_folder(source.parent)
    writable_folder(converted.parent)
    with _Locked(source, say):
        if not (source.is_file() and source.samefile(path)):
            _copy_atomically(path, source)
        _convert_or_forget(source, converted, entry.preset)
    return Pulled(entry.name, converted, source, sha256)


def _copy_atomically(path: Path, dest: Path) -> None:
    temporary = dest.with_name(dest.name + ".part")
    try:
        shutil.copyfile(path, temporary)
        os.replace(temporary, dest)
    except OSError as e:
        temporary.unlink(missing_ok=True)
        raise DownloadError(f"cannot copy {path} into {dest.parent}: {e.strerror or e}") from None
