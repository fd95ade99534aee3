"""Coalesce concurrent requests into batched inference calls, with limits and back-pressure.

Requests put their token ids on one bounded queue and get a future. A single collector task takes
what is queued (up to a batch size and a token budget) whenever an inference thread is free, so
batches grow with load by themselves; once traffic shows requests arriving together, it also waits
up to ``max_wait_s`` for a batch to fill. Inference runs off the event loop on ``streams`` worker
threads, so one batch is formed (and its answers sent) while another runs: with a single stream the
model sits idle between batches. Jobs whose caller gave up (deadline passed, client gone) are
dropped before inference.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from time import monotonic
from typing import Any, TypeVar

import numpy as np

from .errors import DeadlineExceededError, NotReadyError, QueueFullError

T = TypeVar("T")
OnRows = Callable[[np.ndarray, np.ndarray], None]
# infer(ids, on_rows) -> probabilities of every row; it may call on_rows(indices, probabilities) from
# its thread as parts of the batch finish, so their requests are answered before the rest
Infer = Callable[[list[Sequence[int]], OnRows], np.ndarray]


@dataclass(frozen=True)
class BatchLimits:
    """How large a batch may grow and how much may wait for one.

    No defaults here: the service builds these from its settings (``config.Settings`` documents each
    value and holds its default), so there is one source of truth.
    """

    max_batch_size: int  # most texts in one inference call
    max_wait_s: float  # how long a batch may wait to fill
    token_budget: int  # most input tokens in one inference call
    queue_size: int  # most texts waiting; beyond it enqueue refuses
    max_queue_wait_s: float  # most time the queued texts may take, at the measured speed; beyond it refuses
    queue_timeout_s: float  # a job still queued after this long is answered "shed" (503), not run
    streams: int  # batches run at once, each on its own inference thread


@dataclass(frozen=True)
class BatchStats:
    """What one inference call did, for metrics."""

    texts: int
    requests: int
    tokens: int
    seconds: float


@dataclass(frozen=True)
class BatchResult:
    """One request's rows of probabilities and what it waited for."""

    probabilities: np.ndarray
    queue_seconds: float
    inference_seconds: float
    batch_size: int


@dataclass(eq=False)
class _Job:
    ids: Sequence[Sequence[int]]
    deadline: float
    future: asyncio.Future[BatchResult]
    tokens: int = 0
    enqueued: float = field(default_factory=monotonic)


