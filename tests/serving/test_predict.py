"""The prediction contract, in process: the earlier answer's shape, top_k, batches, headers, health."""

from __future__ import annotations

import pytest

from live_server import serving, settings_for
from sentiment_api.core.engine import Classifier

TWEET = "I LOVE my new #iPad @apple http://t.co/x {link} 😍"


@pytest.fixture(scope="module")
def client(onnx_package):
    with serving(settings_for(onnx_package)) as client:
        yield client


@pytest.fixture(scope="module")
def classifier(onnx_package):
    return Classifier.load(onnx_package, threads=1)


def test_single_text_answer_keeps_the_earlier_contract_and_adds_fields(client, classifier) -> None:
    response = client.post("/predict", json={"text": TWEET})

    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["sentiment", "inference_time", "model_version", "truncated", "model"]
    assert list(body["sentiment"][0]) == ["label", "score"]
    assert len(body["sentiment"]) == 1
    assert body["sentiment"][0]["label"] in classifier.labels
    assert 0 < body["inference_time"] < 5
    assert body["truncated"] is False
    assert response.content.startswith(b'{"sentiment":[{"label":')


def test_prediction_applies_the_models_normaliser(client, classifier) -> None:
    body = client.post("/predict", json={"text": TWEET, "top_k": 3}).json()

    expected = classifier.predict([TWEET], top_k=3)[0]
    raw = classifier.rank(*_raw_probabilities(classifier, TWEET), top_k=3)[0]
    assert [s["label"] for s in body["sentiment"]] == expected.labels
    assert [s["score"] for s in body["sentiment"]] == pytest.approx(expected.scores, abs=1e-6)
    assert classifier.normalise([TWEET]) != [TWEET]
    assert raw.scores != pytest.approx(expected.scores, abs=1e-6)  # serving raw text would differ


def _raw_probabilities(classifier, text):
    probabilities, encoded = classifier.probabilities([text])
    return probabilities, encoded.truncated


def test_top_k_returns_labels_best_first_and_all_on_request(client, classifier) -> None:
    two = client.post("/predict", json={"text": TWEET, "top_k": 2}).json()["sentiment"]
    everything = client.post("/predict", json={"text": TWEET, "top_k": 100}).json()["sentiment"]

    assert len(two) == 2
    assert sorted(s["label"] for s in everything) == sorted(classifier.labels)
    scores = [s["score"] for s in everything]
    assert scores == sorted(scores, reverse=True)
    assert sum(scores) == pytest.approx(1.0, abs=1e-5)


def test_batch_answers_in_input_order(client, classifier) -> None:
    texts = ["I hate this broken app", "the store line at sxsw", "love the new ipad " * 40, "ok 👍"]

    body = client.post("/predict", json={"texts": texts, "top_k": 3}).json()

    assert list(body) == ["results", "inference_time", "model_version", "model"]
    expected = classifier.predict(texts, top_k=3)
    for result, prediction in zip(body["results"], expected, strict=True):
        assert [s["label"] for s in result["sentiment"]] == prediction.labels
        assert [s["score"] for s in result["sentiment"]] == pytest.approx(prediction.scores, abs=1e-6)
        assert result["truncated"] == prediction.truncated
    assert [r["truncated"] for r in body["results"]] == [False, False, True, False]


def test_headers_carry_request_id_and_timings(client) -> None:
    echoed = client.post("/predict", json={"text": "hi"}, headers={"X-Request-ID": "trace-42"})
    fresh = client.post("/predict", json={"text": "hi"})
    unsafe = client.post("/predict", json={"text": "hi"}, headers={"X-Request-ID": "a b\tc"})

    assert echoed.headers["X-Request-ID"] == "trace-42"
    assert len(fresh.headers["X-Request-ID"]) == 32
    assert unsafe.headers["X-Request-ID"] != "a b\tc"
    assert float(echoed.headers["X-Queue-Time-Ms"]) >= 0
    assert float(echoed.headers["X-Inference-Time-Ms"]) > 0


