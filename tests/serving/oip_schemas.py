"""The Open Inference Protocol's REST answers as JSON Schema, transcribed from the protocol's
published OpenAPI document (KServe, ``docs/predict-api/v2/rest_predict_v2.yaml``, OpenAPI 3.0,
"Data Plane" 2.0): the properties it names, their types and which are required. Not fetched at test
time (no network here); a test validates the service's answers against these."""

from __future__ import annotations

from typing import Any

_STRING = {"type": "string"}
_PARAMETERS = {"type": "object"}
_TENSOR_DATA: dict[str, Any] = {
    "type": "array",
    "items": {
        "anyOf": [
            {"$ref": "#/$defs/tensor_data"},
            {"type": "number"},
            {"type": "string"},
            {"type": "boolean"},
        ]
    },
}
_DEFS = {"tensor_data": _TENSOR_DATA}
_SHAPE = {"type": "array", "items": {"type": "integer"}}
_TENSOR = {
    "type": "object",
    "properties": {"name": _STRING, "datatype": _STRING, "shape": _SHAPE},
    "required": ["name", "datatype", "shape"],
}

# request_input and response_output: the same four required fields
_TENSOR_WITH_DATA = {
    "type": "object",
    "properties": {
        "name": _STRING,
        "shape": _SHAPE,
        "datatype": _STRING,
        "parameters": _PARAMETERS,
        "data": {"$ref": "#/$defs/tensor_data"},
    },
    "required": ["name", "shape", "datatype", "data"],
}

SERVER_METADATA = {
    "type": "object",
    "properties": {"name": _STRING, "version": _STRING, "extensions": {"type": "array", "items": _STRING}},
    "required": ["name", "version", "extensions"],
}
MODEL_METADATA = {
    "type": "object",
    "properties": {
        "name": _STRING,
        "versions": {"type": "array", "items": _STRING},
        "platform": _STRING,
        "inputs": {"type": "array", "items": _TENSOR},
        "outputs": {"type": "array", "items": _TENSOR},
    },
    "required": ["name", "platform"],
}
INFERENCE_REQUEST = {
    "$defs": _DEFS,
    "type": "object",
    "properties": {
        "id": _STRING,
        "parameters": _PARAMETERS,
        "inputs": {
            "type": "array",
            "items": _TENSOR_WITH_DATA,
        },
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"name": _STRING, "parameters": _PARAMETERS},
                "required": ["name"],
            },
        },
    },
    "required": ["inputs"],
}
INFERENCE_RESPONSE = {
    "$defs": _DEFS,
    "type": "object",
    "properties": {
        "model_name": _STRING,
        "model_version": _STRING,
        "id": _STRING,
        "parameters": _PARAMETERS,
        "outputs": {
            "type": "array",
            "items": _TENSOR_WITH_DATA,
        },
    },
    "required": ["model_name", "outputs"],
}
ERROR = {"type": "object", "properties": {"error": _STRING}, "required": ["error"]}
