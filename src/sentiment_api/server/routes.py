"""The routes: parse, ask the service, format. Nothing here knows about models or batches.

``/predict`` reads its body itself (content type, JSON, then the request model) so each kind of bad
input gets its own status and a message naming the field; the OpenAPI document is completed by
:mod:`.docs` with the same request models.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from ..errors import InputError, MalformedBodyError, UnsupportedMediaTypeError
from .errors import documented_errors, json_response
from .observability import Metrics
from .schemas import Health, ModelInfo, Probe
from .service import Outcome, SentimentService, State

TIMING_HEADERS = {
    "X-Request-ID": "The client's X-Request-ID when sent, else a new one.",
    "X-Queue-Time-Ms": "Milliseconds the request waited for its batch.",
    "X-Inference-Time-Ms": "Milliseconds the model ran for that batch.",
}


def build_router(
    service: SentimentService,
    metrics: Metrics,
    single_model: type[BaseModel],
    batch_model: type[BaseModel],
    protected_errors: tuple[int, ...],
    public_metrics: bool = True,
) -> APIRouter:
    """Every route of the API, bound to ``service`` (``/metrics`` only when ``public_metrics``)."""
    router = APIRouter()
    timeout = service.settings.request_timeout_s
    log_text = service.settings.log_text

    def probe(state: State) -> Response:
        status = {State.READY: "ready"}.get(state, state.value)
        return json_response({"status": status}, 200 if state is State.READY else 503)

    @router.get(
        "/", response_model=Health, responses={503: {"model": Health}}, summary="Health (the old contract)"
    )
    async def health() -> Response:
        """``{"status": "healthy"}`` once the model is loaded and warmed; 503 before and while draining."""
        ready = service.ready
        payload = {
            "status": "healthy" if ready else service.state.value,
            "model_version": service.version,
            "ready": ready,
        }
        return json_response(payload, 200 if ready else 503)

    @router.get("/healthz", response_model=Probe, responses={503: {"model": Probe}}, summary="Liveness")
    async def healthz() -> Response:
        """200 while the process can serve; 503 only if the model failed to load (restart it)."""
        failed = service.state is State.FAILED
        return json_response({"status": "failed" if failed else "alive"}, 503 if failed else 200)

    @router.get("/readyz", response_model=Probe, responses={503: {"model": Probe}}, summary="Readiness")
    async def readyz() -> Response:
        """200 once warmed; 503 while loading, after a failed load, and while draining."""
        return probe(service.state)

    @router.get(
        "/model",
        response_model=ModelInfo,
        responses=documented_errors(*protected_errors, 500, 503),
        summary="Model card",
    )
    async def model() -> Response:
        """Labels, metrics, variant and hashes of the served model."""
        return json_response(service.card())

    if public_metrics:

        @router.get(
            "/metrics",
            response_class=Response,
            responses={
                200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Metrics"},
                **(documented_errors(*protected_errors) if 401 in protected_errors else {}),
            },
            summary="Prometheus metrics",
        )
        async def prometheus() -> Response:
            """Prometheus text format, merged over worker processes (with API keys set, for key holders)."""
            from prometheus_client import CONTENT_TYPE_LATEST

            return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    headers = {
        name: {"description": text, "schema": {"type": "string"}} for name, text in TIMING_HEADERS.items()
    }
    one_of = [{"$ref": f"#/components/schemas/{m.__name__}"} for m in (single_model, batch_model)]
    answers = [
        {"$ref": "#/components/schemas/PredictResponse"},
        {"$ref": "#/components/schemas/BatchPredictResponse"},
    ]

    @router.post(
        "/predict",
        summary="Classify one tweet or a batch",
        responses={
            200: {
                "description": "Labels with scores, best first (a batch: one result per text, in order).",
                "content": {"application/json": {"schema": {"anyOf": answers}}},
                "headers": headers,
            },
            **documented_errors(400, *protected_errors, 408, 413, 415, 422, 429, 500, 503),
        },
        openapi_extra={
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"oneOf": one_of}}}}
        },
    )
    async def predict(request: Request) -> Response:
        """Classify ``{"text": ...}`` (answer: ``sentiment``, ``inference_time``, ...) or ``{"texts": [...]}``
        (answer: ``results`` in input order). The text is normalised as the model was trained."""
        state = request.state
        deadline = getattr(state, "arrived", time.monotonic()) + timeout
        service.admit()
        _require_json(request.headers.get("content-type"))
        try:
            raw = await request.body()
        except ClientDisconnect:
            return Response(status_code=499)  # gone before its body was in; nobody reads this
        payload = _parse(raw, single_model, batch_model)
        texts = payload["texts"] if "texts" in payload else [payload["text"]]
        outcome = await service.predict(texts, payload["top_k"], deadline, request.receive)
        if outcome is None:
            return Response(status_code=499)  # the client is gone; nobody reads this
        batch = outcome.batch
        body = _answer(outcome, "texts" in payload, service.version)
        state.log = _log_fields(outcome, texts, log_text)
        return json_response(
            body,
            headers={
                "X-Queue-Time-Ms": f"{batch.queue_seconds * 1000:.3f}",
                "X-Inference-Time-Ms": f"{batch.inference_seconds * 1000:.3f}",
            },
        )

    return router


def _answer(outcome: Outcome, batch_form: bool, version: str | None) -> dict[str, Any]:
    """The response body: the earlier service's two fields first, in their order, then the new ones."""
    results = [
        {
            "sentiment": [
                {"label": label, "score": score} for label, score in zip(p.labels, p.scores, strict=True)
            ],
            "truncated": p.truncated,
        }
        for p in outcome.predictions
    ]
    seconds = outcome.batch.inference_seconds
    if batch_form:
        return {"results": results, "inference_time": seconds, "model_version": version}
    first = results[0]
    return {
        "sentiment": first["sentiment"],
        "inference_time": seconds,
        "model_version": version,
        "truncated": first["truncated"],
    }


