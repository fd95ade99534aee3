"""One error hierarchy for the whole project.

Every failure the library expects is a :class:`SentimentError`; the CLI turns it into one line on
stderr and exit code 1, and (later) the server maps it to an HTTP status. Messages say what was wrong
and how to fix it.
"""

from __future__ import annotations


class SentimentError(Exception):
    """Base class of every error this project raises on purpose."""


class DataError(SentimentError):
    """A data file is missing, unreadable, or its rows or columns are not what was asked for."""


class ModelError(SentimentError):
    """A model directory or package is missing, incomplete or inconsistent."""


class ConfigError(SentimentError):
    """An option or setting has a value that cannot work."""


class GateError(SentimentError):
    """An exported or quantised model lost accuracy beyond what the accuracy gate allows."""


class DependencyError(SentimentError):
    """An optional dependency (an install extra) is missing."""


def require(module: str, extra: str) -> object:
    """Import ``module`` or raise a :class:`DependencyError` naming the extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise DependencyError(
            f"{module} is not installed; install it with: pip install 'sentiment-api[{extra}]'"
        ) from exc
