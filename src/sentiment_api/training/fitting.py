"""Fit one model on rows already prepared: load its start, train the epochs, keep the best weights.

Nothing here reads files or saves anything: ``pipeline.train`` and ``crossval`` prepare the rows and
the starting point (``stages``), call :func:`fine_tune`, and decide what to keep.
"""

from __future__ import annotations

import random
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from sentiment_api.core.devices import this_cpu
from sentiment_api.core.engine import Classifier, TorchBackend
from sentiment_api.core.errors import ConfigError
from sentiment_api.core.extras import require
from sentiment_api.core.metrics import Scores, label_indices, score_probabilities
from sentiment_api.core.model_card import AveragedRecord, ModelCard, TrainingRecord, library_versions
from sentiment_api.core.recipe import TrainingConfig
from sentiment_api.core.records import CorpusRecord
from sentiment_api.data.tweets import LABEL, TEXT
from sentiment_api.training.base import StartingPoint, load_base, output_layer
from sentiment_api.training.checkpoints import Checkpoints
from sentiment_api.training.distillation import soft_targets, with_teachers
from sentiment_api.training.loop import Examples, Fitted, average_states, class_weights, fit, selection_score
from sentiment_api.training.relabelling import relabelled

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class Trained:
    """A fine-tuned model in memory and how its epochs went."""

    start: StartingPoint
    classifier: Classifier
    fitted: Fitted
    averaged: AveragedRecord | None
    distilled: list[CorpusRecord] = field(default_factory=list)


def fine_tune(
    train_rows: pd.DataFrame,
    validation_rows: pd.DataFrame,
    labels: list[str],
    config: TrainingConfig,
    normaliser: str,
    *,
    progress: bool = True,
    log: Callable[[str], None] = print,
    checkpoints: Checkpoints | None = None,
) -> Trained:
    """Train a model from ``config.base_model`` on ``train_rows`` (normalised ``text`` and
    ``label``), choosing its epoch (or the average of the last ones) on ``validation_rows``; with
    ``config.teachers``, their probabilities are soft targets beside the labels. Nothing is saved.

    ``config.corpora`` must be empty: corpora are learnt in a first stage, which
    ``stages.prepare_start`` runs first and whose checkpoint it makes the base. With
    ``checkpoints``, the epochs are saved as they go and resumed from there (``loop.fit``).
    """
    if config.corpora:
        raise ConfigError("fine_tune learns from no corpus itself: run stages.prepare_start first")
    _set_up_torch(config)
    if config.precision == "bf16" and this_cpu().emulates_bf16:
        warnings.warn(
            f"precision bf16 on a CPU without native bf16 ({this_cpu().model}: no avx512_bf16 or "
            "amx_bf16): PyTorch emulates it, several times slower than fp32; --precision fp32 runs at "
            "full speed but trains another model",
            stacklevel=2,
        )
    if config.teachers and soft_targets(train_rows, labels) is None:
        log(f"distilling from {len(config.teachers)} teacher(s): probabilities of {len(train_rows)} rows")
        train_rows = with_teachers(train_rows, labels, config.teachers, config.eval_batch_size)
    train_rows, distilled = with_distil_corpora(train_rows, validation_rows, labels, config, normaliser, log)
    _seed(config.seed)  # the start's head and the batches' order do not depend on what ran before
    start = load_base(config, labels, log)
    probe = ModelCard(
        labels=labels, normaliser=normaliser, max_length=start.max_length,
        pad_token_id=start.pad_id, base_model=config.base_model,
    )  # fmt: skip
    classifier = Classifier(TorchBackend(start.model), start.tokenizer, probe)

    def validate() -> Scores:
        return score_frame(classifier, validation_rows, config.eval_batch_size)

    examples = encode(start, train_rows, labels)
    weights = (
        class_weights(labels, examples.y, config.class_weight_power)
        if config.class_weights
        else np.ones(len(labels))
    )
    if checkpoints is not None:  # the run is its settings (less what only changes speed) and its rows
        settings = config.model_dump(mode="json", exclude={"threads", "eval_batch_size"})
        rows = [frame[[TEXT, LABEL]].to_numpy().tolist() for frame in (train_rows, validation_rows)]
        checkpoints = checkpoints.of_run(settings, labels, normaliser, rows)
    fitted = fit(
        start.model, start.tokenizer, examples, weights, config, validate,
        progress=progress, log=log, checkpoints=checkpoints,
    )  # fmt: skip
    averaged = keep_best_weights(start.model, fitted, config, validate, log)
    fitted.best_state, fitted.recent = None, []  # loaded already
    add_logit_offsets(start.model, labels, config.logit_offsets)
    return Trained(start, classifier, fitted, averaged, distilled)


