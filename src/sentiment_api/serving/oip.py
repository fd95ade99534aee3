"""The Open Inference Protocol (KServe v2 REST), beside the service's own API.

The routes a KServe, Seldon or Triton client calls: server liveness and readiness, server and model
metadata, model readiness, and inference. A model takes one ``BYTES`` input of texts (shape ``[N]``
or ``[N, 1]``) and answers two outputs: ``label`` (``BYTES``, ``[N]``, the best label of each text)
and ``probabilities`` (``FP32``, ``[N, L]``, every label's calibrated probability, in the order its
``parameters.labels`` gives), and a third when asked for by name: ``logits`` (``FP32``, ``[N, L]``,
the raw scores before calibration and softmax, what ``"raw_scores": true`` gives). The same keys,
limits, metrics and batching apply as to ``/predict``; errors are the protocol's ``{"error": "..."}``.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from sentiment_api import __version__
from sentiment_api.core.errors import InputError, SentimentError
from sentiment_api.core.settings import Settings
from sentiment_api.serving.errors import error_response, json_response, status_of
from sentiment_api.serving.routes import json_object, log_fields, require_json, validated
from sentiment_api.serving.schemas import MAX_TOP_K
from sentiment_api.serving.served_model import ServedModel
from sentiment_api.serving.service import SentimentService, State

INPUT = "text"
OUTPUTS = ("label", "probabilities", "logits")
DEFAULT_OUTPUTS = ("label", "probabilities")  # what a request naming no output gets
PLATFORM = "onnxruntime_onnx"


class RequestedOutput(BaseModel):
    """An output the client asks for (all of them when it names none)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    parameters: dict[str, Any] | None = None


class RequestInput(BaseModel):
    """One input tensor of an inference request."""

    model_config = ConfigDict(extra="forbid")
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any]


class InferenceRequest(BaseModel):
    """The body of ``POST /v2/models/{name}/infer``."""

    model_config = ConfigDict(extra="forbid")
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestedOutput] | None = None


class OipError(Exception):
    """An error answered in the protocol's shape, ``{"error": "..."}``, with ``status``."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _in_protocol_shape(
    route: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """``route`` with its expected errors answered as the protocol's ``{"error": "..."}``."""

    @functools.wraps(route)
    async def answered(request: Request) -> Response:
        try:
            return await route(request)
        except Exception as error:
            return _answer_error(error)

    return answered


def _answer_error(error: Exception) -> Response:
    if isinstance(error, OipError):
        return json_response({"error": str(error)}, error.status)
    if isinstance(error, SentimentError) and status_of(error) != 500:
        ours = error_response(error)  # keeps Retry-After and the other headers
        headers = {
            k: v for k, v in ours.headers.items() if k.lower() not in ("content-length", "content-type")
        }
        return json_response({"error": str(error)}, ours.status_code, headers)
    raise error


async def server_live(request: Request) -> Response:
    """``{"live": true}`` while the process can serve (false, 503, after a failed load)."""
    live = request.app.state.service.state is not State.FAILED
    return json_response({"live": live}, 200 if live else 503)


async def server_ready(request: Request) -> Response:
    """``{"ready": true}`` once every model is loaded and warmed, and not draining."""
    ready = request.app.state.service.ready
    return json_response({"ready": ready}, 200 if ready else 503)


async def server_metadata(request: Request) -> Response:
    """The server's name, version and protocol extensions (none)."""
    return json_response({"name": "sentiment-api", "version": __version__, "extensions": []})


@_in_protocol_shape
async def model_ready(request: Request) -> Response:
    """Whether the named model (and version, when given) is ready to answer."""
    served = _served(request)
    ready = served.state is State.READY
    return json_response({"name": served.name, "ready": ready}, 200 if ready else 503)


@_in_protocol_shape
async def model_metadata(request: Request) -> Response:
    """The named model's version, platform, input and outputs."""
    served = _served(request)
    if served.classifier is None or served.version is None:
        raise OipError(f"model {served.name!r} is still loading", 503)
    labels = served.classifier.labels
    return json_response(
        {
            "name": served.name,
            "versions": [served.version],
            "platform": PLATFORM,
            "inputs": [{"name": INPUT, "datatype": "BYTES", "shape": [-1]}],
            "outputs": [
                {"name": "label", "datatype": "BYTES", "shape": [-1]},
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(labels)]},
                {"name": "logits", "datatype": "FP32", "shape": [-1, len(labels)]},
            ],
            "parameters": {"labels": labels},
        }
    )


