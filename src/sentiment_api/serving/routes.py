"""The routes: parse, ask the service, format. Nothing here knows about models or batches.

Each route is a plain function that finds the service, the metrics and the settings on
``request.app.state`` (set once by ``create_app``); :func:`install_routes` puts them on the app.

``/predict`` reads its body itself (content type, JSON, then the request model) so each kind of bad
input gets its own status and a message naming the field; the OpenAPI document is completed by
:mod:`.docs` with the same request models.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import orjson
from fastapi import FastAPI, Request
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from sentiment_api.core.errors import InputError, MalformedBodyError, UnsupportedMediaTypeError
from sentiment_api.core.explanations import count_words
from sentiment_api.core.settings import Settings
from sentiment_api.serving.errors import documented_errors, json_response
from sentiment_api.serving.observability import ModelMetrics
from sentiment_api.serving.schemas import Health, ModelInfo, ModelList, Probe
from sentiment_api.serving.security import charge
from sentiment_api.serving.service import Outcome, SentimentService, State

TIMING_HEADERS = {
    "X-Request-ID": "The client's X-Request-ID when sent, else a new one.",
    "X-Queue-Time-Ms": "Milliseconds the request waited for its batch.",
    "X-Inference-Time-Ms": "Milliseconds the model ran for that batch.",
}


async def health(request: Request) -> Response:
    """``{"status": "healthy"}`` once the model is loaded and warmed; 503 before and while draining."""
    service: SentimentService = request.app.state.service
    ready = service.ready
    payload = {
        "status": "healthy" if ready else service.state.value,
        "model_version": service.version,
        "ready": ready,
    }
    return json_response(payload, 200 if ready else 503)


async def healthz(request: Request) -> Response:
    """200 while the process can serve; 503 only if the model failed to load (restart it)."""
    failed = request.app.state.service.state is State.FAILED
    return json_response({"status": "failed" if failed else "alive"}, 503 if failed else 200)


async def readyz(request: Request) -> Response:
    """200 once warmed; 503 while loading, after a failed load, and while draining."""
    state: State = request.app.state.service.state
    status = {State.READY: "ready"}.get(state, state.value)
    return json_response({"status": status}, 200 if state is State.READY else 503)


async def model(request: Request) -> Response:
    """Labels, metrics, variant and hashes of the default model."""
    return json_response(request.app.state.service.card())


async def models(request: Request) -> Response:
    """Every served model: name, version, labels, variant, device, state and headline scores."""
    service: SentimentService = request.app.state.service
    return json_response({"models": service.cards(), "default": service.default})


async def named_model(request: Request) -> Response:
    """One served model's card, by the name it is served under (404 naming the known ones); the
    path parameter is documented by :func:`_name_parameter`, with the names this service holds."""
    return json_response(request.app.state.service.card(request.path_params["name"]))


async def prometheus(request: Request) -> Response:
    """Prometheus text format, merged over worker processes (with API keys set, for key holders)."""
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(request.app.state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


async def predict(request: Request) -> Response:
    """Classify ``{"text": ...}`` (answer: ``sentiment``, ``inference_time``, ...) or ``{"texts": [...]}``
    (answer: ``results`` in input order). The text is normalised as the model was trained."""
    app_state, state = request.app.state, request.state
    service: SentimentService = app_state.service
    settings: Settings = app_state.settings
    deadline = getattr(state, "arrived", time.monotonic()) + settings.request_timeout_s
    service.admit()
    require_json(request.headers.get("content-type"))
    try:
        raw = await request.body()
    except ClientDisconnect:
        return Response(status_code=499)  # gone before its body was in; nobody reads this
    payload = _parse(raw, *app_state.request_models)
    texts = payload["texts"] if "texts" in payload else [payload["text"]]
    served = service.model(payload["model"])
    state.model = served.name  # the request's metrics and log line name it
    if payload["explain"]:
        charge(request, explained_runs(texts, settings.explain_max_words), "the explained words")
    outcome = await service.predict(
        texts, payload["top_k"], deadline, request.receive, payload["model"], payload["explain"]
    )
    if outcome is None:
        return Response(status_code=499)  # the client is gone; nobody reads this
    batch = outcome.batch
    min_score = payload["min_score"] if payload["min_score"] is not None else settings.min_score
    body = _answer(outcome, "texts" in payload, min_score, payload["raw_scores"], served.metrics)
    state.log = log_fields(outcome, texts, settings.log_text)
    return json_response(
        body,
        headers={
            "X-Queue-Time-Ms": f"{batch.queue_seconds * 1000:.3f}",
            "X-Inference-Time-Ms": f"{batch.inference_seconds * 1000:.3f}",
        },
    )


async def shadow_summary(request: Request) -> Response:
    """How the named model's shadow agrees with it: agreement, label shares, largest differences,
    latency, dropped requests (404 when it has no shadow)."""
    return json_response(request.app.state.service.shadow(request.path_params["name"]).summary())


def install_routes(
    app: FastAPI,
    request_models: tuple[type[BaseModel], type[BaseModel]],
    protected_errors: tuple[int, ...],
    public_metrics: bool = True,
    model_names: tuple[str, ...] = (),
) -> None:
    """Every route of the API on ``app`` (``/metrics`` only when ``public_metrics``), documented with
    the request models ``/predict`` validates by hand and the errors the guards may answer.

    The routes join the app's own router rather than an included one: FastAPI matches an included
    router as a route of its own and then its routes again, about 30 µs of every request here.
    ``/predict`` comes first: the router tries each route in turn, and nearly every request is one.
    """
    app.state.request_models = request_models
    app.add_api_route(
        "/predict",
        predict,
        methods=["POST"],
        summary="Classify one tweet or a batch",
        responses=_predict_responses(protected_errors),
        openapi_extra=_predict_body(request_models),
    )
    for path, route, body, summary in (
        ("/", health, Health, "Health (the old contract)"),
        ("/healthz", healthz, Probe, "Liveness"),
        ("/readyz", readyz, Probe, "Readiness"),
    ):
        app.add_api_route(
            path,
            route,
            methods=["GET"],
            response_model=body,
            responses={503: {"model": body}},
            summary=summary,
        )
    app.add_api_route(
        "/model",
        model,
        methods=["GET"],
        response_model=ModelInfo,
        summary="Model card",
        responses=documented_errors(*protected_errors, 500, 503),
    )
    app.add_api_route(
        "/models",
        models,
        methods=["GET"],
        response_model=ModelList,
        summary="Every served model",
        responses=documented_errors(*protected_errors, 500),
    )
    app.add_api_route(
        "/models/{name}",
        named_model,
        methods=["GET"],
        response_model=ModelInfo,
        summary="One served model's card",
        responses=documented_errors(*protected_errors, 404, 500, 503),
        openapi_extra=_name_parameter(model_names),
    )
    app.add_api_route(
        "/models/{name}/shadow",
        shadow_summary,
        methods=["GET"],
        summary="How a model's shadow agrees with it",
        responses=documented_errors(*protected_errors, 404, 500),
        openapi_extra=_name_parameter(model_names),
    )
    if public_metrics:
        text = {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Metrics"}
        keyed = documented_errors(*protected_errors) if 401 in protected_errors else {}
        app.add_api_route(
            "/metrics",
            prometheus,
            methods=["GET"],
            response_class=Response,
            summary="Prometheus metrics",
            responses={200: text, **keyed},
        )


def _name_parameter(model_names: tuple[str, ...]) -> dict[str, Any]:
    """The ``{name}`` path parameter, listing the names this service holds (when given)."""
    schema: dict[str, Any] = {"type": "string"} | ({"enum": list(model_names)} if model_names else {})
    parameter = {"name": "name", "in": "path", "required": True, "schema": schema}
    return {"parameters": [parameter | {"description": "The name a model is served under."}]}


def _predict_responses(protected_errors: tuple[int, ...]) -> dict[int | str, dict[str, Any]]:
    headers = {
        name: {"description": text, "schema": {"type": "string"}} for name, text in TIMING_HEADERS.items()
    }
    answers = [
        {"$ref": "#/components/schemas/PredictResponse"},
        {"$ref": "#/components/schemas/BatchPredictResponse"},
    ]
    return {
        200: {
            "description": "Labels with scores, best first (a batch: one result per text, in order).",
            "content": {"application/json": {"schema": {"anyOf": answers}}},
            "headers": headers,
        },
        **documented_errors(400, *protected_errors, 404, 408, 413, 415, 422, 429, 500, 503),
    }


def _predict_body(request_models: tuple[type[BaseModel], type[BaseModel]]) -> dict[str, Any]:
    one_of = [{"$ref": f"#/components/schemas/{m.__name__}"} for m in request_models]
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": {"oneOf": one_of}}}}}


def explained_runs(texts: list[str], limit: int) -> int:
    """The extra model runs explaining ``texts`` costs (one per word), or an :class:`InputError`
    naming the limit when they hold more words than ``limit``."""
    words = count_words(texts)
    if words > limit:
        message = (
            f"explain: the text(s) hold {words} words; an explained request may hold at most {limit} "
            "(setting explain_max_words): send fewer or shorter texts, or leave explain out"
        )
        raise InputError(message, [_error("explain", message, "too_many_words")])
    return words


def _answer(
    outcome: Outcome,
    batch_form: bool,
    min_score: float | None = None,
    raw_scores: bool = False,
    metrics: ModelMetrics | None = None,
) -> dict[str, Any]:
    """The response body: the earlier service's two fields first, in their order, then the new ones;
    ``abstained``, ``raw_scores`` and ``explanation`` only when the request's options call for them."""
    results: list[dict[str, Any]] = []
    for number, p in enumerate(outcome.predictions):
        result: dict[str, Any] = {
            "sentiment": [
                {"label": label, "score": score} for label, score in zip(p.labels, p.scores, strict=True)
            ],
            "truncated": p.truncated,
        }
        if min_score is not None:
            result["abstained"] = abstained = p.score < min_score
            if abstained and metrics is not None:
                metrics.record_abstention(p.label)
        if raw_scores:
            labels = outcome.labels
            result["raw_scores"] = [
                {"label": label, "score": float(logit)}
                for label, logit in zip(labels, outcome.logits[number].tolist(), strict=True)
            ]
        if outcome.explanations is not None:
            result["explanation"] = [asdict(word) for word in outcome.explanations[number]]
        results.append(result)
    seconds = outcome.batch.inference_seconds
    if batch_form:
        return {
            "results": results,
            "inference_time": seconds,
            "model_version": outcome.version,
            "model": outcome.model,
        }
    first = results.pop()
    return {
        "sentiment": first.pop("sentiment"),
        "inference_time": seconds,
        "model_version": outcome.version,
        "truncated": first.pop("truncated"),
        "model": outcome.model,
        **first,
    }


