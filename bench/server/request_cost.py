"""Where a request's time goes inside the process: CPU per request of the app, with each layer
taken away in turn, and of the route's own pieces.

    python bench/server/request_cost.py [--requests 3000] [--package DIR]   (make bench-request-cost)

The real app (``create_app``) serves the shipped package's tokenizer and card with a network that
answers at once (zeros), so the figures are the service's own cost, not the model's. Requests go
straight into the ASGI app (no client, no sockets) one at a time; CPU time (``time.process_time``) per
request is the median of 5 passes. Variants: the whole app; without the request-log middleware
(logging, request metrics, request id); without the guards (keys, rate, body limit); without both.
Then the service's own predict without HTTP (queue and batch thread included), the plain FastAPI +
ONNX Runtime server's app (``plain_server.py``) on the same instant network, the baseline of the
issue's one-connection bar without the model's time and its noise, and the pieces a request pays on
its own: parsing and validating the body, tokenising, and the answer's JSON. Prints a table and the
CPU model.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path
from timeit import timeit

import numpy as np
import onnxruntime
import orjson
import plain_server
from models_memory import cpu_model
from wrk_load import SHIPPED_MODEL, tweets

from sentiment_api.core.engine import Classifier
from sentiment_api.core.settings import Settings
from sentiment_api.serving.app import create_app
from sentiment_api.serving.observability import RequestLogMiddleware
from sentiment_api.serving.routes import _parse
from sentiment_api.serving.security import GuardMiddleware


class InstantBackend:
    """A network that answers at once: zeros for every label."""

    def __init__(self, labels: int) -> None:
        self.labels = labels

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return np.zeros((len(input_ids), self.labels), dtype=np.float32)


def app_without(package: Path, removed: tuple[type, ...]):  # type: ignore[no-untyped-def]
    """The real app on an instant network, without the middlewares of the ``removed`` classes."""
    real = Classifier.load(package, threads=1)
    classifier = Classifier(InstantBackend(len(real.labels)), real.tokenizer, real.card)
    app = create_app(Settings(model=package, threads=1, drain_s=0.0), classifier)
    app.user_middleware = [m for m in app.user_middleware if m.cls not in removed]
    return app


async def post(app, body: bytes) -> int:  # type: ignore[no-untyped-def]
    """One ``POST /predict`` straight into the ASGI app (no client, no sockets); its status."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/predict", "raw_path": b"/predict", "query_string": b"",
        "root_path": "", "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    }  # fmt: skip
    status = 0
    sent = False

    async def receive() -> dict[str, object]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)  # the app only asks again to watch for a disconnect
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, object]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])  # type: ignore[call-overload]

    await app(scope, receive, send)
    return status


async def cpu_per_request(app, bodies: list[bytes], passes: int = 5) -> float:  # type: ignore[no-untyped-def]
    """Median over ``passes`` of the CPU seconds per request, one request at a time."""
    async with app.router.lifespan_context(app):
        while app.state.service.state.value != "ready":
            await asyncio.sleep(0.05)
        return await timed_passes(app, bodies, passes)


async def timed_passes(app, bodies: list[bytes], passes: int) -> float:  # type: ignore[no-untyped-def]
    """Warm ``app`` up, then the median over ``passes`` of the CPU seconds per request."""
    for body in bodies[:200]:
        await post(app, body)
    found = []
    for _ in range(passes):
        started = time.process_time()
        for body in bodies:
            status = await post(app, body)
            assert status == 200, status
        found.append((time.process_time() - started) / len(bodies))
    return statistics.median(found)


class InstantSession:
    """An ONNX Runtime session stand-in for the plain server that answers at once (zeros)."""

    def __init__(self, labels: int) -> None:
        self.labels = labels

    def run(self, outputs: object, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [np.zeros((len(feeds["input_ids"]), self.labels), dtype=np.float32)]


def plain_app(package: Path, labels: int):  # type: ignore[no-untyped-def]
    """``plain_server.py``'s app on the same package, its session answering at once."""
    real = onnxruntime.InferenceSession
    onnxruntime.InferenceSession = lambda *args, **kwargs: InstantSession(labels)  # type: ignore[assignment,misc]
    try:
        return plain_server.build_app(package)
    finally:
        onnxruntime.InferenceSession = real  # type: ignore[misc]


async def cpu_per_prediction(app, texts: list[str], passes: int = 5) -> float:  # type: ignore[no-untyped-def]
    """The same without HTTP: the service's own predict (tokenise, queue, batch thread, rank)."""
    async with app.router.lifespan_context(app):
        service = app.state.service
        while service.state.value != "ready":
            await asyncio.sleep(0.05)
        found = []
        for _ in range(passes):
            started = time.process_time()
            for text in texts:
                await service.predict([text], 1, time.monotonic() + 30)
            found.append((time.process_time() - started) / len(texts))
    return statistics.median(found)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--package", type=Path, default=SHIPPED_MODEL)
    args = parser.parse_args()
    texts = tweets()
    bodies = [orjson.dumps({"text": texts[i % len(texts)]}) for i in range(args.requests)]
    variants = {
        "the whole app": (),
        "without the request log (logs, request metrics, ids)": (RequestLogMiddleware,),
        "without the guards (keys, rate, body limit)": (GuardMiddleware,),
        "without both": (RequestLogMiddleware, GuardMiddleware),
    }
    rows = {
        name: asyncio.run(cpu_per_request(app_without(args.package, removed), bodies))
        for name, removed in variants.items()
    }
    app = app_without(args.package, ())
    rows["the service's predict alone (no HTTP, no route)"] = asyncio.run(
        cpu_per_prediction(app, [texts[i % len(texts)] for i in range(args.requests)])
    )
    app = app_without(args.package, ())
    models = app.state.request_models
    real = Classifier.load(args.package, threads=1)
    rows["the plain FastAPI + ONNX Runtime server's app (plain_server.py)"] = asyncio.run(
        timed_passes(plain_app(args.package, len(real.labels)), bodies, 5)
    )
    sample = texts[:200]
    count = 20
    answer = {"sentiment": [{"label": "No emotion", "score": 0.5}], "inference_time": 0.001}

    def per_text(work: object) -> float:
        return timeit(work, number=count) / (len(sample) * count)  # type: ignore[arg-type]

    pieces = {
        "parse + validate the body": per_text(lambda: [_parse(b, *models) for b in bodies[: len(sample)]]),
        "normalise + tokenise": per_text(lambda: [real.tokenise(real.normalise([t])) for t in sample]),
        "the answer's JSON": per_text(lambda: [orjson.dumps(answer) for _ in sample]),
    }
    print("| what | CPU µs per request |\n|---|---|")
    for name, seconds in {**rows, **pieces}.items():
        print(f"| {name} | {seconds * 1e6:.0f} |")
    print(f"\n{args.requests} requests a pass, median of 5; pieces: 200 tweets x {count}; {cpu_model()}")


if __name__ == "__main__":
    main()
