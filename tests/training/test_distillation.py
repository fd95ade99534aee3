"""Distillation: teachers' probabilities as soft targets beside the labels, and the loss that mixes them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sentiment_api.core.errors import ConfigError
from sentiment_api.core.model_card import ModelCard
from sentiment_api.core.records import DataSpec
from sentiment_api.core.text import get_normaliser
from sentiment_api.data.tweets import LABEL, TEXT
from sentiment_api.training import TrainingConfig, train
from sentiment_api.training.distillation import soft_columns, soft_targets, teacher_probabilities
from sentiment_api.training.fitting import fine_tune
from sentiment_api.training.loop import batch_loss
from tiny_models import LABELS, labelled_rows

QUIET = {"progress": False, "log": lambda _: None}


def test_the_loss_mixes_kl_to_the_soft_targets_and_the_labels_cross_entropy() -> None:
    import torch

    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.5]])
    y = torch.tensor([0, 2])
    soft = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
    cross_entropy = torch.nn.CrossEntropyLoss(weight=torch.tensor([2.0, 0.5, 1.0]))
    hard = cross_entropy(logits, y)
    log_p = torch.log_softmax(logits, dim=-1)
    kl = (soft * (soft.log() - log_p)).sum(dim=1).mean()
    assert torch.isclose(batch_loss(logits, y, None, cross_entropy, 0.7), hard)
    assert torch.isclose(batch_loss(logits, y, soft, cross_entropy, 0.0), hard)
    assert torch.isclose(batch_loss(logits, y, soft, cross_entropy, 1.0), kl)
    assert torch.isclose(batch_loss(logits, y, soft, cross_entropy, 0.7), 0.7 * kl + 0.3 * hard)


def test_class_weighted_distillation_weighs_each_rows_kl_by_its_labels_weight() -> None:
    import torch

    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.5], [0.3, 0.3, 0.3]])
    y = torch.tensor([0, 2, 1])
    soft = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [0.1, 0.8, 0.1]])
    weights = torch.tensor([2.0, 0.5, 1.0])
    cross_entropy = torch.nn.CrossEntropyLoss(weight=weights)
    per_row = (soft * (soft.log() - torch.log_softmax(logits, dim=-1))).sum(dim=1)
    weighted_kl = (per_row * weights[y]).sum() / weights[y].sum()
    assert not torch.isclose(weighted_kl, per_row.mean())
    assert torch.isclose(batch_loss(logits, y, soft, cross_entropy, 1.0, class_weighted=True), weighted_kl)
    unweighted = torch.nn.CrossEntropyLoss()
    assert torch.isclose(batch_loss(logits, y, soft, unweighted, 1.0, class_weighted=True), per_row.mean())


def test_soft_targets_come_from_every_labels_column_and_are_normalised() -> None:
    frame = pd.DataFrame({TEXT: ["a", "b"], LABEL: LABELS[:2]})
    assert soft_targets(frame, LABELS) is None
    frame[soft_columns(LABELS)] = [[2.0, 1.0, 1.0], [0.0, 0.0, 3.0]]
    assert np.allclose(soft_targets(frame, LABELS), [[0.5, 0.25, 0.25], [0, 0, 1]])
    with pytest.raises(ConfigError, match="p_Positive emotion"):
        soft_targets(frame.drop(columns=["p_Positive emotion"]), LABELS)
    frame.loc[1, "p_Negative emotion"] = -1.0
    with pytest.raises(ConfigError, match="negative"):
        soft_targets(frame, LABELS)


def test_a_teacher_without_a_target_label_is_refused_naming_it(trained_tiny_bert) -> None:
    with pytest.raises(ConfigError, match=r"'Sarcasm'.*same labels"):
        teacher_probabilities([str(trained_tiny_bert)], ["a tweet"], ["Negative emotion", "Sarcasm"], 8)


def test_teachers_probabilities_follow_the_target_label_order(trained_tiny_bert) -> None:
    texts = ["love the new ipad", "app crash again, worst"]
    both = teacher_probabilities([str(trained_tiny_bert)] * 2, texts, LABELS, 8)
    reversed_order = teacher_probabilities([str(trained_tiny_bert)], texts, LABELS[::-1], 8)
    assert np.allclose(both.sum(axis=1), 1, atol=1e-5)
    assert np.allclose(both, reversed_order[:, ::-1], atol=1e-6)


def _rows(seed: int) -> pd.DataFrame:
    normalise = get_normaliser(DataSpec().normaliser)
    return pd.DataFrame(
        [(normalise(text), label) for text, label in labelled_rows(8, seed)], columns=[TEXT, LABEL]
    )


def test_with_all_the_weight_on_the_teacher_the_labels_do_not_matter(tiny_bert) -> None:
    train_rows, validation_rows = _rows(1), _rows(2)
    rng = np.random.default_rng(0)
    train_rows[soft_columns(LABELS)] = rng.dirichlet([1.0, 1.0, 1.0], size=len(train_rows))
    relabelled = train_rows.copy()
    relabelled[LABEL] = train_rows[LABEL].map(dict(zip(LABELS, LABELS[1:] + LABELS[:1], strict=True)))
    config = TrainingConfig(
        base_model=str(tiny_bert), epochs=2, batch_size=8, learning_rate=5e-3, average_last=1
    )

    def weights(rows: pd.DataFrame, distil_weight: float) -> dict:
        recipe = config.model_copy(update={"distil_weight": distil_weight})
        trained = fine_tune(rows, validation_rows, LABELS, recipe, DataSpec().normaliser, **QUIET)
        return {k: v.clone() for k, v in trained.start.model.state_dict().items()}

    def same(a: dict, b: dict) -> bool:
        return all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)

    assert same(weights(train_rows, 1.0), weights(relabelled, 1.0))
    assert not same(weights(train_rows, 0.5), weights(relabelled, 0.5))
    assert not same(weights(train_rows, 1.0), weights(train_rows.drop(columns=soft_columns(LABELS)), 1.0))


def test_train_distils_from_a_teacher_and_the_card_records_it(
    tiny_csv, tiny_bert, trained_tiny_bert, tmp_path
) -> None:
    messages: list[str] = []
    recipe = TrainingConfig(
        base_model=str(tiny_bert),
        epochs=1,
        batch_size=8,
        learning_rate=5e-3,
        teachers=[str(trained_tiny_bert)],
    )
    card = train(tiny_csv, tmp_path / "student", recipe, progress=False, log=messages.append)
    assert any("distilling from 1 teacher(s): probabilities of 48 rows" in m for m in messages)
    saved = ModelCard.load(tmp_path / "student")
    assert saved.hyperparameters.teachers == [str(trained_tiny_bert)]
    assert saved.hyperparameters.distil_weight == card.hyperparameters.distil_weight == 0.7


def test_the_first_stage_learns_from_the_corpus_labels_only(
    tiny_csv, tiny_bert, trained_tiny_bert, tmp_path
) -> None:
    from sentiment_api.core.records import CorpusSpec
    from tiny_models import MAP, write_corpus

    names = {target: corpus for corpus, target in MAP.items()}
    rows = [(f"{text} extra", names[label]) for text, label in labelled_rows(10, seed=7)]
    corpus = CorpusSpec(path=write_corpus(tmp_path / "corpus.csv", rows), label_map=MAP, holdout=0.1)
    recipe = TrainingConfig(
        base_model=str(tiny_bert), epochs=1, batch_size=8, learning_rate=5e-3,
        teachers=[str(trained_tiny_bert)], corpora=[corpus],
    )  # fmt: skip
    messages: list[str] = []
    train(
        tiny_csv,
        tmp_path / "student",
        recipe,
        stage_dir=tmp_path / "stages",
        progress=False,
        log=messages.append,
    )
    assert sum("distilling from" in m for m in messages) == 1  # the target's 48 rows, not the corpus'
    [stage] = list((tmp_path / "stages").iterdir())
    assert ModelCard.load(stage).hyperparameters.teachers == []


def test_crossval_refuses_a_teacher_that_saw_the_held_out_rows(
    tiny_csv, tiny_bert, trained_tiny_bert, tmp_path
) -> None:
    from sentiment_api.training.crossval import cross_validate

    recipe = TrainingConfig(base_model=str(tiny_bert), epochs=1, teachers=[str(trained_tiny_bert)])
    with pytest.raises(ConfigError, match=r"give the teachers. recipe instead \(--teacher-recipe\)"):
        cross_validate(tiny_csv, tmp_path / "cv", recipe, folds=3, progress=False, log=lambda _: None)
    assert not (tmp_path / "cv").exists()
