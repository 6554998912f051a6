"""What the routes share: the detector, the pixel budget and decode threads, the batcher, the
metrics, and readiness.

Decoding happens under the pixel budget (see budget.py), in the decode threads, and each image is
resized to the model's input as it is decoded, so a request holds only model-sized arrays while it
waits for its batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from vfnet.server.runtime import Detector, PreparedImage

from .batcher import Batcher, BatchStats
from .budget import PixelBudget
from .metrics import Metrics
from .settings import ServeSettings

log = logging.getLogger("vfnet.server")
STUCK_AFTER_AT_LEAST_S = 5.0  # a backend call running longer than this and the request timeout is stuck


# Pillow allocates a decoded image in blocks of 16 MiB by default. glibc serves such blocks from its
# heap once a freed one has raised its mmap threshold, and a fragmented heap keeps them: RSS stayed
# ~400 MB above idle after large images. Blocks above glibc's 32 MiB threshold limit are always
# mmap-ed, so their memory returns to the system the moment an image is freed.
PILLOW_BLOCK_BYTES = 64 * 1024 * 1024


class Service:
    def __init__(self, detector: Detector, settings: ServeSettings, metrics: Metrics):
        Image.core.set_block_size(PILLOW_BLOCK_BYTES)
        self.detector = detector
        self.settings = settings
        self.metrics = metrics
        self.ready = False
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
        """Liveness: None while the batch worker serves; else what is wrong with it."""
        return self.batcher.health()

    def unready_reason(self) -> str | None:
        """Readiness: None when requests can be served now; else why not."""
        return "the model is warming up" if not self.ready else self.health()

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
        long_side, short_side = self.detector.metadata.input_size
        blank = self.detector.prepare(np.zeros((short_side, long_side, 3), dtype=np.uint8))
        for size in range(1, self.settings.max_batch_size + 1):
            started = time.perf_counter()
            self.detector.infer([blank] * size)
            self.batcher.estimate.observe(size, time.perf_counter() - started)

    async def start(self) -> None:
        """Start the batcher and warm up in the background; `ready` turns True when done."""
        self.batcher.start()
        started = time.perf_counter()
        await asyncio.get_running_loop().run_in_executor(None, self.warm_up)
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
