"""`vfnet predict` on one machine: sources -> decode pool -> batches by canvas -> records.

    summary = predict(detector, sources, journal, PredictOptions(batch_size=8, threads=4))

A feeder thread walks the sources (reading files, decoding video frames) and hands each input to a
pool of `threads` decoders (`Detector.prepare`: the same decoding and resizing as /detect); the calling
thread takes prepared images in input order, groups them by padded canvas (as the server's batcher
does, so a batch never mixes canvases), runs full batches (`Detector.infer`, then `Detector.select`
with the options, as /detect does) and journals their records. The feeder and the pool stay a
bounded window ahead, so the backend never waits on a decode it could have had and memory stays flat.
A bad input (unreadable, undecodable, too many pixels) becomes an error record and the run goes on.
Setting `stop` ends the run after the batch in flight; what was not journalled is done by --resume.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vfnet.server.runtime import Detector, ImageError, PreparedImage
from vfnet.server.runtime.annotate import draw_detections
from vfnet.server.runtime.detector import DEFAULT_SCORE_THRESHOLD
from vfnet.server.runtime.images import prepare_image

from .records import Journal, record
from .sources import Item, Source, read_items


@dataclass(frozen=True)
class PredictOptions:
    """How to run: the /detect options, the batch and pool sizes, video sampling, drawn copies."""

    score_threshold: float = DEFAULT_SCORE_THRESHOLD
    iou_threshold: float | None = None  # None: the model's own
    max_detections: int | None = None  # None: the model's own limit
    classes: tuple[str, ...] | None = None  # None: every class
    batch_size: int = 8
    threads: int = 4
    every: int = 1  # every N-th video frame
    max_frames: int | None = None  # per video
    annotated: Path | None = None  # a folder for drawn copies


@dataclass
class Summary:
    """What a run did: inputs detected, failed (error records) and skipped (already in the output)."""

    detected: int = 0
    failed: int = 0
    skipped: int = 0
    interrupted: bool = False
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)  # the first few error records, "source: error"


@dataclass
class _Input:
    """One input on its way: its position, the item, and the future of its preparation."""

    image_id: int
    item: Item
    prepared: Future | None  # (PreparedImage, full image or None); None for an item that failed to read


_DONE = object()


def _prepare(detector: Detector, item: Item, keep_full: bool) -> tuple[PreparedImage, np.ndarray | None]:
    """The runtime's own preparation; with `keep_full` the full-resolution image too (to draw on)."""
    if not keep_full:
        return detector.prepare(item.data), None
    full = detector.decode(item.data)
    card = detector.card
    return prepare_image(full, card.input_size, card.size_divisor, max_pixels=None), full


def annotated_name(item: Item) -> str:
    """A drawn copy's file name: the source path with '/' as '__', plus the frame for videos."""
    stem = item.source.path.lstrip("/").replace("/", "__")
    return f"{stem}__frame{item.frame:06d}.jpg" if item.frame is not None else f"{stem}.jpg"


class _Run:
    def __init__(self, detector: Detector, journal: Journal, options: PredictOptions, progress: Callable[[int, int], None]):
        self.detector, self.journal, self.options, self.progress = detector, journal, options, progress
        self.summary = Summary()
        self.waiting: dict[tuple[int, int], list[tuple[_Input, PreparedImage, np.ndarray | None]]] = {}

    def fail(self, entry: _Input, error: str) -> None:
        self.journal.write([record(entry.item, entry.image_id, error=error)])
        self.summary.failed += 1
        if len(self.summary.errors) < 20:
            self.summary.errors.append(f"{entry.item.source.path}{'' if entry.item.frame is None else f' frame {entry.item.frame}'}: {error}")
        self.progress(0, 1)

    def add(self, entry: _Input) -> None:
        """A prepared input joins the batch of its canvas; a full batch runs at once."""
        try:
            prepared, full = entry.prepared.result()
        except ImageError as e:
            self.fail(entry, str(e))
            return
        except Exception as e:  # a decoder's own failure on odd data: the input's error, not the run's
            self.fail(entry, f"cannot decode: {type(e).__name__}: {e}")
            return
        batch = self.waiting.setdefault(prepared.canvas, [])
        batch.append((entry, prepared, full))
        if len(batch) == self.options.batch_size:
            self.run(prepared.canvas)
        elif sum(len(b) for b in self.waiting.values()) >= 2 * self.options.batch_size:  # many canvases: the largest goes
            self.run(max(self.waiting, key=lambda canvas: len(self.waiting[canvas])))

    def run(self, canvas: tuple[int, int]) -> None:
        batch = self.waiting.pop(canvas)
        o = self.options
        results = self.detector.infer([prepared for _, prepared, _ in batch], o.iou_threshold)
        records = []
        for (entry, _, full), result in zip(batch, results):
            result = self.detector.select(result, o.score_threshold, o.max_detections, o.classes)
            records.append(record(entry.item, entry.image_id, result))
            if o.annotated is not None:
                (o.annotated / annotated_name(entry.item)).write_bytes(draw_detections(full, result))
        self.journal.write(records)
        self.summary.detected += len(batch)
        self.progress(len(batch), 0)

    def run_all(self) -> None:
        for canvas in list(self.waiting):
            self.run(canvas)


def _inputs(sources: Sequence[Source], options: PredictOptions) -> Iterator[tuple[int, Item]]:
    """(its source's 1-based position, item) of every input, in order."""
    for position, source in enumerate(sources, 1):
        for item in read_items(source, options.every, options.max_frames):
            yield position, item


def predict(
    detector: Detector,
    sources: Sequence[Source],
    journal: Journal,
    options: PredictOptions,
    *,
    progress: Callable[[int, int], None] = lambda detected, failed: None,
    stop: threading.Event | None = None,
) -> Summary:
    """Detect every input of `sources` not already in `journal`, journalling a record each."""
    detector.check_options(options.score_threshold, options.iou_threshold, options.max_detections, options.classes)
    if options.annotated is not None:
        options.annotated.mkdir(parents=True, exist_ok=True)
    stop = stop or threading.Event()
    run, started = _Run(detector, journal, options, progress), time.perf_counter()
    window: queue.Queue = queue.Queue(maxsize=2 * options.batch_size + options.threads)
    keep_full = options.annotated is not None
    failure: list[BaseException] = []

    def feed(pool: ThreadPoolExecutor) -> None:
        try:
            for image_id, item in _inputs(sources, options):
                if stop.is_set():
                    break
                if item.key in journal.done:
                    run.summary.skipped += 1
                    continue
                work = None if item.error else pool.submit(_prepare, detector, item, keep_full)
                window.put(_Input(image_id, item, work))
        except BaseException as e:  # re-raised by the calling thread
            failure.append(e)
        finally:
            window.put(_DONE)

    with ThreadPoolExecutor(options.threads, thread_name_prefix="predict-decode") as pool:
        feeder = threading.Thread(target=feed, args=(pool,), name="predict-feed", daemon=True)
        feeder.start()
        entry = None
        try:
            while (entry := window.get()) is not _DONE:
                if entry.prepared is None:
                    run.fail(entry, entry.item.error)
                else:
                    run.add(entry)
                if stop.is_set():
                    run.summary.interrupted = True
                    break
            else:
                if failure:
                    raise failure[0]
                run.run_all()
        finally:
            stop.set()
            while entry is not _DONE:  # unblock the feeder; what it queued is left to --resume
                entry = window.get()
            feeder.join()
    run.summary.seconds = time.perf_counter() - started
    return run.summary
