"""The admin API: a new version of a named model swapped in, and rolled back, while serving.

Behind admin keys of its own (``X-Admin-Key``; client API keys do not open it), off when none is
configured, and able to load packages only from inside ``models_dir``. Every call is logged.
"""

from __future__ import annotations

import hmac
import logging
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from sentiment_api.core.errors import (
    AdminDisabledError,
    AuthenticationError,
    RateLimitedError,
    RouteNotFoundError,
)
from sentiment_api.core.settings import Settings
from sentiment_api.serving.errors import documented_errors, json_response
from sentiment_api.serving.limits import AuthFailureThrottle
from sentiment_api.serving.routes import json_object, require_json, validated
from sentiment_api.serving.service import SentimentService
from sentiment_api.serving.updates import package_in

log = logging.getLogger("sentiment_api.admin")
ADMIN_HEADER = "x-admin-key"


class UpdateRequest(BaseModel):
    """Which package to serve under the name."""

    model_config = ConfigDict(extra="forbid", strict=True)
    package: str = Field(
        min_length=1, max_length=1024, description="The package's directory, as a path inside models_dir."
    )


class UpdateResponse(BaseModel):
    """The version that now serves, and the one it replaced (``None`` for a new name)."""

    model_config = ConfigDict(protected_namespaces=())
    model: str
    model_version: str
    previous_version: str | None


def require_admin(request: Request) -> None:
    """Pass a request carrying a configured admin key, on the admin port when there is one; 404 on
    another port, 403 when no key is configured, 401 for a missing or unknown key, 429 once the
    address has used up its failed tries (``auth_failure_limit`` per ``auth_failure_window_s``; a
    wrong key takes one, a missing one none)."""
    settings: Settings = request.app.state.settings
    port = request.scope.get("server") or (None, None)
    if settings.admin_port is not None and port[1] != settings.admin_port:
        raise RouteNotFoundError("Not Found")  # the admin API answers on its own port only
    if not settings.admin_keys:
        raise AdminDisabledError("the admin API is off: set SENTIMENT_ADMIN_KEYS to turn it on")
    metrics = request.app.state.metrics
    throttle: AuthFailureThrottle = request.app.state.auth_throttle
    address = request.client.host if request.client else "unknown"
    presented = request.headers.get(ADMIN_HEADER, "").strip().encode()
    matched = any(
        hmac.compare_digest(presented, key.get_secret_value().encode()) for key in settings.admin_keys
    )
    try:
        # the same tries per address as the client keys, shared with them: while they are used up,
        # every admin call from there is refused, the right key included, so guessing costs time;
        # a call with no key takes no try
        exhausted = throttle.attempt(address, matched, presented != b"")
    except RateLimitedError:
        metrics.throttled.labels("auth_failures").inc()
        raise
    if matched:
        return
    metrics.auth_failures.labels("admin").inc()
    log.warning("admin key missing or unknown from %s", address, extra={"fields": {"client": address}})
    if exhausted:
        log.warning(
            "client throttled after repeated failed admin keys", extra={"fields": {"client": address}}
        )
    raise AuthenticationError("admin key missing or unknown (send it as X-Admin-Key)")


async def _requested_package(request: Request) -> Path:
    """The package the body names, as a directory inside the models directory."""
    settings: Settings = request.app.state.settings
    require_json(request.headers.get("content-type"))
    body = validated(UpdateRequest, json_object(await request.body(), '{"package": "..."}'))
    return package_in(settings.models_dir, body["package"])


async def put_model(request: Request) -> Response:
    """Serve the package named in the body as ``{name}``: checked, loaded and warmed first; then
    requests switch, and the previous version is released once its requests are answered."""
    require_admin(request)
    package = await _requested_package(request)
    service: SentimentService = request.app.state.service
    return json_response(await service.swap(request.path_params["name"], package))


async def rollback_model(request: Request) -> Response:
    """Serve ``{name}``'s previous version again, through the same checks."""
    require_admin(request)
    service: SentimentService = request.app.state.service
    return json_response(await service.rollback(request.path_params["name"]))


async def put_shadow(request: Request) -> Response:
    """Attach the package named in the body as ``{name}``'s shadow, after the same checks as a swap."""
    require_admin(request)
    package = await _requested_package(request)
    service: SentimentService = request.app.state.service
    return json_response(await service.attach_shadow(request.path_params["name"], package))


async def detach_shadow(request: Request) -> Response:
    """Detach ``{name}``'s shadow; its summary as it ends."""
    require_admin(request)
    service: SentimentService = request.app.state.service
    return json_response(await service.detach_shadow(request.path_params["name"]))


async def promote_shadow(request: Request) -> Response:
    """Serve ``{name}``'s shadow as ``{name}``, through the same checks as a swap."""
    require_admin(request)
    service: SentimentService = request.app.state.service
    return json_response(await service.promote_shadow(request.path_params["name"]))


def install_admin_routes(app: FastAPI, model_names: tuple[str, ...]) -> None:
    """The admin routes on ``app``, documented (they answer 403 while the admin API is off); a PUT
    may name a new model, a rollback one of ``model_names``."""
    errors = documented_errors(400, 401, 403, 404, 409, 413, 415, 422, 429, 500)
    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    served = name | {"schema": {"type": "string", "enum": list(model_names)}}
    body: dict[str, Any] = {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/UpdateRequest"}}},
    }
    key = {"name": "X-Admin-Key", "in": "header", "required": True, "schema": {"type": "string"}}
    app.add_api_route(
        "/admin/models/{name}",
        put_model,
        methods=["PUT"],
        response_model=UpdateResponse,
        summary="Swap in a new version of a model (or add one)",
        responses=errors,
        openapi_extra={"parameters": [name, key], "requestBody": body},
    )
    app.add_api_route(
        "/admin/models/{name}/rollback",
        rollback_model,
        methods=["POST"],
        response_model=UpdateResponse,
        summary="Roll a model back to its previous version",
        responses=errors,
        openapi_extra={"parameters": [served, key]},
    )
    for path, route, method, summary in (
        ("/admin/models/{name}/shadow", put_shadow, "PUT", "Attach a shadow to a model"),
        ("/admin/models/{name}/shadow/detach", detach_shadow, "POST", "Detach a model's shadow"),
        ("/admin/models/{name}/shadow/promote", promote_shadow, "POST", "Promote a model's shadow"),
    ):
        extra: dict[str, Any] = {"parameters": [served, key]}
        if method == "PUT":
            extra["requestBody"] = body
        app.add_api_route(
            path, route, methods=[method], summary=summary, responses=errors, openapi_extra=extra
        )
