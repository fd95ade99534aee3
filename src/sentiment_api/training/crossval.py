"""Stratified k-fold cross-validation of a training recipe, and logit offsets tuned on its predictions.

Recipes are compared here rather than on one small validation split. The folds cover the rows of
the train and validation splits; the test split is left out, so that it can still be measured once,
at the end. Each fold trains exactly as ``train`` does (the same cleaning; epoch chosen on an inner
validation share of the fold's training rows; a first stage on corpora trained once and reused by
every fold) and predicts its held-out rows. Those out-of-fold probabilities give the scores, and are
what per-label logit offsets are tuned on, with a nested loop so that the offsets' own scores are
honest too.
"""

from __future__ import annotations

import itertools
import json
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from sentiment_api.core.errors import ConfigError
from sentiment_api.core.extras import require
from sentiment_api.core.files import staged_file, write_text_atomic
from sentiment_api.core.metrics import HEADLINE, Scores, label_indices, score_probabilities
from sentiment_api.core.model_card import CARD_FILE, ModelCard
from sentiment_api.core.plots import pyplot, save_png
from sentiment_api.core.recipe import TrainingConfig
from sentiment_api.core.records import DataSpec
from sentiment_api.data.tweets import LABEL, TEXT, load_splits
from sentiment_api.training.fitting import fine_tune
from sentiment_api.training.fold_teachers import fold_teacher, teacher_path
from sentiment_api.training.stages import prepare_start

OFFSET_GRID = np.round(np.arange(-3.0, 3.01, 0.1), 2)


class Spread(BaseModel):
    """Mean and standard deviation of one figure over folds (or seeds)."""

    mean: float
    sd: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        """The spread of ``values``."""
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return cls(mean=round(statistics.mean(values), 4), sd=round(sd, 4), low=min(values), high=max(values))

    def __str__(self) -> str:
        return f"{self.mean:.3f} ± {self.sd:.3f}"


class FoldResult(BaseModel):
    """One fold: its held-out scores, the epoch chosen, the time it took."""

    fold: int
    scores: Scores
    best_epoch: int
    seconds: float


class OffsetResult(BaseModel):
    """Logit offsets tuned on out-of-fold probabilities, and what they gave."""

    criterion: str
    offsets: dict[str, float] = Field(description="Tuned on every fold's predictions: the ones to use.")
    nested: dict[str, Spread] = Field(
        description="Scores per fold with offsets tuned on the other folds only (an honest estimate)."
    )
    per_fold: list[dict[str, float]] = Field(
        default_factory=list, description="Those nested scores fold by fold (for paired comparisons)."
    )


class FoldScores(BaseModel):
    """One model per fold, each scored on its fold's held-out rows: every fold and the spread."""

    results: list[FoldResult]
    summary: dict[str, Spread]
    recall: dict[str, Spread] = Field(description="Per-label recall over folds.")
    offsets: OffsetResult | None = None


class CrossValidation(FoldScores):
    """Every fold's scores and their spread (and, for a student, its teachers' on the same rows)."""

    data_file: str
    rows: int
    folds: int
    seed: int
    recipe: TrainingConfig
    teacher: TrainingConfig | None = Field(None, description="The recipe of each fold's teacher (students).")
    teachers_scored: FoldScores | None = Field(
        None, description="Each fold's teacher on the rows its student is scored on."
    )
    minutes: float = 0.0


