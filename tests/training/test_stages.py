"""The first stage's cache key: derived from every setting that can change the stage's weights."""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from sentiment_api.core.errors import ConfigError
from sentiment_api.core.recipe import TrainingConfig
from sentiment_api.core.records import CorpusSpec
from sentiment_api.data.corpora import Corpus
from sentiment_api.training.fitting import fine_tune
from sentiment_api.training.stages import NOT_IN_KEY, TARGET_ONLY, stage_config, stage_key
from tiny_models import LABELS

# fields a stage never trains with or whose value the stage replaces (average_last: it keeps its
# best epoch; epochs and learning_rate: it takes corpus_epochs and corpus_learning_rate instead)
REPLACED = {"average_last", "epochs", "learning_rate"}


def other_value(name: str, value: Any, annotation: Any) -> Any:
    """A valid value of the field other than ``value``."""
    if name == "base_model":
        return "another/base"
    if name == "corpora":
        return [CorpusSpec(path=Path("other.csv"))]
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return next(choice for choice in typing.get_args(annotation) if choice != value)
    if origin in (typing.Union, types.UnionType):  # int | None
        return 2 if value is None else None
    if annotation is bool:
        return not value
    if annotation is int:
        return value + 1
    if annotation is float:
        return value / 2 if value else 0.1
    if origin is list:
        return [*value, "other"]
    if origin is dict:
        _, value_type = typing.get_args(annotation)
        return {**value, "other": "x" if value_type is str else 0.5}
    raise AssertionError(f"{name}: no rule for {annotation}; teach other_value about it")


def a_corpus() -> Corpus:
    rows = pd.DataFrame({"text": ["a", "b"], "label": LABELS[:2]})
    return Corpus(CorpusSpec(path=Path("corpus.csv")), rows, rows, "0" * 64, None)


@pytest.mark.parametrize("name", sorted(TrainingConfig.model_fields))
def test_every_setting_moves_the_stage_key_unless_it_cannot_change_the_stage(name: str) -> None:
    base = TrainingConfig(base_model="some/base")
    hints = typing.get_type_hints(TrainingConfig)
    changed = base.model_copy(update={name: other_value(name, getattr(base, name), hints[name])})
    TrainingConfig.model_validate(changed.model_dump())  # the other value is a valid one
    corpora = [a_corpus()]
    moved = stage_key(corpora, LABELS, changed, "legacy@1") != stage_key(corpora, LABELS, base, "legacy@1")
    excluded = name in TARGET_ONLY | REPLACED | (NOT_IN_KEY - {"base_model"})
    assert moved is not excluded, f"{name}: the key {'moved' if moved else 'did not move'}"


def test_the_key_follows_the_corpus_epochs_and_rate_the_stage_trains_with() -> None:
    base = TrainingConfig(base_model="some/base")
    settings = stage_config(base.model_copy(update={"corpus_epochs": 3, "corpus_learning_rate": 2e-5}))
    assert (settings.epochs, settings.learning_rate, settings.average_last) == (3, 2e-5, 1)
    assert settings.teachers == [] and settings.logit_offsets == {} and settings.corpora == []


def test_fine_tune_refuses_corpora_it_would_not_learn_from() -> None:
    config = TrainingConfig(corpora=[CorpusSpec(path=Path("corpus.csv"))])
    rows = pd.DataFrame({"text": ["a"], "label": LABELS[:1]})
    with pytest.raises(ConfigError, match="prepare_start"):
        fine_tune(rows, rows, LABELS, config, "legacy@1")
