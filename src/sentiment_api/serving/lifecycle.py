"""The app's lifespan, and draining on SIGTERM: readiness turns 503 at once, the server stops
accepting only later.

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
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

from fastapi import FastAPI

from sentiment_api.core.settings import Settings
from sentiment_api.serving.connections import STATE_KEY, ConnectionLimits
from sentiment_api.serving.observability import Metrics, forget_dead_processes, start_metrics_server


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    """Load and warm the model in the background and drain on SIGTERM; on the way out, finish the
    queued work and close what ``create_app`` opened (on ``app.state``)."""
    state = app.state
    settings: Settings = state.settings
    metrics: Metrics = state.metrics
    forget_dead_processes()  # a worker that replaces a killed one clears its predecessor's gauges
    # one worker serves its own metrics port; with several, the supervising process does (runner.py)
    own_port = settings.metrics_port if settings.workers == 1 else None
    stop_metrics = (
        start_metrics_server(settings.host, own_port, metrics.registry) if own_port is not None else None
    )
    connection_limits = ConnectionLimits(
        settings.read_timeout_s,
        settings.max_header_bytes,
        lambda reason: metrics.dropped_connections.labels(reason).inc(),
    )
    drain = DrainOnSigterm(state.service.drain, settings.drain_s)
    state.service.start()
    drain.install()
    try:
        yield {STATE_KEY: connection_limits}  # for the HTTP protocol (connections.py)
    finally:
        drain.remove()
        await state.service.stop()
        metrics.close()
        state.buckets.close()
        if stop_metrics is not None:
            stop_metrics()
        if state.tracing is not None:
            state.tracing.shutdown()


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
