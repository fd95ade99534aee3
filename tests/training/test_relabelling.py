"""A corpus relabelled by the teachers: soft targets in the target's label space, cached by its
inputs, built in blocks that an interrupted run resumes, and recorded in the student's card."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sentiment_api.core.errors import ConfigError
from sentiment_api.core.model_card import ModelCard
from sentiment_api.training import TrainingConfig, relabelling, train
from sentiment_api.training.distillation import soft_columns
from tiny_models import LABELS, labelled_rows, write_corpus


@pytest.fixture
def corpus(tmp_path):  # type: ignore[no-untyped-def]
    rows = [(f"@user {text} again http://x.co", "whatever") for text, _ in labelled_rows(10, seed=5)]
    return write_corpus(tmp_path / "corpus.csv", [*rows, rows[0], ("@user", "neutral")])


def test_the_teachers_label_every_distinct_tweet_in_the_target_labels(
    trained_tiny_bert, corpus, tmp_path
) -> None:
    rows, record = relabelling.relabelled(
        corpus, [str(trained_tiny_bert)], LABELS, "legacy@1", cache=tmp_path / "cache", log=lambda _: None
    )
    assert len(rows) == 30  # the duplicate and the tweet the normaliser empties are gone
    assert not rows["text"].str.contains("@user|http").any()  # normalised as the target's tweets
    soft = rows[soft_columns(LABELS)].to_numpy()
    assert np.allclose(soft.sum(axis=1), 1, atol=1e-5)
    assert (rows["label"] == [LABELS[i] for i in soft.argmax(axis=1)]).all()  # the hard label: the best
    assert record.mode == "distil" and record.rows == 30 and record.file == "corpus.csv"


def test_a_second_run_reads_the_cache_and_an_interrupted_one_resumes(
    trained_tiny_bert, corpus, tmp_path, monkeypatch
) -> None:
    teacher = [str(trained_tiny_bert)]
    monkeypatch.setattr(relabelling, "BLOCK_ROWS", 8)
    real = relabelling.teacher_probabilities
    blocks: list[int] = []

    def counted(teachers, texts, labels, batch_size):  # type: ignore[no-untyped-def]
        blocks.append(len(texts))
        if len(blocks) == 2:
            raise KeyboardInterrupt  # killed while labelling the second block
        return real(teachers, texts, labels, batch_size)

    monkeypatch.setattr(relabelling, "teacher_probabilities", counted)
    quiet = {"cache": tmp_path / "cache", "log": lambda _: None}
    with pytest.raises(KeyboardInterrupt):
        relabelling.relabelled(corpus, teacher, LABELS, "legacy@1", **quiet)
    assert not list((tmp_path / "cache").glob("*.parquet"))  # nothing half-written is taken as done
    resumed, _ = relabelling.relabelled(corpus, teacher, LABELS, "legacy@1", **quiet)
    assert blocks == [8, 8, 8, 8, 6]  # the first block was kept: only the other four are labelled again
    monkeypatch.setattr(relabelling, "teacher_probabilities", None)  # a third run labels nothing
    said: list[str] = []
    cached, _ = relabelling.relabelled(
        corpus, teacher, LABELS, "legacy@1", cache=tmp_path / "cache", log=said.append
    )
    assert any("reusing" in line for line in said)
    pd.testing.assert_frame_equal(cached, resumed)
    monkeypatch.setattr(relabelling, "teacher_probabilities", real)
    whole, _ = relabelling.relabelled(corpus, teacher, LABELS, "legacy@1", cache=tmp_path / "new", log=print)
    pd.testing.assert_frame_equal(whole, resumed)  # resumed: what an uninterrupted run gives


def test_without_teachers_a_distil_corpus_is_refused(corpus) -> None:
    with pytest.raises(ConfigError, match="need teachers"):
        relabelling.relabelled(corpus, [], LABELS, "legacy@1")


def test_the_student_learns_from_the_relabelled_corpus_and_its_card_says_so(
    tiny_csv, tiny_bert, trained_tiny_bert, corpus, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    recipe = TrainingConfig(
        base_model=str(tiny_bert), epochs=1, batch_size=8, learning_rate=5e-3,
        teachers=[str(trained_tiny_bert)], distil_corpora=[corpus], distil_corpus_rows=20,
    )  # fmt: skip
    said: list[str] = []
    card = train(tiny_csv, tmp_path / "student", recipe, progress=False, log=said.append)
    assert any(line.endswith("20 tweets labelled by the teachers") for line in said)
    assert card.training.steps == 9  # (48 target rows + 20 relabelled) in batches of 8
    saved = ModelCard.load(tmp_path / "student")
    [record] = [record for record in saved.corpora if record.mode == "distil"]
    assert record.file == "corpus.csv" and record.rows == 20 and len(record.sha256) == 64
    assert saved.hyperparameters.teachers == [str(trained_tiny_bert)]
    assert [str(path) for path in saved.hyperparameters.distil_corpora] == [str(corpus)]
