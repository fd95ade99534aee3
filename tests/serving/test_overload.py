"""Far more load than the service can take: the shipped model behind the real server process, 512
connections posting back to back. It must refuse quickly what it cannot take, answer everything it
accepts, keep its memory, and be back to its usual latency within seconds of the load stopping."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter

import pytest

from live_server import LiveServer, post_bytes, read_response
from sentiment_api.core.settings import default_model_dir

CONNECTIONS = 512
LOAD_S = 4.0
TWEET = b'{"text": "Great line at the Apple pop-up store on Congress for the new iPad 2 #sxsw, worth it?"}'
TIMEOUT_S = 120


async def one_at_a_time(port: int, count: int) -> list[float]:
    """Latency of ``count`` requests sent one after another on one connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    latencies = []
    try:
        for _ in range(count):
            started = time.monotonic()
            writer.write(post_bytes("/predict", TWEET))
            status, _, _ = await read_response(reader)
            assert status == 200
            latencies.append(time.monotonic() - started)
    finally:
        writer.close()
    return latencies


async def hammer(port: int, seconds: float) -> tuple[Counter[int | str], dict[int, list[float]]]:
    """``CONNECTIONS`` clients posting back to back for ``seconds``: outcomes and latencies by status."""
    outcomes: Counter[int | str] = Counter()
    latencies: dict[int, list[float]] = {}
    end = time.monotonic() + seconds

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.monotonic() < end:
                started = time.monotonic()
                writer.write(post_bytes("/predict", TWEET))
                try:
                    status, _, _ = await asyncio.wait_for(read_response(reader), 30)
                except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                    outcomes[type(exc).__name__] += 1
                    return
                outcomes[status] += 1
                latencies.setdefault(status, []).append(time.monotonic() - started)
        finally:
            writer.close()

    await asyncio.gather(*(client() for _ in range(CONNECTIONS)))
    return outcomes, latencies


def percentile_99(values: list[float]) -> float:
    """The 99th percentile; the value itself when a status came back once (quantiles needs two)."""
    return statistics.quantiles(values, n=100)[98] if len(values) > 1 else values[0]


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """The shipped model with the default settings (one stream per core, one thread each)."""
    server = LiveServer(
        default_model_dir(), tmp_path_factory.mktemp("overload") / "server.log", SENTIMENT_LOG_LEVEL="warning"
    )
    try:
        yield server.wait_ready()
    finally:
        server.stop()


def test_far_over_capacity_it_sheds_quickly_answers_all_it_accepts_and_recovers(shipped) -> None:
    async def main():
        await one_at_a_time(shipped.port, 20)  # warm
        usual = statistics.median(await one_at_a_time(shipped.port, 30))
        rss_before = shipped.rss_bytes()
        peak = [rss_before]

        async def watch_memory() -> None:
            while True:
                peak[0] = max(peak[0], shipped.rss_bytes())
                await asyncio.sleep(0.2)

        watcher = asyncio.ensure_future(watch_memory())
        outcomes, latencies = await hammer(shipped.port, LOAD_S)
        watcher.cancel()
        stopped = time.monotonic()
        recovered_after = None
        while time.monotonic() - stopped < 10:
            if statistics.median(await one_at_a_time(shipped.port, 5)) <= 2 * usual + 0.005:
                recovered_after = time.monotonic() - stopped
                break
        return usual, outcomes, latencies, rss_before, peak[0], recovered_after

    usual, outcomes, latencies, rss_before, peak, recovered_after = asyncio.run(
        asyncio.wait_for(main(), TIMEOUT_S)
    )

    p99 = {status: percentile_99(values) for status, values in latencies.items()}
    print(
        f"usual {usual * 1000:.1f} ms; under {CONNECTIONS} connections: {dict(outcomes)}, p99 "
        f"{ {s: f'{v * 1000:.0f} ms' for s, v in p99.items()} }; RSS {rss_before / 2**20:.0f} -> "
        f"{peak / 2**20:.0f} MiB; usual latency again after {recovered_after} s"
    )
    assert set(outcomes) <= {200, 429, 503}, outcomes  # every request answered, none dropped
    assert outcomes[200] > 0 and outcomes[429] + outcomes[503] > outcomes[200]  # most refused, not queued
    assert p99[429] < p99[200]  # a refusal comes quicker than an answer
    # accepted requests wait no longer than the queue timeout (2 s by default; then 503), plus a batch
    # and the loop's turns: neither a queue nor new connections waiting to be accepted grow without bound
    assert p99[200] < 4.0
    assert peak - rss_before < 100 * 2**20
    assert recovered_after is not None and recovered_after < 5.0
