"""One error hierarchy for the whole project.

Every failure the library expects is a :class:`SentimentError`; the CLI turns it into one line on
stderr and exit code 1, and the server maps it to an HTTP status (``serving/errors.py`` holds that one
table). Messages say what was wrong and how to fix it.
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


class DeviceError(ConfigError):
    """The device asked for is not there, its runtime is not installed, or the model is not for it."""


class GateError(SentimentError):
    """An exported or quantised model lost accuracy beyond what the accuracy gate allows."""


class DependencyError(SentimentError):
    """An optional dependency (an install extra) is missing."""


class ServiceError(SentimentError):
    """The service refused or could not finish one request; the process keeps serving.

    ``retry_after`` (seconds) is set when waiting and trying again can help.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class InputError(ServiceError):
    """A request body that cannot be used: each entry of ``errors`` names a field and what is wrong."""

    def __init__(self, message: str, errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


class MalformedBodyError(InputError):
    """The body is not JSON at all: bad syntax or invalid UTF-8."""


class PayloadTooLargeError(ServiceError):
    """The body is larger than the configured byte limit."""


class RequestTimeoutError(ServiceError):
    """The client took longer than the read timeout to send its request body."""


class UnsupportedMediaTypeError(ServiceError):
    """The body is not declared as JSON."""


class UnsupportedFileError(UnsupportedMediaTypeError):
    """An uploaded file is of a format the service does not read, or one whose reader (an install
    extra) is not installed here."""


class AuthenticationError(ServiceError):
    """API keys are required and the request carries none, or an unknown one."""


class RateLimitedError(ServiceError):
    """This client has used up its request rate for now."""


class QueueFullError(ServiceError):
    """The inference queue is full; the request was not accepted."""


class DeadlineExceededError(ServiceError):
    """The request's deadline passed before its result was ready."""


class NotReadyError(ServiceError):
    """The model is still loading or warming up, or the service is shutting down."""


class UnknownModelError(ServiceError):
    """A request named a model the service does not hold (the message lists the ones it does)."""


class AdminDisabledError(ServiceError):
    """The admin API was called, but no admin key (or no models directory) is configured."""


class ModelUpdateError(ServiceError):
    """A model update was refused (a package that fails a check, nothing to roll back to, several
    worker processes); the version that was serving goes on serving."""


class PackageNotAllowedError(InputError):
    """The admin API was asked for a package outside the models directory it may read."""


class PackageNotFoundError(InputError):
    """The admin API was asked for a package the models directory does not hold."""


class RouteNotFoundError(ServiceError):
    """A route this port does not serve (the admin API, on the public port when it has its own)."""
