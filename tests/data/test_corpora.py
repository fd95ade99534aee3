"""Extra corpora: read with the target's normaliser, labels mapped, clear errors for what is wrong."""

from __future__ import annotations

import pytest

from sentiment_api.core.errors import DataError
from sentiment_api.core.records import CorpusSpec
from sentiment_api.data.corpora import load_corpus
from tiny_models import LABELS, MAP, write_corpus

ROWS = [(f"@user I {word} it #{i} http://x.co/{i}", label) for i in range(20) for word, label in
        (("hate", "negative"), ("see", "neutral"), ("love", "positive"))]  # fmt: skip


def test_corpus_rows_are_normalised_mapped_and_deduplicated(tmp_path) -> None:
    path = write_corpus(tmp_path / "train.csv", [*ROWS, ROWS[0], ("@user http://only.a/link", "neutral")])
    validation = write_corpus(
        tmp_path / "val.csv", [("I LOVE it #0 http://x.co/0", "positive"), ("meh", "neutral")]
    )
    corpus = load_corpus(CorpusSpec(path=path, validation=validation, label_map=MAP), LABELS, "legacy@1")
    assert corpus.train["text"][0] == "i hate it #0"  # mention and link gone, lower case: legacy@1
    assert set(corpus.train["label"]) == set(LABELS)
    assert corpus.dropped == {"empty after normalising": 1, "exact duplicates": 1, "also in validation": 1}
    assert len(corpus.train) == 59 and len(corpus.validation) == 2
    record = corpus.record(2)
    assert record.name == tmp_path.name and record.file == "train.csv" and record.validation_file == "val.csv"
    assert len(record.sha256) == 64 and record.rows == 59 and record.label_map == MAP
    assert record.mode == "stage" and record.epochs == 2


def test_without_a_validation_file_a_stratified_share_is_held_out(tmp_path) -> None:
    path = write_corpus(tmp_path / "train.csv", ROWS)
    corpus = load_corpus(CorpusSpec(path=path, label_map=MAP, holdout=0.25), LABELS, "legacy@1")
    assert len(corpus.validation) == 15 and corpus.validation["label"].value_counts().tolist() == [5, 5, 5]


def test_an_unmapped_label_names_the_label_the_file_and_the_option(tmp_path) -> None:
    path = write_corpus(tmp_path / "train.csv", [*ROWS, ("so so", "mixed")])
    with pytest.raises(
        DataError, match=r"train\.csv: label 'mixed' \(row 62.*--corpus-label 'mixed="
    ) as error:
        load_corpus(CorpusSpec(path=path, label_map=MAP), LABELS, "legacy@1")
    assert "--corpus-drop-label 'mixed'" in str(error.value)
    dropped = load_corpus(CorpusSpec(path=path, label_map=MAP, drop_labels=["mixed"]), LABELS, "legacy@1")
    assert dropped.dropped["dropped labels"] == 1


def test_a_missing_column_names_the_columns_there_are(tmp_path) -> None:
    path = write_corpus(tmp_path / "train.csv", ROWS, columns=("tweet", "label"))
    with pytest.raises(DataError, match=r"train\.csv: no column 'text'; columns: tweet, label"):
        load_corpus(CorpusSpec(path=path, label_map=MAP), LABELS, "legacy@1")


def test_a_missing_corpus_file_is_named(tmp_path) -> None:
    with pytest.raises(DataError, match=r"nowhere\.csv: no such file"):
        load_corpus(CorpusSpec(path=tmp_path / "nowhere.csv", label_map=MAP), LABELS, "legacy@1")
