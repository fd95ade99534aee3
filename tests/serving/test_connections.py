"""Slow, idle and oversized clients against the real server process: they are cut off by the read
timeout and the header limit, refused beyond the connection limit, and never stop other clients."""

from __future__ import annotations

import asyncio
import statistics
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from live_server import LiveServer, post_bytes, read_response

READ_TIMEOUT_S = 1.0
MAX_CONNECTIONS = 40
SLOW_CLIENTS = 100  # of each kind: idle, trickling headers, never finishing the body
TIMEOUT_S = 60


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, TIMEOUT_S))


@pytest.fixture(scope="module")
def strict(onnx_package, tmp_path_factory):
    """A server with a short read timeout, a small header limit and few connections allowed."""
    server = LiveServer(
        onnx_package,
        tmp_path_factory.mktemp("strict") / "server.log",
        SENTIMENT_READ_TIMEOUT_S=str(READ_TIMEOUT_S),
        SENTIMENT_MAX_HEADER_BYTES="2048",
        SENTIMENT_MAX_CONNECTIONS=str(MAX_CONNECTIONS),
    )
    try:
        yield server.wait_ready()
    finally:
        server.stop()


def dropped(server: LiveServer) -> dict[str, float]:
    text = httpx.get(f"{server.url}/metrics").text
    return {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "sentiment_dropped_connections_total"
    }


async def open_connection(server: LiveServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port)


async def answer_or_eof(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes] | None:
    """The response the server sends before closing, or None when it closes without one."""
    try:
        return await read_response(reader)
    except asyncio.IncompleteReadError:
        return None


def test_headers_not_in_within_the_read_timeout_get_408_and_the_connection_closes(strict) -> None:
    async def main():
        reader, writer = await open_connection(strict)
        writer.write(b"POST /predict HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # and then nothing more
        started = time.monotonic()
        answer = await answer_or_eof(reader)
        closed = await reader.read() == b""
        return answer, time.monotonic() - started, closed

    (status, headers, body), waited, closed = run(main())

    assert status == 408 and headers["connection"] == "close" and closed
    assert b"did not arrive within 1 s (read_timeout_s)" in body
    assert READ_TIMEOUT_S * 0.9 <= waited <= READ_TIMEOUT_S + 2


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(strict) -> None:
    async def main():
        before = dropped(strict).get("idle", 0)
        reader, _ = await open_connection(strict)
        started = time.monotonic()
        data = await reader.read()
        return data, time.monotonic() - started, dropped(strict)["idle"] - before

    data, waited, counted = run(main())

    assert data == b"" and READ_TIMEOUT_S * 0.9 <= waited <= READ_TIMEOUT_S + 2
    assert counted == 1


def test_a_body_not_in_within_the_read_timeout_gets_408_naming_the_setting(strict) -> None:
    async def main():
        reader, writer = await open_connection(strict)
        request = post_bytes("/predict", b'{"text": "never finished"}')
        writer.write(request[:-10])  # the headers promise more body than ever comes
        return await answer_or_eof(reader), await reader.read()

    (status, headers, body), rest = run(main())

    assert status == 408 and headers["connection"] == "close" and rest == b""
    assert b"did not arrive within 1 s (read_timeout_s)" in body and b'"detail"' in body


def test_headers_over_the_limit_get_431_and_the_connection_closes(strict) -> None:
    async def main():
        reader, writer = await open_connection(strict)
        writer.write(post_bytes("/predict", b'{"text": "hi"}', headers={"X-Padding": "x" * 4000}))
        return await answer_or_eof(reader), await reader.read()

    (status, _, body), rest = run(main())

    assert status == 431 and rest == b""
    assert b"over the limit of 2048 bytes (max_header_bytes)" in body
    assert httpx.post(f"{strict.url}/predict", json={"text": "hi"}).status_code == 200
    assert dropped(strict)["headers_too_large"] >= 1 and dropped(strict)["read_timeout"] >= 1


def test_beyond_the_connection_limit_requests_get_503_until_idle_ones_time_out(strict) -> None:
    async def main():
        async with httpx.AsyncClient(base_url=strict.url, timeout=10) as client:
            # the client is built first: the idle connections must still be open when it posts
            idle = [await open_connection(strict) for _ in range(MAX_CONNECTIONS)]
            refused = await client.post("/predict", json={"text": "hi"})
            await asyncio.sleep(READ_TIMEOUT_S + 0.5)  # the idle ones are closed by then
            served = await client.post("/predict", json={"text": "hi"})
        for _, writer in idle:
            writer.close()
        return refused, served

    refused, served = run(main())

    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1" and refused.headers["connection"] == "close"
    assert f"holds {MAX_CONNECTIONS} connections or requests, its limit (max_connections)" in refused.text
    assert served.status_code == 200
    assert dropped(strict)["max_connections"] >= 1


@pytest.fixture(scope="module")
def defaults(onnx_package, tmp_path_factory):
    """A server with the default read timeout, header and connection limits."""
    server = LiveServer(onnx_package, tmp_path_factory.mktemp("defaults") / "server.log")
    try:
        yield server.wait_ready()
    finally:
        server.stop()


def test_hundreds_of_slow_and_idle_connections_do_not_stop_other_clients(defaults) -> None:
    async def trickle(writer: asyncio.StreamWriter, stop: asyncio.Event) -> None:
        writer.write(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
        while not stop.is_set():
            writer.write(b"X")  # one byte of a header line at a time, never ending it
            await asyncio.sleep(0.2)

    async def timed(client: httpx.AsyncClient) -> list[tuple[int, float]]:
        answers = []
        for number in range(20):
            started = time.monotonic()
            answer = await client.post("/predict", json={"text": f"love the ipad {number}"})
            answers.append((answer.status_code, time.monotonic() - started))
        return answers

    async def main():
        async with httpx.AsyncClient(base_url=defaults.url, timeout=10) as client:
            before = await timed(client)
            idle = [await open_connection(defaults) for _ in range(SLOW_CLIENTS)]
            trickling = [await open_connection(defaults) for _ in range(SLOW_CLIENTS)]
            unfinished = [await open_connection(defaults) for _ in range(SLOW_CLIENTS)]
            stop = asyncio.Event()
            tricklers = [asyncio.ensure_future(trickle(w, stop)) for _, w in trickling]
            for _, writer in unfinished:
                writer.write(post_bytes("/predict", b'{"text": "never finished"}')[:-5])
            await asyncio.sleep(0.5)
            during = await timed(client)
            still_open = sum(not reader.at_eof() for reader, _ in idle + trickling + unfinished)
            stop.set()
            await asyncio.gather(*tricklers)
            for _, writer in idle + trickling + unfinished:
                writer.close()
        return before, during, still_open

    before, during, still_open = run(main())

    assert still_open == 3 * SLOW_CLIENTS  # all of them held open, none yet past the 10 s default
    assert {status for status, _ in before + during} == {200}
    usual = statistics.median(seconds for _, seconds in before)
    slowed = statistics.median(seconds for _, seconds in during)
    print(
        f"median latency {usual * 1000:.1f} ms alone, "
        f"{slowed * 1000:.1f} ms beside {3 * SLOW_CLIENTS} slow clients"
    )
    assert slowed <= 3 * usual + 0.05
    assert max(seconds for _, seconds in during) < 2.0