def log_fields(outcome: Outcome, texts: list[str], log_text: bool) -> dict[str, Any]:
    """What the request log line adds for a prediction (the text only when enabled)."""
    batch = outcome.batch
    fields: dict[str, Any] = {
        "queue_ms": round(batch.queue_seconds * 1000, 3),
        "inference_ms": round(batch.inference_seconds * 1000, 3),
        "batch_size": batch.batch_size,
        "texts": len(texts),
        "label": outcome.predictions[0].label if len(texts) == 1 else None,
        "model": outcome.model,
        "model_version": outcome.version,
    }
    if log_text:
        fields["text"] = texts[0] if len(texts) == 1 else texts
    return fields


def require_json(content_type: str | None) -> None:
    if content_type is None:
        return  # old clients that send bare JSON keep working
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaTypeError(
            f"Content-Type must be application/json, not {media_type or 'empty'!r}"
        )


def _parse(body: bytes, single_model: type[BaseModel], batch_model: type[BaseModel]) -> dict[str, Any]:
    """The body as a validated request (dict form), or an :class:`InputError` naming each field."""
    data = json_object(body, '{"text": "..."} or {"texts": ["...", ...]}')
    return validated(batch_model if "texts" in data else single_model, data)


def json_object(body: bytes, shape: str) -> dict[str, Any]:
    """The body as a JSON object; a 400 for bad JSON, a 422 for another value (``shape`` says what
    the object looks like)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedBodyError(
            f"body is not valid JSON: {exc}", [_error("body", str(exc), "json_invalid")]
        ) from None
    if not isinstance(data, dict):
        message = f"body must be a JSON object: {shape}"
        raise InputError(message, [_error("body", message, "object_expected")])
    return data


def validated(model: type[BaseModel], data: dict[str, Any]) -> dict[str, Any]:
    """``data`` validated by ``model`` (dict form), or an :class:`InputError` naming each field."""
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
