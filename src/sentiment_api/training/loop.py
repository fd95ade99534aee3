"""The epoch loop: class-weighted cross-entropy, AdamW with layer-wise rates, a warm-up/decay
schedule, length-bucketed batches, and validation after every epoch."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sentiment_api.core.errors import ConfigError
from sentiment_api.core.extras import require
from sentiment_api.core.metrics import Scores
from sentiment_api.core.model_card import EpochRecord
from sentiment_api.core.recipe import TrainingConfig
from sentiment_api.core.tokenization import TweetTokenizer
from sentiment_api.training.checkpoints import Checkpoints, random_state, restore_random_state

_LAYER = re.compile(r"\.(?:layer|layers)\.(\d+)\.")
_NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")


@dataclass
class Examples:
    """Tokenised texts, their label ids (in the model's label order) and, for distillation, a
    teacher's probabilities per row (same order; None without a teacher)."""

    ids: list[list[int]]
    y: np.ndarray
    soft: np.ndarray | None = None

    def lengths(self) -> np.ndarray:
        """Tokens per text."""
        return np.fromiter((len(row) for row in self.ids), dtype=np.int64, count=len(self.ids))


@dataclass
class Fitted:
    """What the epochs left: their history, the best epoch's weights, the last few epochs' weights."""

    selection: str = "macro_f1"
    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    best_state: dict[str, Any] | None = None
    recent: list[dict[str, Any]] = field(default_factory=list)
    steps: int = 0

    @property
    def best_score(self) -> float:
        """The selection score of the best epoch."""
        return max((selection_score(row, self.selection) for row in self.history), default=-1.0)


def selection_score(scores: Scores | EpochRecord, selection: str) -> float:
    """The validation figure epochs are chosen by (see ``TrainingConfig.selection``)."""
    return combine(scores.accuracy, scores.balanced_accuracy, scores.macro_f1, selection)


def combine(accuracy: float, balanced_accuracy: float, macro_f1: float, selection: str) -> float:
    """macro-F1, balanced accuracy, the mean of both, or the mean of those two and accuracy."""
    if selection == "balanced_accuracy":
        return balanced_accuracy
    if selection == "f1_and_balanced":
        return (macro_f1 + balanced_accuracy) / 2
    if selection == "acc_f1_balanced":
        return (accuracy + balanced_accuracy + macro_f1) / 3
    return macro_f1


def class_weights(labels: list[str], y: np.ndarray, power: float = 1.0) -> np.ndarray:
    """Inverse-frequency ("balanced") weights raised to ``power``, in the order of ``labels``."""
    counts = np.bincount(y, minlength=len(labels)).astype(np.float64)
    if (counts == 0).any():
        missing = [label for label, count in zip(labels, counts, strict=True) if count == 0]
        raise ConfigError(f"no training rows for label(s) {missing}")
    return np.asarray((len(y) / (len(labels) * counts)) ** power)


def parameter_groups(model: Any, config: TrainingConfig) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on biases and norms; optional layer-wise learning-rate decay.

    With ``layer_lr_decay`` d < 1, encoder layer i of n trains at ``lr * d**(n - i)``, the
    embeddings at ``lr * d**(n + 1)``, and the pooler and classifier head at the full rate.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    layers = 1 + max((int(m.group(1)) for n, _ in named if (m := _LAYER.search(n))), default=-1)
    groups: dict[tuple[float, float], list[Any]] = {}
    for name, parameter in named:
        match = _LAYER.search(name)
        if match:
            depth = layers - int(match.group(1))
        elif "embeddings" in name:
            depth = layers + 1
        else:
            depth = 0
        lr = config.learning_rate * config.layer_lr_decay**depth
        decay = 0.0 if name.endswith(_NO_DECAY) else config.weight_decay
        groups.setdefault((lr, decay), []).append(parameter)
    return [{"params": ps, "lr": lr, "weight_decay": decay} for (lr, decay), ps in groups.items()]


def training_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled batches of similar length: sort within random pools of 50 batches, shuffle batches."""
    order = rng.permutation(len(lengths))
    pool = batch_size * 50
    batches: list[np.ndarray] = []
    for start in range(0, len(order), pool):
        chunk = order[start : start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)  # type: ignore[arg-type, unused-ignore]
    return batches


def fit(
    model: Any,
    tokenizer: TweetTokenizer,
    examples: Examples,
    weights: np.ndarray,
    config: TrainingConfig,
    validate: Callable[[], Scores],
    *,
    progress: bool = True,
    log: Callable[[str], None] = print,
    checkpoints: Checkpoints | None = None,
) -> Fitted:
    """Train ``model`` for ``config.epochs`` epochs on ``examples``, the loss weighting label i by
    ``weights[i]``; after each epoch, ``validate()`` scores it.

    Keeps the weights of the epoch with the best validation score (``config.selection``) and of
    the last ``config.average_last`` epochs; the model is left with the last epoch's weights. With
    ``checkpoints``, the run is saved every ``checkpoints.every`` steps and after each epoch, and
    goes on from the saved one when there is one to resume (same result as uninterrupted).
    """
    torch: Any = require("torch")
    transformers: Any = require("transformers")
    require("tqdm")
    from tqdm.auto import tqdm

    loss_fn = torch.nn.CrossEntropyLoss(
        weight=torch.tensor(weights, dtype=torch.float32), label_smoothing=config.label_smoothing
    )
    groups = parameter_groups(model, config)
    optimizer = torch.optim.AdamW(groups, lr=config.learning_rate, weight_decay=config.weight_decay)
    steps = math.ceil(len(examples.y) / config.batch_size) * config.epochs
    scheduler = transformers.get_linear_schedule_with_warmup(
        optimizer, int(config.warmup_ratio * steps), steps
    )
    rng = np.random.default_rng(config.seed)
    fitted = Fitted(selection=config.selection, steps=steps)
    run = _Position()
    saved = checkpoints.load() if checkpoints is not None else None
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        restore_random_state(rng, saved["random"])
        fitted, run = saved["fitted"], saved["position"]
        log(f"resuming at step {run.step}/{steps} (epoch {run.epoch}) from {checkpoints.path}")  # type: ignore[union-attr]

    def save() -> None:
        if checkpoints is not None:
            checkpoints.save(
                {
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "random": random_state(rng),
                    "fitted": fitted, "position": run,
                }
            )  # fmt: skip

    bar = tqdm(total=steps, initial=run.step, disable=not progress, desc="training", unit="step")
    pace = _Pace(steps, run.step, log, every=checkpoints.every if checkpoints else 0)
    while run.epoch <= config.epochs:
        epoch = run.epoch
        if run.batches is None:  # a new epoch: its batches drawn now, from where the last left rng
            run.batches = training_batches(examples.lengths(), config.batch_size, rng)
        model.train()
        while run.batch < len(run.batches):
            run.running += _step(model, tokenizer, examples, run.batches[run.batch], loss_fn, config)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            run.batch += 1
            run.step += 1
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{run.running / run.batch:.4f}")
            pace.tick(run.step, epoch)
            if checkpoints is not None and run.step % checkpoints.every == 0 and run.batch < len(run.batches):
                save()
        loss = run.running / max(run.batch, 1)
        model.eval()
        validation = validate()
        record = EpochRecord(epoch=epoch, loss=round(loss, 4), **validation.headline())
        bar.set_postfix(epoch=epoch, loss=f"{loss:.4f}", val_f1=f"{validation.macro_f1:.4f}")
        log(
            f"epoch {epoch}: loss {loss:.4f} validation macro-F1 {validation.macro_f1:.4f} "
            f"balanced accuracy {validation.balanced_accuracy:.4f} accuracy {validation.accuracy:.4f}"
        )
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if selection_score(record, config.selection) > fitted.best_score:
            fitted.best_epoch, fitted.best_state = epoch, state
        fitted.history.append(record)
        if config.average_last > 1:
            fitted.recent = [*fitted.recent, state][-config.average_last :]
        run = _Position(epoch=epoch + 1, step=run.step)
        if epoch < config.epochs:
            save()
    bar.close()
    return fitted


@dataclass
class _Position:
    """Where a run is: its epoch, this epoch's batches and how many are done, and the loss so far."""

    epoch: int = 1
    step: int = 0
    batches: list[np.ndarray] | None = None
    batch: int = 0
    running: float = 0.0


class _Pace:
    """A log line every ``every`` steps (for logs, where the progress bar is not seen): steps/s and
    the time left, at this run's pace since it (re)started."""

    def __init__(self, total: int, done: int, log: Callable[[str], None], every: int) -> None:
        self.total, self.first, self.log, self.every = total, done, log, every
        self.started = time.monotonic()

    def tick(self, step: int, epoch: int) -> None:
        if not self.every or step % self.every:
            return
        rate = (step - self.first) / max(time.monotonic() - self.started, 1e-9)
        left = (self.total - step) / rate if rate else float("inf")
        self.log(
            f"step {step}/{self.total} (epoch {epoch}): {rate:.2f} steps/s, "
            f"{left / 60:.0f} min left at this pace"
        )


def _step(
    model: Any,
    tokenizer: TweetTokenizer,
    examples: Examples,
    batch: np.ndarray,
    loss_fn: Any,
    config: TrainingConfig,
) -> float:
    """Forward and backward one batch; its loss."""
    require("torch")
    import torch

    input_ids, attention_mask = tokenizer.pad([examples.ids[i] for i in batch])
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.precision == "bf16"):
        logits = model(
            input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(attention_mask)
        ).logits
    soft = None if examples.soft is None else torch.from_numpy(examples.soft[batch])
    y = torch.from_numpy(examples.y[batch])
    loss = batch_loss(logits.float(), y, soft, loss_fn, config.distil_weight, config.distil_class_weighted)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    return float(loss.item())


