"""The batcher on its own: identity of jobs, cancellation, failures that stay local, health, admission
by estimated wait, and batches of one IoU threshold and one canvas. The model is a fake `infer`."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from vfnet.server.app.batcher import Batcher, Overloaded, WaitEstimate
from vfnet.server.runtime import PreparedImage


def image(h: int = 64, w: int = 64) -> PreparedImage:
    return PreparedImage(pixels=np.zeros((h, w, 3), np.uint8), original_size=(h, w), canvas=(-(-h // 32) * 32, -(-w // 32) * 32))


class FakeModel:
    """`infer` records each call's images and IoU; `gate` (when set) holds calls until released."""

    def __init__(self, gate: bool = False):
        self.calls: list[tuple[list[PreparedImage], float]] = []
        self.gate = threading.Event()
        if not gate:
            self.gate.set()
        self.entered = threading.Event()

    def infer(self, images, iou):
        self.calls.append((list(images), iou))
        self.entered.set()
        assert self.gate.wait(10)
        return [f"result of {id(i)}" for i in images]


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 30))


async def until(condition, seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.005)):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached")


def test_three_ordinary_requests_while_a_batch_runs():
    """The failure seen in production: an 8-image job running, then three single-image jobs, the
    middle one with another IoU threshold. A generated __eq__ on jobs compared their arrays and
    killed the worker; every job must be answered and the worker must go on."""

    async def scenario():
        model = FakeModel(gate=True)
        batcher = Batcher(model.infer, max_batch_size=8)
        batcher.start()
        big = batcher.submit([image() for _ in range(8)], 0.6, "big")
        await until(model.entered.is_set)
        small = [batcher.submit([image()], iou, f"small{i}") for i, iou in enumerate((0.6, 0.5, 0.6))]
        model.gate.set()
        answers = await asyncio.gather(*(job.future for job in (big, *small)))
        later = batcher.submit([image()], 0.6, "later")
        answers.append(await later.future)
        assert [len(a) for a in answers] == [8, 1, 1, 1, 1]
        assert batcher.health() is None and batcher.queued_images == 0
        # the two 0.6 jobs shared a call; the 0.5 job had its own
        assert [(len(images), iou) for images, iou in model.calls] == [(8, 0.6), (2, 0.6), (1, 0.5), (1, 0.6)]
        await batcher.drain()

    run(scenario())


def test_a_cancelled_job_leaves_the_queue_at_once_and_is_never_computed():
    async def scenario():
        model = FakeModel(gate=True)
        batcher = Batcher(model.infer, max_batch_size=1)
        batcher.start()
        first = batcher.submit([image()], 0.6, "first")
        await until(model.entered.is_set)
        gone = batcher.submit([image(), image()], 0.6, "gone")
        kept = batcher.submit([image()], 0.6, "kept")
        assert batcher.queued_images == 3
        gone.future.cancel()  # what a timeout or a disconnect does
        await asyncio.sleep(0)
        assert batcher.queued_images == 1
        model.gate.set()
        await asyncio.gather(first.future, kept.future)
        computed = {id(i) for images, _ in model.calls for i in images}
        assert not computed & {id(i) for i in gone.images}
        assert len(model.calls) == 2
        await batcher.drain()

    run(scenario())


def test_a_failing_batch_fails_only_its_jobs_and_is_logged_once_with_request_ids(caplog):
    async def scenario():
        poison = image()

        def infer(images, iou):
            if any(i is poison for i in images):
                raise RuntimeError("backend fault")
            if len(images) == 3:
                return ["too few"]  # a wrong result count is caught too
            return ["ok"] * len(images)

        batcher = Batcher(infer, max_batch_size=4)
        batcher.start()
        bad = batcher.submit([poison], 0.5, "req-bad")
        with pytest.raises(RuntimeError, match="backend fault"):
            await bad.future
        short = batcher.submit([image(), image(), image()], 0.6, "req-short")
        with pytest.raises(RuntimeError, match="returned 1 results for 3 images"):
            await short.future
        good = batcher.submit([image()], 0.6, "req-good")
        assert await good.future == ["ok"]
        assert batcher.health() is None
        await batcher.drain()

    with caplog.at_level("ERROR", logger="vfnet.server.batcher"):
        run(scenario())
    failures = [r for r in caplog.records if r.name == "vfnet.server.batcher"]
    assert [r.getMessage() for r in failures] == [
        "a batch failed; the worker goes on (requests req-bad)",
        "a batch failed; the worker goes on (requests req-short)",
    ]


