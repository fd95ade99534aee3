"""Fine-tune a Hugging Face sequence classifier on labelled tweets.

A plain PyTorch loop (no ``Trainer``): class-weighted cross-entropy in the model's label order, AdamW
with a linear warm-up/decay schedule, length-bucketed batches, evaluation on the validation split
after every epoch, and the epoch with the best validation macro-F1 kept. One module per step:
``base`` (the starting model and the saved checkpoint), ``loop`` (the epochs), ``pipeline``
(``train``, which runs the steps in order).
"""

from ..recipe import BUNDLED_BASE, TrainingConfig
from .base import load_base, resolve_base_model, save_checkpoint
from .loop import average_states, class_weights, fit, parameter_groups, training_batches
from .pipeline import train

__all__ = [
    "BUNDLED_BASE",
    "TrainingConfig",
    "average_states",
    "class_weights",
    "fit",
    "load_base",
    "parameter_groups",
    "resolve_base_model",
    "save_checkpoint",
    "train",
    "training_batches",
]
