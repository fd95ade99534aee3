"""The calibration a package carries: fitted at export on validation (or a crossval oof.csv), fitted
again by ``calibrate`` without touching the ONNX file, labels unchanged either way."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sentiment_api.core.engine import Classifier
from sentiment_api.core.errors import DataError
from sentiment_api.core.files import file_sha256
from sentiment_api.core.model_card import ModelCard
from sentiment_api.data.tweets import LABEL
from sentiment_api.optimise.calibrate import calibrate_package
from tiny_models import LABELS, TEXT_COLUMN


def test_export_fits_a_temperature_on_validation_and_records_both_splits(exported_package) -> None:
    record = ModelCard.load(exported_package).calibration

    assert record is not None and record.temperature > 0
    assert record.fitted_on.startswith("validation split")
    assert set(record.before) == set(record.after) == {"validation", "test"}
    # fitted there, the log loss on validation cannot be worse than with no temperature
    assert record.after["validation"].log_loss <= record.before["validation"].log_loss + 1e-9


def test_calibrate_refits_from_an_oof_file_and_leaves_the_onnx_file_and_labels(
    onnx_package, tiny_csv, tmp_path
) -> None:
    package = tmp_path / "package"
    shutil.copytree(onnx_package, package)
    before_sha = file_sha256(package / "model.onnx")
    labels_before = [p.label for p in Classifier.load(package).predict(_texts(tiny_csv))]
    oof = _over_confident_oof(tiny_csv, tmp_path / "oof.csv")

    record = calibrate_package(package, tiny_csv, oof, log=lambda _: None)

    assert record.fitted_on.startswith("out-of-fold probabilities oof.csv")
    assert record.temperature > 1.5  # the oof scores were made over-confident
    assert record.after["out-of-fold"].ece < record.before["out-of-fold"].ece
    assert ModelCard.load(package).calibration == record
    assert file_sha256(package / "model.onnx") == before_sha
    assert [p.label for p in Classifier.load(package).predict(_texts(tiny_csv))] == labels_before


def test_an_oof_file_without_the_models_columns_is_one_clear_error(onnx_package, tiny_csv, tmp_path) -> None:
    package = tmp_path / "package"
    shutil.copytree(onnx_package, package)
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")

    with pytest.raises(DataError, match=r"not a crossval oof\.csv"):
        calibrate_package(package, tiny_csv, tmp_path / "bad.csv", log=lambda _: None)
    command = Path(sys.executable).with_name("sentiment-api")
    arguments = ["calibrate", str(package), "--data", str(tiny_csv), "--oof", str(tmp_path / "bad.csv")]
    result = subprocess.run([command, *arguments], capture_output=True, text=True, check=False)
    assert result.returncode == 1 and result.stderr.startswith("error: ") and "Traceback" not in result.stderr


def _texts(tiny_csv) -> list[str]:
    return pd.read_csv(tiny_csv)[TEXT_COLUMN].tolist()


def _over_confident_oof(tiny_csv, path):
    """An oof.csv whose probabilities are softmax(3 z) of labels drawn from softmax(z)."""
    frame = pd.read_csv(tiny_csv)
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(20):
        for text in frame[TEXT_COLUMN]:
            z = rng.normal(0, 1.2, size=3)
            p = np.exp(z) / np.exp(z).sum()
            sharp = np.exp(3 * z) / np.exp(3 * z).sum()
            rows.append({TEXT_COLUMN: text, LABEL: LABELS[rng.choice(3, p=p)],
                         **{f"p_{label}": sharp[j] for j, label in enumerate(LABELS)}})  # fmt: skip
    pd.DataFrame(rows).to_csv(path, index=False)
    return path
