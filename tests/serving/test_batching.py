"""The micro-batcher: coalescing, limits, back-pressure, deadlines, cancellation, shutdown."""

from __future__ import annotations

import asyncio
import itertools
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import pytest

from sentiment_api.core.errors import DeadlineExceededError, NotReadyError, QueueFullError
from sentiment_api.serving.batching import BatchLimits, MicroBatcher

# the service's defaults, spelled out: the batcher has none of its own (core.settings holds them)
LIMITS = BatchLimits(
    max_batch_size=32,
    max_wait_s=0.002,
    token_budget=8192,
    queue_size=512,
    max_queue_wait_s=10.0,
    queue_timeout_s=20.0,
    streams=1,
    inline_tokens=0,  # the tests of the queue; run_alone has its own
)
TIMEOUT_S = 30  # no test here takes a second; past this one has hung


class RecordingModel:
    """Row i of the answer encodes its input ids, so a mixed-up answer is visible; a gate can hold calls."""

    def __init__(self) -> None:
        self.calls: list[list[list[int]]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, ids: list[Sequence[int]], on_rows=None) -> np.ndarray:
        self.entered.set()
        assert self.gate.wait(10)
        self.calls.append([list(row) for row in ids])
        return answer(ids)


def answer(ids: Sequence[Sequence[int]]) -> np.ndarray:
    return np.array([[sum(row), len(row)] for row in ids], dtype=np.float32)


def later(seconds: float = 5.0) -> float:
    return time.monotonic() + seconds