def batch_loss(
    logits: Any,
    y: Any,
    soft: Any | None,
    loss_fn: Any,
    distil_weight: float,
    class_weighted: bool = False,
) -> Any:
    """The labels' loss; with soft targets, ``distil_weight`` x KL(soft || model) + the rest x that.

    The KL term is a mean over the batch's rows: unweighted by default (the teacher's probabilities
    already say how much each label matters), or with ``class_weighted`` weighted by the class weight
    of each row's label, the weighted mean the cross-entropy takes.
    """
    torch: Any = require("torch")
    hard = loss_fn(logits, y)
    if soft is None:
        return hard
    per_row = torch.nn.functional.kl_div(torch.log_softmax(logits, dim=-1), soft, reduction="none").sum(dim=1)
    if class_weighted and loss_fn.weight is not None:
        row_weights = loss_fn.weight[y]
        kl = (per_row * row_weights).sum() / row_weights.sum()
    else:
        kl = per_row.mean()
    return distil_weight * kl + (1 - distil_weight) * hard


def average_states(states: list[dict[str, Any]]) -> dict[str, Any]:
    """Uniform average of several state dicts (integer buffers are taken from the last)."""
    averaged = {}
    for key, value in states[-1].items():
        if value.is_floating_point():
            averaged[key] = sum(state[key] for state in states) / len(states)
        else:
            averaged[key] = value
    return averaged
