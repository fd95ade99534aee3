"""Calibrated scores: a temperature fitted on held-out logits, and how far scores are from frequencies.

A model trained with class weights and logit offsets moves its probabilities on purpose, so a score of
0.8 need not mean right 80 % of the time. Temperature scaling (Guo et al., 2017) divides every logit by
one number ``T`` fitted to minimise the log loss on held-out rows: the arg-max, so every label, stays
as it is, and the scores spread (``T < 1``) or shrink (``T > 1``) towards what was observed. The
fitted record travels in the model card, and :class:`~sentiment_api.core.engine.Classifier` applies it,
so the server, ``predict``, Ray and ``bench`` answer with the same scores. NumPy only: the serving
install has no SciPy.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

ECE_BINS = 15  # equal-width confidence bins, as in Guo et al.
_LOG_T_RANGE = (-4.0, 4.0)  # temperatures from 0.018 to 55: far beyond any fitted here


class CalibrationScores(BaseModel):
    """How well one set of scores matches what was observed."""

    ece: float = Field(
        description=f"Expected calibration error of the top score ({ECE_BINS} equal-width bins)."
    )
    log_loss: float = Field(description="Mean negative log-probability of the true label.")
    rows: int = Field(description="Rows scored.")


class CalibrationRecord(BaseModel):
    """The calibration a package applies to its logits, and what it did where it was measured."""

    method: str = Field("temperature", description="temperature: every logit divided by one number.")
    temperature: float = Field(gt=0, description="Logits are divided by this before the softmax.")
    fitted_on: str = Field(description="Where the temperature was fitted: the validation split or a file.")
    before: dict[str, CalibrationScores] = Field(
        default_factory=dict, description="Scores without calibration, by split."
    )
    after: dict[str, CalibrationScores] = Field(
        default_factory=dict, description="Scores with calibration, by split."
    )


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature``, stable for large logits, in their dtype."""
    logits = np.asarray(logits)
    scaled = logits if temperature == 1.0 else logits / np.asarray(temperature, dtype=logits.dtype)
    shifted = scaled - scaled.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return np.asarray(exp / exp.sum(axis=1, keepdims=True))


def log_loss(probabilities: np.ndarray, truth: np.ndarray) -> float:
    """Mean negative log-probability of each row's true label (``truth``: column indices)."""
    picked = np.asarray(probabilities, dtype=np.float64)[np.arange(len(truth)), truth]
    return float(-np.log(np.clip(picked, 1e-12, 1.0)).mean())


def expected_calibration_error(probabilities: np.ndarray, truth: np.ndarray, bins: int = ECE_BINS) -> float:
    """The top score's distance from the observed accuracy, averaged over equal-width bins of that
    score, each weighted by its share of the rows."""
    confidence, correct = _confidence_and_correct(probabilities, truth)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    total = 0.0
    for number in range(bins):
        inside = which == number
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(total)


def reliability(
    probabilities: np.ndarray, truth: np.ndarray, bins: int = ECE_BINS
) -> list[tuple[float, float, int]]:
    """Per non-empty bin of the top score: its mean score, its observed accuracy and its row count
    (what a reliability diagram draws)."""
    confidence, correct = _confidence_and_correct(probabilities, truth)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    return [
        (float(confidence[which == b].mean()), float(correct[which == b].mean()), int((which == b).sum()))
        for b in range(bins)
        if (which == b).any()
    ]


def _confidence_and_correct(probabilities: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probabilities = np.asarray(probabilities, dtype=np.float64)
    return probabilities.max(axis=1), (probabilities.argmax(axis=1) == np.asarray(truth)).astype(np.float64)


def calibration_scores(logits: np.ndarray, truth: np.ndarray, temperature: float = 1.0) -> CalibrationScores:
    """ECE and log loss of ``softmax(logits / temperature)`` against ``truth``."""
    probabilities = softmax(logits, temperature)
    return CalibrationScores(
        ece=expected_calibration_error(probabilities, truth),
        log_loss=log_loss(probabilities, truth),
        rows=len(truth),
    )


def fit_temperature(logits: np.ndarray, truth: np.ndarray) -> float:
    """The temperature that minimises the log loss of ``softmax(logits / T)`` on these rows.

    The log loss is convex in ``1 / T``, so a golden-section search over ``log T`` finds its one
    minimum; 80 steps narrow the range far below any digit that matters.
    """
    logits = np.asarray(logits, dtype=np.float64)
    truth = np.asarray(truth)
    if len(truth) == 0:
        raise ValueError("no rows to fit a temperature on")

    def loss(log_t: float) -> float:
        return log_loss(softmax(logits, float(np.exp(log_t))), truth)

    low, high = _LOG_T_RANGE
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    loss_a, loss_b = loss(a), loss(b)
    for _ in range(80):
        if loss_a < loss_b:
            high, b, loss_b = b, a, loss_a
            a = high - ratio * (high - low)
            loss_a = loss(a)
        else:
            low, a, loss_a = a, b, loss_b
            b = low + ratio * (high - low)
            loss_b = loss(b)
    return float(np.exp((low + high) / 2.0))


def calibrate(
    logits: np.ndarray,
    truth: Sequence[int] | np.ndarray,
    fitted_on: str,
    measured: dict[str, tuple[np.ndarray, np.ndarray]],
) -> CalibrationRecord:
    """Fit a temperature on ``logits`` and ``truth`` (label indices), and score each ``measured``
    split (``name: (logits, truth)``) before and after it."""
    temperature = fit_temperature(logits, np.asarray(truth))
    return CalibrationRecord(
        temperature=temperature,
        fitted_on=fitted_on,
        before={name: calibration_scores(z, y) for name, (z, y) in measured.items()},
        after={name: calibration_scores(z, y, temperature) for name, (z, y) in measured.items()},
    )


def plot_reliability(
    curves: dict[str, tuple[list[tuple[float, float, int]], float]], path: Path, title: str = ""
) -> Path:
    """A reliability diagram: observed accuracy against the top score, per bin, for each named curve
    (its :func:`reliability` bins and its ECE: say, each variant of a model, or before and after
    calibration)."""
    from sentiment_api.core.plots import pyplot, save_png

    plt = pyplot()
    figure, axes = plt.subplots(figsize=(5.6, 5.2), dpi=120)
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    for name, (bins, ece) in curves.items():
        axes.plot([b[0] for b in bins], [b[1] for b in bins], marker="o", label=f"{name} (ECE {ece:.3f})")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel("top score")
    axes.set_ylabel("observed accuracy")
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", fontsize=8)
    axes.set_title(title or f"Reliability ({ECE_BINS} bins)", fontsize=10)
    return save_png(figure, path)