def test_health_endpoints_report_ready(client) -> None:
    health = client.get("/")

    assert health.status_code == 200
    assert health.json()["status"] == "healthy"
    assert client.get("/healthz").json() == {"status": "alive"}
    assert client.get("/readyz").json() == {"status": "ready"}


def test_model_endpoint_shows_the_card_without_local_paths(client, onnx_package, classifier) -> None:
    response = client.get("/model")

    card = response.json()
    assert response.status_code == 200
    assert card["labels"] == classifier.labels
    assert card["variant"] == "onnx-int8"
    assert card["package"]["sha256"].startswith(card["model_version"].rsplit("-", 1)[1])
    assert "test" in card["metrics"]
    assert str(onnx_package.parent) not in response.text
    assert "/tmp" not in response.text


def test_docs_page_loads_only_local_assets(client) -> None:
    page = client.get("/docs")
    script = client.get("/docs/assets/swagger-ui-bundle.js")

    assert page.status_code == 200
    assert "http://" not in page.text and "https://" not in page.text
    assert "/docs/assets/swagger-ui-bundle.js" in page.text
    assert script.status_code == 200 and len(script.content) > 100_000
    assert client.get("/openapi.json").json()["openapi"].startswith("3.")


def test_openapi_documents_every_status_predict_returns(client) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/predict"]["post"]

    assert set(operation["responses"]) >= {"200", "400", "413", "415", "422", "429", "503"}
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert schemas["PredictRequest"]["properties"]["text"]["maxLength"] == 1000
    assert schemas["BatchPredictRequest"]["properties"]["texts"]["maxItems"] == 64


def test_a_tweets_answer_does_not_depend_on_what_it_is_batched_with(client) -> None:
    """The shipped int8 scheme fixes its activation ranges ahead of time: a tweet alone and the
    same tweet inside a batch form with strangers (padded to the longest) get the same scores."""
    tweet = "the new ipad app is okay i guess"
    strangers = ["I hate this broken app", "love the new ipad " * 20, "ok 👍", "line at the sxsw store"]
    alone = client.post("/predict", json={"text": tweet, "top_k": 3}).json()["sentiment"]
    for position in range(len(strangers) + 1):
        texts = [*strangers[:position], tweet, *strangers[position:]]
        together = client.post("/predict", json={"texts": texts, "top_k": 3}).json()["results"][position]
        assert [item["label"] for item in together["sentiment"]] == [item["label"] for item in alone]
        for mine, theirs in zip(alone, together["sentiment"], strict=True):
            assert theirs["score"] == pytest.approx(mine["score"], abs=1e-6)


def test_tokenising_on_threads_of_its_own_gives_the_same_answers(
    onnx_package, classifier, monkeypatch
) -> None:
    import threading
    from dataclasses import replace

    from sentiment_api.core.settings import DEVICE_DEFAULTS

    texts = [TWEET, "worst app crash ever", "panel at the store today"]
    # as on a GPU, where requests are tokenised on threads of their own
    monkeypatch.setitem(DEVICE_DEFAULTS, "cpu", replace(DEVICE_DEFAULTS["cpu"], tokeniser_threads=2))
    with serving(settings_for(onnx_package)) as threaded:
        body = threaded.post("/predict", json={"texts": texts, "top_k": 3}).json()
        tokenisers = [t for t in threading.enumerate() if t.name.startswith("tokenise")]

    assert tokenisers  # the request was tokenised off the event loop
    for result, expected in zip(body["results"], classifier.predict(texts, top_k=3), strict=True):
        assert [s["label"] for s in result["sentiment"]] == expected.labels
        assert [s["score"] for s in result["sentiment"]] == pytest.approx(expected.scores, abs=1e-6)


def test_the_served_sessions_spin_only_while_a_request_runs(client) -> None:
    service = client.app.state.service.model(None)
    sessions = [service.classifier, *([service.solo] if service.solo is not None else [])]

    assert [session.backend.spin for session in sessions] == ["while_running"] * len(sessions)