def cross_validate(
    data_path: Path,
    out_dir: Path,
    config: TrainingConfig | None = None,
    spec: DataSpec | None = None,
    *,
    folds: int = 5,
    seed: int = 0,
    tune_criterion: str | None = "f1_and_balanced",
    teacher: TrainingConfig | None = None,
    stage_dir: Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> CrossValidation:
    """Train and score ``config`` on ``folds`` stratified folds of the non-test rows of ``data_path``.

    With a ``teacher`` recipe, ``config`` is a student's: each fold first trains a teacher with that
    recipe on the fold's own rows (``fold_teachers``), and the fold's student distils from it.
    Writes into ``out_dir`` as it goes: ``folds.jsonl`` and ``oof.csv`` (so an interrupted run
    resumes at the next fold), then ``crossval.json``, ``crossval.md`` and ``crossval.png``.
    """
    require("pandas")
    import pandas as pd

    config = config or TrainingConfig()
    if config.teachers:
        raise ConfigError(
            "crossval with --teacher: a teacher trained on this data has seen every fold's held-out rows, "
            "so the scores would flatter the student; give the teachers' recipe instead (--teacher-recipe), "
            "and each fold trains its own teacher on its own rows"
        )
    spec = spec or DataSpec()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data, splits = load_splits(data_path, spec)
    labels = data.labels
    pool = pd.concat([splits.train, splits.validation], ignore_index=True)
    done = _finished_folds(out_dir, config, folds, seed, teacher)
    start = None  # the first stage is the same for every fold: prepared once, when a fold needs it
    for split in fold_splits(pool, folds, seed):
        fold, held_rows = split.fold, split.held_rows
        if fold in done:
            log(f"fold {fold}/{folds}: done before, {done[fold].scores.headline()}")
            continue
        started = time.perf_counter()
        log(f"fold {fold}/{folds}: {split}")
        if start is None:
            start = prepare_start(config, labels, spec.normaliser, stage_dir, progress=progress, log=log)
        student = start.config
        if teacher is not None:
            teacher_dir = fold_teacher(
                fold, split.fit, split.inner, labels, teacher, spec.normaliser, out_dir,
                stage_dir=stage_dir, progress=progress, log=log,
            )  # fmt: skip
            student = student.model_copy(update={"teachers": [str(teacher_dir)]})
        trained = fine_tune(
            split.fit, split.inner, labels, student, spec.normaliser, progress=progress, log=log
        )
        held = split.held
        probabilities, _ = trained.classifier.probabilities(held[TEXT].tolist(), config.eval_batch_size)
        scores = score_probabilities(held[LABEL].tolist(), probabilities, labels)
        result = FoldResult(
            fold=fold, scores=scores, best_epoch=trained.fitted.best_epoch,
            seconds=round(time.perf_counter() - started, 1),
        )  # fmt: skip
        _append_fold(
            out_dir, result, _identity(config, folds, seed, teacher), held, held_rows, probabilities, labels
        )
        done[fold] = result
        log(f"fold {fold}/{folds}: {scores.headline()} ({result.seconds / 60:.1f} min)")
    results = [done[fold] for fold in sorted(done)]
    teachers_scored = None
    if teacher is not None:
        teacher_results, teacher_oof = score_fold_teachers(
            out_dir, fold_splits(pool, folds, seed), labels, config.eval_batch_size, log=log
        )
        if teacher_results:
            teachers_scored = fold_scores(teacher_results, teacher_oof, labels, tune_criterion)
    outcome = CrossValidation(
        data_file=Path(data_path).name,
        rows=len(pool),
        folds=folds,
        seed=seed,
        recipe=config,
        teacher=teacher,
        teachers_scored=teachers_scored,
        minutes=round(sum(r.seconds for r in results) / 60, 1),
        **dict(fold_scores(results, pd.read_csv(out_dir / "oof.csv"), labels, tune_criterion)),
    )
    write_text_atomic(out_dir / "crossval.json", outcome.model_dump_json(indent=2) + "\n")
    write_text_atomic(out_dir / "crossval.md", format_crossval(outcome) + "\n")
    plot_crossval(outcome, out_dir / "crossval.png")
    return outcome


@dataclass
class FoldSplit:
    """One fold's rows: trained on (``fit``), choosing the epoch (``inner``), scored (``held``)."""

    fold: int
    fit: Any
    inner: Any
    held: Any
    held_rows: np.ndarray

    def __str__(self) -> str:
        return f"training on {len(self.fit)}, choosing on {len(self.inner)}, scoring {len(self.held)}"


def fold_scores(
    results: list[FoldResult], oof: Any, labels: list[str], tune_criterion: str | None
) -> FoldScores:
    """The spread of the folds' ``results``, and offsets tuned on their out-of-fold rows ``oof``."""
    return FoldScores(
        results=results,
        summary={name: Spread.of([getattr(r.scores, name) for r in results]) for name in HEADLINE},
        recall={label: Spread.of([r.scores.per_class[label].recall for r in results]) for label in labels},
        offsets=tune_offsets_nested(oof, labels, tune_criterion) if tune_criterion else None,
    )


def fold_splits(pool: Any, folds: int, seed: int) -> Iterator[FoldSplit]:
    """Stratified folds of ``pool``; each fold's training rows lose a stratified ninth to choose
    the epoch on. The same ``seed`` gives the same folds, whatever the recipe."""
    require("sklearn.model_selection")
    from sklearn.model_selection import StratifiedKFold, train_test_split

    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fold, (fit_rows, held_rows) in enumerate(splitter.split(pool, pool[LABEL]), start=1):
        fit_part, inner = train_test_split(
            pool.iloc[fit_rows], test_size=1 / 9, random_state=seed, stratify=pool.iloc[fit_rows][LABEL]
        )
        fit_part, inner = fit_part.reset_index(drop=True), inner.reset_index(drop=True)
        yield FoldSplit(fold, fit_part, inner, pool.iloc[held_rows], held_rows)


def _finished_folds(
    out_dir: Path, config: TrainingConfig, folds: int, seed: int, teacher: TrainingConfig | None
) -> dict[int, FoldResult]:
    """Folds already in ``folds.jsonl`` for this very recipe and split; another recipe starts over."""
    log_file = out_dir / "folds.jsonl"
    if not log_file.is_file():
        return {}
    done: dict[int, FoldResult] = {}
    identity = _identity(config, folds, seed, teacher)
    for line in log_file.read_text().splitlines():
        entry = json.loads(line)
        if entry["identity"] == identity:
            done[entry["result"]["fold"]] = FoldResult.model_validate(entry["result"])
    if not done:
        log_file.unlink()
        (out_dir / "oof.csv").unlink(missing_ok=True)
    return done


def _identity(
    config: TrainingConfig, folds: int, seed: int, teacher: TrainingConfig | None
) -> dict[str, Any]:
    speed_only = {"threads", "eval_batch_size"}
    identity = {"recipe": config.model_dump(mode="json", exclude=speed_only), "folds": folds, "seed": seed}
    if teacher is not None:  # a student's folds: its teachers' recipe is part of what it is
        identity["teacher"] = teacher.model_dump(mode="json", exclude=speed_only)
    return identity


def _append_fold(
    out_dir: Path,
    result: FoldResult,
    identity: dict[str, Any],
    held: Any,
    held_rows: np.ndarray,
    probabilities: np.ndarray,
    labels: list[str],
) -> None:
    """Add one fold's held-out probabilities to ``oof.csv`` and its result to ``folds.jsonl``."""
    rows = _oof_rows(result.fold, held, held_rows, probabilities, labels)
    oof_file = out_dir / "oof.csv"
    rows.to_csv(oof_file, mode="a", header=not oof_file.exists(), index=False)
    entry = {"identity": identity, "result": result.model_dump(mode="json")}
    with (out_dir / "folds.jsonl").open("a") as handle:
        handle.write(json.dumps(entry) + "\n")


def _oof_rows(
    fold: int, held: Any, held_rows: np.ndarray, probabilities: np.ndarray, labels: list[str]
) -> Any:
    """One fold's held-out rows with their probabilities, as ``oof.csv`` keeps them."""
    rows = held[[TEXT, LABEL]].copy()
    rows.insert(0, "index", held_rows)
    rows.insert(1, "fold", fold)
    for j, label in enumerate(labels):
        rows[f"p_{label}"] = probabilities[:, j]
    return rows


def score_fold_teachers(
    out_dir: Path, splits: Iterator[FoldSplit], labels: list[str], batch_size: int,
    log: Callable[[str], None] = print,
) -> tuple[list[FoldResult], Any]:  # fmt: skip
    """Each fold's teacher scored on the rows its student is scored on, so the two compare fold by
    fold. The probabilities are kept beside the teacher (``held.csv``, gone with it when it is
    retrained), so a rerun reads them."""
    require("pandas")
    import pandas as pd

    from sentiment_api.core.engine import Classifier

    results, frames = [], []
    for split in splits:
        path = teacher_path(out_dir, split.fold)
        if not (path / CARD_FILE).is_file():
            continue  # this fold's teacher is not trained yet
        held_file = path / "held.csv"
        if not held_file.is_file():
            log(f"fold {split.fold}: scoring its teacher on the {len(split.held)} held-out rows")
            probabilities, _ = Classifier.load(path).probabilities(split.held[TEXT].tolist(), batch_size)
            with staged_file(held_file) as staging:
                _oof_rows(split.fold, split.held, split.held_rows, probabilities, labels).to_csv(
                    staging, index=False
                )
        rows = pd.read_csv(held_file)
        scores = score_probabilities(
            rows[LABEL].tolist(), rows[[f"p_{label}" for label in labels]].to_numpy(), labels
        )
        training = ModelCard.load(path).training
        best_epoch, seconds = (training.best_epoch, training.seconds) if training else (0, 0.0)
        results.append(FoldResult(fold=split.fold, scores=scores, best_epoch=best_epoch, seconds=seconds))
        frames.append(rows)
    return results, pd.concat(frames, ignore_index=True) if frames else None


def best_offsets(
    log_probabilities: np.ndarray, truth: Sequence[str], labels: list[str], criterion: str
) -> dict[str, float]:
    """The per-label logit offsets (the commonest label's fixed at 0) that maximise ``criterion``
    on these rows, searched on a grid; ties go to the smallest change."""
    anchor = int(np.argmax([list(truth).count(label) for label in labels]))
    free = [j for j in range(len(labels)) if j != anchor]
    best: tuple[float, float, tuple[float, ...]] = (-1.0, 0.0, tuple(0.0 for _ in free))
    truth_ids = label_indices(truth, labels)
    for values in itertools.product(OFFSET_GRID, repeat=len(free)):
        shift = np.zeros(len(labels))
        shift[free] = values
        predicted = np.argmax(log_probabilities + shift, axis=1)
        score = _fast_criterion(truth_ids, predicted, len(labels), criterion)
        candidate = (score, -float(np.abs(values).sum()), tuple(float(v) for v in values))
        if candidate[:2] > best[:2]:
            best = candidate
    offsets = dict.fromkeys(labels, 0.0)
    for j, value in zip(free, best[2], strict=True):
        offsets[labels[j]] = round(value, 2)
    return offsets


def _fast_criterion(truth: np.ndarray, predicted: np.ndarray, k: int, criterion: str) -> float:
    """The criterion from a confusion matrix (sklearn per call is too slow for a grid)."""
    from sentiment_api.training.loop import combine

    matrix = np.bincount(truth * k + predicted, minlength=k * k).reshape(k, k).astype(float)
    true_positive = np.diag(matrix)
    recall = true_positive / np.maximum(matrix.sum(axis=1), 1)
    precision = true_positive / np.maximum(matrix.sum(axis=0), 1)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0)
    accuracy = float(true_positive.sum() / max(matrix.sum(), 1))
    return combine(accuracy, float(recall.mean()), float(f1.mean()), criterion)


