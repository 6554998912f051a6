"""What `vfnet predict SOURCE...` reads: SOURCE arguments expanded to files, files read as items.

A SOURCE is an image or video file, a folder (searched recursively), a glob, `@list.txt` (one SOURCE
per line) or a COCO annotation file (`.json` with an "images" list). A file or folder may also be a
URI of any file system pyarrow knows (`s3://bucket/photos/`, `gs://...`, `hdfs://...`, `file:///...`),
listed and read through pyarrow.fs with the credentials of the machine that reads it. Whether a file is an image or
a video is decided by its suffix alone (case-insensitive); a folder or glob keeps only files of
those suffixes, while a file named directly with any other suffix is refused.

Expanding is strict and reading is forgiving: a SOURCE that names nothing usable raises
SourceError before anything runs, whereas a file that cannot be read once the run has started
(removed, unreadable, not decodable) becomes an Item with `error` set, so that one bad input never
stops a bulk run. Video frames are decoded with PyAV (the `predict` extra), imported only when a
video is read. No torch.
"""

from __future__ import annotations

import functools
import glob
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts"})
_GLOB_CHARACTERS = frozenset("*?[")
INSTALL_PYAV = "pip install 'vfnet-serve[predict]'"


class SourceError(ValueError):
    """A SOURCE argument that names nothing usable (no such file or folder, a glob that matches nothing,
    an unreadable or malformed list or COCO file, a file of neither an image nor a video suffix): the run refuses to start, naming it."""


@dataclass(frozen=True)
class Source:
    """One input file. `path` is as found: relative to the working directory when the argument was
    relative, joined onto a list's or COCO file's folder for the paths those name."""

    path: str
    image_id: int | None = None  # its id in a COCO annotation file given as a source

    @property
    def is_video(self) -> bool:
        return _suffix(self.path) in VIDEO_SUFFIXES


@dataclass(frozen=True)
class Item:
    """One image, or one frame of a video, as read; `error` set (and `data` None) when it could not be."""

    source: Source
    frame: int | None  # None for an image; else the frame's index, 0-based, counting every decoded frame of the video
    timestamp: float | None  # seconds from the video's start (the frame's pts in its stream's time base); None for images
    data: bytes | np.ndarray | None  # an image's encoded bytes, or a frame as HxWx3 uint8 RGB; None when `error`
    error: str | None = None  # why the input could not be read, one line

    @property
    def key(self) -> tuple[str, int | None]:
        """(path, frame): what identifies an item's results across runs (`--resume`)."""
        return (self.source.path, self.frame)


def _suffix(path: str) -> str:
    return os.path.splitext(path)[1].lower()


def _is_media(path: str) -> bool:
    return _suffix(path) in IMAGE_SUFFIXES or _suffix(path) in VIDEO_SUFFIXES


def _sort_key(path: str) -> tuple[str, ...]:
    """Paths sort component by component, so a folder's files come before those of `folder-2`."""
    return tuple(os.path.normpath(path).split(os.sep))


def _describe(error: OSError) -> str:
    """`[Errno 13] Permission denied`, without the file name (the item already carries it)."""
    return f"[Errno {error.errno}] {error.strerror}" if error.errno is not None and error.strerror else str(error)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def expand_sources(arguments: Sequence[str]) -> list[Source]:
    """Every argument, in order, each expanded in sorted order; a file named twice is kept once (the
    first naming wins, compared by real path, so `./a.jpg` and `a.jpg` are one file):

    - an image or video file: itself;
    - a folder: every image and video file below it, recursively (hidden files and folders skipped), sorted by path;
    - a glob (has * ? or [ and names no existing file): its matches of an image or video suffix, sorted
      (`**` matches any depth; hidden names are matched only by patterns that spell the dot);
    - `@list.txt`: one SOURCE per line (blank lines and lines starting with # skipped); relative lines are
      relative to the list file's folder; a line is expanded like an argument, except that it cannot be another `@list`;
    - a `.json` COCO file (an object with an "images" list of {"id", "file_name"}): its images in the file's
      order, each carrying its `image_id`, at `file_name` relative to the JSON file's folder, as
      vfnet.server.coco.CocoDetection finds them (they are not checked here: a missing one is an error item when read).

    Raises SourceError naming the argument for anything that yields nothing or cannot be read."""
    sources: list[Source] = []
    seen: set[str] = set()
    for argument in arguments:
        for source in _expand(argument):
            real = source.path if is_uri(source.path) else os.path.realpath(source.path)
            if real not in seen:
                seen.add(real)
                sources.append(source)
    return sources


