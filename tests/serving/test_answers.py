"""What a request may ask for beside the labels: raw scores, abstention below a min_score, and word
explanations, through the real app; the earlier contract is unchanged when none is asked."""

from __future__ import annotations

import pytest

from live_server import serving, settings_for
from sentiment_api.core.engine import Classifier

TWEET = "I love my new #iPad at sxsw, best launch"


@pytest.fixture(scope="module")
def client(onnx_package):
    with serving(settings_for(onnx_package, explain_max_words=12)) as client:
        yield client


@pytest.fixture(scope="module")
def classifier(onnx_package):
    return Classifier.load(onnx_package, threads=1)


def test_raw_scores_are_the_engines_logits_in_label_order(client, classifier) -> None:
    body = client.post("/predict", json={"text": TWEET, "raw_scores": True, "top_k": 3}).json()

    logits = classifier.logits(classifier.tokenise(classifier.normalise([TWEET])).ids)[0]
    assert [s["label"] for s in body["raw_scores"]] == classifier.labels
    assert [s["score"] for s in body["raw_scores"]] == pytest.approx(logits.tolist(), abs=1e-5)
    probabilities = classifier.scores(logits[None, :])[0]
    best = {s["label"]: s["score"] for s in body["sentiment"]}
    assert [best[label] for label in classifier.labels] == pytest.approx(probabilities.tolist(), abs=1e-6)


def test_no_option_keeps_the_earlier_fields_only(client) -> None:
    body = client.post("/predict", json={"text": TWEET}).json()

    assert list(body) == ["sentiment", "inference_time", "model_version", "truncated", "model"]


def test_below_min_score_the_answer_keeps_its_label_and_says_abstained(client) -> None:
    plain = client.post("/predict", json={"text": TWEET}).json()
    score = plain["sentiment"][0]["score"]

    unsure = client.post("/predict", json={"text": TWEET, "min_score": min(1.0, score + 0.01)}).json()
    sure = client.post("/predict", json={"text": TWEET, "min_score": score - 0.01}).json()

    assert unsure["abstained"] is True and unsure["sentiment"] == plain["sentiment"]
    assert sure["abstained"] is False
    metrics = client.get("/metrics").text
    assert (
        f'sentiment_abstentions_total{{label="{plain["sentiment"][0]["label"]}",model="default"}} 1.0'
        in metrics
    )


def test_the_servers_min_score_applies_unless_a_request_sets_its_own(onnx_package) -> None:
    with serving(settings_for(onnx_package, min_score=1.0)) as client:
        default = client.post("/predict", json={"texts": [TWEET, "hate it"]}).json()
        own = client.post("/predict", json={"text": TWEET, "min_score": 0.0}).json()

    assert [r["abstained"] for r in default["results"]] == [True, True]
    assert own["abstained"] is False


def test_explanations_weigh_each_word_as_the_engine_does(client, classifier) -> None:
    body = client.post("/predict", json={"text": TWEET, "explain": True}).json()

    explained = classifier.explain([TWEET])[0]
    assert [(w["word"], w["start"], w["end"]) for w in body["explanation"]] == [
        (w.word, w.start, w.end) for w in explained
    ]
    assert [w["weight"] for w in body["explanation"]] == pytest.approx(
        [w.weight for w in explained], abs=1e-5
    )
    assert all(TWEET[w["start"] : w["end"]] == w["word"] for w in body["explanation"])
    assert body["sentiment"] == client.post("/predict", json={"text": TWEET}).json()["sentiment"]


def test_a_batch_explains_each_text_and_counts_the_words(client) -> None:
    texts = ["love it", "the store line is slow"]
    before = _counter(client.get("/metrics").text, "sentiment_explained_words_total")

    body = client.post("/predict", json={"texts": texts, "explain": True}).json()

    assert [len(r["explanation"]) for r in body["results"]] == [2, 5]
    assert _counter(client.get("/metrics").text, "sentiment_explained_words_total") == before + 7


def test_too_many_words_to_explain_is_a_422_naming_the_field_and_the_limit(client) -> None:
    response = client.post("/predict", json={"text": " ".join(["word"] * 13), "explain": True})

    assert response.status_code == 422
    (error,) = response.json()["errors"]
    assert error["field"] == "explain" and "13 words" in error["message"] and "at most 12" in error["message"]


def test_an_explained_request_costs_its_words_in_the_rate_limit(onnx_package) -> None:
    settings = settings_for(onnx_package, rate_limit_per_s=0.01, rate_limit_burst=10)
    with serving(settings) as client:
        explained = client.post("/predict", json={"text": "one two three four five", "explain": True})
        after = [client.post("/predict", json={"text": "hello"}).status_code for _ in range(5)]

    assert explained.status_code == 200
    # 1 token for the request, 5 for its words: 4 of the 10 are left
    assert after == [200, 200, 200, 200, 429]


def test_bad_option_types_are_422s_naming_the_field(client) -> None:
    for body, field in (
        ({"text": TWEET, "min_score": 1.5}, "min_score"),
        ({"text": TWEET, "explain": "yes"}, "explain"),
        ({"text": TWEET, "raw_scores": 1}, "raw_scores"),
    ):
        response = client.post("/predict", json=body)
        assert response.status_code == 422
        assert [e["field"] for e in response.json()["errors"]] == [field]


def _counter(exposition: str, name: str) -> float:
    for line in exposition.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
