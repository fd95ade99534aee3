"""Fixtures for the server tests: the tiny ONNX package, a live server process, and Chromium."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from live_server import LIVE_ADMIN_KEY, LiveServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def live_server(onnx_package: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One real server process for the module, with limits small enough for fuzzing to be quick, and
    the admin API on (``LIVE_ADMIN_KEY``) over an empty models directory."""
    directory = tmp_path_factory.mktemp("live")
    (directory / "models").mkdir()
    server = LiveServer(
        onnx_package,
        directory / "server.log",
        SENTIMENT_MAX_TEXT_CHARS="280",
        SENTIMENT_MAX_BATCH_TEXTS="16",
        SENTIMENT_ADMIN_KEYS=LIVE_ADMIN_KEY,
        SENTIMENT_MODELS_DIR=str(directory / "models"),
    )
    try:
        yield server.wait_ready()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium driven by Playwright; the test is skipped, saying why, when either is missing."""
    if not CHROMIUM.exists():
        reason = f"Debian chromium not found at {CHROMIUM} (apt-get install -y chromium)"
        print(reason)
        pytest.skip(reason)
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (dev extra)")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
