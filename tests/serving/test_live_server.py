"""The real server as a process on loopback: contract over TCP, log lines, schemathesis, /docs (the
``/ui`` page has its own tests, in ``test_ui.py``)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from live_server import LIVE_ADMIN_KEY, open_page, wait_until


def test_live_server_answers_the_contract_and_logs_one_json_line(live_server) -> None:
    response = httpx.post(
        f"{live_server.url}/predict", json={"text": "I love my #iPad"}, headers={"X-Request-ID": "live-1"}
    )

    assert response.status_code == 200
    assert list(response.json()) == ["sentiment", "inference_time", "model_version", "truncated", "model"]
    assert response.headers["X-Request-ID"] == "live-1"
    wait_until(lambda: any('"live-1"' in line for line in live_server.log_lines()), timeout=5)
    lines = [json.loads(line) for line in live_server.log_lines() if line.startswith("{")]
    (logged,) = [line for line in lines if line.get("request_id") == "live-1"]
    assert logged["route"] == "/predict" and logged["status"] == 200
    assert logged["batch_size"] >= 1 and logged["inference_ms"] > 0
    assert "I love my" not in json.dumps(lines)
    assert all(not line.startswith("INFO:") for line in live_server.log_lines())  # uvicorn's too are JSON


# every warning but missing_test_data: the admin PUT names a package directory the fuzzer cannot
# guess, so it answers 404 by design (tests/serving/test_admin.py swaps real ones)
WARNINGS = ",".join(
    ("missing_auth", "base_url_mismatch", "validation_mismatch", "missing_deserializer",
     "unused_openapi_auth", "unsupported_regex", "method_not_allowed", "unmatched_filter",
     "unresolvable_reference", "low_valid_rate", "rate_limited", "dictionary_mismatch")
)  # fmt: skip


def test_schemathesis_finds_nothing_against_the_live_server(live_server, tmp_path) -> None:
    schemathesis = shutil.which("schemathesis") or str(Path(sys.executable).with_name("schemathesis"))
    if not Path(schemathesis).exists():
        pytest.skip("schemathesis is not installed (it is in the dev extra)")
    result = subprocess.run(
        [schemathesis, "run", f"{live_server.url}/openapi.json", "--checks", "all", "--max-examples", "60",
         "--workers", "1", "--seed", "1", "--suppress-health-check", "all",
         "-H", f"X-Admin-Key: {LIVE_ADMIN_KEY}", "--warnings", WARNINGS],
        capture_output=True, text=True, timeout=180, cwd=tmp_path,
    )  # fmt: skip

    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "No issues found" in result.stdout
    assert httpx.get(f"{live_server.url}/readyz").status_code == 200


def test_docs_render_offline_in_headless_chromium(browser, live_server, tmp_path) -> None:
    page, elsewhere = open_page(browser, live_server)

    page.goto(f"{live_server.url}/docs")
    page.wait_for_selector("#operations-default-predict_predict_post, .opblock", timeout=15_000)
    page.screenshot(path=str(tmp_path / "docs.png"))

    assert page.locator(".opblock").count() >= 6
    assert elsewhere == []


def test_serve_with_a_missing_model_exits_1_with_one_line(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sentiment_api", "serve", "--model", str(tmp_path / "nothing")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "not a model directory" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_refuses_unsafe_settings(tmp_path, onnx_package) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sentiment_api", "serve", "--model", str(onnx_package)],
        capture_output=True, text=True, timeout=60, env={**os.environ, "SENTIMENT_API_KEYS": "short"},
    )  # fmt: skip

    assert result.returncode == 1
    assert "SENTIMENT_API_KEYS" in result.stderr and "16 characters" in result.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_with_its_metrics_port_taken_exits_1_with_one_line(onnx_package, workers) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "sentiment_api", "serve", "--model", str(onnx_package), "--port", "9",
             "--metrics-port", str(port), "--workers", workers],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert f"cannot serve metrics on 127.0.0.1:{port}" in result.stderr
    assert "SENTIMENT_METRICS_PORT" in result.stderr
