"""Prometheus configuration and alert rules, checked and unit-tested by promtool."""

import shutil
import subprocess
from pathlib import Path

import pytest

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"
ALERTS = {
    "SentimentApiDown",
    "SentimentApiErrorRatio",
    "SentimentApiLatencyHigh",
    "SentimentApiInferenceSlow",
    "SentimentApiQueueSaturated",
    "SentimentPredictionDrift",
    "SentimentApiAuthFailures",
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip("promtool is not installed (.ci/run installs Debian's prometheus)")
    return subprocess.run([binary, *args], cwd=MONITORING, capture_output=True, text=True, timeout=120)


def test_rules_and_config_are_valid() -> None:
    rules = promtool("check", "rules", "alerts.yml")
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in rules.stdout
    config = promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr


def test_every_alert_has_a_unit_test_and_they_pass() -> None:
    tests = (MONITORING / "alerts_test.yml").read_text()
    assert all(f"alertname: {alert}" in tests for alert in ALERTS)
    result = promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
