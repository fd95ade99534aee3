"""The shipped default model: small, ONNX, gated, and as good as its card says on the shared file."""

from pathlib import Path

import pytest

import sentiment_api
from sentiment_api.engine import Classifier, OnnxBackend
from sentiment_api.evaluation import evaluate_classifier
from sentiment_api.model_card import ModelCard

DEFAULT = Path(sentiment_api.__file__).parent / "models" / "default"


def test_default_model_is_a_small_gated_int8_package() -> None:
    card = ModelCard.load(DEFAULT)
    assert card.variant == "onnx-int8"
    assert (DEFAULT / "model.onnx").stat().st_size <= 25 * 10**6
    assert card.package is not None and card.gate is not None
    assert card.package.size_bytes == (DEFAULT / "model.onnx").stat().st_size
    assert card.gate.passed and not card.gate.override
    assert card.normaliser == "legacy@1"
    assert card.labels == ["Negative emotion", "No emotion toward brand or product", "Positive emotion"]


@pytest.fixture(scope="module")
def measured(shared_data):
    """The shipped model re-evaluated through the engine on the reference test split."""
    classifier = Classifier.load(DEFAULT, threads=2)
    assert isinstance(classifier.backend, OnnxBackend)
    return evaluate_classifier(classifier, shared_data, "test")


@pytest.mark.shared_data
def test_default_model_matches_its_card_on_the_shared_file(measured) -> None:
    recorded = ModelCard.load(DEFAULT).metrics["test"]
    assert measured.n == 576
    for metric, value in measured.headline().items():
        assert abs(value - getattr(recorded, metric)) <= 0.005, metric


@pytest.mark.shared_data
@pytest.mark.xfail(
    strict=True,
    reason="issue 2's bar (macro-F1 0.64, balanced accuracy 0.67, accuracy 0.68) is not reached yet: "
    "see BENCHMARKS.md; strict, so this turns red the day a model reaches it",
)
def test_default_model_keeps_the_quality_bar(measured) -> None:
    assert measured.macro_f1 >= 0.64
    assert measured.balanced_accuracy >= 0.67
    assert measured.accuracy >= 0.68