def _log_fields(outcome: Outcome, texts: list[str], log_text: bool) -> dict[str, Any]:
    """What the request log line adds for a prediction (the text only when enabled)."""
    batch = outcome.batch
    fields: dict[str, Any] = {
        "queue_ms": round(batch.queue_seconds * 1000, 3),
        "inference_ms": round(batch.inference_seconds * 1000, 3),
        "batch_size": batch.batch_size,
        "texts": len(texts),
        "label": outcome.predictions[0].label if len(texts) == 1 else None,
    }
    if log_text:
        fields["text"] = texts[0] if len(texts) == 1 else texts
    return fields


def _require_json(content_type: str | None) -> None:
    if content_type is None:
        return  # old clients that send bare JSON keep working
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaTypeError(
            f"Content-Type must be application/json, not {media_type or 'empty'!r}"
        )


def _parse(body: bytes, single_model: type[BaseModel], batch_model: type[BaseModel]) -> dict[str, Any]:
    """The body as a validated request (dict form), or an :class:`InputError` naming each field."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedBodyError(
            f"body is not valid JSON: {exc}", [_error("body", str(exc), "json_invalid")]
        ) from None
    if not isinstance(data, dict):
        message = 'body must be a JSON object: {"text": "..."} or {"texts": ["...", ...]}'
        raise InputError(message, [_error("body", message, "object_expected")])
    model = batch_model if "texts" in data else single_model
    try:
        return model.model_validate(data).model_dump()
    except ValidationError as exc:
        errors = [_error(_field(e["loc"]), e["msg"], e["type"]) for e in exc.errors(include_input=False)]
        raise InputError("; ".join(f"{e['field']}: {e['message']}" for e in errors), errors) from None


def _field(loc: tuple[int | str, ...]) -> str:
    name = ""
    for part in loc:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "body"


def _error(field: str, message: str, kind: str) -> dict[str, str]:
    return {"field": field, "message": message, "type": kind}
