"""Coalesce concurrent requests into batched inference calls, with limits and back-pressure.

Requests put their token ids on one bounded queue and get a future; :class:`.Admission` decides
whether the queue takes them. A single collector task takes what is queued (up to a batch size and
a token budget) whenever an inference stream is free, so batches grow with load by themselves; once
traffic shows requests arriving together, it also waits up to ``max_wait_s`` for a batch to fill.
Inference runs off the event loop on ``streams`` threads (:class:`.StreamPool`), so one batch is
formed (and its answers sent) while another runs: with a single stream the model sits idle between
batches. The exception is a small request that finds nothing queued or running (:meth:`run_alone`):
it runs at once on the event loop's own thread, since handing it to an inference thread and back
costs more than the loop could do meanwhile. Jobs whose caller gave up (deadline passed, client
gone) are dropped before inference; each job is answered as soon as its rows are done, before the
rest of its batch.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from time import monotonic
from typing import Any, TypeVar

import numpy as np

from sentiment_api.core.errors import DeadlineExceededError, NotReadyError
from sentiment_api.serving.admission import Admission
from sentiment_api.serving.streams import StreamPool

T = TypeVar("T")
OnRows = Callable[[np.ndarray, np.ndarray], None]
# infer(ids, on_rows) -> one row of numbers per text; it may call on_rows(indices, rows) from
# its thread as parts of the batch finish, so their requests are answered before the rest
Infer = Callable[[list[Sequence[int]], OnRows], np.ndarray]


@dataclass(frozen=True)
class BatchLimits:
    """How large a batch may grow and how much may wait for one.

    No defaults here: the service builds these from its settings (``core.settings.Settings``
    documents each value and holds its default), so there is one source of truth.
    """

    max_batch_size: int  # most texts in one inference call
    max_wait_s: float  # how long a batch may wait to fill
    token_budget: int  # most input tokens in one inference call
    queue_size: int  # most texts waiting; beyond it enqueue refuses
    max_queue_wait_s: float  # most time the queued texts may take, at the measured speed; beyond it refuses
    queue_timeout_s: float  # a job still queued after this long is answered "shed" (503), not run
    streams: int  # batches run at once, each on its own inference thread
    inline_tokens: int  # a lone request of at most this many tokens runs on the caller's thread (0: never)


@dataclass(frozen=True)
class BatchStats:
    """What one inference call did, for metrics."""

    texts: int
    requests: int
    tokens: int
    seconds: float


@dataclass(frozen=True)
class BatchResult:
    """One request's rows (what the inference function returns for each text) and what it waited for."""

    rows: np.ndarray
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
        self.admission = Admission(limits.queue_size, limits.max_queue_wait_s)
        self.streams = StreamPool(limits.streams, on_busy)
        self._on_batch = on_batch
        self._on_depth = on_depth
        self._queue: deque[_Job] = deque()
        self._depth = 0  # texts queued
        self._queued_tokens = 0
        self._wakeup = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()
        self._collector: asyncio.Task[None] | None = None
        self._closed = False
        self._had_company = False

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
        self.streams.shutdown()

    async def run_in_workers(self, function: Callable[[], T]) -> list[T]:
        """Run ``function`` once on each inference thread at the same time (warm-up uses it to warm
        those very threads)."""
        return await self.streams.run_on_each(function)

    def admit(self, texts: int) -> None:
        """Raise :class:`QueueFullError` unless ``texts`` more could be queued now (:class:`.Admission`)."""
        oldest_waited = monotonic() - self._queue[0].enqueued if self._queue else None
        self.admission.admit(texts, self._depth, oldest_waited)

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

    def may_run_alone(self, ids: Sequence[Sequence[int]], deadline: float) -> bool:
        """Whether ``ids`` could run now on the caller's thread (:meth:`run_alone`): nothing queued or
        running, the last batch alone too (traffic is light), at most ``inline_tokens`` tokens, and
        its deadline ahead."""
        tokens = sum(len(row) for row in ids)
        return not (
            self._closed
            or self._had_company
            or self._queue
            or self.streams.busy
            or not 0 < tokens <= self.limits.inline_tokens
            or deadline <= monotonic()
        )

    def run_alone(self, ids: Sequence[Sequence[int]], deadline: float) -> BatchResult | None:
        """Run one request now, on the calling thread (the event loop's), when :meth:`may_run_alone`;
        ``None`` otherwise, and it queues as usual (:meth:`enqueue`).

        At light load most requests are alone, and the hand-off to an inference thread and back is
        a fifth of a lone tweet's time on a small CPU (two thread wake-ups, about 180 µs of CPU on a
        2-core VM; BENCHMARKS.md). The model holds every core for this run either way (the solo
        session), so the cost is that the loop reads nothing new while it lasts: only small
        requests run so, and only when no other request is under way, which the caller must know
        (the batcher cannot see requests that have not reached it: under load, runs on the loop
        would keep them from ever queueing together, a third of the throughput at 32 connections).
        Timed and counted like any batch.
        """
        if not self.may_run_alone(ids, deadline):
            return None
        now = monotonic()
        tokens = sum(len(row) for row in ids)
        self.admission.admit(len(ids), 0, None)
        self.admission.taken(now, len(ids), backlog=False)
        rows = (self.solo_infer or self.infer)(list(ids), lambda indices, rows: None)
        seconds = monotonic() - now
        streams = self.streams.count if self.solo_infer is not None else 1
        self.admission.timed(seconds * streams / len(ids) / self.streams.count)
        if self._on_batch is not None:
            self._on_batch(BatchStats(len(ids), 1, tokens, seconds))
        return BatchResult(rows, 0.0, seconds, len(ids))

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
        free = self.streams.count - self.streams.busy
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
        self.admission.taken(now, texts, backlog=bool(self._queue))
        self._report_depth()
        return batch

    def _shed(self, waited: float) -> DeadlineExceededError:
        """What a job gets that waited longer than ``queue_timeout_s``: admitted under a burst the
        queue then drained too slowly for, it is told to retry at once rather than answered late."""
        limit_ms = self.limits.queue_timeout_s * 1000
        return DeadlineExceededError(
            f"the request waited {waited * 1000:.0f} ms for inference, over the limit of {limit_ms:g} ms "
            "(queue_timeout_ms): the service is overloaded; retry later",
            retry_after=self.admission.retry_after(self._depth),
        )

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.streams.reserve()  # form a batch only when a thread can run it at once
            while not self._queue:
                if self._closed:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
            if self._had_company and self.limits.max_wait_s > 0:
                await self._fill()
            batch = self._take()
            if not batch:
                self.streams.unreserve()
                continue
            self._had_company = len(batch) > 1
            streams = 1
            if self.solo_infer is not None and self.streams.busy == 0 and not self._queue:
                # light traffic: nothing else runs or waits, so this batch gets every core; the other
                # streams are free, so taking them returns at once, and no batch starts beside it
                streams = await self.streams.reserve_rest()
            self.streams.occupy(streams)
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

        def deliver(indices: np.ndarray, logits: np.ndarray) -> None:  # on the event loop
            nonlocal answers
            if answers is None:
                answers = np.empty((len(ids), logits.shape[1]), dtype=logits.dtype)
            answers[indices] = logits
            for number in owner[indices]:
                missing[number] -= 1
                if missing[number] == 0:
                    answer(batch[number], answers[first_row[number] : first_row[number + 1]])

        def on_rows(indices: np.ndarray, logits: np.ndarray) -> None:  # on this batch's thread
            loop.call_soon_threadsafe(deliver, indices.copy(), logits.copy())

        infer = self.solo_infer if streams > 1 and self.solo_infer is not None else self.infer
        try:
            logits = await self.streams.run(streams, infer, ids, on_rows)
        except Exception as exc:  # a broken model fails these requests, not the collector
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        seconds = monotonic() - started
        self.admission.timed(seconds * streams / len(ids) / self.streams.count)
        for number, job in enumerate(batch):  # whatever on_rows did not report
            answer(job, logits[first_row[number] : first_row[number + 1]])
        if self._on_batch is not None:
            self._on_batch(BatchStats(len(ids), len(batch), sum(job.tokens for job in batch), seconds))
