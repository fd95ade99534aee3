"""``train``: load the data and the base, fit the epochs, choose the weights, evaluate, save."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..data import LABEL, TEXT, DataSpec, PreparedData, Splits, load_splits
from ..engine import Classifier, TorchBackend
from ..errors import ConfigError
from ..evaluation import Scores, score_probabilities
from ..extras import require
from ..model_card import AveragedRecord, DataRecord, ModelCard, TrainingRecord, library_versions
from ..recipe import TrainingConfig
from .base import StartingPoint, load_base, save_checkpoint
from .loop import Examples, Fitted, average_states, fit


def train(
    data_path: Path,
    output_dir: Path,
    config: TrainingConfig | None = None,
    spec: DataSpec | None = None,
    *,
    progress: bool = True,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> ModelCard:
    """Fine-tune, keep the best epoch by validation macro-F1, evaluate on test, save a checkpoint.

    The checkpoint directory holds the weights, ``config.json``, the tokenizer (``tokenizer.json``)
    and ``model_card.json``. It is written to a temporary directory and renamed at the end.
    """
    config = config or TrainingConfig()
    spec = spec or DataSpec()
    output_dir = Path(output_dir)
    if output_dir.exists() and not overwrite:
        raise ConfigError(f"{output_dir} exists; choose another output or pass --overwrite")
    started = time.perf_counter()
    _set_up_torch(config)
    data, splits = load_splits(data_path, spec)
    log(
        f"data: {data.source.name} {splits.sizes()} dropped {data.dropped}; "
        f"labels {data.labels}; base {config.base_model}"
    )
    start = load_base(config, data.labels)
    card = describe(start, data, splits, spec, config)
    classifier = Classifier(TorchBackend(start.model), start.tokenizer, card)

    def score(split: str) -> Scores:
        return score_split(classifier, getattr(splits, split), config.eval_batch_size)

    examples = encode(start, splits, data.labels)
    fitted = fit(
        start.model,
        start.tokenizer,
        examples,
        data.labels,
        config,
        lambda: score("validation"),
        progress=progress,
        log=log,
    )
    averaged = keep_best_weights(start.model, fitted, config, lambda: score("validation").macro_f1, log)
    card.metrics = {"validation": score("validation"), "test": score("test")}
    card.training = TrainingRecord(
        best_epoch=fitted.best_epoch,
        history=fitted.history,
        averaged=averaged,
        seconds=round(time.perf_counter() - started, 1),
        steps=fitted.steps,
    )
    save_checkpoint(start, card, output_dir)
    return card


def _set_up_torch(config: TrainingConfig) -> None:
    """Threads as configured; every random generator seeded, before the head is initialised."""
    torch: Any = require("torch")
    require("transformers")
    if config.threads:
        torch.set_num_threads(config.threads)
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)


def describe(
    start: StartingPoint, data: PreparedData, splits: Splits, spec: DataSpec, config: TrainingConfig
) -> ModelCard:
    """The card of the model about to be trained: labels, data, settings (metrics come later)."""
    return ModelCard(
        labels=data.labels,
        normaliser=spec.normaliser,
        max_length=start.max_length,
        pad_token_id=start.pad_id,
        base_model=config.base_model,
        data=DataRecord(
            file=data.source.name,
            sha256=data.sha256,
            spec=spec,
            dropped=data.dropped,
            splits=splits.sizes(),
        ),
        label_shares={
            str(label): round(float(share), 4)
            for label, share in splits.train[LABEL].value_counts(normalize=True).items()
        },
        hyperparameters=config,
        versions=library_versions("torch", "transformers", "tokenizers", "sentiment-api"),
    )


def encode(start: StartingPoint, splits: Splits, labels: list[str]) -> Examples:
    """The training split as token ids and label ids."""
    ids = {label: i for i, label in enumerate(labels)}
    return Examples(
        start.tokenizer.encode(splits.train[TEXT].tolist()).ids,
        splits.train[LABEL].map(ids).to_numpy(),
    )


def score_split(classifier: Classifier, frame: Any, batch_size: int) -> Scores:
    """Scores of the classifier on a frame of normalised texts and labels."""
    probabilities, _ = classifier.probabilities_of_clean(frame[TEXT].tolist(), batch_size)
    return score_probabilities(frame[LABEL].tolist(), probabilities, classifier.labels)


def keep_best_weights(
    model: Any,
    fitted: Fitted,
    config: TrainingConfig,
    validation_macro_f1: Callable[[], float],
    log: Callable[[str], None],
) -> AveragedRecord | None:
    """Load the best epoch's weights, or the average of the last epochs' when it validates better."""
    averaged = None
    if len(fitted.recent) > 1:
        model.load_state_dict(average_states(fitted.recent))
        averaged = AveragedRecord(epochs=len(fitted.recent), validation_macro_f1=validation_macro_f1())
        log(
            f"average of the last {averaged.epochs} epochs: "
            f"validation macro-F1 {averaged.validation_macro_f1}"
        )
        averaged.used = averaged.validation_macro_f1 > fitted.best_macro_f1
    if fitted.best_state is not None and not (averaged and averaged.used):
        model.load_state_dict(fitted.best_state)
    model.eval()
    return averaged
