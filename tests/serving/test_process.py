"""sentiment_api.serving.process: the real service started as a child process, ready or failing with
its log, and stopped, as a user's smoke test of a model package would run it."""

from __future__ import annotations

import ast
import json
import signal
import sys
import urllib.request
from pathlib import Path

import pytest
from pydantic import SecretStr

from sentiment_api.serving import process
from sentiment_api.serving.process import (
    ServiceProcess,
    ServiceStartError,
    running_service,
    setting_variables,
)

DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never a proxy


def post_predict(url: str, text: str) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(
        f"{url}/predict",
        data=json.dumps({"text": text}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with DIRECT.open(request, timeout=60) as answer:
        return answer.status, json.loads(answer.read())


def test_the_shipped_model_answers_predict_and_stops_on_sigterm() -> None:
    with running_service(settings={"log_level": "warning"}) as service:
        status, body = post_predict(service.url, "I love my new #iPad")
        log = service.log
        assert service.process.poll() is None

    assert status == 200
    sentiment = body["sentiment"]
    assert isinstance(sentiment, list) and sentiment[0]["label"]
    assert service.process.returncode in (0, -signal.SIGTERM)  # stopped by SIGTERM, not killed
    assert not log.exists()  # its own temporary log is removed once it stopped cleanly
    assert service.stop() == service.process.returncode  # stopping again is harmless


def test_an_invalid_setting_fails_the_start_with_the_services_own_message(tmp_path) -> None:
    log = tmp_path / "server.log"
    with (
        pytest.raises(ServiceStartError, match="exited with code 1 before it was ready") as raised,
        running_service(settings={"max_text_chars": 0}, log=log),
    ):
        pytest.fail("the service should not have started")

    assert "SENTIMENT_MAX_TEXT_CHARS" in str(raised.value)  # the service's own line, from its log
    assert str(log) in str(raised.value) and "SENTIMENT_MAX_TEXT_CHARS" in log.read_text()


def test_a_service_that_never_gets_ready_is_stopped_and_reported(tmp_path) -> None:
    never_serves = tmp_path / "python"
    never_serves.write_text("#!/bin/sh\necho 'starting, slowly'\nexec sleep 600\n")
    never_serves.chmod(0o755)
    service = ServiceProcess(python=str(never_serves))
    try:
        with pytest.raises(ServiceStartError, match=r"did not answer 200 within 1 s") as raised:
            service.wait_ready(timeout_s=1)
        assert service.process.poll() is not None  # stopped, not left sleeping
        assert "starting, slowly" in str(raised.value)  # the end of its log
        assert service.log.exists()  # kept, as the message names it
    finally:
        service.stop()
        service.log.unlink(missing_ok=True)


def test_settings_become_sentiment_variables() -> None:
    variables = setting_variables(
        {
            "log_text": True,
            "docs": False,
            "cors_origins": ["https://a.example", "https://b.example"],
            "api_keys": [SecretStr("k" * 32)],
            "max_batch_texts": 16,
            "streams": None,
        }
    )

    assert variables == {
        "SENTIMENT_LOG_TEXT": "true",
        "SENTIMENT_DOCS": "false",
        "SENTIMENT_CORS_ORIGINS": "https://a.example,https://b.example",
        "SENTIMENT_API_KEYS": "k" * 32,
        "SENTIMENT_MAX_BATCH_TEXTS": "16",
        "SENTIMENT_STREAMS": None,  # unset in the child: the default applies
    }


@pytest.mark.parametrize(
    ("settings", "message"),
    [({"max_txt_chars": 5}, "no such setting: max_txt_chars"), ({"port": 8000}, "give port as arguments")],
    ids=["misspelt", "an-argument"],
)
def test_a_wrong_setting_name_is_refused_before_anything_starts(settings, message) -> None:
    with pytest.raises(ValueError, match=message):
        ServiceProcess(settings=settings)


def test_the_module_imports_only_the_standard_library_and_the_core() -> None:
    tree = ast.parse(Path(process.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    outside = {
        name
        for name in imported
        if name.split(".")[0] not in sys.stdlib_module_names and not name.startswith("sentiment_api.core")
    }
    assert outside == set()
