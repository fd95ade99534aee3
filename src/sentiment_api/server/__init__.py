"""The HTTP service: ``create_app(settings)`` builds it, :func:`serve` runs it under uvicorn."""

from .app import app_from_env, create_app
from .runner import serve

__all__ = ["app_from_env", "create_app", "serve"]
