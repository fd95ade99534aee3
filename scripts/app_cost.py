"""The app's own cost per request, in process: CPU the Python path takes when the model costs nothing.

Usage: python scripts/app_cost.py [MODEL_DIR] [--requests 6400] [--concurrency 1 32] [--profile]

The real app (``create_app``: middleware, routes, validation, tokenizer, batcher, metrics, logs) on
the package's tokenizer and card, with a backend that answers at once, driven through the ASGI
interface (no sockets, no HTTP parser): ``POST /predict`` with one tweet, ``--concurrency`` callers
at a time. Prints CPU and wall microseconds per request for each concurrency; ``--profile`` prints
cProfile's top functions as well; ``--bare`` also times the floor: a bare ASGI callable doing only
the route's work (read the body, parse JSON, ``SentimentService.predict``, write JSON), with no
framework, middleware, limits, logs or validation around it. What it measures is what the event loop
spends per request beside inference, without wrk's noise: the figure the server's share of the
offline throughput depends on (BENCHMARKS.md, issue 11). Compare changes with it in turns, on one machine.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import time
from pathlib import Path
from typing import Any

import numpy as np

from sentiment_api.config import Settings
from sentiment_api.engine import Classifier
from sentiment_api.server import create_app

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "src/sentiment_api/models/default"
TWEET = "I love my new iphone but the battery at #sxsw is awful http://t.co/abc @mention"
WARM_UP = 300


class InstantBackend:
    """Logits of zeros at once: the model's cost taken out."""

    def __init__(self, labels: int) -> None:
        self.labels = labels

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return np.zeros((input_ids.shape[0], self.labels), dtype=np.float32)


def request_scope(body: bytes) -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/predict", "raw_path": b"/predict", "query_string": b"",
        "root_path": "", "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
        "headers": [
            (b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
    }  # fmt: skip


async def measure(app: Any, requests: int, concurrency: int) -> tuple[float, float]:
    """CPU and wall seconds per request, after a warm-up, with ``concurrency`` callers at once."""
    body = json.dumps({"text": TWEET}).encode()

    async def one() -> None:
        sent = False
        forever = asyncio.Event()  # after the body, receive() waits as a connected client's does

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await forever.wait()
            return {"type": "http.disconnect"}

        status: list[int] = []

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app(dict(request_scope(body), state={}), receive, send)
        if status != [200]:
            raise SystemExit(f"POST /predict answered {status}")

    async def caller(count: int) -> None:
        for _ in range(count):
            await one()

    async with app.router.lifespan_context(app):
        while not app.state.service.ready:
            await asyncio.sleep(0.05)
        await caller(WARM_UP)
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(caller(requests // concurrency) for _ in range(concurrency)))
        done = requests // concurrency * concurrency
        return (time.process_time() - cpu) / done, (time.perf_counter() - wall) / done


def bare_app(app: Any) -> Any:
    """/predict's work alone, on ``app``'s service: what the framework around it costs is the difference."""
    service = app.state.service

    async def bare(scope: dict[str, Any], receive: Any, send: Any) -> None:
        payload = json.loads((await receive())["body"])
        outcome = await service.predict([payload["text"]], 1, time.monotonic() + 10, receive)
        best = outcome.predictions[0]
        body = json.dumps(
            {
                "sentiment": [{"label": best.labels[0], "score": best.scores[0]}],
                "inference_time": outcome.batch.inference_seconds,
            }
        ).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    bare.router = app.router  # type: ignore[attr-defined]  # measure() runs the app's lifespan
    bare.state = app.state  # type: ignore[attr-defined]
    return bare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, nargs="?", default=DEFAULT_MODEL)
    parser.add_argument("--requests", type=int, default=6400)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--profile", action="store_true", help="also print cProfile's top 40 by own time")
    parser.add_argument("--bare", action="store_true", help="also time the route's work with no framework")
    args = parser.parse_args()

    classifier = Classifier.load(args.model, 1)
    classifier.backend = InstantBackend(len(classifier.labels))
    # solo_threads 0: a lone batch on every core needs a second ONNX Runtime session, and there is none
    settings = Settings(model=args.model, threads=1, solo_threads=0, drain_s=0.0, log_level="warning")
    runs = [(concurrency, False) for concurrency in args.concurrency]
    runs += [(concurrency, True) for concurrency in args.concurrency if args.bare]
    for concurrency, bare in runs:
        app = create_app(settings, classifier)
        if bare:
            app = bare_app(app)
        profile = cProfile.Profile() if args.profile else None
        if profile is not None:
            profile.enable()
        cpu, wall = asyncio.run(measure(app, args.requests, concurrency))
        if profile is not None:
            profile.disable()
            pstats.Stats(profile).sort_stats("tottime").print_stats(40)
        print(
            f"{'bare, ' if bare else ''}concurrency {concurrency}: {cpu * 1e6:.0f} µs CPU and "
            f"{wall * 1e6:.0f} µs wall per request "
            f"({args.requests} requests{', under cProfile' if profile else ''})",
            flush=True,
        )


if __name__ == "__main__":
    main()
