"""Dynamic batching across requests: a bounded queue, admission by estimated wait, cancellation,
and a worker that survives whatever one batch does.

Requests submit jobs (one job = one request's prepared images). A single worker task repeatedly
takes the oldest waiting image and every other waiting image that can share its backend call (the
same IoU threshold, since NMS runs inside the model, and the same padded canvas, so that no image's
result depends on its company), up to `max_batch_size`, waits up to `max_delay_s` for more such
company, and runs the batch in its own inference thread (the event loop never blocks on it). A job
is answered when all of its images are done; images keep their arrival order.

- Admission (`submit` raises `Overloaded` at once): the queue holds at most `queue_size` images, and
  a job is refused when the images ahead of it (queued and running) times the measured seconds per
  image exceed `max_wait_s`, so an accepted request is answered in bounded time under any load.
- A job whose caller stopped waiting (timeout, disconnect) is cancelled: its images leave the queue
  at once and are never computed.
- An exception anywhere in one round of the loop fails that round's jobs, is logged once with their
  request ids, and the worker goes on. `health()` names the problem when the worker has stopped or a
  backend call has run longer than `stuck_after_s`.
- `drain()` (at shutdown) stops taking new jobs and finishes every job already accepted.

Jobs are compared by identity (`eq=False`): a generated `__eq__` would compare their image arrays.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from vfnet.server.runtime import DetectionResult, PreparedImage

log = logging.getLogger("vfnet.server.batcher")


class Overloaded(Exception):
    """The job is refused now; `retry_after_s` is a fair wait before trying again (for Retry-After)."""

    def __init__(self, message: str, retry_after_s: float = 1.0):
        super().__init__(message)
        self.retry_after_s = max(1, math.ceil(retry_after_s))


class ShuttingDown(Exception):
    """The batcher no longer accepts jobs."""


@dataclass(eq=False)
class Job:
    """One request's images. `future` resolves to their results (one per image, in order)."""

    images: list[PreparedImage]
    iou_threshold: float
    request_id: str
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)
    started: float = 0.0  # when its first batch began running
    finished: float = 0.0  # when its last batch ended
    results: list[DetectionResult | None] = field(init=False)

    def __post_init__(self):
        self.results = [None] * len(self.images)


@dataclass(eq=False)
class Item:
    """One image of a job waiting in the queue."""

    job: Job
    index: int  # position in job.images

    @property
    def key(self) -> tuple[float, tuple[int, int]]:
        """Images with equal keys can share a backend call."""
        return self.job.iou_threshold, self.job.images[self.index].canvas


@dataclass(frozen=True)
class BatchStats:
    images: int  # images in the backend call
    jobs: int
    seconds: float  # backend call duration


class WaitEstimate:
    """Seconds per image of recent backend calls: an exponential average over images, so a batch
    of 8 weighs 8 times a batch of 1. Starts at `initial` until a batch has been measured."""

    def __init__(self, initial: float = 0.1, weight: float = 0.1):
        self.seconds_per_image = initial
        self.weight = weight

    def observe(self, images: int, seconds: float) -> None:
        keep = (1.0 - self.weight) ** images
        self.seconds_per_image = keep * self.seconds_per_image + (1.0 - keep) * (seconds / images)

    def wait_s(self, images_ahead: int) -> float:
        return images_ahead * self.seconds_per_image


