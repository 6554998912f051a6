"""The pixel budget: never over budget under concurrent, mixed reservations; first come, first
served; a reservation that cannot get room in time fails without losing anyone else's."""

from __future__ import annotations

import asyncio

import pytest

from vfnet.server.app.budget import BudgetTimeout, PixelBudget


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 30))


def test_concurrent_mixed_reservations_never_exceed_the_budget():
    async def scenario():
        budget = PixelBudget(100)
        peak, granted = [0], []

        async def use(name: str, pixels: int, hold_s: float) -> None:
            async with budget.reserve(pixels, timeout_s=10):
                granted.append(name)
                peak[0] = max(peak[0], budget.in_use)
                await asyncio.sleep(hold_s)

        sizes = [60, 30, 50, 10, 100, 20, 70, 40]
        await asyncio.gather(*(use(f"r{i}", size, 0.01 * (i % 3 + 1)) for i, size in enumerate(sizes)))
        assert peak[0] <= 100 and budget.in_use == 0 and sorted(granted) == sorted(f"r{i}" for i in range(8))
        return granted

    granted = run(scenario())
    # first come, first served: r2 (50) waits for room and nobody behind it overtakes it
    assert granted.index("r2") < granted.index("r3") < granted.index("r4")


def test_a_reservation_that_times_out_leaves_the_others_intact():
    async def scenario():
        budget = PixelBudget(100)
        order = []
        async with budget.reserve(80, timeout_s=1):
            big = asyncio.ensure_future(budget.reserve(50, timeout_s=0.05).__aenter__())
            await asyncio.sleep(0)

            async def small():
                async with budget.reserve(20, timeout_s=5):
                    order.append("small")

            small_task = asyncio.ensure_future(small())  # queued behind `big`, fits once `big` gives up
            with pytest.raises(BudgetTimeout):
                await big
            await small_task
            assert order == ["small"] and budget.in_use == 80
        assert budget.in_use == 0

    run(scenario())


def test_a_cancelled_waiter_gives_back_its_place():
    async def scenario():
        budget = PixelBudget(10)
        async with budget.reserve(10, timeout_s=1):
            waiter = asyncio.ensure_future(budget.reserve(5, timeout_s=5).__aenter__())
            await asyncio.sleep(0.01)
            waiter.cancel()  # the client went away
            with pytest.raises(asyncio.CancelledError):
                await waiter
        assert budget.in_use == 0 and not budget._waiters
        with pytest.raises(ValueError, match="cannot fit the pixel budget of 10"):
            async with budget.reserve(11, timeout_s=1):
                pass

    run(scenario())
