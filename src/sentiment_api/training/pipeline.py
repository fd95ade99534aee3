"""``train``: load the data, prepare the start (a first stage on corpora, if asked), fine-tune,
evaluate, save."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from sentiment_api.core.errors import ConfigError
from sentiment_api.core.extras import require
from sentiment_api.core.model_card import DataRecord, ModelCard
from sentiment_api.core.recipe import TrainingConfig
from sentiment_api.core.records import DataSpec
from sentiment_api.data.tweets import PreparedData, Splits, load_splits
from sentiment_api.training.base import StartingPoint, save_checkpoint
from sentiment_api.training.checkpoints import Checkpoints
from sentiment_api.training.fitting import (
    checkpoint_card,
    fine_tune,
    label_shares,
    score_frame,
    training_record,
)
from sentiment_api.training.stages import prepare_start


def train(
    data_path: Path,
    output_dir: Path,
    config: TrainingConfig | None = None,
    spec: DataSpec | None = None,
    *,
    stage_dir: Path | None = None,
    progress: bool = True,
    overwrite: bool = False,
    resume: bool = False,
    checkpoint_every: int = 200,
    log: Callable[[str], None] = print,
) -> ModelCard:
    """Fine-tune, keep the best epoch by validation score, evaluate on test, save a checkpoint.

    The checkpoint directory holds the weights, ``config.json``, the tokenizer (``tokenizer.json``)
    and ``model_card.json``. It is written to a temporary directory and renamed at the end. A first
    stage on corpora is kept in ``stage_dir`` and reused by later runs that would repeat it.

    The run (and the first stage's) is checkpointed every ``checkpoint_every`` steps and after each
    epoch into ``OUTPUT.partial`` beside the output; after an interruption, the same call with
    ``resume`` goes on from there and ends with the weights an uninterrupted run has.
    """
    config = config or TrainingConfig()
    spec = spec or DataSpec()
    output_dir = Path(output_dir)
    if output_dir.exists() and not overwrite:
        raise ConfigError(f"{output_dir} exists; choose another output or pass --overwrite")
    require("torch")  # before the data: the [train] extra brings the [data] one too
    require("transformers")
    started = time.perf_counter()
    data, splits = load_splits(data_path, spec)
    log(
        f"data: {data.source.name} {splits.sizes()} dropped {data.dropped}; "
        f"labels {data.labels}; base {config.base_model}"
    )
    checkpoints = Checkpoints(partial_dir(output_dir), checkpoint_every, resume)
    start = prepare_start(
        config, data.labels, spec.normaliser, stage_dir, progress=progress, log=log, checkpoints=checkpoints
    )
    trained = fine_tune(
        splits.train, splits.validation, data.labels, start.config, spec.normaliser,
        progress=progress, log=log, checkpoints=checkpoints,
    )  # fmt: skip
    card = describe(trained.start, data, splits, spec, config)
    card.metrics = {
        split: score_frame(trained.classifier, getattr(splits, split), config.eval_batch_size)
        for split in ("validation", "test")
    }
    card.corpora = start.score_corpora(trained)
    for record in card.corpora:
        assert record.metrics is not None
        log(f"{record.name} validation: macro-recall {record.metrics.balanced_accuracy:.4f}")
    card.corpora += trained.distilled
    card.training = training_record(trained, config.selection, started)
    save_checkpoint(trained.start, card, output_dir)
    checkpoints.clear()
    return card


def partial_dir(output_dir: Path) -> Path:
    """Where the run that will write ``output_dir`` keeps its checkpoint meanwhile."""
    return Path(output_dir).with_name(f"{Path(output_dir).name}.partial")


def describe(
    start: StartingPoint, data: PreparedData, splits: Splits, spec: DataSpec, config: TrainingConfig
) -> ModelCard:
    """The card of the model about to be trained: labels, data, settings (metrics come later)."""
    return checkpoint_card(
        start, data.labels, spec.normaliser, config,
        data=DataRecord(
            file=data.source.name, sha256=data.sha256, spec=spec, dropped=data.dropped, splits=splits.sizes()
        ),
        label_shares=label_shares(splits.train),
    )  # fmt: skip