def tune_offsets_nested(oof: Any, labels: list[str], criterion: str) -> OffsetResult:
    """Offsets tuned on all out-of-fold rows, and scored fold by fold with offsets tuned on the rest."""
    log_probabilities = np.log(np.clip(oof[[f"p_{label}" for label in labels]].to_numpy(), 1e-12, 1.0))
    truth = oof[LABEL].tolist()
    per_fold: list[Scores] = []
    for fold in sorted(oof["fold"].unique()):
        inside = (oof["fold"] == fold).to_numpy()
        offsets = best_offsets(log_probabilities[~inside], oof[LABEL][~inside].tolist(), labels, criterion)
        shift = np.array([offsets[label] for label in labels])
        per_fold.append(
            score_probabilities(oof[LABEL][inside].tolist(), log_probabilities[inside] + shift, labels)
        )
    return OffsetResult(
        criterion=criterion,
        offsets=best_offsets(log_probabilities, truth, labels, criterion),
        nested={name: Spread.of([getattr(s, name) for s in per_fold]) for name in HEADLINE},
        per_fold=[scores.headline() for scores in per_fold],
    )


def format_crossval(result: CrossValidation) -> str:
    """Markdown: one row per fold, the mean ± sd, per-label recall, and the tuned offsets."""
    lines = [
        f"{result.folds}-fold cross-validation (seed {result.seed}) on {result.rows} rows of "
        f"{result.data_file} (train + validation; test left out), {result.minutes} min",
        "",
        "| fold | accuracy | balanced accuracy | macro-F1 | best epoch | minutes |",
        "|---|---|---|---|---|---|",
    ]
    for r in result.results:
        s = r.scores
        lines.append(
            f"| {r.fold} | {s.accuracy:.4f} | {s.balanced_accuracy:.4f} | {s.macro_f1:.4f} | "
            f"{r.best_epoch} | {r.seconds / 60:.1f} |"
        )
    summary = result.summary
    lines.append(
        f"| **mean ± sd** | {summary['accuracy']} | {summary['balanced_accuracy']} | "
        f"{summary['macro_f1']} | | |"
    )
    lines += [
        "",
        "recall per label: " + "; ".join(f"{label} {spread}" for label, spread in result.recall.items()),
    ]
    if result.offsets is not None:
        nested = result.offsets.nested
        lines += [
            "",
            f"logit offsets tuned for {result.offsets.criterion}: {result.offsets.offsets}; nested estimate "
            f"accuracy {nested['accuracy']}, balanced accuracy {nested['balanced_accuracy']}, "
            f"macro-F1 {nested['macro_f1']}",
        ]
    if result.teachers_scored is not None:
        taught = result.teachers_scored
        lines += [
            "",
            f"the folds' teachers on the same rows: accuracy {taught.summary['accuracy']}, balanced accuracy "
            f"{taught.summary['balanced_accuracy']}, macro-F1 {taught.summary['macro_f1']}",
        ]
        if taught.offsets is not None:
            nested = taught.offsets.nested
            lines.append(
                f"their offsets for {taught.offsets.criterion}: {taught.offsets.offsets}; nested "
                f"{nested['accuracy']} / {nested['balanced_accuracy']} / {nested['macro_f1']}"
            )
    return "\n".join(lines)


