"""The Open Inference Protocol (KServe v2 REST): health, metadata, readiness and inference, in
process and against the real server with Triton's v2 HTTP client."""

from __future__ import annotations

import jsonschema
import numpy as np
import oip_schemas
import pytest

from live_server import serving, settings_for

KEY = "oip-key-0123456789abcdef"


@pytest.fixture(scope="module")
def client(onnx_package):
    with serving(settings_for(onnx_package, max_batch_texts=4)) as client:
        yield client


def test_server_health_and_metadata(client) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    metadata = client.get("/v2").json()
    assert metadata["name"] == "sentiment-api" and metadata["extensions"] == []


def test_model_metadata_and_readiness_name_the_version_input_and_outputs(client) -> None:
    version = client.get("/model").json()["model_version"]
    metadata = client.get("/v2/models/default").json()
    labels = metadata["parameters"]["labels"]

    assert metadata["versions"] == [version] and metadata["platform"] == "onnxruntime_onnx"
    assert metadata["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert metadata["outputs"][1] == {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(labels)]}
    assert metadata["outputs"][2] == {"name": "logits", "datatype": "FP32", "shape": [-1, len(labels)]}
    assert client.get("/v2/models/default/ready").json() == {"name": "default", "ready": True}
    assert client.get(f"/v2/models/default/versions/{version}/ready").status_code == 200
    assert client.get("/v2/models/default/versions/old/ready").status_code == 404


def test_infer_answers_labels_and_probabilities_as_predict_does(client) -> None:
    texts = ["love the new ipad", "the app keeps crashing"]
    body = {"id": "r1", "inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": texts}]}
    answer = client.post("/v2/models/default/infer", json=body).json()
    label, probabilities = answer["outputs"]
    labels = probabilities["parameters"]["labels"].split(",")
    rows = np.array(probabilities["data"]).reshape(probabilities["shape"])

    assert answer["id"] == "r1" and answer["model_name"] == "default"
    assert answer["model_version"] == client.get("/model").json()["model_version"]
    assert label == {"name": "label", "datatype": "BYTES", "shape": [2], "data": label["data"]}
    assert probabilities["shape"] == [2, len(labels)] and np.allclose(rows.sum(axis=1), 1, atol=1e-5)
    for text, best, row in zip(texts, label["data"], rows, strict=True):
        ours = client.post("/predict", json={"text": text, "top_k": 3}).json()["sentiment"]
        assert best == ours[0]["label"] == labels[int(row.argmax())]
        assert {s["label"]: s["score"] for s in ours} == pytest.approx(
            dict(zip(labels, row, strict=True)), abs=1e-6
        )
    nested = {
        "inputs": [{"name": "text", "shape": [2, 1], "datatype": "BYTES", "data": [[t] for t in texts]}]
    }
    only = {**nested, "outputs": [{"name": "label"}]}
    assert client.post("/v2/models/default/infer", json=nested).json()["outputs"][0]["data"] == label["data"]
    assert [o["name"] for o in client.post("/v2/models/default/infer", json=only).json()["outputs"]] == [
        "label"
    ]


@pytest.mark.parametrize(
    ("tensor", "status", "message"),
    [
        ({"name": "text", "shape": [1], "datatype": "FP32", "data": [1.0]}, 400, "datatype must be BYTES"),
        ({"name": "text", "shape": [3], "datatype": "BYTES", "data": ["a"]}, 400, "holds 3 texts, data 1"),
        ({"name": "words", "shape": [1], "datatype": "BYTES", "data": ["a"]}, 400, "one input named 'text'"),
        ({"name": "text", "shape": [1], "datatype": "BYTES", "data": [""]}, 400, "data[0]"),
        ({"name": "text", "shape": [5], "datatype": "BYTES", "data": ["a"] * 5}, 400, "at most 4"),
    ],
)
def test_bad_inference_requests_are_refused_in_the_protocols_error_shape(
    client, tensor, status, message
) -> None:
    answer = client.post("/v2/models/default/infer", json={"inputs": [tensor]})
    assert answer.status_code == status and set(answer.json()) == {"error"}
    assert message in answer.json()["error"]


