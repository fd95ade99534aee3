"""Two recipes compared fold by fold on the same folds: the paired difference and its standard error."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from sentiment_api.cli import app
from sentiment_api.core.errors import ConfigError
from sentiment_api.core.metrics import compute_metrics
from sentiment_api.core.recipe import TrainingConfig
from sentiment_api.training.crossval import CrossValidation, FoldResult, Spread
from sentiment_api.training.paired import Difference, compare

LABELS = ["a", "b"]


def run(accuracies: list[float], *, seed: int = 0) -> CrossValidation:
    """A cross-validation whose fold k scores ``accuracies[k]`` (100 rows, half of each label)."""
    results = []
    for fold, accuracy in enumerate(accuracies, start=1):
        right = round(accuracy * 100)
        truth = ["a"] * 50 + ["b"] * 50
        predicted = truth[:right] + [("b" if t == "a" else "a") for t in truth[right:]]
        scores = compute_metrics(truth, predicted, LABELS)
        results.append(FoldResult(fold=fold, scores=scores, best_epoch=1, seconds=1.0))
    summary = {n: Spread.of([getattr(r.scores, n) for r in results]) for n in ("accuracy",)}
    return CrossValidation(
        data_file="x.csv", rows=300, folds=len(accuracies), seed=seed, recipe=TrainingConfig(),
        results=results, summary=summary, recall={},
    )  # fmt: skip


def test_a_candidate_that_wins_on_every_fold_is_beyond_noise_even_inside_the_spread() -> None:
    base, candidate = run([0.60, 0.70, 0.80]), run([0.62, 0.73, 0.81])
    difference = compare(base, candidate, ("base", "candidate")).plain["accuracy"]
    assert difference.per_fold == [0.02, 0.03, 0.01]
    assert difference.mean == 0.02 and difference.se == pytest.approx(0.01 / 3**0.5, abs=1e-4)
    assert difference.beats  # +0.02 ± 0.006, though the means ± sd (0.70 ± 0.10) overlap


def test_a_difference_inside_one_standard_error_is_not_a_win() -> None:
    assert not Difference.of([0.03, -0.02, 0.0]).beats
    assert not Difference.of([-0.01, -0.02, -0.01]).beats


def test_runs_on_other_folds_are_refused() -> None:
    with pytest.raises(ConfigError, match="not scored on the same folds"):
        compare(run([0.6, 0.7, 0.8]), run([0.6, 0.7, 0.8], seed=1), ("base", "candidate"))


def test_the_command_prints_the_table_from_two_runs(tmp_path) -> None:
    for name, accuracies in (("base", [0.60, 0.70, 0.80]), ("new", [0.62, 0.73, 0.81])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "crossval.json").write_text(run(accuracies).model_dump_json())
    result = CliRunner().invoke(app, ["compare-crossval", str(tmp_path / "base"), str(tmp_path / "new")])
    assert result.exit_code == 0, result.output
    assert "| accuracy | plain | +0.0200 ± 0.0058 | +0.020, +0.030, +0.010 | better |" in result.output
    missing = CliRunner().invoke(app, ["compare-crossval", str(tmp_path / "base"), str(tmp_path / "none")])
    assert missing.exit_code != 0 and "run crossval --out" in missing.output
