"""Dynamic batching across requests, with a bounded queue, timeouts and per-request IoU thresholds.

Requests put decoded images on one queue. A single worker task takes the oldest waiting job, waits
up to `max_delay_s` for more jobs *with the same IoU threshold* (NMS runs inside the model, so one
backend call has one threshold), until `max_batch_size` images are gathered, and runs the batch in a
thread (the event loop never blocks on inference). Jobs keep their arrival order.

- The queue is bounded in images: `submit` raises `QueueFull` at once when a job does not fit.
- A job whose caller stopped waiting (timeout, disconnect) is cancelled: it leaves the queue, frees
  its place, and is never run.
- `drain()` (at shutdown) stops taking new jobs and finishes every job already accepted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from vfnet.server.runtime import DetectionResult


class QueueFull(Exception):
    """The queue cannot take the job now; the caller should answer 503 with Retry-After."""


class ShuttingDown(Exception):
    """The batcher no longer accepts jobs."""


@dataclass
class Job:
    images: list[np.ndarray]
    iou_threshold: float
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)
    started: float = 0.0  # when its batch began running
    finished: float = 0.0


@dataclass(frozen=True)
class BatchStats:
    images: int  # images in the backend call
    jobs: int
    seconds: float  # backend call duration


class Batcher:
    """`infer(images, iou_threshold) -> results` runs one batch (called in a worker thread)."""

    def __init__(
        self,
        infer: Callable[[list[np.ndarray], float], list[DetectionResult]],
        max_batch_size: int = 8,
        max_delay_s: float = 0.005,
        queue_size: int = 64,
        on_batch: Callable[[BatchStats], None] = lambda stats: None,
    ):
        if max_batch_size < 1 or queue_size < 1:
            raise ValueError("max_batch_size and queue_size must be at least 1")
        self.infer = infer
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.queue_size = queue_size
        self.on_batch = on_batch
        self.pending: list[Job] = []
        self.queued_images = 0
        self._wakeup = asyncio.Event()
        self._closing = False
        self._worker: asyncio.Task | None = None
        self.running_images = 0  # images in the batch being computed now

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    async def submit(self, images: list[np.ndarray], iou_threshold: float) -> Job:
        """Queue a job and return it; await `job.future` for its results (one per image)."""
        if self._closing:
            raise ShuttingDown()
        if len(images) > self.queue_size or self.queued_images + len(images) > self.queue_size:
            raise QueueFull()
        job = Job(images, iou_threshold, asyncio.get_running_loop().create_future())
        job.future.add_done_callback(lambda _: self._forget(job))
        self.pending.append(job)
        self.queued_images += len(images)
        self._wakeup.set()
        return job

    def _forget(self, job: Job) -> None:
        """A cancelled job leaves the queue at once; a finished one is already gone."""
        if job in self.pending:
            self.pending.remove(job)
            self.queued_images -= len(job.images)

    def _take_batch(self) -> list[Job]:
        first = self.pending[0]
        batch, size = [], 0
        for job in list(self.pending):
            if job.iou_threshold != first.iou_threshold:
                continue
            if batch and size + len(job.images) > self.max_batch_size:
                break
            batch.append(job)
            size += len(job.images)
        for job in batch:
            self.pending.remove(job)
            self.queued_images -= len(job.images)
        return batch

    def _batch_ready(self) -> bool:
        first = self.pending[0]
        same = sum(len(j.images) for j in self.pending if j.iou_threshold == first.iou_threshold)
        return same >= self.max_batch_size or time.perf_counter() - first.enqueued >= self.max_delay_s

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.pending:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if not self._batch_ready() and not self._closing:
                wait = self.max_delay_s - (time.perf_counter() - self.pending[0].enqueued)
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), timeout=max(wait, 0.0))
                except asyncio.TimeoutError:
                    pass
                continue
            batch = self._take_batch()
            images = [image for job in batch for image in job.images]
            started = time.perf_counter()
            for job in batch:
                job.started = started
            self.running_images = len(images)
            try:
                results = await loop.run_in_executor(None, self.infer, images, batch[0].iou_threshold)
            except Exception as exc:  # a backend failure fails this batch's jobs, not the server
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            finally:
                self.running_images = 0
            finished = time.perf_counter()
            self.on_batch(BatchStats(images=len(images), jobs=len(batch), seconds=finished - started))
            offset = 0
            for job in batch:
                job.finished = finished
                if not job.future.done():
                    job.future.set_result(results[offset : offset + len(job.images)])
                offset += len(job.images)

    async def drain(self) -> None:
        """Stop accepting jobs, finish the accepted ones, stop the worker."""
        self._closing = True
        self._wakeup.set()
        if self._worker is not None:
            await self._worker
