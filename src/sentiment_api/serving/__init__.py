"""The HTTP service: ``create_app(settings)`` builds it, :func:`serve` runs it under uvicorn.

Every module here imports the web stack at its top, so the package checks for it first: without the
``serve`` extra, importing it is one :class:`DependencyError` that says what to install.
"""

from sentiment_api.core.extras import require

require("fastapi")
require("orjson")
require("prometheus_client")
require("uvicorn")
require("httptools")  # connections.py extends uvicorn's httptools protocol

from sentiment_api.serving.app import app_from_env, create_app  # noqa: E402
from sentiment_api.serving.runner import serve  # noqa: E402

__all__ = ["app_from_env", "create_app", "serve"]
