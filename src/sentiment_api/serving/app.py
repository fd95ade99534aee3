"""The app factory: settings in, a FastAPI app out, whose lifespan loads the model and drains on SIGTERM.

Middleware, outermost first: request log and metrics (so refusals are counted too), CORS when
origins are configured, then the guards (failed-authentication throttle, keys, rate, body size and
time). Everything is built here from the settings, and put on ``app.state`` for the routes and the
lifespan to find; nothing happens at import time.
"""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from sentiment_api import __version__
from sentiment_api.core.engine import Classifier
from sentiment_api.core.settings import Settings, load_settings
from sentiment_api.serving.admin import UpdateRequest, install_admin_routes
from sentiment_api.serving.docs import install_docs, install_openapi
from sentiment_api.serving.errors import install_error_handlers
from sentiment_api.serving.lifecycle import lifespan
from sentiment_api.serving.limits import STATE_FILE, TokenBuckets
from sentiment_api.serving.observability import Metrics, RequestLogMiddleware
from sentiment_api.serving.oip import install_oip_routes
from sentiment_api.serving.routes import install_routes
from sentiment_api.serving.schemas import request_models
from sentiment_api.serving.security import install_cors, install_guards, protected_errors
from sentiment_api.serving.service import SentimentService
from sentiment_api.serving.tracing import Tracing
from sentiment_api.serving.ui import install_ui

DESCRIPTION = """Classify the emotion a tweet shows toward a brand or product.

`POST /predict` with `{"text": "..."}` (or `{"texts": [...]}` for a batch). Bad input is a 4xx whose
body names the field and the limit; 429 and 503 carry `Retry-After`."""


def create_app(settings: Settings, classifier: Classifier | None = None) -> FastAPI:
    """Build the service. ``classifier``, when given, is served instead of loading ``settings.model``."""
    app = FastAPI(
        title="sentiment-api",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    state = app.state
    state.settings = settings
    state.metrics = metrics = Metrics(CollectorRegistry())
    state.service = SentimentService(settings, metrics, classifier)
    state.buckets = TokenBuckets(settings.state_dir / STATE_FILE if settings.state_dir else None)
    state.tracing = Tracing(settings.otlp_endpoint, settings.service_name) if settings.otlp_endpoint else None
    install_error_handlers(app)
    models = request_models(settings.max_text_chars, settings.max_batch_texts, settings.explain_max_words)
    install_routes(
        app,
        models,
        protected_errors(settings),
        public_metrics=settings.metrics_port is None,
        model_names=tuple(settings.packages),
    )
    if settings.docs:
        install_docs(app)
        install_ui(app, settings, models)
    install_admin_routes(app, tuple(settings.packages))
    install_oip_routes(app)
    install_openapi(app, (*models, UpdateRequest))
    install_guards(app, settings, metrics, state.buckets)
    install_cors(app, settings.cors_origins)
    routes = {getattr(route, "path", "") for route in app.routes} - {""}
    app.add_middleware(RequestLogMiddleware, metrics=metrics, routes=routes, tracing=state.tracing)
    return app


def app_from_env() -> FastAPI:
    """The uvicorn factory (``--factory``): settings from ``SENTIMENT_*`` variables, in each worker."""
    return create_app(load_settings())
