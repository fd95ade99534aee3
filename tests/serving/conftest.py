"""Fixtures for the server tests: the tiny ONNX package and a live server process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from live_server import LIVE_ADMIN_KEY, LiveServer


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