def _expand(argument: str) -> list[Source]:
    if argument.startswith("@"):
        return _expand_list(argument)
    if is_uri(argument):
        return _expand_uri(argument)
    return _expand_path(argument)


def is_uri(text: str) -> bool:
    """Whether `text` is a URI (`scheme://...`), not a local path."""
    return re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*://", text) is not None


@functools.lru_cache(maxsize=32)
def _file_system(root: str):
    """(pyarrow FileSystem, its path of `root`) for a URI's `scheme://authority/`, made once per root
    (an S3 file system looks up the bucket's region when it is made)."""
    from pyarrow.fs import FileSystem

    return FileSystem.from_uri(root)


def _open_uri(uri: str):
    """(file system, path in it) of a URI; pyarrow's errors (unknown scheme, no credentials) propagate."""
    parts = urlsplit(uri)
    file_system, root_path = _file_system(f"{parts.scheme}://{parts.netloc}/")
    return file_system, root_path.rstrip("/") + "/" + parts.path.lstrip("/")


def _expand_uri(argument: str) -> list[Source]:
    try:
        from pyarrow.fs import FileSelector, FileType

        file_system, path = _open_uri(argument)
        info = file_system.get_file_info(path)
        if info.type == FileType.Directory:
            found = file_system.get_file_info(FileSelector(path, recursive=True))
    except ImportError:
        raise SourceError(f"{argument}: URIs are read through pyarrow: {INSTALL_PYAV}") from None
    except Exception as e:  # pyarrow's ArrowInvalid (unknown scheme), OSError (no such bucket, no credentials)
        raise SourceError(f"{argument}: {_one_line(str(e))}") from None
    if info.type == FileType.File:
        if not _is_media(path):
            raise SourceError(f"{argument}: a URI must name an image, a video or a folder (COCO and list files are read from local paths)")
        return [Source(argument)]
    if info.type != FileType.Directory:
        raise SourceError(f"{argument}: no such file or folder")
    base = argument.rstrip("/")
    names = [f.path[len(path.rstrip("/")) + 1 :] for f in found if f.type == FileType.File]
    names = [name for name in names if _is_media(name) and not any(part.startswith(".") for part in name.split("/"))]
    if not names:
        raise SourceError(f"{argument}: no image or video file below this folder")
    return [Source(f"{base}/{name}") for name in sorted(names, key=lambda name: tuple(name.split("/")))]


def _expand_path(argument: str) -> list[Source]:
    if os.path.isdir(argument):
        return _expand_folder(argument)
    if os.path.exists(argument):
        return _expand_file(argument)
    if _GLOB_CHARACTERS & set(argument):
        return _expand_glob(argument)
    raise SourceError(f"{argument}: no such file or folder")


def _expand_file(argument: str) -> list[Source]:
    if _suffix(argument) == ".json":
        return _expand_coco(argument)
    if not _is_media(argument):
        raise SourceError(
            f"{argument}: neither an image nor a video suffix (images: {' '.join(sorted(IMAGE_SUFFIXES))}; videos: {' '.join(sorted(VIDEO_SUFFIXES))})"
        )
    return [Source(argument)]


def _expand_folder(argument: str) -> list[Source]:
    paths = []
    for folder, subfolders, files in os.walk(argument):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]  # pruned in place: os.walk skips them
        paths += [os.path.join(folder, name) for name in files if not name.startswith(".") and _is_media(name)]
    if not paths:
        raise SourceError(f"{argument}: no image or video file below this folder")
    return [Source(path) for path in sorted(paths, key=_sort_key)]


def _expand_glob(argument: str) -> list[Source]:
    paths = [path for path in glob.glob(argument, recursive=True) if os.path.isfile(path) and _is_media(path)]
    if not paths:
        raise SourceError(f"{argument}: the pattern matches no image or video file")
    return [Source(path) for path in sorted(paths, key=_sort_key)]


