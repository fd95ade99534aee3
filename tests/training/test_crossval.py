"""Cross-validation: one row per fold, every non-test row predicted once, a resumable run, offsets."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sentiment_api.training import TrainingConfig
from sentiment_api.training.crossval import best_offsets, cross_validate
from tiny_models import LABELS


def test_folds_summary_plot_and_out_of_fold_rows(tiny_csv, tiny_bert, tmp_path) -> None:
    config = TrainingConfig(base_model=str(tiny_bert), epochs=1, batch_size=8, learning_rate=5e-3)
    result = cross_validate(
        tiny_csv, tmp_path / "cv", config, folds=3, seed=0, progress=False, log=lambda _: None
    )
    assert [r.fold for r in result.results] == [1, 2, 3]
    assert result.rows == 54  # train + validation of 60 rows; the 6 test rows are left out
    assert set(result.summary) == {"accuracy", "balanced_accuracy", "macro_f1"}
    mean = np.mean([r.scores.macro_f1 for r in result.results])
    assert abs(result.summary["macro_f1"].mean - mean) < 1e-4
    assert set(result.recall) == set(LABELS)
    oof = pd.read_csv(tmp_path / "cv" / "oof.csv")
    assert sorted(oof["index"]) == list(range(54)) and oof["fold"].value_counts().tolist() == [18, 18, 18]
    assert np.allclose(oof[[f"p_{label}" for label in LABELS]].sum(axis=1), 1.0, atol=1e-5)
    assert (tmp_path / "cv" / "crossval.png").read_bytes()[:4] == b"\x89PNG"
    assert "| **mean ± sd** |" in (tmp_path / "cv" / "crossval.md").read_text()
    assert result.offsets is not None and set(result.offsets.offsets) == set(LABELS)

    again: list[str] = []
    rerun = cross_validate(
        tiny_csv, tmp_path / "cv", config, folds=3, seed=0, progress=False, log=again.append
    )
    assert sum("done before" in line for line in again) == 3  # resumed, nothing retrained
    assert rerun.summary == result.summary


def test_offsets_recover_a_bias_against_the_rare_label() -> None:
    rng = np.random.default_rng(0)
    truth = rng.choice(3, size=600, p=[0.1, 0.6, 0.3])
    logits = rng.normal(size=(600, 3)) * 0.5
    logits[np.arange(600), truth] += 1.5
    logits[:, 0] -= 1.0  # a model that under-predicts label 0
    offsets = best_offsets(logits, [LABELS[t] for t in truth], LABELS, "f1_and_balanced")
    assert offsets[LABELS[1]] == 0.0  # the commonest label is the anchor
    assert 0.5 <= offsets[LABELS[0]] <= 1.6
