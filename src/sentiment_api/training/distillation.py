"""Soft targets for distillation: teachers' probabilities carried beside the labels.

Training rows carry a teacher's probabilities as columns ``p_<label>`` (the layout of every
out-of-fold prediction file this project writes); ``--teacher`` fills them from trained models, and
the loop then learns from both (``TrainingConfig.distil_weight``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sentiment_api.core.engine import Classifier
from sentiment_api.core.errors import ConfigError
from sentiment_api.core.metrics import label_indices
from sentiment_api.data.tweets import TEXT

if TYPE_CHECKING:
    import pandas as pd

SOFT_PREFIX = "p_"


def soft_columns(labels: list[str]) -> list[str]:
    """The columns that hold the soft target of each label, in label order."""
    return [f"{SOFT_PREFIX}{label}" for label in labels]


def soft_targets(frame: pd.DataFrame, labels: list[str]) -> np.ndarray | None:
    """The rows' soft targets (rows sum to 1), or None when the frame carries none."""
    columns = soft_columns(labels)
    present = [column for column in columns if column in frame.columns]
    if not present:
        return None
    if len(present) != len(columns):
        missing = sorted(set(columns) - set(present))
        raise ConfigError(f"soft targets: columns {missing} are missing (every label needs one)")
    values = frame[columns].to_numpy(dtype=np.float32)
    if not np.isfinite(values).all() or (values < 0).any():
        raise ConfigError("soft targets: probabilities must be finite and not negative")
    totals = values.sum(axis=1, keepdims=True)
    if (totals <= 0).any():
        raise ConfigError("soft targets: a row's probabilities add up to 0")
    return np.asarray(values / totals)


def load_teachers(teachers: Sequence[str], labels: list[str]) -> list[Classifier]:
    """The teachers, loaded; each must know every target label (its card's label names). A teacher
    may run on ONNX Runtime (a package) or PyTorch (a checkpoint)."""
    loaded = []
    for teacher in teachers:
        classifier = Classifier.load(Path(teacher))
        missing = [label for label in labels if label not in classifier.labels]
        if missing:
            raise ConfigError(
                f"teacher {teacher}: has no label(s) {missing} (it knows {classifier.labels}); "
                "distil only from models trained on the same labels"
            )
        loaded.append(classifier)
    return loaded


def teacher_probabilities(
    teachers: Sequence[str | Classifier], texts: list[str], labels: list[str], batch_size: int
) -> np.ndarray:
    """The mean of the teachers' probabilities on normalised ``texts``, columns in ``labels`` order
    (teachers given by directory are loaded first: :func:`load_teachers`)."""
    named = [teacher for teacher in teachers if not isinstance(teacher, Classifier)]
    loaded = iter(load_teachers(named, labels))
    total = np.zeros((len(texts), len(labels)), dtype=np.float64)
    for teacher in teachers:
        classifier = teacher if isinstance(teacher, Classifier) else next(loaded)
        probabilities, _ = classifier.probabilities(texts, batch_size)
        total += probabilities[:, label_indices(labels, classifier.labels)]  # in our label order
    return np.asarray(total / len(teachers), dtype=np.float32)


def with_teachers(
    frame: pd.DataFrame, labels: list[str], teachers: list[str], batch_size: int
) -> pd.DataFrame:
    """``frame`` with the teachers' mean probabilities as soft-target columns."""
    probabilities = teacher_probabilities(teachers, frame[TEXT].tolist(), labels, batch_size)
    out = frame.copy()
    out[soft_columns(labels)] = probabilities
    return out
