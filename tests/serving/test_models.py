"""Several models in one process: listed, chosen per request, each with its own metrics and logs."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from live_server import serving, settings_for
from sentiment_api.core.model_card import ModelCard

GENERAL_SHARES = {"Negative emotion": 0.3, "No emotion toward brand or product": 0.4, "Positive emotion": 0.3}


@pytest.fixture(scope="module")
def general_package(onnx_package: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny package under another name and other training shares: another version."""
    out = tmp_path_factory.mktemp("general") / "package"
    shutil.copytree(onnx_package, out)
    card_path = out / "model_card.json"
    card = json.loads(card_path.read_text())
    card.update(name="general-model", label_shares=GENERAL_SHARES)
    card_path.write_text(json.dumps(card))
    return out


@pytest.fixture(scope="module")
def two_models(onnx_package: Path, general_package: Path):
    settings = settings_for(onnx_package, model=[f"brand={onnx_package}", f"general={general_package}"])
    with serving(settings) as client:
        yield client


def test_models_lists_each_with_its_version_labels_device_state_and_scores(two_models, onnx_package) -> None:
    listing = two_models.get("/models").json()

    assert listing["default"] == "brand"
    names = [entry["model"] for entry in listing["models"]]
    assert names == ["brand", "general"]
    brand, general = listing["models"]
    assert brand["default"] is True and general["default"] is False
    assert brand["model_version"].startswith(f"{ModelCard.load(onnx_package).name}-")
    assert general["model_version"].startswith("general-model-")
    assert brand["model_version"] != general["model_version"]
    for entry in (brand, general):
        assert entry["state"] == "ready" and entry["device"] == "cpu"
        assert entry["labels"] and "validation" in entry["metrics"] and entry["variant"]
    assert two_models.get("/models/general").json()["model_version"] == general["model_version"]
    assert two_models.get("/model").json()["model"] == "brand"  # the default's card, as before


def test_predict_answers_with_the_named_model_and_the_default_without_one(two_models) -> None:
    plain = two_models.post("/predict", json={"text": "love the ipad"}).json()
    named = two_models.post("/predict", json={"text": "love the ipad", "model": "general"}).json()
    batch = two_models.post("/predict", json={"texts": ["a", "b"], "model": "general"}).json()

    assert list(plain)[:2] == ["sentiment", "inference_time"]  # the earlier contract first
    assert plain["model"] == "brand" and named["model"] == "general" and batch["model"] == "general"
    assert named["model_version"].startswith("general-model-")
    assert named["sentiment"] == plain["sentiment"]  # the same weights under two names


def test_an_unknown_model_is_a_404_naming_the_served_ones(two_models) -> None:
    for response in (
        two_models.post("/predict", json={"text": "hi", "model": "nope"}),
        two_models.get("/models/nope"),
    ):
        assert response.status_code == 404
        assert response.json()["detail"] == "model: no model named 'nope'; this service holds brand, general"
    too_long = two_models.post("/predict", json={"text": "hi", "model": "x" * 65})
    assert too_long.status_code == 422 and too_long.json()["errors"][0]["field"] == "model"


def test_every_model_metric_and_log_line_carries_the_models_name(two_models, caplog) -> None:
    caplog.set_level(logging.INFO, logger="sentiment_api.access")
    two_models.post("/predict", json={"text": "love it", "model": "general"})
    samples = [
        sample
        for family in text_string_to_metric_families(two_models.get("/metrics").text)
        for sample in family.samples
    ]

    info = {s.labels["model"]: s.labels["model_version"] for s in samples if s.name == "sentiment_model_info"}
    assert set(info) == {"brand", "general"} and info["general"].startswith("general-model-")
    shares = {
        s.labels["label"]: s.value
        for s in samples
        if s.name == "sentiment_training_label_share" and s.labels["model"] == "general"
    }
    assert shares == GENERAL_SHARES
    for name in ("sentiment_inference_streams", "sentiment_queue_depth"):
        assert {s.labels["model"] for s in samples if s.name == name} == {"brand", "general"}
    assert any(
        s.name == "sentiment_predictions_total" and s.labels["model"] == "general" and s.value >= 1
        for s in samples
    )
    served = {"route": "/predict", "status": "200", "model": "general"}
    assert any(s.name == "sentiment_requests_total" and s.labels == served for s in samples)
    lines = [r.fields for r in caplog.records if getattr(r, "fields", {}).get("route") == "/predict"]
    assert lines[-1]["model"] == "general" and lines[-1]["model_version"] == info["general"]


def test_a_model_that_fails_to_load_fails_liveness_while_the_others_load(
    onnx_package: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(onnx_package, broken)
    (broken / "model.onnx").write_bytes(b"not a model")
    settings = settings_for(onnx_package, model=[f"brand={onnx_package}", f"broken={broken}"])
    from fastapi.testclient import TestClient

    from live_server import wait_until
    from sentiment_api.serving import create_app

    with TestClient(create_app(settings), raise_server_exceptions=False) as client:

        def states() -> dict[str, str]:
            return {entry["model"]: entry["state"] for entry in client.get("/models").json()["models"]}

        wait_until(lambda: "loading" not in states().values())
        assert states() == {"brand": "ready", "broken": "failed"}
        assert client.get("/healthz").status_code == 503  # restart it
        assert client.get("/readyz").json() == {"status": "failed"}
