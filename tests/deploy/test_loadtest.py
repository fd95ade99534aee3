"""The k6 and Locust load tests run against a real server, and their thresholds can fail a run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from serving import LiveServer

LOADTEST = Path(__file__).resolve().parents[2] / "deploy" / "loadtest"


@pytest.fixture(scope="module")
def server(onnx_package, tmp_path_factory):
    live = LiveServer(onnx_package, tmp_path_factory.mktemp("loadtest") / "server.log")
    try:
        yield live.wait_ready()
    finally:
        live.stop()


def binary(name: str) -> str:
    path = Path(sys.executable).parent / name
    if not path.exists():
        pytest.skip(f"{name} is not installed (dev extra)")
    return str(path)


def k6(server: LiveServer, p99_ms: str) -> subprocess.CompletedProcess[str]:
    command = [binary("k6"), "run", "--quiet", "-e", f"BASE_URL={server.url}", "-e", "VUS=4"]
    command += ["-e", "DURATION=2s", "-e", f"P99_MS={p99_ms}", str(LOADTEST / "k6.js")]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_k6_passes_its_thresholds(server) -> None:
    result = k6(server, "2000")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "http_req_failed" in result.stdout and "0.00%" in result.stdout


def test_k6_fails_when_p99_is_over_its_threshold(server) -> None:
    result = k6(server, "0.001")
    assert result.returncode == 99, result.stdout + result.stderr
    assert "thresholds on metrics 'http_req_duration{name:predict}' have been crossed" in result.stderr


def test_locust_runs_headless_against_the_service(server) -> None:
    command = [binary("locust"), "-f", str(LOADTEST / "locustfile.py"), "--host", server.url]
    command += ["--headless", "-u", "4", "-r", "4", "-t", "3s", "--only-summary"]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=120, env={**os.environ, "P99_MS": "2000"}
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "POST" in result.stderr + result.stdout and "/predict" in result.stderr + result.stdout