def test_health_names_a_stopped_or_stuck_worker():
    class Fatal(BaseException):
        """Escapes `except Exception`, as a dying worker's error would."""

    async def scenario():
        model = FakeModel(gate=True)
        batcher = Batcher(model.infer, stuck_after_s=0.05, estimate=WaitEstimate(initial=0.001))
        assert batcher.health() == "the batch worker has not started"
        batcher.start()
        assert batcher.health() is None
        batcher.submit([image()], 0.6)
        await until(model.entered.is_set)
        await until(lambda: batcher.health() is not None)
        assert batcher.health().startswith("the batch worker is stuck: a backend call of 1 images has run for")
        model.gate.set()
        await until(lambda: batcher.health() is None)

        def dies(images, iou):
            raise Fatal("thread state corrupted")

        batcher.infer = dies
        job = batcher.submit([image()], 0.6)
        await until(lambda: batcher.health() is not None)
        assert batcher.health() == "the batch worker stopped (Fatal('thread state corrupted'))"
        with pytest.raises(RuntimeError, match=r"the batch worker stopped \(Fatal"):
            await job.future  # answered at once, not left to time out

    run(scenario())


def test_admission_refuses_a_job_whose_estimated_wait_is_too_long():
    async def scenario():
        model = FakeModel(gate=True)
        batcher = Batcher(model.infer, max_batch_size=2, queue_size=16, max_wait_s=1.0, estimate=WaitEstimate(initial=0.5))
        batcher.start()
        batcher.submit([image(), image()], 0.6)  # nothing ahead
        await until(model.entered.is_set)  # 2 images running
        batcher.submit([image()], 0.6)  # 2 ahead x 0.5 s = 1.0 s: at the limit, admitted
        with pytest.raises(Overloaded, match=r"estimated wait of 1.50 s for the 3 images ahead exceeds the limit of 1 s") as refused:
            batcher.submit([image()], 0.6)
        assert refused.value.retry_after_s == 1
        assert batcher.queued_images == 1  # the refused job left nothing behind
        with pytest.raises(Overloaded, match=r"the queue is full \(1 of 16 images waiting\)"):
            batcher.submit([image()] * 16, 0.6)
        model.gate.set()
        await batcher.drain()

    run(scenario())


def test_wait_estimate_follows_measured_seconds_per_image():
    estimate = WaitEstimate(initial=1.0, weight=0.5)
    assert estimate.wait_s(3) == 3.0
    estimate.observe(images=1, seconds=0.2)  # half-way to 0.2
    assert estimate.seconds_per_image == pytest.approx(0.6)
    estimate.observe(images=2, seconds=0.4)  # a batch of two counts twice: 0.6 -> 0.2 by three quarters
    assert estimate.seconds_per_image == pytest.approx(0.3)
    assert estimate.wait_s(10) == pytest.approx(3.0)


def test_batches_never_mix_iou_thresholds_or_canvases_and_keep_arrival_order():
    async def scenario():
        model = FakeModel(gate=True)
        batcher = Batcher(model.infer, max_batch_size=8)
        batcher.start()
        blocker = batcher.submit([image()], 0.6)
        await until(model.entered.is_set)
        square, wide = image(64, 64), image(64, 300)
        a = batcher.submit([square, wide, square], 0.6)  # one request, two canvases
        b = batcher.submit([wide], 0.6)
        c = batcher.submit([square], 0.4)
        d = batcher.submit([square], 0.6)
        model.gate.set()
        results = await asyncio.gather(blocker.future, a.future, b.future, c.future, d.future)
        assert [len(r) for r in results] == [1, 3, 1, 1, 1]
        assert results[1] == [f"result of {id(i)}" for i in a.images]  # a job's results in its image order
        keys = [{(i.canvas, iou) for i in images} for images, iou in model.calls]
        assert all(len(k) == 1 for k in keys)
        assert [sorted(k)[0] for k in keys[1:]] == [((64, 64), 0.6), ((64, 320), 0.6), ((64, 64), 0.4)]
        assert [len(images) for images, _ in model.calls] == [1, 3, 2, 1]
        await batcher.drain()

    run(scenario())
