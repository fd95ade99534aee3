"""Score a trained model on a split of a labelled file, rebuilt as its card says, or on corpora.

Beside the labels' scores, each evaluation says how far the scores are from observed frequencies
(ECE and log loss, a reliability diagram) and what abstaining below each ``min_score`` would keep
(coverage against accuracy and macro-F1), so a team picks a threshold from its own data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from sentiment_api.core.abstention import CoveragePoint, coverage_curve, plot_coverage
from sentiment_api.core.calibration import (
    CalibrationScores,
    calibration_scores,
    plot_reliability,
    reliability,
)
from sentiment_api.core.engine import Classifier
from sentiment_api.core.errors import ConfigError
from sentiment_api.core.files import write_text_atomic
from sentiment_api.core.metrics import Scores, plot_confusion_matrix, score_probabilities
from sentiment_api.core.records import CorpusSpec
from sentiment_api.data.corpora import score_on_file
from sentiment_api.data.tweets import LABEL, SPLITS, TEXT, load_tweets, split_tweets

OUTPUTS = ("metrics.json", "confidence.json", "confusion_matrix.png", "reliability.png", "coverage.png")


class Confidence(BaseModel):
    """How the scores of one evaluation can be trusted: calibration and coverage by min_score."""

    calibration: CalibrationScores
    coverage: list[CoveragePoint]


@dataclass(frozen=True)
class Evaluation:
    """One scored set of rows: its name, its scores, and (for a split of a file) its confidence."""

    name: str
    scores: Scores
    confidence: Confidence | None = None
    probabilities: np.ndarray | None = None
    truth: np.ndarray | None = None  # label indices, beside ``probabilities``


def evaluate_model(
    model: Path,
    data: Path | None = None,
    split: str = "test",
    sheet: str | None = None,
    corpora: Sequence[CorpusSpec] = (),
) -> list[Evaluation]:
    """The model's evaluations: on ``split`` of ``data`` (rebuilt as its card says), or on every
    row of each corpus file, its labels mapped onto the model's."""
    classifier = Classifier.load(model)
    if data is not None:
        return [evaluate_split(classifier, data, split, sheet)]
    return [Evaluation(spec.path.name, score_on_file(classifier, spec)) for spec in corpora]


def write_scores(evaluation: Evaluation, folder: Path, title: str) -> list[Path]:
    """``metrics.json`` and ``confusion_matrix.png`` into ``folder``, and for a split also
    ``confidence.json``, ``reliability.png`` and ``coverage.png``, each written atomically."""
    folder = Path(folder)
    scores = evaluation.scores
    write_text_atomic(folder / "metrics.json", scores.model_dump_json(indent=2) + "\n")
    written = [folder / "metrics.json", plot_confusion_matrix(scores, folder / "confusion_matrix.png", title)]
    confidence = evaluation.confidence
    if confidence is not None and evaluation.probabilities is not None and evaluation.truth is not None:
        write_text_atomic(folder / "confidence.json", confidence.model_dump_json(indent=2) + "\n")
        written.append(folder / "confidence.json")
        bins = reliability(evaluation.probabilities, evaluation.truth)
        curves = {"scores served": (bins, confidence.calibration.ece)}
        written.append(plot_reliability(curves, folder / "reliability.png", f"{title}: reliability"))
        written.append(plot_coverage(confidence.coverage, folder / "coverage.png", f"{title}: abstention"))
    return written


def split_frame(
    data_path: Path, spec: Any, split: str, labels: Sequence[str], sheet: str | None = None
) -> tuple[Any, str]:
    """One split of a labelled file, made as ``spec`` says (``all``: every prepared row), and the
    file's sha256."""
    if split not in (*SPLITS, "all"):
        raise ConfigError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)} or all")
    if sheet is not None:
        spec = spec.model_copy(update={"sheet": sheet})
    data = load_tweets(data_path, spec)
    frame = data.frame if split == "all" else getattr(split_tweets(data, spec), split)
    unknown = sorted(set(frame[LABEL]) - set(labels))
    if unknown:
        raise ConfigError(f"{data_path}: labels {unknown} are not labels of the model")
    return frame, data.sha256


def evaluate_split(
    classifier: Classifier, data_path: Path, split: str = "test", sheet: str | None = None
) -> Evaluation:
    """:func:`evaluate_classifier` with the confidence of its scores: ECE and log loss, and coverage,
    accuracy and macro-F1 when abstaining below each ``min_score``."""
    frame, sha256 = split_frame(data_path, classifier.card.data.spec, split, classifier.labels, sheet)
    truth = frame[LABEL].tolist()
    encoded = classifier.tokenise(classifier.normalise(frame[TEXT].tolist()))
    logits = classifier.logits(encoded.ids)
    probabilities = classifier.scores(logits)
    scores = score_probabilities(truth, probabilities, classifier.labels)
    scores = scores.model_copy(update={"split": split, "data_sha256": sha256})
    column = {label: j for j, label in enumerate(classifier.labels)}
    indices = np.asarray([column[label] for label in truth])
    confidence = Confidence(
        calibration=calibration_scores(logits, indices, classifier.temperature),
        coverage=coverage_curve(truth, probabilities, classifier.labels),
    )
    return Evaluation(f"{Path(data_path).name} ({split})", scores, confidence, probabilities, indices)


def evaluate_classifier(
    classifier: Classifier, data_path: Path, split: str = "test", sheet: str | None = None
) -> Scores:
    """Metrics of a loaded classifier on one split of a labelled file, made as its card says.

    The split is rebuilt with the data spec recorded in the model card (same cleaning, same seed),
    so ``test`` means the very rows the model was tested on; ``all`` uses every prepared row.
    """
    return evaluate_split(classifier, data_path, split, sheet).scores


def format_confidence(confidence: Confidence) -> str:
    """ECE, log loss and the coverage table as text."""
    calibration = confidence.calibration
    lines = [
        f"calibration: ECE {calibration.ece:.4f}, log loss {calibration.log_loss:.4f}",
        "min_score  coverage  accuracy  macro-F1",
    ]
    for point in confidence.coverage:
        if point.accuracy is None or point.macro_f1 is None:
            lines.append(f"{point.min_score:9.2f}  {point.coverage:8.3f}         -         -")
        else:
            lines.append(
                f"{point.min_score:9.2f}  {point.coverage:8.3f}  {point.accuracy:8.4f}  {point.macro_f1:8.4f}"
            )
    return "\n".join(lines)
