"""Prometheus metrics, one JSON log line per request, request ids and timing headers.

Metrics live in a registry made per app, so several apps in one process (tests) never collide. With
several worker processes, ``PROMETHEUS_MULTIPROC_DIR`` is set before any worker starts and
``/metrics`` merges every worker's files, so counts are the service's, not one process's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.metrics_core import Metric
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sentiment_api.serving.activity import Activity
from sentiment_api.serving.batching import BatchStats
from sentiment_api.serving.errors import error_response
from sentiment_api.serving.tracing import Tracing

access_log = logging.getLogger("sentiment_api.access")
log = logging.getLogger("sentiment_api.serving")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class Metrics:
    """Every metric the service exports, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        # the requests under way in this process, as the request log counts them (the in_flight
        # gauge's value, read on every lone request: a plain int costs nothing to read)
        self.activity = Activity()
        r = registry
        self.requests = Counter(
            "sentiment_requests",
            "HTTP requests by route, status and model (empty for routes that name none).",
            ["route", "status", "model"],
            registry=r,
        )
        self.latency = Histogram(
            "sentiment_request_seconds",
            "Request latency.",
            ["route", "model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "sentiment_in_flight_requests", "Requests being served.", registry=r, multiprocess_mode="livesum"
        )
        self.queue_depth = Gauge(
            "sentiment_queue_depth",
            "Texts waiting for inference.",
            ["model"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.streams = Gauge(
            "sentiment_inference_streams",
            "Inference streams (batches that can run at once).",
            ["model"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.streams_busy = Gauge(
            "sentiment_inference_streams_busy",
            "Inference streams running a batch now: busy / streams is the model's saturation.",
            ["model"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.queue_wait = Histogram(
            "sentiment_queue_wait_seconds",
            "Time a request waited for its batch.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "sentiment_inference_seconds",
            "Model time per inference call.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "sentiment_batch_size",
            "Texts per inference call.",
            ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.tokens = Histogram(
            "sentiment_input_tokens",
            "Tokens per text.",
            ["model"],
            buckets=(8, 16, 32, 64, 128, 256, 512),
            registry=r,
        )
        self.truncated = Counter(
            "sentiment_truncated_texts", "Texts cut to the model's length.", ["model"], registry=r
        )
        self.predictions = Counter(
            "sentiment_predictions", "Predicted labels.", ["model", "label"], registry=r
        )
        self.abstentions = Counter(
            "sentiment_abstentions",
            "Answers below the min_score asked for (their label kept, marked abstained), by best label.",
            ["model", "label"],
            registry=r,
        )
        self.explained_words = Counter(
            "sentiment_explained_words",
            "Words occluded to explain answers (one model run each).",
            ["model"],
            registry=r,
        )
        self.scores = Histogram(
            "sentiment_prediction_score",
            "Probability of the predicted label.",
            ["model", "label"],
            buckets=(0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
            registry=r,
        )
        self.model = Gauge(
            "sentiment_model_info",
            "The served models: one series per name, with its version and variant.",
            ["model", "model_version", "variant"],
            registry=r,
            multiprocess_mode="max",
        )

        self.auth_failures = Counter(
            "sentiment_auth_failures",
            "Requests refused for a missing or unknown API key.",
            ["reason"],
            registry=r,
        )
        self.throttled = Counter(
            "sentiment_throttled_requests",
            "Requests refused with 429 by a per-client limit: the request rate, or too many failed "
            "authentications from the address.",
            ["limit"],
            registry=r,
        )
        self.shed = Counter(
            "sentiment_shed_requests",
            "Requests shed under load: refused with 429 because the inference queue was full (by texts or "
            "by expected wait), or answered 503 after waiting past queue_timeout_ms or the deadline.",
            ["model"],
            registry=r,
        )
        self.dropped_connections = Counter(
            "sentiment_dropped_connections",
            "Connections closed by the server before a request was served: too slow (read timeout), "
            "headers too large, or over the connection limit (max_connections).",
            ["reason"],
            registry=r,
        )
        self.training_share = Gauge(
            "sentiment_training_label_share",
            "Share of each label in the served model's training split (from its card): the baseline "
            "the prediction-drift alert compares live label shares with.",
            ["model", "label"],
            registry=r,
            multiprocess_mode="max",
        )

        self.shadow_requests = Counter(
            "sentiment_shadow_requests",
            "Requests offered to a model's shadow, by outcome: compared, dropped (under load, or the "
            "shadow not ready) or failed.",
            ["model", "outcome"],
            registry=r,
        )
        self.shadow_agreement = Counter(
            "sentiment_shadow_agreement",
            "Texts the shadow also answered, by whether its label agreed with the live model's.",
            ["model", "agreed"],
            registry=r,
        )
        self.shadow_predictions = Counter(
            "sentiment_shadow_predictions", "The shadow's predicted labels.", ["model", "label"], registry=r
        )
        self.shadow_diff = Histogram(
            "sentiment_shadow_probability_difference",
            "Largest difference of a label's probability between the live model and its shadow, per text.",
            ["model"],
            buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0),
            registry=r,
        )
        self.shadow_seconds = Histogram(
            "sentiment_shadow_seconds",
            "Time the shadow took for a request, off the response path (the time it was let run: "
            "not the time it was paused for live requests).",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )

    def for_model(self, name: str) -> ModelMetrics:
        """The metrics of the model served under ``name``: each one's series for that name."""
        return ModelMetrics(self, name)

    def exposition(self) -> bytes:
        """The text format: all workers' values in multiprocess mode, else this registry's."""
        return generate_latest(merged_registry() if os.environ.get(MULTIPROC_ENV) else self.registry)

    def close(self) -> None:
        """Drop this process's live gauges from the merged view when it exits."""
        if os.environ.get(MULTIPROC_ENV):
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


class ModelMetrics:
    """One served model's series of the service's metrics (the ``model`` label filled in)."""

    def __init__(self, metrics: Metrics, name: str) -> None:
        self.name = name
        self._metrics = metrics
        self.queue_depth = metrics.queue_depth.labels(name)
        self.streams = metrics.streams.labels(name)
        self.streams_busy = metrics.streams_busy.labels(name)
        self.queue_wait = metrics.queue_wait.labels(name)
        self.shed = metrics.shed.labels(name)
        self._inference = metrics.inference.labels(name)
        self._batch_size = metrics.batch_size.labels(name)
        self._tokens = metrics.tokens.labels(name)
        self._truncated = metrics.truncated.labels(name)
        self.explained_words = metrics.explained_words.labels(name)

    def in_company(self) -> bool:
        """Whether a request other than the caller's is under way in this process (any route)."""
        return self._metrics.activity.requests > 1

    def record_batch(self, stats: BatchStats) -> None:
        """Called by the batcher after every inference call."""
        self._inference.observe(stats.seconds)
        self._batch_size.observe(stats.texts)

    def record_texts(
        self, tokens: Iterable[int], truncated: Iterable[bool], labels: Iterable[str], scores: Iterable[float]
    ) -> None:
        """Per-text figures of one request."""
        for count in tokens:
            self._tokens.observe(count)
        self._truncated.inc(sum(truncated))
        metrics = self._metrics
        for label, score in zip(labels, scores, strict=True):
            metrics.predictions.labels(self.name, label).inc()
            metrics.scores.labels(self.name, label).observe(score)

    def record_abstention(self, label: str) -> None:
        """One answer below its min_score."""
        self._metrics.abstentions.labels(self.name, label).inc()

    def record_model(self, version: str, variant: str, label_shares: dict[str, float]) -> None:
        """The loaded version (its info series) and its training label shares, the drift baseline."""
        self._metrics.model.labels(self.name, version, variant).set(1)
        for label, share in label_shares.items():
            self._metrics.training_share.labels(self.name, label).set(share)

    def forget_model(self, version: str, variant: str) -> None:
        """Mark a released version's info series 0 (its successor has recorded its own as 1)."""
        self._metrics.model.labels(self.name, version, variant).set(0)


class _LiveWorkers:
    """Every worker's values from the multiprocess directory, minus the live gauges of dead ones."""

    def __init__(self) -> None:
        self._merged = multiprocess.MultiProcessCollector(None)  # type: ignore[no-untyped-call]

    def collect(self) -> Iterable[Metric]:
        forget_dead_processes()
        return self._merged.collect()  # type: ignore[no-untyped-call,no-any-return]


def start_metrics_server(host: str, port: int, registry: CollectorRegistry) -> Callable[[], None]:
    """Serve ``registry`` in the Prometheus text format on ``host:port`` from a thread; returns the
    function that stops it."""
    from prometheus_client import start_http_server

    server, thread = start_http_server(port, addr=host, registry=registry)
    log.info("metrics on http://%s:%d/metrics", host, port)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return stop


def merged_registry() -> CollectorRegistry:
    """A registry holding every worker's metrics (``PROMETHEUS_MULTIPROC_DIR`` must be set)."""
    registry = CollectorRegistry()
    registry.register(_LiveWorkers())
    return registry


def forget_dead_processes() -> list[int]:
    """Drop the live gauges of worker processes that died without :meth:`Metrics.close` (SIGKILL, out
    of memory), so a replaced worker's in-flight requests and streams are not counted twice. Their
    counters and histograms stay: those still add up. Returns the pids forgotten."""
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        return []
    dead = []
    for path in Path(directory).glob("gauge_live*_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        if pid != os.getpid() and not _alive(pid):
            dead.append(pid)
    for pid in set(dead):
        multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
    return sorted(set(dead))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the record's ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,  # which worker process, when there are several
        }
        payload.update(getattr(record, "fields", {}))
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(payload, default=str).decode()


def logging_config(level: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for uvicorn: JSON lines on stderr for ours and uvicorn's loggers."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    loggers = {
        name: {"handlers": ["json"], "level": level.upper(), "propagate": False}
        for name in ("sentiment_api", "uvicorn", "uvicorn.error")
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {"json": handler},
        "loggers": loggers,
    }


class RequestLogMiddleware:
    """Request id, in-flight gauge, request counter and latency, one log line, optional trace span."""

    def __init__(
        self, app: ASGIApp, metrics: Metrics, routes: set[str], tracing: Tracing | None = None
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes
        # a route with parameters (/models/{name}) counts under its template, not each path
        self.templates = [(route.split("/"), route) for route in sorted(routes) if "{" in route]
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        request_id = _request_id(scope)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["arrived"] = started
        route = self._route(scope["path"])
        status = 0
        header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        self.metrics.in_flight.inc()
        self.metrics.activity.enter()
        span = self.tracing.span(f"{scope['method']} {route}") if self.tracing else contextlib.nullcontext()
        try:
            with span as active:
                try:
                    await self.app(scope, receive, send_with_id)
                except Exception as error:  # a bug, not bad input: log it here, answer a bare 500
                    log.error("request %s failed", request_id, exc_info=error)
                    if status:
                        raise  # the answer had begun; the server can only drop the connection
                    await error_response(error, request_id)(scope, receive, send_with_id)
                if active is not None:
                    active.set_attributes({"http.response.status_code": status, **state.get("log", {})})
        finally:
            seconds = time.monotonic() - started
            self.metrics.in_flight.dec()
            self.metrics.activity.leave()
            model = state.get("model", "")
            self.metrics.requests.labels(route, str(status), model).inc()
            self.metrics.latency.labels(route, model).observe(seconds)
            fields = {
                "request_id": request_id,
                "method": scope["method"],
                "route": route,
                "status": status,
                "latency_ms": round(seconds * 1000, 3),
                **state.get("log", {}),
            }
            access_log.info("request", extra={"fields": fields})

    def _route(self, path: str) -> str:
        """The route label of ``path``: itself, its template, or ``other`` (bounded cardinality)."""
        if path in self.routes:
            return path
        parts = path.split("/")
        for segments, template in self.templates:
            if len(segments) == len(parts) and all(
                segment == part or (segment.startswith("{") and part)
                for segment, part in zip(segments, parts, strict=True)
            ):
                return template
        return "other"


def _request_id(scope: Scope) -> str:
    """The client's ``X-Request-ID`` when it is a sane token, else a new random one."""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text = str(value.decode("latin-1"))
            if _CLIENT_REQUEST_ID.fullmatch(text):
                return text
            break
    return uuid.uuid4().hex
