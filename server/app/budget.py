"""A budget on decoded pixels in flight, so that memory stays bounded whatever requests arrive.

An image's full-resolution pixels exist only while it is decoded and resized (or drawn on, for
/detect/annotated). Before that, the request reserves the image's pixel count, read from its header;
reservations are granted first come, first served, while their sum stays within the budget. A
request that cannot get its reservation within its deadline gets `BudgetTimeout` (the service
answers 503). Decoding costs about 7 bytes per pixel at its peak (Pillow's 4-byte RGBX image plus
the 3-byte array made from it), so the budget bounds that memory to about 7 x `budget` bytes.
"""

from __future__ import annotations

import asyncio
from collections import deque
from contextlib import asynccontextmanager


class BudgetTimeout(Exception):
    """No room in the budget before the deadline."""


class PixelBudget:
    def __init__(self, budget: int):
        if budget < 1:
            raise ValueError("the pixel budget must be at least 1")
        self.budget = budget
        self.in_use = 0
        self._waiters: deque[tuple[int, asyncio.Future]] = deque()

    @asynccontextmanager
    async def reserve(self, pixels: int, timeout_s: float):
        """Hold `pixels` of the budget for the body of the `async with` (raises BudgetTimeout, or
        ValueError for a reservation larger than the whole budget)."""
        if pixels > self.budget:
            raise ValueError(f"an image of {pixels:,} pixels cannot fit the pixel budget of {self.budget:,}")
        await self._acquire(pixels, timeout_s)
        try:
            yield
        finally:
            self._release(pixels)

    async def _acquire(self, pixels: int, timeout_s: float) -> None:
        if not self._waiters and self.in_use + pixels <= self.budget:
            self.in_use += pixels
            return
        granted = asyncio.get_running_loop().create_future()
        entry = (pixels, granted)
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(asyncio.shield(granted), timeout=max(timeout_s, 0.0))
        except asyncio.TimeoutError:
            if granted.done() and not granted.cancelled():  # granted just as the wait ran out: keep it
                return
            self._waiters.remove(entry)
            self._grant()  # a smaller reservation behind this one may fit now
            raise BudgetTimeout() from None
        except BaseException:
            if granted.done() and not granted.cancelled():
                self._release(pixels)
            else:
                self._waiters.remove(entry)
                self._grant()
            raise

    def _release(self, pixels: int) -> None:
        self.in_use -= pixels
        self._grant()

    def _grant(self) -> None:
        """Grant waiting reservations in order while the first one fits."""
        while self._waiters and self.in_use + self._waiters[0][0] <= self.budget:
            pixels, granted = self._waiters.popleft()
            self.in_use += pixels
            granted.set_result(None)
