"""Several worker processes, SIGTERM under load and a worker killed under load, on real server processes."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections import Counter

import httpx
from prometheus_client.parser import text_string_to_metric_families

from live_server import LiveServer, wait_until

DRAIN_S = 1.0
GRACE_S = 5.0
CLIENTS = 6


def predictions_counted(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "sentiment_requests_total" and sample.labels == {
                "route": "/predict",
                "status": "200",
                "model": "default",
            }:
                return sample.value
    return 0.0


def test_metrics_add_up_over_several_worker_processes(onnx_package, tmp_path) -> None:
    server = LiveServer(onnx_package, tmp_path / "server.log", workers=2).wait_ready()
    try:
        for i in range(20):  # a new connection each time, so both workers take some
            assert httpx.post(f"{server.url}/predict", json={"text": f"tweet {i}"}).status_code == 200
        # a request is counted as its response goes out, so the last may land just after it
        wait_until(lambda: predictions_counted(server.url) == 20.0, timeout=10)
        scrapes = [predictions_counted(server.url) for _ in range(4)]
    finally:
        server.stop()

    assert scrapes == [20.0] * 4
    pids = {
        line.split("[")[1].split("]")[0] for line in server.log_lines() if "Started server process" in line
    }
    assert len(pids) == 2


async def load_until_not_ready(url: str, started: asyncio.Event) -> tuple[list[object], bool]:
    """Eight clients posting until readiness turns 503, as a load balancer would stop sending then."""
    stop = asyncio.Event()
    outcomes: list[object] = []
    saw_draining = False

    async def client_loop(client: httpx.AsyncClient, n: int) -> None:
        while not stop.is_set():
            try:
                response = await client.post("/predict", json={"texts": [f"tweet {n}"] * 8})
                outcomes.append(response.status_code)
            except httpx.HTTPError as exc:
                outcomes.append(repr(exc))
            if len(outcomes) >= 40:
                started.set()

    async def watch_readiness() -> None:
        nonlocal saw_draining
        async with httpx.AsyncClient(base_url=url) as probe:
            while not stop.is_set():
                try:
                    if (await probe.get("/readyz")).status_code == 503:
                        saw_draining = True
                        stop.set()
                except httpx.TransportError:
                    stop.set()
                await asyncio.sleep(0.02)

    async with httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_connections=8), timeout=10) as client:
        await asyncio.gather(watch_readiness(), *(client_loop(client, n) for n in range(8)))
    return outcomes, saw_draining


def test_sigterm_under_load_drains_without_failing_an_accepted_request(onnx_package, tmp_path) -> None:
    env = {"SENTIMENT_DRAIN_S": str(DRAIN_S), "SENTIMENT_SHUTDOWN_GRACE_S": str(GRACE_S)}
    server = LiveServer(onnx_package, tmp_path / "server.log", **env).wait_ready()

    async def main() -> tuple[list[object], bool, float]:
        started = asyncio.Event()
        load = asyncio.ensure_future(load_until_not_ready(server.url, started))
        await asyncio.wait_for(started.wait(), 30)
        server.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        # the load stops once readiness turns 503; a server that never drains fails here, not hangs
        outcomes, saw_draining = await asyncio.wait_for(load, DRAIN_S + GRACE_S + 30)
        await asyncio.to_thread(server.process.wait, DRAIN_S + GRACE_S + 10)
        return outcomes, saw_draining, time.monotonic() - signalled

    try:
        outcomes, saw_draining, exit_after = asyncio.run(main())
    finally:
        server.stop()

    assert len(outcomes) >= 40
    assert set(outcomes) == {200}, [o for o in outcomes if o != 200][:5]
    assert saw_draining
    assert server.process.returncode in (0, -signal.SIGTERM)
    assert DRAIN_S * 0.9 <= exit_after <= DRAIN_S + GRACE_S + 2
    assert "Finished server process" in server.log.read_text()


def gauge(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


def test_a_worker_killed_under_load_is_replaced_and_only_its_requests_in_flight_fail(
    onnx_package, tmp_path
) -> None:
    server = LiveServer(onnx_package, tmp_path / "server.log", workers=2).wait_ready()
    outcomes: list[str] = []
    lock = threading.Lock()
    stop = [time.monotonic() + 60]  # brought forward once the worker is killed

    def client(number: int) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            sent = 0
            while time.monotonic() < stop[0] and sent < 5000:
                try:
                    outcome = str(http.post("/predict", json={"text": f"ipad {number} {sent}"}).status_code)
                except httpx.TransportError as exc:
                    outcome = type(exc).__name__
                sent += 1
                with lock:
                    outcomes.append(outcome)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    try:
        server.wait_workers_ready(2)
        streams = gauge(server.url, "sentiment_inference_streams")  # both workers' streams
        for thread in threads:
            thread.start()
        wait_until(lambda: len(outcomes) >= 100, timeout=30)
        before = server.worker_pids()
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: len(server.worker_pids() - before) == 1, timeout=30)
        replaced = server.worker_pids()
        stop[0] = time.monotonic() + 3  # three more seconds of load with the replacement
        for thread in threads:
            thread.join(60)
        assert not any(thread.is_alive() for thread in threads)
        after = [
            httpx.post(f"{server.url}/predict", json={"text": f"after {n}"}).status_code for n in range(10)
        ]
        streams_after = gauge(server.url, "sentiment_inference_streams")
    finally:
        stop[0] = 0
        server.stop()

    failed = Counter(outcome for outcome in outcomes if outcome != "200")
    print(
        f"{sum(failed.values())} of {len(outcomes)} requests failed when a worker was killed: {dict(failed)}"
    )
    assert victim not in replaced and len(replaced) == 2
    assert after == [200] * 10
    assert sum(failed.values()) <= CLIENTS  # at most the one request each client had in flight
    assert all(not outcome.isdigit() for outcome in failed)  # a dropped connection, never an error status
    assert streams_after == streams  # the dead worker's streams are not counted any more
    assert any("died" in line for line in server.log_lines())
