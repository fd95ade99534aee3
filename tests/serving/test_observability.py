"""Metrics, the JSON request log line, and OpenTelemetry export."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import pytest
from prometheus_client.parser import text_string_to_metric_families

from live_server import serving, settings_for
from sentiment_api.core.model_card import ModelCard
from sentiment_api.serving.observability import JsonFormatter


def samples(client) -> dict[tuple[str, tuple], float]:
    """Every sample of ``/metrics`` as {(name, sorted labels): value}."""
    text = client.get("/metrics").text
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_metrics_count_requests_predictions_batches_and_tokens(onnx_package) -> None:
    with serving(settings_for(onnx_package, streams=3)) as client:
        for _ in range(3):
            client.post("/predict", json={"text": "love the ipad"})
        client.post("/predict", json={"texts": ["hate it", "word " * 200]})
        client.post("/predict", json={"text": ""})
        found = samples(client)

    model, predict = ("model", "default"), ("route", "/predict")
    assert found[("sentiment_requests_total", (model, predict, ("status", "200")))] == 4
    assert found[("sentiment_requests_total", (("model", ""), predict, ("status", "422")))] == 1
    assert found[("sentiment_request_seconds_count", (model, predict))] == 4
    assert sum(v for (name, _), v in found.items() if name == "sentiment_predictions_total") == 5
    assert sum(v for (name, _), v in found.items() if name == "sentiment_prediction_score_count") == 5
    assert found[("sentiment_input_tokens_count", (model,))] == 5
    assert found[("sentiment_truncated_texts_total", (model,))] == 1
    assert found[("sentiment_batch_size_sum", (model,))] >= 5  # warm-up batches count too
    assert found[("sentiment_queue_wait_seconds_count", (model,))] == 4
    assert found[("sentiment_inference_seconds_count", (model,))] >= 4
    assert found[("sentiment_queue_depth", (model,))] == 0
    assert found[("sentiment_inference_streams", (model,))] == 3
    assert found[("sentiment_inference_streams_busy", (model,))] == 0  # all answered
    assert found[("sentiment_in_flight_requests", ())] == 1  # the scrape itself
    assert any(name == "sentiment_model_info" for name, _ in found)
    shares = {
        dict(labels)["label"]: v
        for (name, labels), v in found.items()
        if name == "sentiment_training_label_share" and dict(labels)["model"] == "default"
    }
    assert shares == ModelCard.load(onnx_package).label_shares


def test_each_request_logs_one_json_line_without_the_text(onnx_package, caplog) -> None:
    caplog.set_level(logging.INFO, logger="sentiment_api.access")
    with serving(settings_for(onnx_package)) as client:
        caplog.clear()
        client.post("/predict", json={"text": "secret tweet"}, headers={"X-Request-ID": "req-1"})

    records = [r for r in caplog.records if r.name == "sentiment_api.access"]
    assert len(records) == 1
    line = json.loads(JsonFormatter().format(records[0]))
    assert line["request_id"] == "req-1"
    assert (line["route"], line["status"], line["level"]) == ("/predict", 200, "info")
    for field in ("latency_ms", "queue_ms", "inference_ms", "batch_size", "label", "time"):
        assert field in line, field
    assert "secret tweet" not in json.dumps(line)


def test_the_text_is_logged_only_when_enabled(onnx_package, caplog) -> None:
    caplog.set_level(logging.INFO, logger="sentiment_api.access")
    with serving(settings_for(onnx_package, log_text=True)) as client:
        caplog.clear()
        client.post("/predict", json={"text": "loud tweet"})

    (record,) = [r for r in caplog.records if r.name == "sentiment_api.access"]
    assert json.loads(JsonFormatter().format(record))["text"] == "loud tweet"


class Collector(BaseHTTPRequestHandler):
    """A stand-in OTLP/HTTP receiver that keeps what it is sent."""

    received: ClassVar[list[tuple[str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Collector.received.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_requests_are_traced_to_the_configured_otlp_endpoint(onnx_package) -> None:
    pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed")
    receiver = HTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{receiver.server_address[1]}"
    try:
        with serving(
            settings_for(onnx_package, otlp_endpoint=endpoint, service_name="sentiment-test")
        ) as client:
            client.post("/predict", json={"text": "traced"})
    finally:
        receiver.shutdown()

    paths = {path for path, _ in Collector.received}
    exported = b"".join(body for _, body in Collector.received)
    assert paths == {"/v1/traces"}
    assert b"POST /predict" in exported and b"sentiment-test" in exported
