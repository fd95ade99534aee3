"""Choosing a ``min_score``: what abstaining below each threshold keeps (coverage) and gains.

A request's ``min_score`` marks answers whose best score is below it ``"abstained": true``. Raising it
answers fewer tweets (coverage) more accurately; :func:`coverage_curve` measures that trade on a
labelled split, so a team picks the threshold from its own data, and :func:`plot_coverage` draws it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from sentiment_api.core.metrics import compute_metrics
from sentiment_api.core.plots import pyplot, save_png

THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.0, 1.0, 0.05))


class CoveragePoint(BaseModel):
    """What answering only when the best score reaches ``min_score`` gives."""

    min_score: float
    coverage: float = Field(description="Share of the rows answered (not abstained).")
    accuracy: float | None = Field(description="Accuracy on the answered rows (None: none answered).")
    macro_f1: float | None = Field(description="Macro-F1 on the answered rows.")


def coverage_curve(
    truth: Sequence[str],
    probabilities: np.ndarray,
    labels: Sequence[str],
    thresholds: Sequence[float] = THRESHOLDS,
) -> list[CoveragePoint]:
    """Coverage, accuracy and macro-F1 of the answered rows at each ``min_score`` in ``thresholds``."""
    best = probabilities.max(axis=1)
    predicted = np.asarray([labels[i] for i in probabilities.argmax(axis=1)], dtype=object)
    truth_array = np.asarray(truth, dtype=object)
    points = []
    for threshold in thresholds:
        kept = best >= threshold
        if not kept.any():
            points.append(CoveragePoint(min_score=threshold, coverage=0.0, accuracy=None, macro_f1=None))
            continue
        scores = compute_metrics(truth_array[kept].tolist(), predicted[kept].tolist(), labels)
        points.append(
            CoveragePoint(
                min_score=threshold,
                coverage=round(float(kept.mean()), 4),
                accuracy=scores.accuracy,
                macro_f1=scores.macro_f1,
            )
        )
    return points


def plot_coverage(points: Sequence[CoveragePoint], path: Path, title: str = "") -> Path:
    """Accuracy and macro-F1 of the answered rows against coverage, each point a ``min_score``."""
    plt = pyplot()
    shown = [p for p in points if p.accuracy is not None]
    figure, axes = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    coverage = [p.coverage for p in shown]
    axes.plot(coverage, [p.accuracy for p in shown], marker="o", label="accuracy")
    axes.plot(coverage, [p.macro_f1 for p in shown], marker="s", label="macro-F1")
    for point in shown[:: max(1, len(shown) // 6)]:
        axes.annotate(f"{point.min_score:.2f}", (point.coverage, point.accuracy or 0), fontsize=7,
                      textcoords="offset points", xytext=(0, 6), ha="center")  # fmt: skip
    axes.set_xlabel("coverage (share answered)")
    axes.set_ylabel("score on the answered rows")
    axes.invert_xaxis()
    axes.grid(alpha=0.3)
    axes.legend()
    axes.set_title(title or "Abstaining below min_score (labels: min_score)", fontsize=10)
    return save_png(figure, path)
