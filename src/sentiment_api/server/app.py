"""The app factory: settings in, a FastAPI app out, whose lifespan loads the model and drains on SIGTERM.

Middleware, outermost first: request log and metrics (so refusals are counted too), CORS when
origins are configured, then the guards (failed-authentication throttle, keys, rate, body size and
time). Everything is built here from the settings; nothing happens at import time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from .. import __version__
from ..config import Settings, load_settings
from ..engine import Classifier
from .connections import STATE_KEY, ConnectionLimits
from .docs import install_docs, install_openapi, install_ui
from .errors import install_error_handlers
from .lifecycle import DrainOnSigterm
from .limits import STATE_FILE, AuthFailureThrottle, RateLimiter, TokenBuckets
from .observability import Metrics, RequestLogMiddleware, forget_dead_processes, start_metrics_server
from .routes import build_router
from .schemas import request_models
from .security import GuardMiddleware
from .service import SentimentService
from .tracing import Tracing

PROTECTED = frozenset({"/predict", "/model"})
DESCRIPTION = """Classify the emotion a tweet shows toward a brand or product.

`POST /predict` with `{"text": "..."}` (or `{"texts": [...]}` for a batch). Bad input is a 4xx whose
body names the field and the limit; 429 and 503 carry `Retry-After`."""


def create_app(settings: Settings, classifier: Classifier | None = None) -> FastAPI:
    """Build the service. ``classifier``, when given, is served instead of loading ``settings.model``."""
    metrics = Metrics(CollectorRegistry())
    service = SentimentService(settings, metrics, classifier)
    tracing = Tracing(settings.otlp_endpoint, settings.service_name) if settings.otlp_endpoint else None
    drain = DrainOnSigterm(service.drain, settings.drain_s)
    buckets = TokenBuckets(settings.state_dir / STATE_FILE if settings.state_dir else None)
    connection_limits = ConnectionLimits(
        settings.read_timeout_s,
        settings.max_header_bytes,
        lambda reason: metrics.dropped_connections.labels(reason).inc(),
    )
    # one worker serves its own metrics port; with several, the supervising process does (runner.py)
    own_metrics_port = settings.metrics_port if settings.workers == 1 else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        forget_dead_processes()  # a worker that replaces a killed one clears its predecessor's gauges
        stop_metrics = (
            start_metrics_server(settings.host, own_metrics_port, metrics.registry)
            if own_metrics_port is not None
            else None
        )
        service.start()
        drain.install()
        try:
            yield {STATE_KEY: connection_limits}  # for the HTTP protocol (connections.py)
        finally:
            drain.remove()
            await service.stop()
            metrics.close()
            buckets.close()
            if stop_metrics is not None:
                stop_metrics()
            if tracing is not None:
                tracing.shutdown()

    app = FastAPI(
        title="sentiment-api",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = service
    app.state.settings = settings
    install_error_handlers(app)

    keys = [key.get_secret_value() for key in settings.api_keys]
    protected_errors: tuple[int, ...] = ((401,) if keys else ()) + (
        (429,) if settings.rate_limit_per_s or keys else ()
    )
    single, batch = request_models(settings.max_text_chars, settings.max_batch_texts)
    public_metrics = settings.metrics_port is None
    router = build_router(service, metrics, single, batch, protected_errors, public_metrics)
    # the routes join the app's own router rather than being included: FastAPI matches an included
    # router as a route of its own and then its routes again, about 30 µs of every request here
    app.router.routes.extend(router.routes)
    if settings.docs:
        install_docs(app)
        install_ui(app)
    install_openapi(app, (single, batch))

    limiter = (
        RateLimiter(buckets, settings.rate_limit_per_s, settings.rate_limit_burst)
        if settings.rate_limit_per_s
        else None
    )
    throttle = AuthFailureThrottle(buckets, settings.auth_failure_limit, settings.auth_failure_window_s)
    app.add_middleware(
        GuardMiddleware,
        keys=keys,
        rate_limiter=limiter,
        auth_throttle=throttle if keys else None,
        metrics=metrics,
        max_body_bytes=settings.max_body_bytes,
        read_timeout_s=settings.read_timeout_s,
        # with keys, metrics on the public port are for key holders only
        protected=PROTECTED | ({"/metrics"} if keys and public_metrics else set()),
    )
    if settings.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "X-Queue-Time-Ms", "X-Inference-Time-Ms", "Retry-After"],
        )
    routes = {getattr(route, "path", "") for route in [*router.routes, *app.routes]} - {""}
    app.add_middleware(RequestLogMiddleware, metrics=metrics, routes=routes, tracing=tracing)
    return app


def app_from_env() -> FastAPI:
    """The uvicorn factory (``--factory``): settings from ``SENTIMENT_*`` variables, in each worker."""
    return create_app(load_settings())
