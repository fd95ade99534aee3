"""The inference streams: threads that each run one batch at a time, off the event loop.

A batch normally holds one stream. A batch that runs alone (nothing else runs or waits) may hold
every stream, so that no other batch starts beside it while it runs on every core ("solo").
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class StreamPool:
    """``count`` inference threads, how many are busy, and a way to hold one or all of them."""

    def __init__(self, count: int, on_busy: Callable[[int], None] | None = None) -> None:
        self.count = count
        self.busy = 0  # streams held by running batches
        self._on_busy = on_busy
        self._executor = ThreadPoolExecutor(max_workers=count, thread_name_prefix="inference")
        self._free = asyncio.Semaphore(count)

    async def reserve(self) -> None:
        """Wait until a stream is free and reserve it (a batch is formed only when one can run it)."""
        await self._free.acquire()

    def unreserve(self) -> None:
        """Give back a stream reserved for a batch that did not form."""
        self._free.release()

    async def reserve_rest(self) -> int:
        """Reserve every other stream beside the one reserved already, for a batch that runs alone;
        the number it now holds. Returns at once when no stream is busy."""
        for _ in range(self.count - 1):
            await self._free.acquire()
        return self.count

    def occupy(self, streams: int) -> None:
        """Count ``streams`` reserved streams as busy, from now until their batch's :meth:`run` ends."""
        self.busy += streams
        self._report()

    async def run(self, streams: int, function: Callable[..., T], *args: Any) -> T:
        """Run ``function(*args)`` on an inference thread, then free the ``streams`` it held."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, function, *args)
        finally:
            self.busy -= streams
            self._report()
            for _ in range(streams):
                self._free.release()

    async def run_on_each(self, function: Callable[[], T]) -> list[T]:
        """Run ``function`` once on each inference thread at the same time (warm-up uses it to warm
        those very threads)."""
        loop = asyncio.get_running_loop()
        barrier = threading.Barrier(self.count)

        def together() -> T:
            barrier.wait(60)  # hold every thread until all have started, so each runs it once
            return function()

        return list(
            await asyncio.gather(*(loop.run_in_executor(self._executor, together) for _ in range(self.count)))
        )

    def shutdown(self) -> None:
        """Stop the threads once what runs on them has finished."""
        self._executor.shutdown(wait=True)

    def _report(self) -> None:
        if self._on_busy is not None:
            self._on_busy(self.busy)