def _expand_list(argument: str) -> list[Source]:
    list_path = argument[1:]
    try:
        with open(list_path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise SourceError(f"{argument}: cannot read the list: {_describe(e)}") from e
    except UnicodeDecodeError as e:
        raise SourceError(f"{argument}: not a UTF-8 text file: {e}") from e
    sources = []
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            sources += _expand_path(os.path.join(os.path.dirname(list_path), line))  # an absolute line stays itself
        except SourceError as e:
            raise SourceError(f"{argument} line {number}: {e}") from e
    if not sources:
        raise SourceError(f"{argument}: the list names no file")
    return sources


def _expand_coco(argument: str) -> list[Source]:
    try:
        with open(argument, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise SourceError(f"{argument}: cannot read it: {_describe(e)}") from e
    except ValueError as e:
        raise SourceError(f"{argument}: not JSON: {e}") from e
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list) or not all(
        isinstance(im, dict) and isinstance(im.get("id"), int) and isinstance(im.get("file_name"), str) for im in images
    ):
        raise SourceError(f'{argument}: not a COCO annotation file (an object with an "images" list of {{"id": int, "file_name": str}})')
    if not images:
        raise SourceError(f'{argument}: its "images" list is empty')
    folder = os.path.dirname(argument)
    return [Source(os.path.join(folder, im["file_name"]), image_id=im["id"]) for im in images]


def read_items(source: Source, every: int = 1, max_frames: int | None = None) -> Iterator[Item]:
    """An image: one Item with its bytes, not decoded here (an unreadable file: one Item with `error`).

    A video: every `every`-th decoded frame (indices 0, every, 2*every, ...), at most `max_frames` of
    them, as HxWx3 uint8 RGB, streamed one frame at a time from the first video stream. A file PyAV
    cannot open (or PyAV not installed) gives one error Item with frame None; a decode error after
    some frames gives one error Item with the index the failing frame would have had, and ends that
    video. A truncated file whose frames can be found without its end (Matroska, AVI, MP4 written with
    `faststart`) ends cleanly after its last whole frame; an MP4 whose index (moov) was cut off cannot be opened.

    Never raises for bad data; ValueError (at the call, not at the first item) for every < 1 or max_frames < 1."""
    if every < 1:
        raise ValueError(f"every must be at least 1, got {every}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be at least 1 (or None), got {max_frames}")
    return _read_video(source, every, max_frames) if source.is_video else _read_image(source)


def _read_image(source: Source) -> Iterator[Item]:
    try:
        if is_uri(source.path):
            file_system, path = _open_uri(source.path)
            with file_system.open_input_stream(path) as f:
                data = f.read()
        else:
            with open(source.path, "rb") as f:
                data = f.read()
    except OSError as e:  # pyarrow raises OSError (FileNotFoundError, ...) too
        yield Item(source, None, None, None, error=f"cannot read: {_describe(e)}")
        return
    yield Item(source, None, None, data)


def _open_video(av, source: Source):
    """A PyAV container of a local file, or of a URI through a pyarrow random-access file."""
    if not is_uri(source.path):
        return av.open(source.path)
    file_system, path = _open_uri(source.path)
    return av.open(file_system.open_input_file(path))


def _read_video(source: Source, every: int, max_frames: int | None) -> Iterator[Item]:
    try:
        import av
    except ImportError:
        yield Item(source, None, None, None, error=f"cannot decode videos without PyAV: {INSTALL_PYAV}")
        return
    try:
        container = _open_video(av, source)
    except OSError as e:  # PyAV's FileNotFoundError, PermissionError, IsADirectoryError: the file, not its content
        yield Item(source, None, None, None, error=f"cannot read: {_describe(e)}")
        return
    except av.FFmpegError as e:
        yield Item(source, None, None, None, error=_one_line(f"not a video PyAV can decode: {e}"))
        return
    with container:
        if not container.streams.video:
            yield Item(source, None, None, None, error="not a video PyAV can decode: it has no video stream")
            return
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame and slice threads: several times faster, same frames
        index, kept = 0, 0
        frames = container.decode(stream)
        while max_frames is None or kept < max_frames:
            try:
                frame = next(frames, None)
            except av.FFmpegError as e:
                yield Item(source, index, None, None, error=_one_line(f"decoding failed: {e}"))
                return
            if frame is None:
                return
            if index % every == 0:
                timestamp = float(frame.time) if frame.time is not None else None
                yield Item(source, index, timestamp, frame.to_ndarray(format="rgb24"))
                kept += 1
            index += 1
