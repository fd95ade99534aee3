"""Draining on SIGTERM: readiness turns 503 at once, the server stops accepting only later.

A load balancer needs time to see a failing readiness probe and route elsewhere; closing the listening
socket at once would refuse requests it still sends. So the first SIGTERM only marks the service as
draining; ``drain_s`` later the signal goes on to the server (uvicorn), which stops accepting, lets
in-flight requests finish within its grace period, runs the shutdown and exits. A second SIGTERM
skips the wait.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any


class DrainOnSigterm:
    """Installs itself as the SIGTERM handler for the app's lifetime (main thread only)."""

    def __init__(self, on_drain: Callable[[], None], drain_s: float) -> None:
        self.on_drain = on_drain
        self.drain_s = drain_s
        self._previous: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining = False

    def install(self) -> None:
        """Take over SIGTERM, remembering the server's own handler to hand the signal on to."""
        if threading.current_thread() is not threading.main_thread():
            return  # in-process tests run the app off the main thread; signals cannot reach it there
        self._loop = asyncio.get_running_loop()
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def remove(self) -> None:
        """Give SIGTERM back to whoever had it."""
        if self._loop is not None and signal.getsignal(signal.SIGTERM) == self._handle:
            signal.signal(signal.SIGTERM, self._previous)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._draining:
            self._forward()
            return
        self._draining = True
        self.on_drain()
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._loop.call_later, self.drain_s, self._forward)

    def _forward(self) -> None:
        if signal.getsignal(signal.SIGTERM) != self._handle:
            return  # already forwarded
        signal.signal(signal.SIGTERM, self._previous)
        if callable(self._previous):
            self._previous(signal.SIGTERM, None)
        else:
            signal.raise_signal(signal.SIGTERM)