@_in_protocol_shape
async def infer(request: Request) -> Response:
    """Classify a ``BYTES`` tensor of texts: each text's best label and every label's probability."""
    app_state, state = request.app.state, request.state
    service: SentimentService = app_state.service
    settings: Settings = app_state.settings
    deadline = getattr(state, "arrived", time.monotonic()) + settings.request_timeout_s
    served = _served(request)
    state.model = served.name
    service.admit()
    require_json(request.headers.get("content-type"))
    try:
        raw = await request.body()
    except ClientDisconnect:
        return Response(status_code=499)
    body = validated(
        InferenceRequest, json_object(raw, '{"inputs": [{"name", "shape", "datatype", "data"}]}')
    )
    texts = _texts(body["inputs"], app_state.request_models[1])
    wanted = [output["name"] for output in body["outputs"] or [{"name": name} for name in DEFAULT_OUTPUTS]]
    unknown = sorted(set(wanted) - set(OUTPUTS))
    if unknown:
        raise OipError(f"unknown output(s) {unknown}: this model has {list(OUTPUTS)}", 400)
    outcome = await service.predict(texts, MAX_TOP_K, deadline, request.receive, served.name)
    if outcome is None:
        return Response(status_code=499)
    assert served.classifier is not None  # predict waited for it
    labels = served.classifier.labels
    outputs: list[dict[str, Any]] = []
    for name in wanted:
        if name == "label":
            data: list[Any] = [prediction.label for prediction in outcome.predictions]
            outputs.append({"name": "label", "datatype": "BYTES", "shape": [len(texts)], "data": data})
        else:  # the rows of probabilities or logits, in the model's label order
            rows = outcome.probabilities if name == "probabilities" else outcome.logits
            outputs.append(
                {
                    "name": name,
                    "datatype": "FP32",
                    "shape": [len(texts), len(labels)],
                    "data": [float(value) for value in rows.ravel().tolist()],
                    "parameters": {"labels": ",".join(labels)},
                }
            )
    answer: dict[str, Any] = {
        "model_name": outcome.model,
        "model_version": outcome.version,
        "outputs": outputs,
    }
    if body["id"] is not None:
        answer["id"] = body["id"]
    state.log = log_fields(outcome, texts, settings.log_text)
    return json_response(answer)


def _served(request: Request) -> ServedModel:
    """The model the path names; a 404 for an unknown name, or a version it does not serve."""
    service: SentimentService = request.app.state.service
    name = request.path_params["name"]
    if name not in service.models:
        raise OipError(
            f"no model named {name!r}; this service holds {', '.join(sorted(service.models))}", 404
        )
    served = service.models[name]
    version = request.path_params.get("version")
    if version is not None and version != served.version:
        raise OipError(f"model {name!r} serves version {served.version}, not {version!r}", 404)
    return served


def _texts(inputs: list[dict[str, Any]], batch_model: type[BaseModel]) -> list[str]:
    """The texts of the one ``BYTES`` input, checked with the limits ``/predict`` applies."""
    if len(inputs) != 1 or inputs[0]["name"] != INPUT:
        names = [tensor["name"] for tensor in inputs]
        raise OipError(f"expected one input named {INPUT!r}, got {names}", 400)
    tensor = inputs[0]
    if tensor["datatype"] != "BYTES":
        raise OipError(f"input {INPUT!r}: datatype must be BYTES, not {tensor['datatype']}", 400)
    shape = tensor["shape"]
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)) or any(size < 0 for size in shape):
        raise OipError(f"input {INPUT!r}: shape must be [N] or [N, 1], not {shape}", 400)
    data = tensor["data"]
    if data and isinstance(data[0], list):  # nested as the shape is, which the protocol allows
        data = [item for row in data for item in (row if isinstance(row, list) else [row])]
    if math.prod(shape) != len(data):
        raise OipError(
            f"input {INPUT!r}: shape {shape} holds {math.prod(shape)} texts, data {len(data)}", 400
        )
    try:
        return list(validated(batch_model, {"texts": data})["texts"])
    except InputError as error:
        raise OipError(f"input {INPUT!r}: {str(error).replace('texts', 'data')}", 400) from None


def install_oip_routes(app: FastAPI) -> None:
    """The v2 routes on ``app``; they are left out of the service's OpenAPI document, the protocol
    publishing its own."""
    for path, route, method in (
        ("/v2", server_metadata, "GET"),
        ("/v2/health/live", server_live, "GET"),
        ("/v2/health/ready", server_ready, "GET"),
        ("/v2/models/{name}", model_metadata, "GET"),
        ("/v2/models/{name}/versions/{version}", model_metadata, "GET"),
        ("/v2/models/{name}/ready", model_ready, "GET"),
        ("/v2/models/{name}/versions/{version}/ready", model_ready, "GET"),
        ("/v2/models/{name}/infer", infer, "POST"),
        ("/v2/models/{name}/versions/{version}/infer", infer, "POST"),
    ):
        app.add_api_route(path, route, methods=[method], include_in_schema=False)