def with_distil_corpora(
    train_rows: pd.DataFrame,
    validation_rows: pd.DataFrame,
    labels: list[str],
    config: TrainingConfig,
    normaliser: str,
    log: Callable[[str], None],
) -> tuple[pd.DataFrame, list[CorpusRecord]]:
    """The training rows with each distil corpus' tweets, as the teachers label them, added (less
    the tweets already in the target's rows, so no validation tweet is learnt), and their records."""
    if not config.distil_corpora:
        return train_rows, []
    require("pandas")
    import pandas as pd

    seen = set(train_rows[TEXT]) | set(validation_rows[TEXT])
    frames, records = [train_rows], []
    for path in config.distil_corpora:
        rows, record = relabelled(
            path, config.teachers, labels, normaliser, max_rows=config.distil_corpus_rows,
            seed=config.seed, batch_size=config.eval_batch_size, log=log,
        )  # fmt: skip
        rows = rows[~rows[TEXT].isin(seen)]
        record.rows = len(rows)
        log(f"distil corpus {path}: {len(rows)} tweets labelled by the teachers")
        frames.append(rows)
        records.append(record)
    return pd.concat(frames, ignore_index=True), records


def checkpoint_card(
    start: StartingPoint, labels: list[str], normaliser: str, config: TrainingConfig, **fields: Any
) -> ModelCard:
    """The card of a checkpoint trained from ``start`` with ``config``: labels, normaliser, length
    and padding, base, recipe and library versions, and ``fields`` (data, metrics, ...)."""
    return ModelCard(
        labels=labels,
        normaliser=normaliser,
        max_length=start.max_length,
        pad_token_id=start.pad_id,
        base_model=config.base_model,
        hyperparameters=config,
        versions=library_versions("torch", "transformers", "tokenizers", "sentiment-api"),
        **fields,
    )


def training_record(trained: Trained, selection: str, started: float) -> TrainingRecord:
    """The card's record of how the epochs went, ``started`` being the run's ``perf_counter``."""
    return TrainingRecord(
        best_epoch=trained.fitted.best_epoch,
        selection=selection,
        history=trained.fitted.history,
        averaged=trained.averaged,
        seconds=round(time.perf_counter() - started, 1),
        steps=trained.fitted.steps,
    )


def _set_up_torch(config: TrainingConfig) -> None:
    """Threads as configured, every random generator seeded."""
    torch: Any = require("torch")
    require("transformers")
    if config.threads:
        torch.set_num_threads(config.threads)
    _seed(config.seed)


def _seed(seed: int) -> None:
    torch: Any = require("torch")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def label_shares(frame: pd.DataFrame) -> dict[str, float]:
    """Share of each label among the rows of ``frame``."""
    return {
        str(label): round(float(share), 4)
        for label, share in frame[LABEL].value_counts(normalize=True).items()
    }


def encode(start: StartingPoint, frame: pd.DataFrame, labels: list[str]) -> Examples:
    """Normalised texts and labels as token ids and label ids, and the soft targets the frame carries."""
    return Examples(
        start.tokenizer.encode(frame[TEXT].tolist()).ids,
        label_indices(frame[LABEL].tolist(), labels),
        soft_targets(frame, labels),
    )


def score_frame(classifier: Classifier, frame: pd.DataFrame, batch_size: int) -> Scores:
    """Scores of the classifier on a frame of normalised texts and labels."""
    probabilities, _ = classifier.probabilities(frame[TEXT].tolist(), batch_size)
    return score_probabilities(frame[LABEL].tolist(), probabilities, classifier.labels)


def keep_best_weights(
    model: Any,
    fitted: Fitted,
    config: TrainingConfig,
    validate: Callable[[], Scores],
    log: Callable[[str], None],
) -> AveragedRecord | None:
    """Load the best epoch's weights, or the average of the last epochs' when it validates better."""
    averaged = None
    if len(fitted.recent) > 1:
        model.load_state_dict(average_states(fitted.recent))
        scores = validate()
        averaged = AveragedRecord(
            epochs=len(fitted.recent),
            validation_macro_f1=scores.macro_f1,
            validation_score=selection_score(scores, config.selection),
        )
        log(f"average of the last {averaged.epochs} epochs: validation macro-F1 {scores.macro_f1}")
        averaged.used = selection_score(scores, config.selection) > fitted.best_score
    if fitted.best_state is not None and not (averaged and averaged.used):
        model.load_state_dict(fitted.best_state)
    model.eval()
    return averaged


def add_logit_offsets(model: Any, labels: list[str], offsets: dict[str, float]) -> None:
    """Add each label's offset to the bias of the head's output layer, so every runtime applies it."""
    if not offsets:
        return
    unknown = sorted(set(offsets) - set(labels))
    if unknown:
        raise ConfigError(f"logit offsets for unknown label(s) {unknown}; the labels are {labels}")
    torch: Any = require("torch")
    layer = output_layer(model)
    if layer.bias is None:
        raise ConfigError(f"{type(model).__name__}: the head has no bias to take logit offsets")
    with torch.no_grad():
        for index, label in enumerate(labels):
            layer.bias[index] += offsets.get(label, 0.0)
