"""A served model's request path: a lone small request runs on the event loop's own thread; a long
one, or one with another request under way, goes through the queue to an inference thread. Both give
the same answers."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import numpy as np

from live_server import serving_async, settings_for
from sentiment_api.core.engine import Classifier
from sentiment_api.serving.app import create_app

TIMEOUT_S = 60


class ThreadRecordingBackend:
    """A real backend that records which thread ran each call."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.threads: list[str] = []

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        self.threads.append(threading.current_thread().name)
        return self.inner.logits(input_ids, attention_mask)


def test_a_lone_small_request_runs_on_the_loop_and_a_long_or_accompanied_one_on_a_thread(
    onnx_package: Path,
) -> None:
    real = Classifier.load(onnx_package, threads=1, spin=False)
    backend = ThreadRecordingBackend(real.backend)
    classifier = Classifier(backend, real.tokenizer, real.card)
    text, long_text = "love it", "love the new ipad " * 5  # about 4 and over 20 tokens

    async def post(app, client, body: dict) -> tuple[dict, list[str]]:
        backend.threads.clear()
        response = await client.post("/predict", json=body)
        assert response.status_code == 200, response.text
        return response.json(), list(backend.threads)

    async def main():
        app = create_app(settings_for(onnx_package, streams=2, inline_max_tokens=10), classifier)
        async with serving_async(app) as client:
            alone = await post(app, client, {"text": text})
            long = await post(app, client, {"text": long_text})
            app.state.metrics.activity.requests += 1  # another request is under way
            try:
                accompanied = await post(app, client, {"text": text})
            finally:
                app.state.metrics.activity.requests -= 1
            off_app = create_app(settings_for(onnx_package, streams=2, inline_max_tokens=0), classifier)
        async with serving_async(off_app) as client:
            turned_off = await post(off_app, client, {"text": text})
        return threading.current_thread().name, alone, long, accompanied, turned_off

    loop_thread, alone, long, accompanied, turned_off = asyncio.run(asyncio.wait_for(main(), TIMEOUT_S))

    assert alone[1] == [loop_thread]  # no hand-off to an inference thread and back
    for _, threads in (long, accompanied, turned_off):
        assert threads and all(name.startswith("inference") for name in threads), threads
    assert alone[0]["sentiment"] == accompanied[0]["sentiment"] == turned_off[0]["sentiment"]
    expected = real.predict([text])[0]
    assert alone[0]["sentiment"][0]["label"] == expected.label
