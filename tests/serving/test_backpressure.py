"""Batching and back-pressure through HTTP, with the real model behind a gate the test controls."""

from __future__ import annotations

import asyncio
import time

import pytest

from live_server import gated_classifier, serving_async, settings_for
from sentiment_api.core.engine import Classifier
from sentiment_api.serving import create_app

TEXTS = [
    f"{word} the new ipad at sxsw"
    for word in ("love", "hate", "meh", "awesome", "broken", "map", "fun", "sad")
]


TIMEOUT_S = 60


def one_stream(package, **overrides):
    """One inference stream, so a request held in inference holds up everything queued behind it;
    every request through the queue (a lone one would otherwise run on the event loop, and a held
    backend would hold the loop too)."""
    return settings_for(package, streams=1, inline_max_tokens=0, **overrides)


def run(coroutine):
    """Run a test's coroutine; one that hangs fails after ``TIMEOUT_S`` instead."""
    return asyncio.run(asyncio.wait_for(coroutine, TIMEOUT_S))


async def until(condition, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "condition not met"
        await asyncio.sleep(0.005)


async def hold_inference(client, backend):
    """Close the gate and send one request that then sits in inference; returns its task."""
    backend.gate.clear()
    backend.entered.clear()
    first = asyncio.ensure_future(client.post("/predict", json={"text": "first"}))
    assert await asyncio.to_thread(backend.entered.wait, 10), "the first request never reached the model"
    return first


async def rows_inferred_until_a_probe_is_answered(client, backend) -> list[int]:
    """The rows of every inference call until a fresh request is answered. With one stream, anything
    still queued ahead of it would run first (or with it), so a dropped request must be absent."""
    probe = await client.post("/predict", json={"text": "probe"})
    assert probe.status_code == 200
    return list(backend.calls)


def test_concurrent_requests_share_one_inference_call_and_each_gets_its_own_answer(onnx_package) -> None:
    classifier, backend = gated_classifier(onnx_package)
    expected = Classifier.load(onnx_package, threads=1).predict(TEXTS, top_k=3)

    async def main():
        app = create_app(one_stream(onnx_package, max_wait_ms=0), classifier)
        async with serving_async(app) as client:
            first = await hold_inference(client, backend)
            backend.calls.clear()
            posts = [
                asyncio.ensure_future(client.post("/predict", json={"text": t, "top_k": 3})) for t in TEXTS
            ]
            await until(lambda: app.state.service.model(None).batcher.depth == len(TEXTS))
            backend.gate.set()
            return await first, await asyncio.gather(*posts), list(backend.calls)

    first, responses, calls = run(main())

    assert first.status_code == 200
    assert calls == [1, len(TEXTS)]  # the held request, then everything that queued behind it, at once
    for response, prediction in zip(responses, expected, strict=True):
        body = response.json()
        assert [s["label"] for s in body["sentiment"]] == prediction.labels
        assert [s["score"] for s in body["sentiment"]] == pytest.approx(prediction.scores, abs=1e-6)
        assert float(response.headers["X-Queue-Time-Ms"]) > 0


def test_a_full_queue_answers_429_with_retry_after(onnx_package) -> None:
    classifier, backend = gated_classifier(onnx_package)

    async def main():
        settings = one_stream(onnx_package, queue_size=2, max_batch_texts=2, max_batch_size=1)
        app = create_app(settings, classifier)
        async with serving_async(app) as client:
            first = await hold_inference(client, backend)
            queued = asyncio.ensure_future(client.post("/predict", json={"texts": ["a", "b"]}))
            await until(lambda: app.state.service.model(None).batcher.depth == 2)
            refused = await client.post("/predict", json={"text": "one too many"})
            backend.gate.set()
            return refused, await first, await queued

    refused, first, queued = run(main())

    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert "queue is full" in refused.json()["detail"]
    assert first.status_code == queued.status_code == 200


def test_a_full_queue_refuses_before_reading_parsing_or_tokenising_the_body(onnx_package) -> None:
    classifier, backend = gated_classifier(onnx_package)

    async def main():
        settings = one_stream(onnx_package, queue_size=1, max_batch_texts=1, max_batch_size=1)
        app = create_app(settings, classifier)
        async with serving_async(app) as client:
            first = await hold_inference(client, backend)
            queued = asyncio.ensure_future(client.post("/predict", json={"text": "queued"}))
            await until(lambda: app.state.service.model(None).batcher.depth == 1)
            refused = await client.post(
                "/predict", content=b"{not json", headers={"content-type": "text/plain"}
            )
            backend.gate.set()
            return refused, await first, await queued, app.state.service.metrics.registry

    refused, first, queued, registry = run(main())

    assert refused.status_code == 429  # not 415 or 400: the body was never looked at
    assert "queue is full" in refused.json()["detail"]
    assert first.status_code == queued.status_code == 200
    assert registry.get_sample_value("sentiment_shed_requests_total", {"model": "default"}) == 1


def test_a_request_past_its_deadline_gets_503_and_costs_no_inference(onnx_package) -> None:
    classifier, backend = gated_classifier(onnx_package)

    async def main():
        app = create_app(one_stream(onnx_package, request_timeout_s=0.3), classifier)
        async with serving_async(app) as client:
            first = await hold_inference(client, backend)
            backend.calls.clear()
            late = await client.post("/predict", json={"text": "too late"})
            backend.gate.set()
            await first
            return late, await rows_inferred_until_a_probe_is_answered(client, backend)

    late, calls = run(main())

    assert late.status_code == 503
    assert "deadline" in late.json()["detail"]
    assert calls == [1, 1]  # the held request, then the probe alone: the late one was never inferred


def test_a_client_that_disconnects_costs_no_inference(onnx_package) -> None:
    classifier, backend = gated_classifier(onnx_package)

    async def main():
        app = create_app(one_stream(onnx_package), classifier)
        async with serving_async(app) as client:
            first = await hold_inference(client, backend)
            backend.calls.clear()
            gone = asyncio.Event()
            sent: list[dict] = []
            messages = iter([{"type": "http.request", "body": b'{"text": "bye"}', "more_body": False}])

            async def receive():
                message = next(messages, None)
                if message is not None:
                    return message
                await gone.wait()
                return {"type": "http.disconnect"}

            async def send(message):
                sent.append(message)

            scope = {
                "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                "scheme": "http", "path": "/predict", "raw_path": b"/predict", "root_path": "",
                "query_string": b"", "headers": [(b"content-type", b"application/json")],
                "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 80), "state": {},
            }  # fmt: skip
            call = asyncio.ensure_future(app(scope, receive, send))
            await until(lambda: app.state.service.model(None).batcher.depth == 1)
            gone.set()
            await call
            backend.gate.set()
            await first
            return sent, await rows_inferred_until_a_probe_is_answered(client, backend)

    sent, calls = run(main())

    assert sent[0]["status"] == 499
    assert calls == [1, 1]  # the held request, then the probe alone: the one whose client left never ran


def test_before_the_model_is_warm_probes_answer_503_and_predict_waits(onnx_package) -> None:
    classifier, backend = gated_classifier(onnx_package)
    backend.gate.clear()  # warm-up runs on the model too, so the service stays loading

    async def main():
        # long enough for the patient request to see the rest of the warm-up and its own batch through
        app = create_app(one_stream(onnx_package, request_timeout_s=1.0), classifier)
        async with serving_async(app, ready=False) as client:
            assert await asyncio.to_thread(backend.entered.wait, 10), "warm-up never reached the model"
            before = [await client.get(path) for path in ("/", "/readyz", "/healthz", "/model")]
            too_early = await client.post("/predict", json={"text": "early"})
            waiting = asyncio.ensure_future(client.post("/predict", json={"text": "patient"}))
            registry = app.state.service.metrics.registry
            # the patient request is in, waiting for the model (every other request is answered)
            await until(lambda: registry.get_sample_value("sentiment_in_flight_requests") == 1)
            backend.gate.set()
            await until(lambda: app.state.service.ready)
            return before, too_early, await waiting, await client.get("/")

    (health, ready, alive, model), too_early, waited, after = run(main())

    assert (health.status_code, health.json()["status"]) == (503, "loading")
    assert (ready.status_code, ready.json()) == (503, {"status": "loading"})
    assert (alive.status_code, model.status_code) == (200, 503)
    assert too_early.status_code == 503 and too_early.headers["Retry-After"] == "1"
    assert "not loaded yet" in too_early.json()["detail"]
    assert waited.status_code == 200  # arrived while loading, answered once warm, within its deadline
    assert (after.status_code, after.json()["status"]) == (200, "healthy")


class BrokenBackend:
    """Works for the warm-up, then fails the way a broken runtime would, with a path in the message."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.broken = False

    def logits(self, input_ids, attention_mask):
        if self.broken:
            raise RuntimeError("/opt/secret/model.onnx: kernel exploded")
        return self.inner.logits(input_ids, attention_mask)


def test_a_failing_model_answers_a_bare_500_and_the_service_keeps_serving(onnx_package, caplog) -> None:
    real = Classifier.load(onnx_package, threads=1)
    backend = BrokenBackend(real.backend)
    classifier = Classifier(backend, real.tokenizer, real.card)

    async def main():
        app = create_app(one_stream(onnx_package), classifier)
        async with serving_async(app) as client:
            backend.broken = True
            failed = await client.post("/predict", json={"text": "boom"}, headers={"X-Request-ID": "bug-1"})
            backend.broken = False
            return failed, await client.post("/predict", json={"text": "fine"})

    failed, after = run(main())

    assert failed.status_code == 500
    assert failed.json() == {"detail": "internal error (request id bug-1)"}
    assert failed.headers["X-Request-ID"] == "bug-1"
    assert "secret" not in failed.text and "Traceback" not in failed.text
    assert after.status_code == 200
    assert any("kernel exploded" in str(record.exc_info) for record in caplog.records)  # logged, not answered
