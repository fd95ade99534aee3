"""Classification metrics, a readable report and a confusion-matrix plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, Field

from sentiment_api.core.errors import DataError
from sentiment_api.core.extras import require
from sentiment_api.core.plots import pyplot, save_png

if TYPE_CHECKING:
    pass

HEADLINE = ("accuracy", "balanced_accuracy", "macro_f1")


class ClassScores(BaseModel):
    """Precision, recall and F1 of one label, and how many rows carry it."""

    precision: float
    recall: float
    f1: float
    support: int


class Scores(BaseModel):
    """How well predictions match the truth on one set of rows."""

    n: int = Field(description="Rows scored.")
    accuracy: float
    balanced_accuracy: float = Field(description="Mean recall over labels (macro-recall).")
    macro_f1: float
    per_class: dict[str, ClassScores]
    labels: list[str] = Field(description="Label order of the confusion matrix.")
    confusion_matrix: list[list[int]] = Field(description="Rows: true label; columns: predicted.")
    split: str | None = Field(None, description="The split scored, when it is one of a data file.")
    data_sha256: str | None = Field(None, description="sha256 of the data file scored.")

    def headline(self) -> dict[str, float]:
        """Accuracy, balanced accuracy and macro-F1."""
        return {name: getattr(self, name) for name in HEADLINE}


def label_indices(values: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    """Each of ``values``' column in ``labels``; a :class:`DataError` naming the ones it lacks."""
    column = {label: j for j, label in enumerate(labels)}
    unknown = sorted(set(values) - set(column))
    if unknown:
        raise DataError(f"labels {unknown} are not labels of the model ({list(labels)})")
    return np.asarray([column[value] for value in values], dtype=np.int64)


def compute_metrics(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> Scores:
    """Accuracy, balanced accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix."""
    require("sklearn.metrics")
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        confusion_matrix,
        f1_score,
        precision_recall_fscore_support,
    )

    labels = list(labels)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    return Scores(
        n=len(y_true),
        accuracy=round(float(accuracy_score(y_true, y_pred)), 4),
        balanced_accuracy=round(float(balanced_accuracy_score(y_true, y_pred)), 4),
        macro_f1=round(float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)), 4),
        per_class={
            label: ClassScores(
                precision=round(float(p), 4), recall=round(float(r), 4), f1=round(float(f), 4), support=int(s)
            )
            for label, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)
        },
        labels=labels,
        confusion_matrix=confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    )


def score_probabilities(y_true: Sequence[str], probabilities: np.ndarray, labels: Sequence[str]) -> Scores:
    """:func:`compute_metrics` for the most probable label of each row of ``probabilities``."""
    return compute_metrics(y_true, [labels[i] for i in np.argmax(probabilities, axis=1)], labels)


def format_report(metrics: Scores, title: str = "") -> str:
    """A plain-text table of the headline metrics and the per-class scores."""
    width = max(len(label) for label in metrics.per_class) + 2
    lines = [title] if title else []
    lines.append(
        "  ".join(f"{name} {value:.4f}" for name, value in metrics.headline().items()) + f"  (n={metrics.n})"
    )
    lines.append(f"{'label':<{width}}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}")
    for label, row in metrics.per_class.items():
        lines.append(
            f"{label:<{width}}{row.precision:>10.4f}{row.recall:>10.4f}{row.f1:>10.4f}{row.support:>10d}"
        )
    return "\n".join(lines)


def plot_confusion_matrix(metrics: Scores, path: Path, title: str = "") -> Path:
    """Save the confusion matrix (counts, with row-normalised shading) as a PNG."""
    plt = pyplot()

    matrix = np.asarray(metrics.confusion_matrix, dtype=float)
    labels = metrics.labels
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    figure, axes = plt.subplots(figsize=(6.4, 5.2), dpi=120)
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, label="share of true label")
    short = [label.replace(" toward brand or product", "") for label in labels]
    axes.set_xticks(range(len(labels)), short, rotation=20, ha="right")
    axes.set_yticks(range(len(labels)), short)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    for i in range(len(labels)):
        for j in range(len(labels)):
            colour = "white" if shares[i, j] > 0.5 else "black"
            axes.text(j, i, f"{int(matrix[i, j])}", ha="center", va="center", color=colour)
    headline = (
        f"acc {metrics.accuracy:.3f} · bal-acc {metrics.balanced_accuracy:.3f} · "
        f"macro-F1 {metrics.macro_f1:.3f}"
    )
    axes.set_title(f"{title}\n{headline}" if title else headline, fontsize=10)
    return save_png(figure, path)