class Batcher:
    """`infer(images, iou_threshold) -> results` runs one batch (called in the inference thread).

    max_batch_size: images per backend call; max_delay_s: extra wait for company once the oldest
    image could run; queue_size: images that may wait; max_wait_s: the longest estimated wait a new
    job is admitted with (None: no limit); stuck_after_s: a backend call running longer (and longer
    than 10x its estimated time) makes `health()` report the worker stuck; on_batch: called with
    each batch's stats.
    """

    def __init__(
        self,
        infer: Callable[[list[PreparedImage], float], list[DetectionResult]],
        max_batch_size: int = 8,
        max_delay_s: float = 0.0,
        queue_size: int = 64,
        max_wait_s: float | None = None,
        stuck_after_s: float = 30.0,
        estimate: WaitEstimate | None = None,
        on_batch: Callable[[BatchStats], None] = lambda stats: None,
    ):
        if max_batch_size < 1 or queue_size < 1:
            raise ValueError("max_batch_size and queue_size must be at least 1")
        self.infer = infer
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.queue_size = queue_size
        self.max_wait_s = max_wait_s
        self.stuck_after_s = stuck_after_s
        self.estimate = estimate or WaitEstimate()
        self.on_batch = on_batch
        self.pending: list[Item] = []  # arrival order
        self.running_images = 0  # images in the backend call running now
        self.running_since: float | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="infer")
        self._wakeup = asyncio.Event()
        self._closing = False
        self._worker: asyncio.Task | None = None

    @property
    def queued_images(self) -> int:
        return len(self.pending)

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    def admit(self, images: int) -> None:
        """Raise ShuttingDown, or Overloaded when a job of `images` images would be refused now.
        `submit` checks it again; a caller checks first to refuse before decoding anything."""
        if self._closing:
            raise ShuttingDown()
        if self.queued_images + images > self.queue_size:
            raise Overloaded(f"server busy: the queue is full ({self.queued_images} of {self.queue_size} images waiting)")
        ahead = self.queued_images + self.running_images
        wait = self.estimate.wait_s(ahead)
        if self.max_wait_s is not None and ahead and wait > self.max_wait_s:
            raise Overloaded(
                f"server busy: the estimated wait of {wait:.2f} s for the {ahead} images ahead exceeds the limit of {self.max_wait_s:g} s",
                retry_after_s=wait - self.max_wait_s,
            )

    def submit(self, images: list[PreparedImage], iou_threshold: float, request_id: str = "-") -> Job:
        """Queue a job and return it (raises Overloaded or ShuttingDown at once); await `job.future`."""
        self.admit(len(images))
        job = Job(list(images), iou_threshold, request_id, asyncio.get_running_loop().create_future())
        job.future.add_done_callback(lambda _: self._forget(job))
        self.pending.extend(Item(job, i) for i in range(len(images)))
        self._wakeup.set()
        return job

    def _forget(self, job: Job) -> None:
        """A job that is done (answered, failed or cancelled) has no image left in the queue."""
        self.pending = [item for item in self.pending if item.job is not job]

    def health(self) -> str | None:
        """None while the worker serves; else what is wrong with it."""
        if self._worker is None:
            return "the batch worker has not started"
        if self._worker.done() and not self._closing:
            error = None if self._worker.cancelled() else self._worker.exception()
            return f"the batch worker stopped ({'cancelled' if error is None else repr(error)})"
        if self.running_since is not None:
            running = time.perf_counter() - self.running_since
            limit = max(self.stuck_after_s, 10 * self.estimate.wait_s(self.running_images))  # a slow model is not stuck
            if running > limit:
                return f"the batch worker is stuck: a backend call of {self.running_images} images has run for {running:.1f} s (limit {limit:.1f} s)"
        return None

    def _take_batch(self) -> list[Item]:
        key = self.pending[0].key
        batch = [item for item in self.pending if item.key == key][: self.max_batch_size]
        taken = set(batch)  # items hash and compare by identity
        self.pending = [item for item in self.pending if item not in taken]
        return batch

    def _batch_ready(self) -> bool:
        key = self.pending[0].key
        company = sum(item.key == key for item in self.pending)
        return company >= self.max_batch_size or time.perf_counter() - self.pending[0].job.enqueued >= self.max_delay_s

    async def _wait_for_work(self) -> bool:
        """Wait until a batch should run; False when the worker should stop."""
        while True:
            if not self.pending:
                if self._closing:
                    return False
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if self._closing or self._batch_ready():
                return True
            wait = self.max_delay_s - (time.perf_counter() - self.pending[0].job.enqueued)
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=max(wait, 0.0))
            except asyncio.TimeoutError:
                pass

    async def _run(self) -> None:
        running: list[Item] = []
        try:
            while await self._wait_for_work():
                running = self._take_batch()
                await self._run_batch(running)
                running = []
        except BaseException as exc:  # the worker itself dies: answer every job it holds now
            error = RuntimeError(f"the batch worker stopped ({exc!r})")
            self._fail(running + self.pending, error, "the batch worker stopped; failing the requests it held")
            raise

    async def _run_batch(self, batch: list[Item]) -> None:
        """One backend call; any Exception fails this batch's jobs only."""
        try:
            images = [item.job.images[item.index] for item in batch]
            started = time.perf_counter()
            for item in batch:
                item.job.started = item.job.started or started
            self.running_images, self.running_since = len(images), started
            try:
                infer = self.infer  # read once: the call below runs in another thread
                results = await asyncio.get_running_loop().run_in_executor(self._thread, infer, images, batch[0].job.iou_threshold)
            finally:
                self.running_images, self.running_since = 0, None
            finished = time.perf_counter()
            if len(results) != len(batch):
                raise RuntimeError(f"inference returned {len(results)} results for {len(batch)} images")
            self._deliver(batch, results, finished)
            self.estimate.observe(len(images), finished - started)
            self.on_batch(BatchStats(images=len(images), jobs=len({item.job for item in batch}), seconds=finished - started))
        except Exception as exc:
            self._fail(batch, exc, "a batch failed; the worker goes on")

    def _deliver(self, batch: list[Item], results: list[DetectionResult], finished: float) -> None:
        for item, result in zip(batch, results):
            job = item.job
            job.results[item.index] = result
            if not job.future.done() and all(r is not None for r in job.results):
                job.finished = finished
                job.future.set_result(job.results)

    def _fail(self, items: list[Item], exc: Exception, message: str) -> None:
        """Fail the jobs of `items` with `exc`, logged once with their request ids."""
        jobs = list(dict.fromkeys(item.job for item in items))  # each job once, in order
        log.error("%s (requests %s)", message, ", ".join(job.request_id for job in jobs) or "none", exc_info=exc)
        for job in jobs:
            if not job.future.done():
                job.future.set_exception(exc)

    async def drain(self) -> None:
        """Stop accepting jobs, finish the accepted ones, stop the worker."""
        self._closing = True
        self._wakeup.set()
        if self._worker is not None and not self._worker.done():
            await self._worker
        self._thread.shutdown(wait=True)