def test_unknown_models_and_outputs_are_refused_naming_them(client) -> None:
    body = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["hi"]}]}
    unknown = client.post("/v2/models/nope/infer", json=body)
    assert unknown.status_code == 404 and "this service holds default" in unknown.json()["error"]
    output = client.post("/v2/models/default/infer", json={**body, "outputs": [{"name": "embeddings"}]})
    assert output.status_code == 400 and "embeddings" in output.json()["error"]
    assert client.post("/v2/models/default/infer", content=b"{").status_code == 400


def test_the_v2_model_routes_need_a_key_when_keys_are_set(onnx_package) -> None:
    body = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["hi"]}]}
    with serving(settings_for(onnx_package, api_keys=[KEY])) as keyed:
        assert keyed.post("/v2/models/default/infer", json=body).status_code == 401
        assert keyed.get("/v2/models/default").status_code == 401
        assert keyed.get("/models").status_code == 401
        assert keyed.get("/v2/health/ready").status_code == 200  # probes stay open
        answered = keyed.post("/v2/models/default/infer", json=body, headers={"X-API-Key": KEY})
        assert answered.status_code == 200


def test_tritons_v2_client_talks_to_the_live_server(live_server) -> None:
    http = pytest.importorskip("tritonclient.http", reason="tritonclient[http] is not installed (dev extra)")
    client = http.InferenceServerClient(live_server.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("default")
    metadata = client.get_model_metadata("default")
    assert metadata["inputs"][0]["name"] == "text" and metadata["inputs"][0]["datatype"] == "BYTES"

    texts = np.array(["love the new ipad", "worst update ever"], dtype=object)
    tensor = http.InferInput("text", [2], "BYTES")
    tensor.set_data_from_numpy(texts, binary_data=False)
    outputs = [http.InferRequestedOutput(name, binary_data=False) for name in ("label", "probabilities")]
    result = client.infer("default", [tensor], outputs=outputs, request_id="t1")

    labels = result.as_numpy("label")
    probabilities = result.as_numpy("probabilities")
    assert labels.shape == (2,) and probabilities.shape == (2, len(metadata["parameters"]["labels"]))
    assert result.get_response()["id"] == "t1"
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    known = set(metadata["parameters"]["labels"])
    assert {label.decode() if isinstance(label, bytes) else label for label in labels} <= known


def test_inference_is_counted_under_its_route_and_model(client) -> None:
    body = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["hi"]}]}
    client.post("/v2/models/default/infer", json=body)
    metrics = client.get("/metrics").text
    assert 'sentiment_requests_total{model="default",route="/v2/models/{name}/infer",status="200"}' in metrics


def test_every_answer_matches_the_protocols_published_schemas(client) -> None:
    validate = jsonschema.validate
    texts = ["love the new ipad", "the app keeps crashing"]
    request = {"id": "r2", "inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": texts}]}
    validate(request, oip_schemas.INFERENCE_REQUEST)  # the request a KServe client sends

    validate(client.get("/v2").json(), oip_schemas.SERVER_METADATA)
    validate(client.get("/v2/models/default").json(), oip_schemas.MODEL_METADATA)
    validate(client.post("/v2/models/default/infer", json=request).json(), oip_schemas.INFERENCE_RESPONSE)
    bad = client.post("/v2/models/default/infer", json={"inputs": [{**request["inputs"][0], "shape": [3]}]})
    unknown = client.get("/v2/models/nope")
    for refused in (bad, unknown):
        assert refused.status_code in (400, 404)
        validate(refused.json(), oip_schemas.ERROR)
    with pytest.raises(jsonschema.ValidationError):  # the schemas do refuse what breaks them
        validate({"outputs": []}, oip_schemas.INFERENCE_RESPONSE)


def test_logits_come_when_asked_for_and_are_predicts_raw_scores(client) -> None:
    text = "love the new ipad"
    body = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}],
            "outputs": [{"name": "logits"}]}  # fmt: skip
    (logits,) = client.post("/v2/models/default/infer", json=body).json()["outputs"]
    raw = client.post("/predict", json={"text": text, "raw_scores": True}).json()["raw_scores"]

    assert logits["name"] == "logits" and logits["shape"] == [1, len(raw)]
    assert logits["parameters"]["labels"].split(",") == [s["label"] for s in raw]
    assert logits["data"] == pytest.approx([s["score"] for s in raw], abs=1e-6)
