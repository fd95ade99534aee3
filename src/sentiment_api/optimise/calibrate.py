"""Fit the temperature a package's logits are divided by, and store it in its card.

``export`` calls :func:`fit_calibration` on the package it has just built; ``sentiment-api calibrate``
(:func:`calibrate_package`) fits it again for a package already made, the shipped one included,
without touching its ONNX file (so its sha256 and gate record stay valid: a temperature keeps every
arg-max, so every label, as it was). The fit uses the package's own logits on the validation split,
or a cross-validation run's out-of-fold probabilities (``oof.csv``) when given: more rows, none of
them seen by the model that scored them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sentiment_api.core.calibration import CalibrationRecord, calibrate
from sentiment_api.core.engine import Classifier, load_card
from sentiment_api.core.errors import DataError, ModelError
from sentiment_api.core.extras import require
from sentiment_api.core.metrics import label_indices
from sentiment_api.data.tweets import LABEL, TEXT, load_splits


def split_logits(classifier: Classifier, frame: Any) -> tuple[np.ndarray, np.ndarray]:
    """The classifier's logits on a split's texts, and the index of each row's true label."""
    encoded = classifier.tokenise(classifier.normalise(frame[TEXT].tolist()))
    return classifier.logits(encoded.ids), label_indices(frame[LABEL].tolist(), classifier.labels)


def oof_logits(path: Path, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Log-probabilities (logits up to a constant per row, which a softmax ignores) and true labels
    of a cross-validation run's ``oof.csv``."""
    pd = require("pandas")
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the out-of-fold file: {exc}") from None
    columns = [f"p_{label}" for label in labels]
    missing = [c for c in [LABEL, *columns] if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: no column(s) {missing}: not a crossval oof.csv for this model's labels")
    probabilities = np.clip(frame[columns].to_numpy(dtype=np.float64), 1e-12, 1.0)
    return np.log(probabilities), label_indices(frame[LABEL].tolist(), labels)


def fit_calibration(classifier: Classifier, splits: Any, oof: Path | None = None) -> CalibrationRecord:
    """A temperature for ``classifier``'s logits, fitted on the validation split (or ``oof``), with
    ECE and log loss before and after on validation and test (and the fit rows)."""
    measured = {
        "validation": split_logits(classifier, splits.validation),
        "test": split_logits(classifier, splits.test),
    }
    if oof is None:
        logits, truth = measured["validation"]
        fitted_on = f"validation split ({len(truth)} rows)"
    else:
        logits, truth = oof_logits(oof, classifier.labels)
        measured = {"out-of-fold": (logits, truth), **measured}
        fitted_on = f"out-of-fold probabilities {Path(oof).name} ({len(truth)} rows)"
    return calibrate(logits, truth, fitted_on, measured)


def calibrate_package(
    package: Path, data_path: Path, oof: Path | None = None, log: Callable[[str], None] = print
) -> CalibrationRecord:
    """Fit the package's calibration again and write it into its card (atomically); the ONNX file
    is left as it is."""
    package = Path(package)
    card = load_card(package)
    if card.package is None:
        raise ModelError(f"{package}: not a package (export the checkpoint: export fits its calibration)")
    classifier = Classifier.load(package)
    classifier.temperature = 1.0  # fit on the network's own logits, whatever the card held
    _, splits = load_splits(data_path, card.data.spec)
    record = fit_calibration(classifier, splits, oof)
    card.calibration = record
    card.save(package)
    log(summary(record))
    return record


def summary(record: CalibrationRecord) -> str:
    """One line per measured split: ECE and log loss before -> after."""
    lines = [f"temperature {record.temperature:.4f}, fitted on the {record.fitted_on}"]
    for name, before in record.before.items():
        after = record.after[name]
        lines.append(
            f"  {name}: ECE {before.ece:.4f} -> {after.ece:.4f}, log loss {before.log_loss:.4f} -> "
            f"{after.log_loss:.4f} ({before.rows} rows)"
        )
    return "\n".join(lines)
