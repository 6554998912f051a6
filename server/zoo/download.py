"""Download one file: streamed, resumable, checked against a SHA-256 prefix, in place only when whole.

    digest = download(url, dest, sha256="38db6f58")    # the full hex digest of what is now at dest

The bytes go to `dest.part`; only a file whose length matches the server's Content-Length and whose
SHA-256 starts with `sha256` is renamed to `dest`. An interrupted transfer keeps `dest.part`, and
the next call resumes it with a Range request (or starts over cleanly when the server ignores the
range). A wrong hash or a full disk deletes `dest.part`. http(s):// and file:// URLs (a local
mirror folder) both work. Every failure is a DownloadError with a one-line message.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import shutil
import socket
import sys
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import urlparse
from urllib.request import Request, urlopen

from .catalog import ZooError

CHUNK = 1 << 20
MIRROR_ENV = "VFNET_ZOO_MIRROR"


class DownloadError(ZooError):
    """A download that failed; the message names the URL and what to do."""


def no_network(url: str, reason: object) -> DownloadError:
    """The one-line error for a host that cannot be reached, with the two ways out."""
    host = urlparse(url).hostname or url
    return DownloadError(
        f"cannot download {url}: {host} cannot be reached ({reason}). Either point --mirror URL (or ${MIRROR_ENV}) at a copy "
        "you can reach, or download the file elsewhere and run `vfnet pull FILE.pth`"
    )


def writable_folder(folder: Path) -> None:
    """Make `folder` (and its parents) and prove it takes a file; a DownloadError names it otherwise."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise DownloadError(f"the cache folder {folder} is not writable ({e.strerror or e}); set VFNET_HOME to a folder you can write") from None


def _disk_full(part: Path, needed: int | None) -> DownloadError:
    part.unlink(missing_ok=True)
    free = shutil.disk_usage(part.parent).free
    wanted = f"{needed / 1e6:.1f} MB more are needed, " if needed else ""
    return DownloadError(f"no space left in {part.parent}: {wanted}{free / 1e6:.1f} MB are free; the partial download was deleted")


def _hash_of(path: Path) -> hashlib._Hash:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest


def sha256_of(path: Path) -> str:
    """The hex SHA-256 of the file at `path`."""
    return _hash_of(path).hexdigest()


def _open(url: str, offset: int, timeout: float):
    """The response for `url` from byte `offset` on (a Range request when offset > 0), or None
    when the server cannot serve that range (416)."""
    headers = {"User-Agent": "vfnet-serve", **({"Range": f"bytes={offset}-"} if offset else {})}
    try:
        return urlopen(Request(url, headers=headers), timeout=timeout)
    except HTTPError as e:
        if e.code == 416 and offset:  # the kept part is not a prefix the server can continue: start over
            return None
        raise DownloadError(f"cannot download {url}: the server answered {e.code} {e.reason}") from None
    except URLError as e:
        if urlparse(url).scheme == "file":
            raise DownloadError(f"cannot read {url}: {e.reason}") from None
        raise no_network(url, e.reason) from None
    except (OSError, ValueError) as e:  # a timeout before the headers, a malformed URL, ...
        raise no_network(url, e) from None


def download(url: str, dest: Path, sha256: str, *, progress: bool = True, timeout: float = 30.0) -> str:
    """Fetch `url` into `dest` (resuming `dest.part` when one is there); returns its full SHA-256.
    `sha256`: the leading hex digits (8 from a published file name, or all 64) it must start with."""
    part = dest.with_name(dest.name + ".part")
    writable_folder(dest.parent)
    offset = part.stat().st_size if part.is_file() else 0
    digest = _hash_of(part) if offset else hashlib.sha256()
    response = _open(url, offset, timeout)
    if response is None:
        part.unlink()
        offset, digest, response = 0, hashlib.sha256(), _open(url, 0, timeout)
    with response:
        resumed = offset and getattr(response, "status", None) == 206
        if resumed and not response.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
            part.unlink()
            raise DownloadError(
                f"{url}: asked for bytes {offset}- the server sent {response.headers.get('Content-Range')!r}; the partial download was deleted, run again"
            )
        if offset and not resumed:  # the server ignored the range: start over
            offset, digest = 0, hashlib.sha256()
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        if total is not None and shutil.disk_usage(dest.parent).free < total - offset:
            raise _disk_full(part, total - offset)
        received = _stream(response, part, offset, total, digest, url, progress)
    if total is not None and received != total:
        raise DownloadError(
            f"the download of {url} stopped after {received} of {total} bytes; the {received} bytes are kept in {part} "
            "and the next pull resumes from there (delete it to start over)"
        )
    got = digest.hexdigest()
    if not got.startswith(sha256):
        part.unlink(missing_ok=True)
        raise DownloadError(f"{url}: SHA-256 mismatch: expected it to start with {sha256}, got {got}; the download was deleted")
    os.replace(part, dest)
    return got


def _stream(response, part: Path, offset: int, total: int | None, digest, url: str, progress: bool) -> int:
    """Append the response body to `part` (truncating it when offset is 0), hashing as it goes;
    returns the bytes `part` now holds. A connection that breaks keeps what arrived."""
    from tqdm import tqdm

    received = offset
    try:
        with (
            part.open("ab" if offset else "wb") as f,
            tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=part.name.removesuffix(".part"),
                disable=not progress,
                file=sys.stderr,
            ) as bar,
        ):
            while block := response.read(CHUNK):
                f.write(block)
                digest.update(block)
                received += len(block)
                bar.update(len(block))
            f.flush()
            os.fsync(f.fileno())
    except (OSError, http.client.HTTPException) as e:
        if getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
            raise _disk_full(part, None if total is None else total - received) from None
        if not isinstance(e, OSError) or isinstance(e, (ConnectionError, socket.timeout)) or e.errno is None:
            raise DownloadError(
                f"the download of {url} broke after {received} bytes ({e}); they are kept in {part} and the next pull resumes from there"
            ) from None
        raise DownloadError(f"cannot write {part}: {e.strerror or e}") from None
    return received
