"""Temperature scaling: fitted on over-confident scores it lowers ECE and log loss, keeps every
label, and the engine applies the card's temperature to every score."""

from __future__ import annotations

import numpy as np
import pytest

from sentiment_api.core.calibration import (
    CalibrationRecord,
    calibrate,
    calibration_scores,
    expected_calibration_error,
    fit_temperature,
    reliability,
    softmax,
)
from sentiment_api.core.engine import Classifier
from tiny_models import with_temperature


def over_confident(rows: int = 4000, sharpen: float = 3.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z), and the logits of a model that says ``sharpen * z``: a model
    whose scores are known to be over-confident by a temperature of ``sharpen``."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.2, size=(rows, 3))
    truth = np.array([rng.choice(3, p=p) for p in softmax(z)])
    return sharpen * z, truth


def test_a_fitted_temperature_undoes_over_confidence_and_lowers_ece_and_log_loss() -> None:
    logits, truth = over_confident()

    temperature = fit_temperature(logits, truth)
    before, after = calibration_scores(logits, truth), calibration_scores(logits, truth, temperature)

    assert temperature == pytest.approx(3.0, rel=0.1)
    assert after.ece < before.ece / 3
    assert after.log_loss < before.log_loss
    assert (softmax(logits, temperature).argmax(1) == logits.argmax(1)).all()  # labels unchanged


def test_well_calibrated_scores_keep_a_temperature_near_one() -> None:
    logits, truth = over_confident(sharpen=1.0, seed=1)

    assert fit_temperature(logits, truth) == pytest.approx(1.0, abs=0.1)


def test_ece_is_zero_when_scores_match_frequencies_and_reliability_counts_every_row() -> None:
    probabilities = np.array([[0.75, 0.25]] * 4)
    truth = np.array([0, 0, 0, 1])  # right 3 times in 4 at a score of 0.75

    assert expected_calibration_error(probabilities, truth) == pytest.approx(0.0)
    assert reliability(probabilities, truth) == [(0.75, 0.75, 4)]
    assert expected_calibration_error(probabilities, np.array([1, 1, 1, 1])) == pytest.approx(0.75)


def test_the_record_scores_each_split_before_and_after() -> None:
    logits, truth = over_confident(rows=600)

    record = calibrate(logits[:300], truth[:300], "first half", {"held": (logits[300:], truth[300:])})

    assert record.before["held"].rows == 300
    assert record.after["held"].ece < record.before["held"].ece
    assert CalibrationRecord.model_validate_json(record.model_dump_json()) == record


def test_the_engine_divides_logits_by_the_cards_temperature(onnx_package, tmp_path) -> None:
    plain = Classifier.load(onnx_package)
    # half the package's own temperature (export fitted one, which differs from machine to machine)
    temperature = plain.temperature / 2
    sharpened = Classifier.load(with_temperature(onnx_package, tmp_path, temperature))
    texts = ["love the new ipad", "hate this slow app", "the store at sxsw"]

    ids = plain.tokenise(plain.normalise(texts)).ids
    logits = plain.logits(ids)

    assert np.allclose(sharpened.infer(ids), softmax(logits, temperature), atol=1e-6)
    assert [p.label for p in sharpened.predict(texts)] == [p.label for p in plain.predict(texts)]
    assert max(p.score for p in sharpened.predict(texts)) > max(p.score for p in plain.predict(texts))
