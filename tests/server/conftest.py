"""Fixtures for the server tests: the tiny ONNX package and a live server process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from serving import LiveServer


@pytest.fixture(scope="session")
def onnx_package(trained_tiny_bert: Path, tiny_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint exported by the project's own exporter: a real int8 model package."""
    from sentiment_api.export import build_package

    out = tmp_path_factory.mktemp("served") / "package"
    build_package(trained_tiny_bert, out, tiny_csv, log=lambda _: None)
    return out


@pytest.fixture(scope="module")
def live_server(onnx_package: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One real server process for the module, with limits small enough for fuzzing to be quick."""
    log = tmp_path_factory.mktemp("live") / "server.log"
    server = LiveServer(onnx_package, log, SENTIMENT_MAX_TEXT_CHARS="280", SENTIMENT_MAX_BATCH_TEXTS="16")
    try:
        yield server.wait_ready()
    finally:
        server.stop()
