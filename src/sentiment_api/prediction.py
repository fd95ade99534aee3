"""Batch prediction of a CSV or Excel file: the earlier service's ``test_predictions`` for any file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .data import read_table, require_column, write_table
from .errors import DataError
from .extras import require

if TYPE_CHECKING:
    import pandas as pd

    from .engine import Classifier

TEXT_COLUMN_GUESSES = ("tweet_text", "Tweet", "text", "tweet")


def pick_text_column(frame: pd.DataFrame, path: Path, column: str | None) -> str:
    """The column to classify: the one asked for, else the first usual name present."""
    if column is not None:
        require_column(frame, column, path)
        return column
    for guess in TEXT_COLUMN_GUESSES:
        if guess in frame.columns:
            return guess
    names = ", ".join(map(str, frame.columns))
    raise DataError(f"{path}: no text column found; pass --text-column (columns: {names})")


def predict_frame(
    classifier: Classifier,
    frame: pd.DataFrame,
    text_column: str,
    batch_size: int = 64,
    progress: bool = True,
) -> pd.DataFrame:
    """``frame`` with ``label``, ``score``, ``truncated`` and one ``score_<label>`` column added."""
    require("tqdm")
    from tqdm.auto import tqdm

    texts = ["" if value != value else str(value) for value in frame[text_column]]  # NaN -> ""
    clean = [classifier.normalise(text) for text in texts]
    probabilities = np.zeros((len(texts), len(classifier.labels)), dtype=np.float32)
    truncated = np.zeros(len(texts), dtype=bool)
    chunk = batch_size * 8
    with tqdm(total=len(texts), disable=not progress, desc="predicting", unit="tweet") as bar:
        for start in range(0, len(texts), chunk):
            part, encoded = classifier.probabilities_of_clean(clean[start : start + chunk], batch_size)
            probabilities[start : start + len(part)] = part
            truncated[start : start + len(part)] = encoded.truncated
            bar.update(len(part))
    best = probabilities.argmax(axis=1)
    result = frame.copy()
    result["label"] = [classifier.labels[i] for i in best]
    result["score"] = probabilities[np.arange(len(best)), best].round(6)
    result["truncated"] = truncated
    for j, label in enumerate(classifier.labels):
        result[f"score_{label}"] = probabilities[:, j].round(6)
    return result


def predict_file(
    classifier: Classifier,
    input_path: Path,
    output_path: Path,
    *,
    sheet: str | None = None,
    text_column: str | None = None,
    batch_size: int = 64,
    progress: bool = True,
) -> pd.DataFrame:
    """Classify every row of a file and write the rows with their labels and scores."""
    frame = read_table(Path(input_path), sheet)
    column = pick_text_column(frame, Path(input_path), text_column)
    result = predict_frame(classifier, frame, column, batch_size, progress)
    write_table(result, output_path)
    return result
