"""Service.run_detection without HTTP: what every protocol gets from the service, for concurrent,
mixed requests sharing one batcher and pixel budget (a real Detector over a fake backend)."""

from __future__ import annotations

import asyncio
import time

import pytest

from vfnet.server.app.errors import ClientGone, RequestFailed
from vfnet.server.app.metrics import Metrics
from vfnet.server.app.service import DetectOptions, Service
from vfnet.server.app.settings import ServeSettings
from vfnet.server.runtime import Detector

from .conftest import ControlledBackend, png


async def staying() -> None:
    """A client that never disconnects."""
    await asyncio.Event().wait()


async def served(backend: ControlledBackend, **settings) -> Service:
    service = Service(Detector(backend), ServeSettings(_env_file=None, **settings), Metrics())
    await service.start()
    return service


def test_concurrent_mixed_requests_each_get_their_own_answer():
    backend = ControlledBackend()

    async def scenario():
        service = await served(backend, max_batch_size=4)
        run = service.run_detection
        now = time.perf_counter()
        answers = await asyncio.gather(
            run([png((40, 30))], DetectOptions(), "plain", now, staying),
            run([png(), b"not an image", png()], DetectOptions(), "broken", now, staying),
            run([png((30, 40)), png((80, 20))], DetectOptions(classes=("dog",)), "dogs", now, staying),
            run([png()], DetectOptions(score_threshold=0.7), "strict", now, staying),
            run([png()], DetectOptions(max_detections=0), "none", now, staying),
            return_exceptions=True,
        )
        await service.stop()
        return answers

    plain, broken, dogs, strict, none = asyncio.run(scenario())
    [result] = plain.results
    assert result.class_names == ["cat", "dog"] and (result.width, result.height) == (40, 30)
    assert result.boxes[0].tolist() == pytest.approx([0.625, 0.625, 12.5, 12.5])  # 40x30 was resized to 64x48
    assert set(plain.timing_ms) == {"decode", "queue", "inference", "total"}
    assert isinstance(broken, RequestFailed) and broken.status == 400 and broken.detail.startswith("image 2 of 3: ")
    assert [r.class_names for r in dogs.results] == [["dog"], ["dog"]] and [r.width for r in dogs.results] == [30, 80]
    assert strict.results[0].class_names == ["cat"] and len(none.results[0]) == 0


def test_bad_options_are_refused_before_any_work():
    backend = ControlledBackend()
    service = Service(Detector(backend), ServeSettings(_env_file=None), Metrics())
    with pytest.raises(RequestFailed, match="unknown class 'wolf'; this model knows: cat, dog") as refused:
        service.check_options(DetectOptions(classes=("wolf",)))
    assert refused.value.status == 422 and backend.images_seen == 0


def test_a_client_that_leaves_is_dropped_and_its_images_never_computed():
    backend = ControlledBackend()

    async def scenario():
        service = await served(backend, max_batch_size=1)
        backend.mode = "hang"  # the first request holds the worker ...
        first = asyncio.ensure_future(service.run_detection([png()], DetectOptions(), "first", time.perf_counter(), staying))
        await asyncio.get_running_loop().run_in_executor(None, backend.hanging.wait, 10)
        seen = backend.images_seen

        async def gone() -> None:
            await asyncio.sleep(0.05)

        with pytest.raises(ClientGone):  # ... while the second one's client goes away
            await service.run_detection([png()], DetectOptions(), "second", time.perf_counter(), gone)
        backend.mode = "ok"
        backend.release.set()
        await first
        await service.stop()
        return seen

    seen_before = asyncio.run(scenario())
    assert backend.images_seen == seen_before + 1  # the first request's image only
