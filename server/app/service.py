"""What every protocol's routes share: the detector, the pixel budget and decode threads, the
batcher, the metrics, readiness, and the detection flow of one request (`run_detection`).

A request's encoded images flow: admission (refused at once when the estimated wait is too long)
-> decoding under the pixel budget (see budget.py), in the decode threads, each image resized to the
model's input as it is decoded, so a request holds only model-sized arrays while it waits -> the
batcher -> per-request filters. Nothing here knows HTTP bodies: a protocol reads the images, calls
`run_detection`, and turns the results or a `RequestFailed` into its own answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import Image

from vfnet.server.runtime import DetectionResult, Detector, ImageError, PreparedImage
from vfnet.server.runtime.images import prepare_image

from .batcher import Batcher, BatchStats, Job, Overloaded, ShuttingDown
from .budget import BudgetTimeout, PixelBudget
from .errors import ClientGone, RequestFailed, busy
from .metrics import Metrics
from .settings import ServeSettings

log = logging.getLogger("vfnet.server")
STUCK_AFTER_AT_LEAST_S = 5.0  # a backend call running longer than this and the request timeout is stuck


# Pillow allocates a decoded image in blocks of 16 MiB by default. glibc serves such blocks from its
# heap once a freed one has raised its mmap threshold, and a fragmented heap keeps them: RSS stayed
# ~400 MB above idle after large images. Blocks above glibc's 32 MiB threshold limit are always
# mmap-ed, so their memory returns to the system the moment an image is freed.
PILLOW_BLOCK_BYTES = 64 * 1024 * 1024

IMAGE_STATUS = {"undecodable": 400, "too_large": 413, "unsupported": 415}  # ImageError.kind -> status


@dataclass(frozen=True)
class DetectOptions:
    """One request's filters; None takes the default (the server's score threshold, the model's
    NMS IoU threshold and detection limit, every class)."""

    score_threshold: float | None = None
    iou_threshold: float | None = None
    max_detections: int | None = None
    classes: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Detections:
    """A request's answer: one result per image in request order (boxes xyxy in original pixels),
    and the time each step took, in ms (decode, queue, inference, total)."""

    results: list[DetectionResult]
    timing_ms: dict[str, float]


class Service:
    """One served model and everything its requests share. `start()` starts the batcher and warms
    up; `ready` turns True when done; `stop()` finishes every accepted request."""

    def __init__(self, detector: Detector, settings: ServeSettings, metrics: Metrics):
        Image.core.set_block_size(PILLOW_BLOCK_BYTES)
        self.detector = detector
        self.settings = settings
        self.metrics = metrics
        self.ready = False
        self.failure: str | None = None  # why the warm-up failed
        self.decode_pool = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="decode")
        self.pixel_budget = PixelBudget(settings.pixels_in_flight)
        self.batcher = Batcher(
            detector.infer,
            max_batch_size=settings.max_batch_size,
            max_delay_s=settings.max_batch_delay_ms / 1000,
            queue_size=settings.queue_size,
            max_wait_s=settings.max_queue_wait_ms / 1000,
            stuck_after_s=max(settings.request_timeout_s, STUCK_AFTER_AT_LEAST_S),
            on_batch=self._record_batch,
        )

    def _record_batch(self, stats: BatchStats) -> None:
        self.metrics.batch_size.observe(stats.images)
        self.metrics.inference_seconds.observe(stats.seconds)
        self.metrics.images.inc(stats.images)

    def health(self) -> str | None:
        """Liveness: None while the batch worker serves; else what is wrong with it (or with the warm-up)."""
        return self.failure or self.batcher.health()

    def unready_reason(self) -> str | None:
        """Readiness: None when requests can be served now; else why not."""
        return self.failure or ("the model is warming up" if not self.ready else self.health())

    def check_options(self, options: DetectOptions) -> None:
        """422 naming the first bad option; call it before reading the images."""
        try:
            self.detector.check_options(options.score_threshold, options.iou_threshold, options.max_detections, options.classes)
        except ValueError as exc:
            raise RequestFailed(422, f"bad parameters: {exc}") from None

    async def run_detection(
        self,
        encoded: list[bytes],
        options: DetectOptions,
        request_id: str,
        started: float,
        disconnected: Callable[[], Awaitable[None]],
    ) -> Detections:
        """Detect objects in one request's encoded images (options already checked). `started`
        (time.perf_counter) is when the request arrived: the request timeout counts from there.
        `disconnected()` returns when the client has gone; the request is then dropped (ClientGone).
        Raises RequestFailed with the status every protocol answers."""
        with self._admission():
            self.batcher.admit(len(encoded))  # refuse before spending any decoding on the request
        images = await self._prepare_all(encoded)
        decoded = time.perf_counter()
        iou = self.detector.card.iou_threshold if options.iou_threshold is None else options.iou_threshold
        with self._admission():
            job = self.batcher.submit(images, iou, request_id)
        results = await self._wait_for(job, self.settings.request_timeout_s - (decoded - started), disconnected)
        # before this request's filters, so that what a client asks does not change the quality metrics
        self.metrics.quality.record(results, self.settings.default_score_threshold, counts=iou == self.detector.card.iou_threshold)
        score = self.settings.default_score_threshold if options.score_threshold is None else options.score_threshold
        results = [self.detector.select(r, score, options.max_detections, options.classes) for r in results]
        finished = time.perf_counter()
        self.metrics.queue_seconds.observe(job.started - job.enqueued)
        timing = {
            "decode": (decoded - started) * 1000,
            "queue": (job.started - job.enqueued) * 1000,
            "inference": (job.finished - job.started) * 1000,
            "total": (finished - started) * 1000,
        }
        return Detections(results, {k: round(v, 2) for k, v in timing.items()})

    @contextmanager
    def _admission(self):
        """The batcher's refusals as 503 with Retry-After."""
        try:
            yield
        except Overloaded as exc:
            raise busy(str(exc), exc.retry_after_s) from None
        except ShuttingDown:
            raise busy("server shutting down") from None

    async def _prepare_all(self, encoded: list[bytes]) -> list[PreparedImage]:
        """Decode and resize every image (concurrently, under the pixel budget). The first failure
        fails the request and stops the other images' work."""

        async def prepare(index: int, data: bytes) -> PreparedImage:
            try:
                return await self.prepare(data)
            except ImageError as exc:
                where = f"image {index + 1} of {len(encoded)}: " if len(encoded) > 1 else ""
                raise RequestFailed(IMAGE_STATUS[exc.kind], where + str(exc)) from None
            except BudgetTimeout:
                raise busy(
                    f"server busy: no room to decode within {self.settings.max_queue_wait_ms:g} ms (pixel budget {self.pixel_budget.budget:,})"
                ) from None

        tasks = [asyncio.ensure_future(prepare(i, data)) for i, data in enumerate(encoded)]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)  # their reservations are released
            raise

    async def _wait_for(self, job: Job, timeout_s: float, disconnected: Callable[[], Awaitable[None]]) -> list[DetectionResult]:
        """The job's results; 504 after `timeout_s`, ClientGone if the client disconnects first.
        Either way the job is cancelled, so its images leave the queue and are never computed."""
        watcher = asyncio.ensure_future(disconnected())
        try:
            await asyncio.wait({job.future, watcher}, timeout=max(timeout_s, 0.001), return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
        if job.future.done():
            try:
                return job.future.result()
            except Exception:  # the batcher has logged it once, with the request ids
                raise RequestFailed(500, f"inference failed (request id {job.request_id}); the server log has the details") from None
        job.future.cancel()
        if watcher.done() and not watcher.cancelled():
            raise ClientGone("while waiting for the model")
        raise RequestFailed(504, f"timed out after {self.settings.request_timeout_s:g} s waiting for the model")

    async def prepare(self, data: bytes) -> PreparedImage:
        """One image decoded and resized for the model (raises ImageError, or BudgetTimeout)."""
        return await self._decode_in_budget(self.detector.prepare, data)

    async def decode_full(self, data: bytes) -> np.ndarray:
        """One image at full resolution, for drawing on (raises ImageError, or BudgetTimeout)."""
        return await self._decode_in_budget(self.detector.decode, data)

    async def _decode_in_budget(self, work, data: bytes):
        """`work(data)` in a decode thread while the image's pixels are reserved in the budget; the
        reservation waits at most `max_queue_wait_ms`."""
        pixels = self.detector.pixels(data)  # header only: bad or oversized images fail here, at once
        async with self.pixel_budget.reserve(pixels, self.settings.max_queue_wait_ms / 1000):
            done = asyncio.get_running_loop().run_in_executor(self.decode_pool, work, data)
            try:
                return await asyncio.shield(done)
            except asyncio.CancelledError:
                await asyncio.wait([done])  # keep the reservation until the thread has let go of the pixels
                raise

    def warm_up(self) -> None:
        """One backend call per batch size the batcher can form, at the model's full input size;
        the timings seed the batcher's wait estimate."""
        card = self.detector.card
        long_side, short_side = card.input_size
        # not subject to max_pixels, which limits uploads (a server may take only smaller images)
        blank = prepare_image(np.zeros((short_side, long_side, 3), dtype=np.uint8), card.input_size, card.size_divisor, max_pixels=None)
        for size in range(1, self.settings.max_batch_size + 1):
            started = time.perf_counter()
            self.detector.infer([blank] * size)
            self.batcher.estimate.observe(size, time.perf_counter() - started)

    async def start(self) -> None:
        """Start the batcher and warm up in the background; `ready` turns True when done. If the
        warm-up fails, readiness and liveness fail with the reason (an orchestrator restarts us)."""
        self.batcher.start()
        started = time.perf_counter()
        try:
            await asyncio.get_running_loop().run_in_executor(None, self.warm_up)
        except Exception as exc:
            log.exception("the warm-up failed")
            self.failure = f"the warm-up failed: {exc}"
            return
        self.ready = True
        log.info(
            "ready: warmed up batch sizes 1..%d in %.1f s (%.1f ms per image)",
            self.settings.max_batch_size,
            time.perf_counter() - started,
            self.batcher.estimate.seconds_per_image * 1000,
        )

    async def stop(self) -> None:
        self.ready = False
        await self.batcher.drain()  # finish every accepted request
        self.decode_pool.shutdown(wait=True)
