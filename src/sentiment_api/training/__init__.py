"""Fine-tune a Hugging Face sequence classifier on labelled tweets.

A plain PyTorch loop (no ``Trainer``): class-weighted cross-entropy in the model's label order, AdamW
with a linear warm-up/decay schedule, length-bucketed batches, evaluation on the validation split
after every epoch, and the epoch with the best validation score kept. One module per step:
``base`` (the base model and the saved checkpoint), ``stages`` (where a run starts: the base, or a
first stage on extra corpora), ``loop`` (the epochs), ``fitting`` (one model fitted on prepared rows),
``distillation`` (teachers' soft targets), ``pipeline`` (``train``, which runs the steps in order),
``crossval`` (a recipe over k folds) and ``evaluation`` (a model on a split of a file).
"""

from sentiment_api.core.recipe import BUNDLED_BASE, TrainingConfig
from sentiment_api.training.base import load_base, resolve_base_model, save_checkpoint
from sentiment_api.training.loop import average_states, class_weights, fit, parameter_groups, training_batches
from sentiment_api.training.pipeline import train

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
