"""Several worker processes, and SIGTERM under load, on real server processes."""

from __future__ import annotations

import asyncio
import signal
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from serving import LiveServer

DRAIN_S = 1.0
GRACE_S = 5.0


def predictions_counted(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "sentiment_requests_total" and sample.labels == {
                "route": "/predict",
                "status": "200",
            }:
                return sample.value
    return 0.0


def test_metrics_add_up_over_several_worker_processes(onnx_package, tmp_path) -> None:
    server = LiveServer(onnx_package, tmp_path / "server.log", workers=2).wait_ready()
    try:
        for i in range(20):  # a new connection each time, so both workers take some
            assert httpx.post(f"{server.url}/predict", json={"text": f"tweet {i}"}).status_code == 200
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