def run(coroutine):
    """Run a test's coroutine; one that hangs fails after ``TIMEOUT_S`` instead."""
    return asyncio.run(asyncio.wait_for(coroutine, TIMEOUT_S))


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Yield to the event loop until ``condition`` holds, or fail."""
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, f"condition not met within {timeout} s"
        await asyncio.sleep(0.001)


async def started(model: RecordingModel, on_busy=None, **limits) -> MicroBatcher:
    batcher = MicroBatcher(model, replace(LIMITS, **limits), on_busy=on_busy)
    batcher.start()
    return batcher


async def held(batcher: MicroBatcher, model: RecordingModel, ids) -> asyncio.Future:
    """Enqueue ``ids`` and return once the gated model is running them."""
    model.entered.clear()
    future = batcher.enqueue(ids, later())
    assert await asyncio.to_thread(model.entered.wait, 5)
    return future


def test_concurrent_requests_share_one_inference_call_and_get_their_own_rows() -> None:
    async def main():
        model = RecordingModel()
        batcher = await started(model, max_batch_size=64)
        requests = [[[i, i + 1]] * (1 + i % 3) for i in range(10)]
        results = await asyncio.gather(
            *(batcher.wait(batcher.enqueue(ids, later()), later()) for ids in requests)
        )
        await batcher.stop()
        return model, requests, results

    model, requests, results = run(main())

    assert len(model.calls) == 1
    for ids, result in zip(requests, results, strict=True):
        assert result.rows.tolist() == [[sum(row), len(row)] for row in ids]
        assert result.batch_size == sum(len(ids) for ids in requests)


def test_batches_respect_the_size_and_the_token_budget() -> None:
    async def main(**limits):
        model = RecordingModel()
        batcher = await started(model, **limits)
        ids = [[1] * 10] * 12
        await asyncio.gather(*(batcher.wait(batcher.enqueue([row], later()), later()) for row in ids))
        await batcher.stop()
        return [len(call) for call in model.calls]

    assert run(main(max_batch_size=5, token_budget=10_000)) == [5, 5, 2]
    assert run(main(max_batch_size=64, token_budget=30)) == [3, 3, 3, 3]


def test_requests_arriving_during_inference_form_the_next_batch() -> None:
    async def main():
        model = RecordingModel()
        model.gate.clear()
        batcher = await started(model)
        first = await held(batcher, model, [[1]])
        rest = [batcher.enqueue([[i]], later()) for i in range(2, 6)]
        model.gate.set()
        await asyncio.gather(first, *rest)
        await batcher.stop()
        return [len(call) for call in model.calls]

    assert run(main()) == [1, 4]


def test_a_full_queue_refuses_with_a_retry_after() -> None:
    async def main():
        model = RecordingModel()
        model.gate.clear()
        batcher = await started(model, queue_size=3)
        running = await held(batcher, model, [[1]])
        waiting = batcher.enqueue([[2], [3], [4]], later())
        with pytest.raises(QueueFullError) as refused:
            batcher.enqueue([[5]], later())
        model.gate.set()
        await asyncio.gather(running, waiting)
        await batcher.stop()
        return refused.value

    error = run(main())
    assert error.retry_after is not None and error.retry_after >= 1
    assert "3 of 3" in str(error)


def test_a_queue_that_would_take_too_long_refuses_once_the_speed_is_known() -> None:
    async def main():
        model = RecordingModel()
        model.gate.clear()
        batcher = await started(model, max_queue_wait_s=0.2)
        first = await held(batcher, model, [[1]])
        unknown_speed = [batcher.enqueue([[n]], later()) for n in range(5)]  # none refused: not timed yet
        await asyncio.sleep(0.1)  # the first batch takes 0.1 s or more for one text; the next five, ~0
        model.gate.set()
        await asyncio.gather(first, *unknown_speed)
        model.gate.clear()
        second = await held(batcher, model, [[2]])
        admitted = []
        with pytest.raises(QueueFullError) as refused:
            for n in range(10):
                admitted.append(batcher.enqueue([[n]], later()))
        model.gate.set()
        await asyncio.gather(second, *admitted)
        await batcher.stop()
        return len(admitted), refused.value

    admitted, error = run(main())
    assert 1 <= admitted <= 3  # 0.2 s of queue at 0.08 s or more per text (0.8 x 0.1 + 0.2 x ~0)
    assert "would take about" in str(error) and "over the limit of 200 ms" in str(error)


def test_a_speed_timed_at_warm_up_bounds_a_burst_that_arrives_first() -> None:
    async def main():
        model = RecordingModel()
        model.gate.clear()
        batcher = await started(model, max_queue_wait_s=0.2)
        batcher.admission.assume_speed(0.1)  # as the service does with its warm-up timing
        first = await held(batcher, model, [[1]])
        admitted = []
        with pytest.raises(QueueFullError, match="over the limit of 200 ms"):
            for n in range(10):
                admitted.append(batcher.enqueue([[n]], later()))
        model.gate.set()
        await asyncio.gather(first, *admitted)
        await batcher.stop()
        return len(admitted)

    assert run(main()) == 3  # 0, 1 and 2 texts ahead (0.2 s): the next would wait 0.3 s


def test_a_queue_whose_oldest_text_waited_too_long_refuses_whatever_the_estimate() -> None:
    async def main():
        model = RecordingModel()
        model.gate.clear()
        batcher = await started(model, max_queue_wait_s=0.05)  # no batch timed: no estimate at all
        first = await held(batcher, model, [[1]])
        waiting = batcher.enqueue([[2]], later())
        batcher.enqueue([[3]], later())  # the oldest has waited ~0 s: admitted
        await asyncio.sleep(0.1)
        with pytest.raises(QueueFullError) as refused:
            batcher.enqueue([[4]], later())
        model.gate.set()
        await asyncio.gather(first, waiting)
        await batcher.stop()
        return refused.value

    error = run(main())
    assert "over the limit of 50 ms" in str(error) and error.retry_after >= 1.0


def test_a_request_queued_past_the_queue_timeout_gets_a_503_and_no_inference() -> None:
    async def main():
        model = RecordingModel()
        model.gate.clear()
        batcher = await started(model, queue_timeout_s=0.05)
        first = await held(batcher, model, [[1]])
        late = batcher.enqueue([[2]], later())
        await asyncio.sleep(0.1)  # the only stream is busy past the queue timeout
        model.gate.set()
        await first
        with pytest.raises(DeadlineExceededError) as shed:
            await batcher.wait(late, later())
        await batcher.stop()
        return shed.value, model.calls

    error, calls = run(main())
    assert "over the limit of 50 ms (queue_timeout_ms)" in str(error) and error.retry_after >= 1.0
    assert calls == [[[1]]]


def test_a_queue_that_drains_slower_than_the_model_runs_is_timed_by_its_drain() -> None:
    async def main():
        batcher = await started(RecordingModel(), max_batch_size=1)  # the model answers at once
        futures = [batcher.enqueue([[n]], later()) for n in range(30)]
        answered: list[float] = []
        for future in futures:
            future.add_done_callback(lambda _: answered.append(time.monotonic()))

        async def busy_loop() -> None:  # the event loop busy elsewhere, as when it refuses a flood
            while not all(future.done() for future in futures):
                time.sleep(0.01)
                await asyncio.sleep(0)

        await asyncio.gather(busy_loop(), *futures)
        # the typical gap between answers: a pause of the machine lengthens a gap or two, not the median
        per_text_seen = statistics.median(b - a for a, b in itertools.pairwise(answered))
        estimate = batcher.admission.seconds_per_text
        await batcher.stop()
        return estimate, per_text_seen

    estimate, seen = run(main())
    print(f"estimate {estimate * 1000:.2f} ms a text, the queue drained one every {seen * 1000:.2f} ms")
    # what a queued text adds is the rate the queue drained at; timing each inference call from its
    # start to its answer sees about half of it (the loop's turns between batches are missing). The
    # estimate is a moving average, so one late pause raises it: the upper bound is loose
    assert 0.75 * seen <= estimate <= 3 * seen


def test_a_request_past_its_deadline_is_answered_and_never_inferred() -> None:
    async def main():
        model = RecordingModel()
        model.gate.clear()
        batcher = await started(model)
        running = await held(batcher, model, [[1]])
        deadline = time.monotonic() + 0.05
        with pytest.raises(DeadlineExceededError):
            await batcher.wait(batcher.enqueue([[2]], deadline), deadline)
        model.gate.set()
        await running
        await batcher.stop()
        return model.calls

    assert run(main()) == [[[1]]]


def test_a_caller_that_disconnects_costs_no_inference() -> None:
    async def main():
        model = RecordingModel()
        model.gate.clear()
        batcher = await started(model)
        running = await held(batcher, model, [[1]])
        gone = asyncio.Event()

        async def disconnected():
            await gone.wait()
            return {"type": "http.disconnect"}

        waiter = asyncio.ensure_future(batcher.wait(batcher.enqueue([[2]], later()), later(), disconnected))
        gone.set()
        result = await waiter
        model.gate.set()
        await running
        await batcher.stop()
        return result, model.calls

    result, calls = run(main())
    assert result is None
    assert calls == [[[1]]]


def test_stop_finishes_queued_work_then_refuses_new_work() -> None:
    async def main():
        model = RecordingModel()
        batcher = await started(model)
        pending = [batcher.enqueue([[i]], later()) for i in range(3)]
        await batcher.stop()
        with pytest.raises(NotReadyError):
            batcher.enqueue([[9]], later())
        return [future.result().rows.tolist() for future in pending]

    assert run(main()) == [[[0, 1]], [[1, 1]], [[2, 1]]]


def test_each_stream_runs_a_batch_at_the_same_time() -> None:
    async def main():
        model = RecordingModel()
        model.gate.clear()
        batcher = await started(model, streams=2)
        first = await held(batcher, model, [[1]])
        model.entered.clear()
        second = batcher.enqueue([[2]], later())
        # the first batch is still held inside the model: the second starts on the other stream
        second_started = await asyncio.to_thread(model.entered.wait, 5)
        model.gate.set()
        results = await asyncio.gather(first, second)
        await batcher.stop()
        return second_started, [r.rows.tolist() for r in results]

    second_started, rows = run(main())
    assert second_started
    assert rows == [[[1, 1]], [[2, 1]]]


def test_queued_work_is_shared_among_idle_streams() -> None:
    async def main(streams: int):
        model = RecordingModel()
        model.gate.clear()  # no batch finishes before every stream has taken its share
        batcher = await started(model, streams=streams, max_batch_size=32)
        pending = [batcher.enqueue([[i]], later()) for i in range(10)]
        await until(lambda: batcher.depth == 0)  # every request has been taken into a batch
        model.gate.set()
        await asyncio.gather(*pending)
        await batcher.stop()
        return sorted(len(call) for call in model.calls)

    assert run(main(1)) == [10]
    assert run(main(2)) == [5, 5]


def test_busy_streams_are_reported_as_batches_start_and_end() -> None:
    async def main():
        model = RecordingModel()
        model.gate.clear()
        busy: list[int] = []
        batcher = await started(model, on_busy=busy.append, streams=2)
        first = await held(batcher, model, [[1]])
        second = await held(batcher, model, [[2]])
        await until(lambda: len(busy) >= 2)
        model.gate.set()
        await asyncio.gather(first, second)
        await batcher.stop()
        return busy

    assert run(main()) == [1, 2, 1, 0]


def test_warm_up_runs_once_on_every_inference_thread() -> None:
    async def main():
        batcher = await started(RecordingModel(), streams=3)
        threads = await batcher.run_in_workers(threading.get_ident)
        await batcher.stop()
        return threads

    assert len(set(run(main()))) == 3


def test_rows_reported_early_answer_their_request_before_the_batch_ends() -> None:
    finish = threading.Event()

    def model(ids, on_rows):
        on_rows(np.array([0, 1]), answer(ids[:2]))  # the first request's two rows are done
        assert finish.wait(10)
        return answer(ids)

    async def main():
        batcher = MicroBatcher(model, LIMITS)
        batcher.start()
        early = batcher.enqueue([[1], [2, 2]], later())
        late = batcher.enqueue([[3]], later())
        early_rows = (await asyncio.wait_for(early, 5)).rows.tolist()
        still_running = not late.done()
        finish.set()
        late_rows = (await asyncio.wait_for(late, 5)).rows.tolist()
        await batcher.stop()
        return early_rows, still_running, late_rows

    early_rows, still_running, late_rows = run(main())
    assert early_rows == [[1, 1], [4, 2]]
    assert still_running
    assert late_rows == [[3, 1]]


def test_a_lone_batch_gets_every_core_and_batches_under_load_get_the_streams() -> None:
    async def main():
        streams, solo = RecordingModel(), RecordingModel()
        busy: list[int] = []
        batcher = MicroBatcher(streams, replace(LIMITS, streams=2), on_busy=busy.append, solo_infer=solo)
        batcher.start()
        # nothing runs and nothing waits: the solo session (every core) takes it, holding both streams
        solo.gate.clear()
        lone = await held(batcher, solo, [[1, 2]])
        assert busy[-1] == 2
        # meanwhile two more arrive: no stream is free, so they wait for the lone batch
        first = batcher.enqueue([[3]], later())
        second = batcher.enqueue([[4]], later())
        await asyncio.sleep(0.01)
        assert streams.calls == []
        streams.gate.clear()
        solo.gate.set()
        assert (await lone).rows.tolist() == [[3.0, 2.0]]
        # the queue was not empty when their batches formed: each is shared to a stream, single-threaded
        assert await asyncio.to_thread(streams.entered.wait, 5)
        streams.gate.set()
        await asyncio.gather(first, second)
        assert solo.calls == [[[1, 2]]] and sorted(streams.calls) == [[[3]], [[4]]]
        await batcher.stop()
        assert busy[-1] == 0

    run(main())


def test_a_lone_small_request_runs_at_once_on_the_callers_thread_and_is_counted() -> None:
    async def main():
        threads: list[int] = []
        stats = []

        def model(ids, on_rows=None):
            threads.append(threading.get_ident())
            return answer(ids)

        batcher = MicroBatcher(model, replace(LIMITS, inline_tokens=8), on_batch=stats.append)
        batcher.start()
        result = batcher.run_alone([[1, 2, 3], [4]], later())
        too_long = batcher.run_alone([[1] * 9], later())
        expired = batcher.run_alone([[1]], time.monotonic() - 1)
        await batcher.stop()
        closed = batcher.run_alone([[1]], later())
        return threading.get_ident(), threads, stats, result, too_long, expired, closed

    loop_thread, threads, stats, result, too_long, expired, closed = run(main())

    assert threads == [loop_thread]  # no hand-off to an inference thread
    assert result.rows.tolist() == [[6, 3], [4, 1]] and result.queue_seconds == 0.0
    assert [(s.texts, s.requests, s.tokens) for s in stats] == [(2, 1, 4)]
    assert too_long is None and expired is None and closed is None  # these queue as usual


def test_a_request_does_not_run_alone_while_a_batch_runs_or_waits() -> None:
    async def main():
        model = RecordingModel()
        batcher = await started(model, inline_tokens=100)
        model.gate.clear()
        first = await held(batcher, model, [[1, 2]])
        while_running = batcher.run_alone([[3]], later())
        queued = batcher.enqueue([[4]], later())
        while_queued = batcher.run_alone([[5]], later())
        model.gate.set()
        await batcher.wait(first, later())
        await batcher.wait(queued, later())
        after = batcher.run_alone([[6]], later())
        await batcher.stop()
        return while_running, while_queued, after, model.calls

    while_running, while_queued, after, calls = run(main())

    assert while_running is None and while_queued is None
    assert after is not None and after.rows.tolist() == [[6, 1]]
    assert calls == [[[1, 2]], [[4]], [[6]]]


def test_a_request_does_not_run_alone_after_a_batch_that_had_company() -> None:
    async def main():
        model = RecordingModel()
        batcher = await started(model, inline_tokens=100, max_wait_s=0.0)
        model.gate.clear()
        first = await held(batcher, model, [[1]])
        together = [batcher.enqueue([[2]], later()), batcher.enqueue([[3]], later())]
        model.gate.set()
        for future in (first, *together):
            await batcher.wait(future, later())
        after_company = batcher.run_alone([[4]], later())
        await batcher.wait(batcher.enqueue([[5]], later()), later())  # a batch alone again
        after_alone = batcher.run_alone([[6]], later())
        await batcher.stop()
        return after_company, after_alone, model.calls

    after_company, after_alone, calls = run(main())

    assert calls[:2] == [[[1]], [[2], [3]]]  # the two queued behind the first ran together
    assert after_company is None  # traffic came in company: the next request queues
    assert after_alone is not None and after_alone.rows.tolist() == [[6, 1]]
