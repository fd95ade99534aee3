"""Cross-validating a student: each fold's teacher learns from that fold's rows only."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from sentiment_api.core.errors import ConfigError
from sentiment_api.core.model_card import ModelCard
from sentiment_api.training import TrainingConfig, fold_teachers
from sentiment_api.training.crossval import cross_validate
from sentiment_api.training.fold_teachers import load_recipe


def test_each_folds_teacher_never_sees_that_folds_held_out_rows(
    tiny_csv, tiny_bert, tmp_path, monkeypatch
) -> None:
    seen: dict[str, set[str]] = {}
    real = fold_teachers.fine_tune

    def spying(train_rows, validation_rows, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen[f"fold-{len(seen) + 1}"] = set(train_rows["text"]) | set(validation_rows["text"])
        return real(train_rows, validation_rows, *args, **kwargs)

    monkeypatch.setattr(fold_teachers, "fine_tune", spying)
    tiny = {"base_model": str(tiny_bert), "epochs": 1, "batch_size": 8, "learning_rate": 5e-3}
    student, teacher = TrainingConfig(**tiny), TrainingConfig(**tiny, seed=7)  # type: ignore[arg-type]
    quiet = {"folds": 2, "progress": False, "log": lambda _: None, "teacher": teacher}
    result = cross_validate(tiny_csv, tmp_path / "cv", student, **quiet)

    oof = pd.read_csv(tmp_path / "cv" / "oof.csv")
    for fold in (1, 2):
        held = set(oof.loc[oof["fold"] == fold, "text"])
        assert held and not held & seen[f"fold-{fold}"], f"fold {fold}'s teacher saw its held-out rows"
        card = ModelCard.load(tmp_path / "cv" / "teachers" / f"fold-{fold}")
        assert card.hyperparameters.seed == 7 and card.data.splits["train"] + card.data.splits[
            "validation"
        ] == len(seen[f"fold-{fold}"])
    assert result.teacher == teacher and len(result.results) == 2

    said: list[str] = []
    (tmp_path / "cv" / "folds.jsonl").unlink()  # the students again, the teachers kept
    cross_validate(tiny_csv, tmp_path / "cv", student, **{**quiet, "log": said.append})
    assert sum("reusing its teacher" in line for line in said) == 2 and len(seen) == 2


def test_a_recipe_comes_from_a_recipe_file_or_a_model_card(trained_tiny_bert, tmp_path) -> None:
    from_card = load_recipe(trained_tiny_bert / "model_card.json")
    assert from_card == ModelCard.load(trained_tiny_bert).hyperparameters
    (tmp_path / "recipe.json").write_text(json.dumps({"epochs": 2, "learning_rate": 5e-5}))
    assert load_recipe(tmp_path / "recipe.json").epochs == 2
    (tmp_path / "bad.json").write_text('{"epochs": 0}')
    with pytest.raises(ConfigError, match=r"bad\.json: not a training recipe"):
        load_recipe(tmp_path / "bad.json")


def test_each_folds_student_learns_from_the_corpus_as_its_own_teacher_labels_it(
    tiny_csv, tiny_bert, tmp_path, monkeypatch
) -> None:
    from tiny_models import labelled_rows, write_corpus

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    corpus = write_corpus(tmp_path / "corpus.csv", [(text, "any") for text, _ in labelled_rows(12, seed=9)])
    tiny = {"base_model": str(tiny_bert), "epochs": 1, "batch_size": 8, "learning_rate": 5e-3}
    student = TrainingConfig(**tiny, distil_corpora=[corpus], distil_corpus_rows=10)  # type: ignore[arg-type]
    said: list[str] = []
    quiet = {"folds": 2, "progress": False, "log": said.append, "teacher": TrainingConfig(**tiny, seed=7)}  # type: ignore[arg-type]
    result = cross_validate(tiny_csv, tmp_path / "cv", student, **quiet)

    assert len(result.results) == 2
    assert sum(line.endswith("10 tweets labelled by the teachers") for line in said) == 2
    cached = list((tmp_path / "xdg" / "sentiment-api" / "relabelled").iterdir())
    assert len(cached) == 2  # one relabelled corpus per fold: each by that fold's own teacher

    # the teachers are scored on their students' held-out rows, so the two compare fold by fold
    taught = result.teachers_scored
    assert taught is not None and [r.fold for r in taught.results] == [1, 2]
    oof = pd.read_csv(tmp_path / "cv" / "oof.csv")
    for fold in (1, 2):
        held = pd.read_csv(tmp_path / "cv" / "teachers" / f"fold-{fold}" / "held.csv")
        assert held["text"].tolist() == oof.loc[oof["fold"] == fold, "text"].tolist()
        assert taught.results[fold - 1].scores.n == len(held)
    said.clear()
    again = cross_validate(tiny_csv, tmp_path / "cv", student, **quiet)  # every fold done: read back
    assert not any("scoring its teacher" in line for line in said)
    assert again.teachers_scored == taught