def plot_crossval(result: CrossValidation, path: Path) -> Path:
    """Each fold's headline scores and per-label recall as dots, the mean as a bar, in a PNG."""
    plt = pyplot()

    figure, (headline, recall) = plt.subplots(1, 2, figsize=(11, 4), dpi=120)

    def headline_value(fold: FoldResult, name: str) -> float:
        return float(getattr(fold.scores, name))

    def recall_value(fold: FoldResult, label: str) -> float:
        return fold.scores.per_class[label].recall

    panels = ((headline, list(HEADLINE), headline_value), (recall, list(result.recall), recall_value))
    for axes, names, value in panels:
        for x, name in enumerate(names):
            values = [value(r, name) for r in result.results]
            axes.bar(x, statistics.mean(values), 0.6, color="tab:blue", alpha=0.3)
            axes.scatter([x] * len(values), values, color="tab:blue", zorder=3, s=14)
        short = [name.replace(" toward brand or product", "").replace("_", " ") for name in names]
        axes.set_xticks(range(len(names)), short, rotation=12)
        axes.set_ylim(0, 1)
    headline.set_title("per fold (dots) and mean (bar)")
    recall.set_title("recall per label")
    figure.suptitle(
        f"{result.folds}-fold cross-validation, {result.rows} rows of {result.data_file}", fontsize=10
    )
    return save_png(figure, path)