class MicroBatcher:
    """Turns many concurrent ``enqueue`` calls into few calls of ``infer``, run on ``streams`` threads."""

    def __init__(
        self,
        infer: Infer,
        limits: BatchLimits,
        on_batch: Callable[[BatchStats], None] | None = None,
        on_depth: Callable[[int], None] | None = None,
        on_busy: Callable[[int], None] | None = None,
        solo_infer: Infer | None = None,
    ) -> None:
        self.infer = infer
        # runs a batch with every core, when it is the only work there is (see _collect)
        self.solo_infer = solo_infer
        self.limits = limits
        self._on_batch = on_batch
        self._on_depth = on_depth
        self._on_busy = on_busy
        self._queue: deque[_Job] = deque()
        self._depth = 0  # texts queued
        self._queued_tokens = 0
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=limits.streams, thread_name_prefix="inference")
        self._free_streams = asyncio.Semaphore(limits.streams)
        self._running: set[asyncio.Task[None]] = set()
        self._busy_streams = 0
        self._collector: asyncio.Task[None] | None = None
        self._closed = False
        self._had_company = False
        self._seconds_per_text = 0.01
        self._speed_known = False  # no refusal by expected wait before a batch has been timed
        # how fast the queue really drains while it holds a backlog: wall time between batches taken,
        # per text. Under overload the event loop, busy refusing, forms batches more slowly than the
        # inference threads could run them; only this sees that.
        self._drain_seconds_per_text = 0.0
        self._last_take: float | None = None  # when the last batch was taken, if others still waited

    @property
    def depth(self) -> int:
        """Texts waiting for inference."""
        return self._depth

    def start(self) -> None:
        """Start the collector task on the running loop."""
        self._collector = asyncio.get_running_loop().create_task(self._collect(), name="batch-collector")

    async def stop(self) -> None:
        """Refuse new work, finish what is queued, and stop the inference threads."""
        self._closed = True
        self._wakeup.set()
        if self._collector is not None:
            await self._collector
        if self._running:
            await asyncio.wait(set(self._running))
        self._executor.shutdown(wait=True)

    async def run_in_workers(self, function: Callable[[], T]) -> list[T]:
        """Run ``function`` once on each inference thread at the same time (warm-up uses it to warm
        those very threads)."""
        loop = asyncio.get_running_loop()
        barrier = threading.Barrier(self.limits.streams)

        def together() -> T:
            barrier.wait(60)  # hold every thread until all have started, so each runs it once
            return function()

        return list(
            await asyncio.gather(
                *(loop.run_in_executor(self._executor, together) for _ in range(self.limits.streams))
            )
        )

    @property
    def seconds_per_text(self) -> float:
        """What each queued text adds to the wait: the recent inference time per text, or the recent
        drain rate of a backlogged queue where that is slower."""
        return max(self._seconds_per_text, self._drain_seconds_per_text)

    def retry_after(self) -> float:
        """Seconds until the queue has likely drained, at the recent speed; at least one."""
        return max(1.0, self._depth * self.seconds_per_text)

    def assume_speed(self, seconds_per_text: float) -> None:
        """Start from this inference time per text (timed at warm-up) until batches are timed, so a
        burst arriving first meets the expected-wait limit as well."""
        if not self._speed_known:
            self._seconds_per_text = seconds_per_text
            self._speed_known = True

    def admit(self, texts: int) -> None:
        """Raise :class:`QueueFullError` unless ``texts`` more could be queued now: within the queue's
        size, behind no more than ``max_queue_wait_s`` of work at the measured speed, and behind no
        text that has waited that long already (whatever the estimate says). Cheap, so a server can
        ask before it reads and tokenises a request it would refuse."""
        if self._depth + texts > self.limits.queue_size:
            raise QueueFullError(
                f"the inference queue is full ({self._depth} of {self.limits.queue_size} texts waiting); "
                "retry later",
                retry_after=self.retry_after(),
            )
        expected_wait = self._depth * self.seconds_per_text if self._speed_known else 0.0
        if self._queue:
            expected_wait = max(expected_wait, monotonic() - self._queue[0].enqueued)
        if self._depth and expected_wait > self.limits.max_queue_wait_s:
            limit_ms = self.limits.max_queue_wait_s * 1000
            raise QueueFullError(
                f"the inference queue is full: the {self._depth} texts waiting would take about "
                f"{expected_wait * 1000:.0f} ms, over the limit of {limit_ms:g} ms; retry later",
                retry_after=self.retry_after(),
            )

    def enqueue(self, ids: Sequence[Sequence[int]], deadline: float) -> asyncio.Future[BatchResult]:
        """Queue one request's token ids; its future resolves to that request's rows, in order."""
        if self._closed:
            raise NotReadyError("the service is shutting down; retry on another instance", retry_after=1.0)
        self.admit(len(ids))
        job = _Job(ids, deadline, asyncio.get_running_loop().create_future(), sum(len(row) for row in ids))
        self._queue.append(job)
        self._depth += len(ids)
        self._queued_tokens += job.tokens
        self._report_depth()
        self._wakeup.set()
        return job.future

    async def wait(
        self,
        future: asyncio.Future[BatchResult],
        deadline: float,
        disconnected: Callable[[], Awaitable[Any]] | None = None,
    ) -> BatchResult | None:
        """The job's result; ``None`` if the awaitable ``disconnected()`` returns first (the ASGI
        ``receive``, which returns once the client has gone). A job given up on is cancelled, so it
        costs no inference if it has not started yet."""
        watcher = asyncio.ensure_future(disconnected()) if disconnected is not None else None
        waiting: set[asyncio.Future[Any]] = {future} if watcher is None else {future, watcher}
        try:
            await asyncio.wait(
                waiting, timeout=max(0.0, deadline - monotonic()), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            if watcher is not None:
                watcher.cancel()
            if not future.done():
                future.cancel()
        if future.cancelled():
            if watcher is not None and watcher.done() and not watcher.cancelled():
                return None
            raise DeadlineExceededError("the request's deadline passed before its result was ready")
        return future.result()

    def _report_depth(self) -> None:
        if self._on_depth is not None:
            self._on_depth(self._depth)

    def _report_busy(self) -> None:
        if self._on_busy is not None:
            self._on_busy(self._busy_streams)

    def _full(self) -> bool:
        return self._depth >= self.limits.max_batch_size or self._queued_tokens >= self.limits.token_budget

    async def _fill(self) -> None:
        """Wait up to ``max_wait_s`` for more requests, unless the batch is already full."""
        end = monotonic() + self.limits.max_wait_s
        while not self._full() and not self._closed:
            remaining = end - monotonic()
            if remaining <= 0:
                return
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), remaining)

    def _take(self) -> list[_Job]:
        """Pop the next batch: live jobs in arrival order, within the size and token limits, and no
        more than this stream's share of the queue, so idle streams are not left without work."""
        batch: list[_Job] = []
        texts = tokens = 0
        free = self.limits.streams - self._busy_streams
        max_texts = min(self.limits.max_batch_size, -(-self._depth // free))
        now = monotonic()
        while self._queue:
            job = self._queue[0]
            if not job.future.done() and now - job.enqueued > self.limits.queue_timeout_s:
                job.future.set_exception(self._shed(now - job.enqueued))
            dead = job.future.done() or job.deadline <= now
            if (
                not dead
                and batch
                and (texts + len(job.ids) > max_texts or tokens + job.tokens > self.limits.token_budget)
            ):
                break
            self._queue.popleft()
            self._depth -= len(job.ids)
            self._queued_tokens -= job.tokens
            if dead:
                if not job.future.done():
                    job.future.cancel()  # the caller's wait() reports the deadline
                continue
            batch.append(job)
            texts += len(job.ids)
            tokens += job.tokens
        self._time_drain(now, texts)
        self._report_depth()
        return batch

    def _shed(self, waited: float) -> DeadlineExceededError:
        """What a job gets that waited longer than ``queue_timeout_s``: admitted under a burst the
        queue then drained too slowly for, it is told to retry at once rather than answered late."""
        limit_ms = self.limits.queue_timeout_s * 1000
        return DeadlineExceededError(
            f"the request waited {waited * 1000:.0f} ms for inference, over the limit of {limit_ms:g} ms "
            "(queue_timeout_ms): the service is overloaded; retry later",
            retry_after=self.retry_after(),
        )

    def _time_drain(self, now: float, texts: int) -> None:
        """Update the drain rate with a batch of ``texts`` taken at ``now``: only where the queue held
        texts all the time since the last batch was taken, so an idle gap never counts as slowness."""
        if texts and self._last_take is not None:
            per_text = (now - self._last_take) / texts
            self._drain_seconds_per_text = 0.8 * self._drain_seconds_per_text + 0.2 * per_text
        elif not texts and not self._queue:
            self._drain_seconds_per_text = 0.0
        self._last_take = now if self._queue else None

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._free_streams.acquire()  # form a batch only when a thread can run it at once
            while not self._queue:
                if self._closed:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
            if self._had_company and self.limits.max_wait_s > 0:
                await self._fill()
            batch = self._take()
            if not batch:
                self._free_streams.release()
                continue
            self._had_company = len(batch) > 1
            streams = 1
            if self.solo_infer is not None and self._busy_streams == 0 and not self._queue:
                # light traffic: nothing else runs or waits, so this batch gets every core; the other
                # streams are free, so taking them returns at once, and no batch starts beside it
                for _ in range(self.limits.streams - 1):
                    await self._free_streams.acquire()
                streams = self.limits.streams
            self._busy_streams += streams
            self._report_busy()
            task = loop.create_task(self._run(batch, loop, streams))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, batch: list[_Job], loop: asyncio.AbstractEventLoop, streams: int = 1) -> None:
        """Run one batch on a free inference thread (with every core when it holds every stream); each
        job gets its rows as soon as they are done."""
        ids = [row for job in batch for row in job.ids]
        missing = [len(job.ids) for job in batch]  # rows of each job not answered yet
        owner = np.repeat(np.arange(len(batch)), missing)
        first_row = np.cumsum([0, *missing])
        started = monotonic()
        answers: np.ndarray | None = None

        def answer(job: _Job, rows: np.ndarray) -> None:
            if not job.future.done():
                result = BatchResult(rows, started - job.enqueued, monotonic() - started, len(ids))
                job.future.set_result(result)

        def deliver(indices: np.ndarray, probabilities: np.ndarray) -> None:  # on the event loop
            nonlocal answers
            if answers is None:
                answers = np.empty((len(ids), probabilities.shape[1]), dtype=probabilities.dtype)
            answers[indices] = probabilities
            for number in owner[indices]:
                missing[number] -= 1
                if missing[number] == 0:
                    answer(batch[number], answers[first_row[number] : first_row[number + 1]])

        def on_rows(indices: np.ndarray, probabilities: np.ndarray) -> None:  # on this batch's thread
            loop.call_soon_threadsafe(deliver, indices.copy(), probabilities.copy())

        infer = self.solo_infer if streams > 1 and self.solo_infer is not None else self.infer
        try:
            probabilities = await loop.run_in_executor(self._executor, infer, ids, on_rows)
        except Exception as exc:  # a broken model fails these requests, not the collector
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        finally:
            self._busy_streams -= streams
            self._report_busy()
            for _ in range(streams):
                self._free_streams.release()
        seconds = monotonic() - started
        per_text = seconds * streams / len(ids) / self.limits.streams
        self._seconds_per_text = (
            0.8 * self._seconds_per_text + 0.2 * per_text if self._speed_known else per_text
        )
        self._speed_known = True
        for number, job in enumerate(batch):  # whatever on_rows did not report
            answer(job, probabilities[first_row[number] : first_row[number + 1]])
        if self._on_batch is not None:
            self._on_batch(BatchStats(len(ids), len(batch), sum(job.tokens for job in batch), seconds))
