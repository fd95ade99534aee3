"""The starting point of a run: the base model, or a first stage on extra corpora, kept and reused.

The stage trains the base model on the corpora (labels mapped onto the target labels) and saves an
ordinary checkpoint, which the target training then starts from, head included. Its directory is
named by a hash of everything that decides its weights (base, corpus files, label maps, normaliser,
and every setting it trains with), so a later run that would train the same stage loads it instead:
a user who trains several times on their own data pays for the first stage once.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sentiment_api.core.extras import require
from sentiment_api.core.files import cache_dir, file_sha256
from sentiment_api.core.model_card import CARD_FILE, DataRecord, ModelCard, library_versions
from sentiment_api.core.recipe import BUNDLED_BASE, BUNDLED_BASE_PACKAGE, TrainingConfig
from sentiment_api.core.records import CorpusRecord
from sentiment_api.data.corpora import Corpus, load_corpus
from sentiment_api.training.base import save_checkpoint
from sentiment_api.training.checkpoints import Checkpoints
from sentiment_api.training.fitting import (
    Trained,
    checkpoint_card,
    fine_tune,
    label_shares,
    score_frame,
    training_record,
)
from sentiment_api.training.split_wheels import SPLIT_BASES

# Settings of the target's run that the first stage does not train with: the stage takes their
# defaults instead, so that they change neither its weights nor its cache key.
TARGET_ONLY = frozenset(
    {"teachers", "distil_weight", "distil_corpora", "distil_corpus_rows", "logit_offsets", "corpora"}
)
# What the stage trains with in place of the target's own settings.
STAGE_OVERRIDES = {"epochs": "corpus_epochs", "learning_rate": "corpus_learning_rate"}
# Settings that change how fast a stage trains, not its weights; and the base, which the key holds by
# its content rather than by its name.
NOT_IN_KEY = frozenset({"threads", "eval_batch_size", "base_model"})


@dataclass
class Start:
    """Where the target's training starts: its settings (``base_model`` the stage's checkpoint when
    there is one, the corpora learnt already), the corpora read, and the card's records of them."""

    config: TrainingConfig
    corpora: list[Corpus] = field(default_factory=list)
    records: list[CorpusRecord] = field(default_factory=list)

    def score_corpora(self, trained: Trained) -> list[CorpusRecord]:
        """The records with the trained model's scores on each corpus' validation split."""
        for corpus, record in zip(self.corpora, self.records, strict=True):
            record.metrics = score_frame(trained.classifier, corpus.validation, self.config.eval_batch_size)
        return self.records


def prepare_start(
    config: TrainingConfig,
    labels: list[str],
    normaliser: str,
    stage_dir: Path | None = None,
    *,
    progress: bool = True,
    log: Callable[[str], None] = print,
    checkpoints: Checkpoints | None = None,
) -> Start:
    """Read ``config.corpora`` and train (or reuse) the first stage on them; without corpora the
    run starts from ``config.base_model`` itself. ``checkpoints``: the run's policy, which the stage
    follows in a directory of its own beside it."""
    corpora = [load_corpus(spec, labels, normaliser, config.seed) for spec in config.corpora]
    if not corpora:
        return Start(config)
    stage = first_stage(
        corpora, labels, config, normaliser, stage_dir, progress=progress, log=log, checkpoints=checkpoints
    )
    target = config.model_copy(update={"base_model": str(stage.path), "base_label_map": {}, "corpora": []})
    return Start(target, corpora, stage.records)


@dataclass
class Stage:
    """A first-stage checkpoint and the card's records of the corpora it learnt from."""

    path: Path
    records: list[CorpusRecord]


def default_stage_dir() -> Path:
    """``$XDG_CACHE_HOME/sentiment-api/stages`` (``~/.cache/...`` by default)."""
    return cache_dir("stages")


def stage_config(config: TrainingConfig) -> TrainingConfig:
    """The settings the first stage trains with: the target's, less what only the target uses, with
    the corpus' epochs and learning rate, and its best epoch kept (no average)."""
    defaults = TrainingConfig()
    update: dict[str, Any] = {name: getattr(defaults, name) for name in TARGET_ONLY}
    update |= {name: getattr(config, source) for name, source in STAGE_OVERRIDES.items()}
    update["average_last"] = 1
    return config.model_copy(update=update)


def stage_key(corpora: list[Corpus], labels: list[str], config: TrainingConfig, normaliser: str) -> str:
    """A hash of everything that decides the stage's weights: every setting it trains with but those
    in ``NOT_IN_KEY``, the base by content, the corpora by content, the labels and the normaliser."""
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
        "settings": stage_config(config).model_dump(mode="json", exclude=set(NOT_IN_KEY)),
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


def _base_identity(base_model: str) -> str:
    """The base by content where it is a local directory, else by name (and bundled version)."""
    if base_model in SPLIT_BASES:
        return SPLIT_BASES[base_model].weights_sha256
    if base_model == BUNDLED_BASE:
        version = library_versions(BUNDLED_BASE_PACKAGE).get(BUNDLED_BASE_PACKAGE, "")
        return f"{BUNDLED_BASE}:{version}"
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
    checkpoints: Checkpoints | None = None,
) -> Stage:
    """The stage's checkpoint: loaded when an identical one exists, else trained and saved (with
    ``checkpoints``, checkpointed as it goes in ``PATH.partial`` and resumed from there)."""
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
    settings = stage_config(config)
    train_rows = pd.concat([corpus.train for corpus in corpora], ignore_index=True)
    validation_rows = pd.concat([corpus.validation for corpus in corpora], ignore_index=True)
    partial = checkpoints.beside(path.with_name(f"{path.name}.partial")) if checkpoints else None
    trained = fine_tune(
        train_rows, validation_rows, labels, settings, normaliser,
        progress=progress, log=log, checkpoints=partial,
    )  # fmt: skip
    records = []
    for corpus in corpora:
        record = corpus.record(config.corpus_epochs)
        record.stage_checkpoint = path.name
        record.stage_metrics = score_frame(trained.classifier, corpus.validation, config.eval_batch_size)
        records.append(record)
    card = checkpoint_card(
        trained.start,
        labels,
        normaliser,
        settings.model_copy(update={"base_model": config.base_model}),
        name=f"first stage on {names}",
        data=DataRecord(
            file=names,
            sha256=corpora[0].sha256 if len(corpora) == 1 else "",
            splits={"train": len(train_rows), "validation": len(validation_rows)},
        ),
        label_shares=label_shares(train_rows),
        metrics={"validation": score_frame(trained.classifier, validation_rows, config.eval_batch_size)},
        corpora=records,
    )
    card.training = training_record(trained, settings.selection, started)
    save_checkpoint(trained.start, card, path)
    if partial is not None:
        partial.clear()
    return Stage(path, records)
