"""Teachers for cross-validating a student: one per fold, trained on that fold's rows only.

A teacher trained on the whole file has seen every fold's held-out rows, so a student distilled from
it would be scored on answers it was taught. Each fold's teacher is trained with the teacher's
recipe on the fold's own training and epoch-choosing rows, kept in ``OUT/teachers/fold-N`` (named by
its recipe and rows, so a rerun reuses it and an interrupted one resumes it), and only that fold's
student learns from it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sentiment_api.core.errors import ConfigError
from sentiment_api.core.model_card import CARD_FILE, DataRecord, ModelCard
from sentiment_api.core.recipe import TrainingConfig
from sentiment_api.data.tweets import LABEL, TEXT
from sentiment_api.training.base import save_checkpoint
from sentiment_api.training.checkpoints import Checkpoints
from sentiment_api.training.fitting import (
    checkpoint_card,
    fine_tune,
    label_shares,
    score_frame,
    training_record,
)
from sentiment_api.training.stages import prepare_start

if TYPE_CHECKING:
    import pandas as pd


def fold_teacher(
    fold: int,
    fit: pd.DataFrame,
    inner: pd.DataFrame,
    labels: list[str],
    recipe: TrainingConfig,
    normaliser: str,
    out_dir: Path,
    *,
    stage_dir: Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> Path:
    """The teacher of fold ``fold``: trained with ``recipe`` on ``fit`` (its epoch chosen on
    ``inner``), or the one an earlier run left for the same recipe and rows."""
    path = teacher_path(out_dir, fold)
    identity = _identity(recipe, fit, inner)
    if (path / CARD_FILE).is_file() and ModelCard.load(path).data.sha256 == identity:
        log(f"fold {fold}: reusing its teacher {path}")
        return path
    log(f"fold {fold}: training its teacher on the fold's {len(fit)} rows")
    started = time.perf_counter()
    checkpoints = Checkpoints(path.with_name(f"{path.name}.partial"), resume=True)
    start = prepare_start(
        recipe, labels, normaliser, stage_dir, progress=progress, log=log, checkpoints=checkpoints
    )
    trained = fine_tune(
        fit, inner, labels, start.config, normaliser, progress=progress, log=log, checkpoints=checkpoints
    )
    card = checkpoint_card(
        trained.start, labels, normaliser, recipe,
        name=f"fold {fold} teacher",
        data=DataRecord(
            file=f"fold {fold}", sha256=identity, splits={"train": len(fit), "validation": len(inner)}
        ),
        label_shares=label_shares(fit),
        metrics={"validation": score_frame(trained.classifier, inner, recipe.eval_batch_size)},
        corpora=start.score_corpora(trained) + trained.distilled,
    )  # fmt: skip
    card.training = training_record(trained, recipe.selection, started)
    save_checkpoint(trained.start, card, path)
    checkpoints.clear()
    return path


def teacher_path(out_dir: Path, fold: int) -> Path:
    """Where a cross-validation run in ``out_dir`` keeps fold ``fold``'s teacher."""
    return Path(out_dir) / "teachers" / f"fold-{fold}"


def _identity(recipe: TrainingConfig, fit: pd.DataFrame, inner: pd.DataFrame) -> str:
    """The teacher by what decides it: its recipe (less what only changes speed) and its rows."""
    facts = [
        recipe.model_dump(mode="json", exclude={"threads", "eval_batch_size"}),
        [frame[[TEXT, LABEL]].to_numpy().tolist() for frame in (fit, inner)],
    ]
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()


def load_recipe(path: Path) -> TrainingConfig:
    """A recipe from a JSON file: a recipe itself, or a model card (its ``hyperparameters``), so a
    trained model's own recipe can be reused as the teachers'."""
    try:
        values = json.loads(Path(path).read_text())
        return TrainingConfig.model_validate(values.get("hyperparameters", values))
    except (OSError, ValueError, AttributeError) as exc:  # unreadable, not JSON, not a recipe
        reason = " ".join(str(exc).split())
        raise ConfigError(f"{path}: not a training recipe or model card: {reason}") from None
