"""The local stack's files: compose against the Compose specification, and the Grafana dashboard's
every query answered by a real Prometheus scraping a real service."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from live_server import LiveServer, free_port, wait_until

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "sentiment-api.json"


def test_compose_file_follows_the_compose_specification() -> None:
    checker = Path(sys.executable).parent / "check-jsonschema"
    if not checker.exists():
        pytest.skip("check-jsonschema is not installed (dev extra)")
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(DEPLOY / "compose.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_scrapes_the_replicas_metrics_port_which_nginx_never_sends_to() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    replica = compose["x-replica"]["environment"]
    scrape = yaml.safe_load((DEPLOY / "monitoring" / "prometheus.yml").read_text())["scrape_configs"][0]
    targets = scrape["static_configs"][0]["targets"]
    upstream = (DEPLOY / "nginx" / "upstream.conf").read_text()

    assert {target.rsplit(":", 1)[1] for target in targets} == {replica["SENTIMENT_METRICS_PORT"]}
    assert {target.rsplit(":", 1)[0] for target in targets} == {"sentiment-api-1", "sentiment-api-2"}
    assert (
        f":{replica['SENTIMENT_METRICS_PORT']}" not in upstream
        and f":{replica['SENTIMENT_PORT']}" in upstream
    )


def test_dashboard_covers_what_operators_watch() -> None:
    titles = " ".join(panel["title"].lower() for panel in json.loads(DASHBOARD.read_text())["panels"])
    for topic in ("traffic", "error", "latency", "inference", "batch", "queue", "label", "score"):
        assert topic in titles


def test_every_dashboard_query_returns_data_from_real_prometheus(onnx_package, tmp_path) -> None:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed (.ci/run installs Debian's prometheus)")
    metrics_port = free_port()
    service = LiveServer(onnx_package, tmp_path / "service.log", SENTIMENT_METRICS_PORT=str(metrics_port))
    prometheus = None
    try:
        service.wait_ready()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: sentiment-api\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{metrics_port}']}}]\n"
        )
        port = free_port()
        prometheus = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / "prometheus.log").open("wb"),
        )
        api = f"http://127.0.0.1:{port}/api/v1/query"

        def scraped() -> bool:
            try:
                answer = httpx.get(api, params={"query": 'up{job="sentiment-api"}'}, timeout=1).json()
            except (httpx.TransportError, ValueError):
                return False
            return bool(answer.get("data", {}).get("result"))

        wait_until(scraped, timeout=30)
        with httpx.Client(base_url=service.url) as http:
            end = time.monotonic() + 6
            while time.monotonic() < end:  # a little traffic, spread over several scrapes
                http.post("/predict", json={"text": "love the new ipad"})
                http.post("/predict", json={"texts": ["worst app ever", "at the apple store"]})
                time.sleep(0.05)

        def empty_queries() -> list[str]:
            empty = []
            for panel in json.loads(DASHBOARD.read_text())["panels"]:
                for target in panel["targets"]:
                    answer = httpx.get(api, params={"query": target["expr"]}, timeout=5).json()
                    assert answer["status"] == "success", (panel["title"], answer)
                    if not answer["data"]["result"]:
                        empty.append(f"{panel['title']}: {target['expr']}")
            return empty

        end = time.monotonic() + 15  # the last scrapes of the traffic may still be to come
        while (empty := empty_queries()) and time.monotonic() < end:
            time.sleep(0.5)
        assert empty == []
    finally:
        if prometheus is not None:
            prometheus.terminate()
            prometheus.wait(10)
        service.stop()
