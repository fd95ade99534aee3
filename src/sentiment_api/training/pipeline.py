"""``train``: load the data, prepare the base (a first stage on corpora, if asked), fit the epochs,
choose the weights, evaluate, save."""

from __future__ import annotations

import random
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..corpora import Corpus, CorpusRecord, load_corpus
from ..data import LABEL, TEXT, DataSpec, PreparedData, Splits, load_splits
from ..devices import this_cpu
from ..engine import Classifier, TorchBackend
from ..errors import ConfigError
from ..evaluation import Scores, score_probabilities
from ..extras import require
from ..model_card import AveragedRecord, DataRecord, MemberRecord, ModelCard, TrainingRecord, library_versions
from ..recipe import TrainingConfig
from .base import StartingPoint, load_base, output_layer, save_checkpoint
from .distillation import soft_targets, with_teachers
from .loop import Examples, Fitted, Task, average_states, class_weights, fit, new_head, selection_score

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class Trained:
    """A fine-tuned model in memory, how its epochs went, and the corpora it learnt from."""

    start: StartingPoint
    classifier: Classifier
    fitted: Fitted
    averaged: AveragedRecord | None
    corpora: list[CorpusRecord]
    members: list[MemberRecord] = field(default_factory=list)


def train(
    data_path: Path,
    output_dir: Path,
    config: TrainingConfig | None = None,
    spec: DataSpec | None = None,
    *,
    stage_dir: Path | None = None,
    progress: bool = True,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> ModelCard:
    """Fine-tune, keep the best epoch by validation score, evaluate on test, save a checkpoint.

    The checkpoint directory holds the weights, ``config.json``, the tokenizer (``tokenizer.json``)
    and ``model_card.json``. It is written to a temporary directory and renamed at the end. A first
    stage on corpora is kept in ``stage_dir`` and reused by later runs that would repeat it.
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
    trained = fine_tune(
        splits.train, splits.validation, data.labels, config, spec.normaliser,
        stage_dir=stage_dir, progress=progress, log=log,
    )  # fmt: skip
    card = describe(trained.start, data, splits, spec, config)
    card.metrics = {
        split: score_frame(trained.classifier, getattr(splits, split), config.eval_batch_size)
        for split in ("validation", "test")
    }
    card.corpora = trained.corpora
    card.training = TrainingRecord(
        best_epoch=trained.fitted.best_epoch,
        selection=config.selection,
        history=trained.fitted.history,
        averaged=trained.averaged,
        members=trained.members if config.members > 1 else [],
        seconds=round(time.perf_counter() - started, 1),
        steps=trained.fitted.steps,
    )
    save_checkpoint(trained.start, card, output_dir)
    return card


def fine_tune(
    train_rows: pd.DataFrame,
    validation_rows: pd.DataFrame,
    labels: list[str],
    config: TrainingConfig,
    normaliser: str,
    *,
    stage_dir: Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> Trained:
    """Train a model on ``train_rows`` (normalised ``text`` and ``label``), choosing its epoch on
    ``validation_rows``; corpora are used as ``config.corpus_mode`` says. Nothing is saved."""
    _set_up_torch(config)
    if config.precision == "bf16" and this_cpu().emulates_bf16:
        warnings.warn(
            f"precision bf16 on a CPU without native bf16 ({this_cpu().model}: no avx512_bf16 or "
            "amx_bf16): PyTorch emulates it, about 8x slower than fp32 (a 384 x 1536 layer, measured on "
            "an AMD EPYC without AVX-512); --precision fp32 runs at full speed but trains another model",
            stacklevel=2,
        )
    if config.teachers and soft_targets(train_rows, labels) is None:
        log(f"distilling from {len(config.teachers)} teacher(s): probabilities of {len(train_rows)} rows")
        train_rows = with_teachers(train_rows, labels, config.teachers, config.eval_batch_size)
    corpora = [load_corpus(spec, labels, normaliser, config.seed) for spec in config.corpora]
    records = [corpus.record(config.corpus_mode, config.corpus_epochs) for corpus in corpora]
    base_config = config
    if corpora and config.corpus_mode == "stage":
        from .stages import first_stage

        stage = first_stage(corpora, labels, config, normaliser, stage_dir, progress=progress, log=log)
        base_config = config.model_copy(update={"base_model": str(stage.path), "base_label_map": {}})
        records = stage.records
    members: list[Trained] = []
    for seed in member_seeds(config):
        if config.members > 1:
            log(f"member {len(members) + 1}/{config.members}: seed {seed}")
        member_config = base_config.model_copy(update={"seed": seed})
        members.append(_fit_member(train_rows, validation_rows, corpora, labels, member_config, normaliser,
                                   progress=progress, log=log))  # fmt: skip
    trained = members[0] if len(members) == 1 else _soup(members, validation_rows, config, log)
    add_logit_offsets(trained.start.model, labels, config.logit_offsets)
    for corpus, record in zip(corpora, records, strict=False):
        record.metrics = score_frame(trained.classifier, corpus.validation, config.eval_batch_size)
        log(f"{record.name} validation: macro-recall {record.metrics.balanced_accuracy:.4f}")
    trained.corpora = records
    return trained


def member_seeds(config: TrainingConfig) -> list[int]:
    """The seeds of a soup's members: ``seed``, ``seed + 1000``, ... (just ``seed`` for one model)."""
    return [config.seed + 1000 * i for i in range(config.members)]


def _fit_member(
    train_rows: pd.DataFrame,
    validation_rows: pd.DataFrame,
    corpora: list[Corpus],
    labels: list[str],
    config: TrainingConfig,
    normaliser: str,
    *,
    progress: bool,
    log: Callable[[str], None],
) -> Trained:
    """One model from ``config.base_model``: fitted, its epoch (or average) chosen on validation."""
    _seed(config.seed)
    start = load_base(config, labels, log)
    probe = ModelCard(
        labels=labels, normaliser=normaliser, max_length=start.max_length,
        pad_token_id=start.pad_id, base_model=config.base_model,
    )  # fmt: skip
    classifier = Classifier(TorchBackend(start.model), start.tokenizer, probe)

    def validate() -> Scores:
        return score_frame(classifier, validation_rows, config.eval_batch_size)

    tasks = build_tasks(start, train_rows, corpora, labels, config)
    fitted = fit(start.model, start.tokenizer, tasks, config, validate, progress=progress, log=log)
    averaged = keep_best_weights(start.model, fitted, config, validate, log)
    fitted.best_state, fitted.recent = None, []  # loaded already; a soup holds several members
    member = MemberRecord(seed=config.seed, best_epoch=fitted.best_epoch, validation=validate().headline())
    return Trained(start, classifier, fitted, averaged, [], [member])


def _soup(
    members: list[Trained], validation_rows: pd.DataFrame, config: TrainingConfig, log: Callable[[str], None]
) -> Trained:
    """The first member with the uniform average of every member's weights (all share one start)."""
    first = members[0]
    states = [member.start.model.state_dict() for member in members]
    first.start.model.load_state_dict(average_states(states))
    first.start.model.eval()
    first.members = [record for member in members for record in member.members]
    first.fitted.steps = sum(member.fitted.steps for member in members)
    scores = score_frame(first.classifier, validation_rows, config.eval_batch_size)
    log(f"soup of {len(members)}: validation {scores.headline()}")
    return first


def _set_up_torch(config: TrainingConfig) -> None:
    """Threads as configured, every random generator seeded."""
    torch: Any = require("torch")
    require("transformers")
    if config.threads:
        torch.set_num_threads(config.threads)
    _seed(config.seed)


def _seed(seed: int) -> None:
    require("torch")
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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
            file=data.source.name, sha256=data.sha256, spec=spec, dropped=data.dropped, splits=splits.sizes()
        ),
        label_shares=label_shares(splits.train),
        hyperparameters=config,
        versions=library_versions("torch", "transformers", "tokenizers", "sentiment-api"),
    )


