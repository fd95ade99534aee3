"""Helpers for the server tests: settings, the app in process, a gated backend, and the live server
process (:mod:`sentiment_api.serving.process`, with the tests' defaults)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from fastapi.testclient import TestClient

from sentiment_api.core.engine import Classifier
from sentiment_api.core.settings import Settings
from sentiment_api.serving import create_app
from sentiment_api.serving.process import READY_TIMEOUT_S as START_TIMEOUT_S
from sentiment_api.serving.process import ServiceProcess
from sentiment_api.serving.process import free_port as free_port

READY_TIMEOUT_S = 60
LIVE_ADMIN_KEY = "live-admin-0123456789abcdef"  # the admin key of the serving tests' live server


def settings_for(package: Path, **overrides: Any) -> Settings:
    """Settings for the tiny package: single-threaded streams, no drain delay, ``overrides`` on top."""
    values: dict[str, Any] = {"model": package, "threads": 1, "drain_s": 0.0, **overrides}
    return Settings(**values)


@contextmanager
def serving(settings: Settings, classifier: Classifier | None = None) -> Iterator[TestClient]:
    """The app in process, lifespan run, once it reports ready."""
    with TestClient(create_app(settings, classifier), raise_server_exceptions=False) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200)
        yield client


@asynccontextmanager
async def serving_async(app: Any, ready: bool = True) -> AsyncIterator[httpx.AsyncClient]:
    """The app in process on this event loop, for tests that send requests concurrently; once it
    reports ready unless ``ready`` is false (failing if it never does)."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            if ready:
                end = time.monotonic() + READY_TIMEOUT_S
                while (await client.get("/readyz")).status_code != 200:
                    assert time.monotonic() < end, f"the app was not ready within {READY_TIMEOUT_S} s"
                    await asyncio.sleep(0.05)
            yield client


def wait_until(condition: Any, timeout: float = READY_TIMEOUT_S, interval: float = 0.05) -> None:
    """Poll ``condition`` until it is true, or fail."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


class GatedBackend:
    """A real backend behind a gate the test opens and closes; records the rows of every call."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.calls: list[int] = []

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        self.entered.set()
        assert self.gate.wait(30), "the test never opened the gate"
        self.calls.append(len(input_ids))
        return self.inner.logits(input_ids, attention_mask)


def gated_classifier(package: Path) -> tuple[Classifier, GatedBackend]:
    """The tiny package's classifier, its backend wrapped in a :class:`GatedBackend`."""
    real = Classifier.load(package, threads=1, spin=False)
    backend = GatedBackend(real.backend)
    return Classifier(backend, real.tokenizer, real.card), backend


class LiveServer(ServiceProcess):
    """The real service as a child process on loopback (:class:`ServiceProcess`), single-threaded and
    without a drain delay unless ``env`` says otherwise, its output in ``log``, ``options`` added to
    ``serve``'s; started at once, ready after :meth:`wait_ready`."""

    def __init__(
        self, package: Path, log: Path, workers: int = 1, options: tuple[str, ...] = (), **env: str
    ) -> None:
        defaults = {"SENTIMENT_THREADS": "1", "SENTIMENT_DRAIN_S": "0"}
        super().__init__(package, env={**defaults, **env}, workers=workers, log=log, options=options)

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> LiveServer:
        """Block until ``/readyz`` answers 200 (``ServiceStartError``, with the log, if it never does)."""
        super().wait_ready(timeout_s)
        return self

    def wait_workers_ready(self, workers: int) -> LiveServer:
        """Block until ``workers`` worker processes have each loaded and warmed their model (readiness
        answers as soon as one has)."""

        def loaded() -> int:
            return len({line["pid"] for line in self.json_lines() if line["message"].startswith("model ")})

        wait_until(lambda: loaded() >= workers)
        return self

    def log_lines(self) -> list[str]:
        """What the server wrote so far."""
        return self.log_text().splitlines()

    def json_lines(self) -> list[dict[str, Any]]:
        """The JSON log lines written so far."""
        return [json.loads(line) for line in self.log_lines() if line.startswith("{")]


def open_page(browser: Any, server: ServiceProcess, **options: Any) -> tuple[Any, list[str]]:
    """A new page in ``browser`` (Playwright's ``new_page`` ``options``), and the list of requests it
    sends anywhere but ``server``."""
    page = browser.new_page(**options)
    elsewhere: list[str] = []
    page.on("request", lambda r: None if r.url.startswith(server.url) else elsewhere.append(r.url))
    return page, elsewhere


def listening_sockets(port: int) -> int:
    """How many TCP sockets listen on ``port`` on this machine (``/proc/net/tcp``, state 0A)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


def post_bytes(path: str, body: bytes, host: str = "test", headers: dict[str, str] | None = None) -> bytes:
    """A complete HTTP/1.1 POST with a JSON body, as raw bytes."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", "Content-Type: application/json"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response (status, headers, body) from ``reader``; the server always sends a length."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body
