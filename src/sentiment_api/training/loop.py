"""The epoch loop: class-weighted cross-entropy, AdamW with layer-wise rates, a warm-up/decay
schedule, length-bucketed batches, and validation after every epoch."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..evaluation import Scores
from ..extras import require
from ..model_card import EpochRecord
from ..recipe import TrainingConfig
from ..tokenization import TweetTokenizer

_LAYER = re.compile(r"\.(?:layer|layers)\.(\d+)\.")
_NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")


@dataclass
class Examples:
    """Tokenised texts and their label ids (in the model's label order)."""

    ids: list[list[int]]
    y: np.ndarray

    def lengths(self) -> np.ndarray:
        """Tokens per text."""
        return np.fromiter((len(row) for row in self.ids), dtype=np.int64, count=len(self.ids))


@dataclass
class Fitted:
    """What the epochs left: their history, the best epoch's weights, the last few epochs' weights."""

    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    best_state: dict[str, Any] | None = None
    recent: list[dict[str, Any]] = field(default_factory=list)
    steps: int = 0

    @property
    def best_macro_f1(self) -> float:
        """Validation macro-F1 of the best epoch."""
        return max((row.macro_f1 for row in self.history), default=-1.0)


def class_weights(labels: list[str], y: np.ndarray) -> np.ndarray:
    """Inverse-frequency ("balanced") weights, in the order of ``labels`` (the model's order)."""
    counts = np.bincount(y, minlength=len(labels)).astype(np.float64)
    if (counts == 0).any():
        missing = [label for label, count in zip(labels, counts, strict=True) if count == 0]
        raise ConfigError(f"no training rows for label(s) {missing}")
    return len(y) / (len(labels) * counts)


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
    labels: list[str],
    config: TrainingConfig,
    validate: Callable[[], Scores],
    *,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> Fitted:
    """Train ``model`` for ``config.epochs`` epochs; after each, ``validate()`` scores it.

    Keeps the weights of the epoch with the best validation macro-F1 and of the last
    ``config.average_last`` epochs; the model is left with the last epoch's weights.
    """
    torch: Any = require("torch")
    transformers: Any = require("transformers")
    require("tqdm")
    from tqdm.auto import tqdm

    weights = class_weights(labels, examples.y) if config.class_weights else np.ones(len(labels))
    loss_fn = torch.nn.CrossEntropyLoss(
        weight=torch.tensor(weights, dtype=torch.float32), label_smoothing=config.label_smoothing
    )
    optimizer = torch.optim.AdamW(parameter_groups(model, config), lr=config.learning_rate)
    steps = math.ceil(len(examples.y) / config.batch_size) * config.epochs
    scheduler = transformers.get_linear_schedule_with_warmup(
        optimizer, int(config.warmup_ratio * steps), steps
    )
    rng = np.random.default_rng(config.seed)
    lengths = examples.lengths()
    fitted = Fitted(steps=steps)
    bar = tqdm(total=steps, disable=not progress, desc="training", unit="step")
    for epoch in range(1, config.epochs + 1):
        model.train()
        loss = _one_epoch(
            model,
            tokenizer,
            examples,
            training_batches(lengths, config.batch_size, rng),
            loss_fn,
            optimizer,
            scheduler,
            bar,
            epoch,
        )
        model.eval()
        validation = validate()
        record = EpochRecord(epoch=epoch, loss=round(loss, 4), **validation.headline())
        bar.set_postfix(
            epoch=epoch,
            loss=f"{loss:.4f}",
            val_f1=f"{validation.macro_f1:.4f}",
            val_acc=f"{validation.accuracy:.4f}",
        )
        log(
            f"epoch {epoch}: loss {loss:.4f} validation macro-F1 {validation.macro_f1:.4f} "
            f"accuracy {validation.accuracy:.4f}"
        )
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if record.macro_f1 > fitted.best_macro_f1:
            fitted.best_epoch, fitted.best_state = epoch, state
        fitted.history.append(record)
        if config.average_last > 1:
            fitted.recent = [*fitted.recent, state][-config.average_last :]
    bar.close()
    return fitted


def _one_epoch(
    model: Any,
    tokenizer: TweetTokenizer,
    examples: Examples,
    batches: Sequence[np.ndarray],
    loss_fn: Any,
    optimizer: Any,
    scheduler: Any,
    bar: Any,
    epoch: int,
) -> float:
    """One pass over ``batches``; returns the mean training loss."""
    require("torch")
    import torch

    running = 0.0
    for step, batch in enumerate(batches, start=1):
        input_ids, attention_mask = tokenizer.pad([examples.ids[i] for i in batch])
        logits = model(
            input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(attention_mask)
        ).logits
        loss = loss_fn(logits, torch.from_numpy(examples.y[batch]))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        running += loss.item()
        bar.update(1)
        bar.set_postfix(epoch=epoch, loss=f"{running / step:.4f}")
    return running / len(batches)


def average_states(states: list[dict[str, Any]]) -> dict[str, Any]:
    """Uniform average of several state dicts (integer buffers are taken from the last)."""
    averaged = {}
    for key, value in states[-1].items():
        if value.is_floating_point():
            averaged[key] = sum(state[key] for state in states) / len(states)
        else:
            averaged[key] = value
    return averaged
