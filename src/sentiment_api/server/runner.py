"""Run the app under uvicorn: one process, or several sharing one socket and one metrics directory."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ..config import Settings
from ..extras import require
from .observability import MULTIPROC_ENV, logging_config

FACTORY = "sentiment_api.server.app:app_from_env"


def prepare_metrics_dir(settings: Settings) -> Path | None:
    """With several workers, point Prometheus at an empty shared directory (before any worker starts)."""
    if settings.workers == 1 and settings.metrics_dir is None:
        return None
    directory = settings.metrics_dir or Path(tempfile.mkdtemp(prefix="sentiment-metrics-"))
    if directory.exists():
        shutil.rmtree(directory)  # stale files from an earlier run would be counted again
    directory.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(directory)
    return directory


def export_settings(settings: Settings) -> None:
    """Put the explicitly set fields into ``SENTIMENT_*`` variables, which every worker reads.

    API keys are left where they came from (the environment or a key file): copying them into the
    environment would widen who can read them.
    """
    for name in settings.model_fields_set - {"api_keys"}:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, list):
            value = ",".join(str(item) for item in value)
        elif isinstance(value, bool):
            value = "true" if value else "false"
        os.environ[f"SENTIMENT_{name.upper()}"] = str(value)


def serve(settings: Settings) -> None:
    """Serve until SIGTERM or Ctrl-C; each worker builds its app from the same ``SENTIMENT_*`` settings."""
    require("uvicorn")
    import uvicorn

    export_settings(settings)
    metrics_dir = prepare_metrics_dir(settings)
    try:
        uvicorn.run(
            FACTORY,
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_config=logging_config(settings.log_level),
            log_level=settings.log_level,
            access_log=False,  # our own JSON line per request replaces it
            server_header=False,
            timeout_graceful_shutdown=max(1, round(settings.shutdown_grace_s)),
        )
    finally:
        if metrics_dir is not None and settings.metrics_dir is None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
