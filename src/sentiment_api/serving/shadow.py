"""Shadow traffic: a candidate model answers a share of a live model's requests off the response path,
and how it agrees with the live one is measured before anyone promotes it.

The candidate runs in a process of its own (``shadow_worker.py``) at idle priority, so it shares no
interpreter lock with the live requests and gets a core only when they leave one free. And it runs
only while no request is under way in the service: the process is paused (``SIGSTOP``) when one
comes in while the shadow has work, and goes on (``SIGCONT``) when the last one is answered, so it
takes no core, cache or memory bandwidth from a live request, even on a machine whose every core
serves. The live side's part is small: after a request was answered, it pickles the texts and the
live probabilities and sends them without waiting; when the comparison comes back, the event loop
counts it. Shadow work is the first dropped under load (while the live model has texts queued, the
shadow is still busy with an earlier request, or its socket is full), and every dropped request is
counted; under load without a pause the shadow compares little, and the live model loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import os
import pickle
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sentiment_api.serving.observability import Metrics
from sentiment_api.serving.served_model import Outcome, State
from sentiment_api.serving.shadow_protocol import MAX_MESSAGE, Compared

log = logging.getLogger("sentiment_api.serving")
LARGEST = 5  # the largest probability differences kept for the summary
LATENCIES = 1000  # the last shadow latencies kept for its p50 and p99
SHADOW_TIMEOUT_S = 30.0  # a request the shadow has not answered in this much running time counts as failed
SIGSTOP = getattr(signal, "SIGSTOP", None)  # None where the OS has no such signal: the shadow is not paused
SIGCONT = getattr(signal, "SIGCONT", None)
LOAD_TIMEOUT_S = 300.0  # for the shadow's process to load and warm its package
STOP_TIMEOUT_S = 10.0  # for the comparison under way to come back, then for the process to exit


@dataclass
class ShadowStats:
    """What the comparison found so far (this process)."""

    compared: int = 0  # texts
    agreed: int = 0
    dropped: int = 0  # requests
    failed: int = 0  # requests
    live_labels: Counter[str] = field(default_factory=Counter)
    shadow_labels: Counter[str] = field(default_factory=Counter)
    largest: list[tuple[float, str, str]] = field(default_factory=list)  # (|Δp|, live, shadow) heap
    seconds: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCIES))


class Shadow:
    """A candidate package attached to one live model, answering ``share`` of its requests in a
    process of its own."""

    def __init__(
        self, live_name: str, package: Path, share: float, metrics: Metrics, device: str = "cpu"
    ) -> None:
        self.live_name = live_name
        self.package = package
        self.share = share
        self.device = device
        self.state = State.LOADING
        self.version: str | None = None
        self.error: str | None = None  # why the shadow failed, in one line
        self.stats = ShadowStats()
        self.process: subprocess.Popen[bytes] | None = None
        self._metrics = metrics
        self._random = random.Random(0)
        self._channel: socket.socket | None = None
        self._buffer = bytearray(MAX_MESSAGE)
        self._numbers = itertools.count()
        self._pending: dict[int, float] = {}  # request number -> the shadow's running time when it was sent
        self._paused = False  # the process is stopped while live requests are under way
        self._ran = 0.0  # seconds the process was let run, up to the last pause
        self._resumed = time.monotonic()
        self._reaping: asyncio.Task[None] | None = None
        self._loaded = asyncio.Event()  # ready or failed
        self._idle = asyncio.Event()  # nothing pending
        self._idle.set()

    def start(self) -> None:
        """Start the shadow's process; it turns ready once the package is loaded and warmed there."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, MAX_MESSAGE)
            command = [
                sys.executable, "-m", "sentiment_api.serving.shadow_worker",
                "--socket-fd", str(theirs.fileno()), "--package", str(self.package), "--device", self.device,
                "--parent", str(os.getpid()),
            ]  # fmt: skip
            self.process = subprocess.Popen(command, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        ours.setblocking(False)
        self._channel = ours
        asyncio.get_running_loop().add_reader(ours.fileno(), self._receive)
        self._metrics.activity.listen(self)

    async def load(self) -> None:
        """Start the process and wait until it is ready, or :attr:`state` says it failed."""
        self.start()
        try:
            await asyncio.wait_for(self._loaded.wait(), LOAD_TIMEOUT_S)
        except TimeoutError:
            self._fail(f"its process did not load the package within {LOAD_TIMEOUT_S:g} s")

    def offer(self, texts: list[str], live: Outcome, live_labels: list[str], live_queued: int) -> None:
        """Send ``texts`` and the live answer to the shadow, unless the draw, the load or its state
        says no (``live_labels``: the order of the live answer's probability columns)."""
        if self._random.random() >= self.share:
            return
        self._expire()
        if self.state is not State.READY or live_queued or self._pending or self._channel is None:
            self._drop()
            return
        number = next(self._numbers)
        message = pickle.dumps((number, texts, live.probabilities, live_labels), pickle.HIGHEST_PROTOCOL)
        if len(message) > MAX_MESSAGE:  # more than the shadow reads in one message
            self._drop()
            return
        try:
            self._channel.send(message)
        except OSError:  # its socket is full (or its buffer smaller than this message)
            self._drop()
            return
        self._pending[number] = self._running()
        self._idle.clear()
        if self._metrics.activity.requests:  # the request that offers it is still under way
            self.busy()

    def busy(self) -> None:
        """A live request is under way: pause the process while it has work."""
        if self._pending and not self._paused and self._signal(SIGSTOP):
            self._ran = self._running()
            self._paused = True

    def idle(self) -> None:
        """No live request is under way: let the process go on."""
        if self._paused:
            self._paused = False
            self._resumed = time.monotonic()
            self._signal(SIGCONT)

    def _running(self) -> float:
        """Seconds the process has been let run (not paused) since it started."""
        return self._ran if self._paused else self._ran + time.monotonic() - self._resumed

    def _signal(self, number: int | None) -> bool:
        if number is None or self.process is None or self.process.returncode is not None:
            return False
        try:
            os.kill(self.process.pid, number)
        except OSError:  # it has ended: the socket's end says so to _receive
            return False
        return True

    def _drop(self) -> None:
        self.stats.dropped += 1
        self._metrics.shadow_requests.labels(self.live_name, "dropped").inc()

    def _receive(self) -> None:
        """Read what the shadow's process sent (the event loop calls this when there is something)."""
        assert self._channel is not None
        while self._channel is not None:
            try:
                size = self._channel.recv_into(self._buffer)
            except BlockingIOError:
                return
            except OSError:
                size = 0
            if not size:
                self._fail("its process ended")
                self._reaping = asyncio.get_running_loop().create_task(self._reap())
                return
            self._handle(pickle.loads(memoryview(self._buffer)[:size]))

    async def _reap(self) -> None:
        """Wait for the process that ended and say with which exit code (a -9 is often the OOM killer)."""
        if self.process is not None:
            code = await asyncio.to_thread(self.process.wait)
            self.error = f"its process ended (exit code {code})"

    def _handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "ready":
            _, self.version, _labels = message
            self.state = State.READY
            self._loaded.set()
            log.info("shadow of %s (%s) ready", self.live_name, self.version)
        elif kind == "failed" and message[1] is None:
            self._fail(message[2])
        elif kind == "failed":
            if self._pending.pop(message[1], None) is not None:
                self._failed_request(message[2])
        elif kind == "compared":
            _, number, rows = message
            sent = self._pending.pop(number, None)
            if sent is not None:
                self._record(rows, self._running() - sent)
        if not self._pending:
            self._idle.set()

    def _expire(self) -> None:
        """Count requests the shadow has not answered in :data:`SHADOW_TIMEOUT_S` of its running time
        as failed (time paused for live requests does not count)."""
        now = self._running()
        for number, sent in list(self._pending.items()):
            if now - sent > SHADOW_TIMEOUT_S:
                del self._pending[number]
                self._failed_request(f"no answer within {SHADOW_TIMEOUT_S:g} s")
        if not self._pending:
            self._idle.set()

    def _failed_request(self, reason: str) -> None:
        self.stats.failed += 1
        self._metrics.shadow_requests.labels(self.live_name, "failed").inc()
        log.warning("shadow of %s failed: %s", self.live_name, reason)

    def _fail(self, reason: str) -> None:
        """The shadow cannot go on (its package did not load, its process ended): it stops comparing;
        the live model is not affected."""
        if self.state is not State.FAILED:
            self.error = reason
            self.state = State.FAILED
            log.warning("shadow of %s stopped: %s", self.live_name, reason)
        for _ in range(len(self._pending)):
            self._failed_request(reason)
        self._pending.clear()
        self._idle.set()
        self._loaded.set()
        self._close()

    def _close(self) -> None:
        self._metrics.activity.forget(self)
        self.idle()  # a stopped process cannot read that its socket closed
        if self._channel is not None:
            asyncio.get_running_loop().remove_reader(self._channel.fileno())
            self._channel.close()
            self._channel = None

    def _record(self, rows: list[Compared], seconds: float) -> None:
        stats, metrics, name = self.stats, self._metrics, self.live_name
        stats.seconds.append(seconds)
        metrics.shadow_seconds.labels(name).observe(seconds)
        metrics.shadow_requests.labels(name, "compared").inc()
        for agreed, live_label, shadow_label, diff in rows:
            stats.compared += 1
            stats.agreed += agreed
            stats.live_labels[live_label] += 1
            stats.shadow_labels[shadow_label] += 1
            metrics.shadow_agreement.labels(name, "true" if agreed else "false").inc()
            metrics.shadow_predictions.labels(name, shadow_label).inc()
            metrics.shadow_diff.labels(name).observe(diff)
            entry = (round(diff, 4), live_label, shadow_label)
            if len(stats.largest) < LARGEST:
                heapq.heappush(stats.largest, entry)
            else:
                heapq.heappushpop(stats.largest, entry)

    def summary(self) -> dict[str, Any]:
        """Agreement, each model's label shares, the largest differences, the shadow's latency."""
        stats = self.stats
        seconds = np.array(stats.seconds) if stats.seconds else None

        def shares(counts: Counter[str]) -> dict[str, float]:
            total = sum(counts.values())
            return (
                {label: round(count / total, 4) for label, count in sorted(counts.items())} if total else {}
            )

        return {
            "model": self.live_name,
            "shadow_version": self.version,
            "state": self.state.value,
            "error": self.error,
            "share": self.share,
            "compared_texts": stats.compared,
            "agreement": round(stats.agreed / stats.compared, 4) if stats.compared else None,
            "live_label_shares": shares(stats.live_labels),
            "shadow_label_shares": shares(stats.shadow_labels),
            "largest_differences": [
                {"probability_difference": diff, "live": live, "shadow": shadow}
                for diff, live, shadow in sorted(stats.largest, reverse=True)
            ],
            "latency_ms": None
            if seconds is None
            else {
                "p50": round(float(np.percentile(seconds, 50)) * 1000, 3),
                "p99": round(float(np.percentile(seconds, 99)) * 1000, 3),
            },
            "dropped_requests": stats.dropped,
            "failed_requests": stats.failed,
        }

    async def stop(self) -> None:
        """Let the comparison under way come back, then close the socket: the process exits at that."""
        self._metrics.activity.forget(self)
        self.idle()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), STOP_TIMEOUT_S)
        self._close()
        process = self.process
        if process is not None and process.poll() is None:
            try:
                await asyncio.to_thread(process.wait, STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait)