def label_shares(frame: pd.DataFrame) -> dict[str, float]:
    """Share of each label among the rows of ``frame``."""
    return {
        str(label): round(float(share), 4)
        for label, share in frame[LABEL].value_counts(normalize=True).items()
    }


def encode(start: StartingPoint, frame: pd.DataFrame, labels: list[str]) -> Examples:
    """Normalised texts and labels as token ids and label ids, and the soft targets the frame carries."""
    ids = {label: i for i, label in enumerate(labels)}
    return Examples(
        start.tokenizer.encode(frame[TEXT].tolist()).ids,
        frame[LABEL].map(ids).to_numpy(),
        soft_targets(frame, labels),
    )


def build_tasks(
    start: StartingPoint,
    train_rows: pd.DataFrame,
    corpora: list[Corpus],
    labels: list[str],
    config: TrainingConfig,
) -> list[Task]:
    """The target's rows, then (mix or joint) a sample of each corpus per epoch."""
    target = encode(start, train_rows, labels)

    def weights(examples: Examples) -> np.ndarray:
        if not config.class_weights:
            return np.ones(len(labels))
        return class_weights(labels, examples.y, config.class_weight_power)

    tasks = [Task(target, weights(target))]
    if config.corpus_mode in ("mix", "joint"):
        for corpus in corpora:
            examples = encode(start, corpus.train, labels)
            joint = config.corpus_mode == "joint"
            tasks.append(
                Task(
                    examples,
                    weights(examples) if joint else tasks[0].weights,
                    rows_per_epoch=max(1, round(config.corpus_mix_ratio * len(target.y))),
                    head=new_head(start.model, len(labels)) if joint else None,
                )
            )
    return tasks


def score_frame(classifier: Classifier, frame: pd.DataFrame, batch_size: int) -> Scores:
    """Scores of the classifier on a frame of normalised texts and labels."""
    probabilities, _ = classifier.probabilities_of_clean(frame[TEXT].tolist(), batch_size)
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
