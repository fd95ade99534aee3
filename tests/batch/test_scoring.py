"""One chunk in, the same rows out with the predictions; bad rows marked, never fatal."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from sentiment_api.batch.scoring import ChunkScorer, Scores
from sentiment_api.core.calibration import softmax
from sentiment_api.core.engine import Classifier
from sentiment_api.core.errors import DataError
from tiny_models import with_temperature
from tweet_files import LONG


def chunk(texts, **other) -> pa.Table:
    return pa.table({"id": list(range(len(texts))), "tweet_text": pa.array(texts, pa.string()), **other})


def test_rows_that_cannot_be_scored_are_kept_with_their_reason(classifier) -> None:
    score = ChunkScorer.of_classifier(classifier, "tweet_text", max_text_chars=1000)
    texts = ["love my new ipad", None, "", " \t ", LONG, "the app keeps crashing"]

    out = score(chunk(texts)).to_pylist()

    assert [row["id"] for row in out] == [0, 1, 2, 3, 4, 5]
    assert [row["skip_reason"] for row in out] == [
        None,
        "missing text",
        "empty text",
        "empty text",
        "over 1000 characters",
        None,
    ]
    for row in out:
        per_label = [row[f"score_{label}"] for label in classifier.labels]
        if row["skip_reason"] is None:
            assert row["label"] in classifier.labels
            assert sum(per_label) == pytest.approx(1, abs=1e-5)
            assert row["score"] == max(per_label) == row[f"score_{row['label']}"]
            assert row["truncated"] is False
        else:
            assert [row["label"], row["score"], row["truncated"], *per_label] == [None] * (3 + len(per_label))


def test_scores_match_the_classifier_and_a_long_text_is_marked_truncated(classifier) -> None:
    texts = ["love my new ipad", "word " * 300]
    out = ChunkScorer.of_classifier(classifier, "tweet_text", max_text_chars=5000)(chunk(texts))

    expected = classifier.predict(texts, batch_size=1)
    assert out.column("label").to_pylist() == [p.label for p in expected]
    assert out.column("score").to_pylist() == pytest.approx([p.score for p in expected], abs=1e-6)
    assert out.column("truncated").to_pylist() == [False, True]


def test_with_one_text_per_call_a_row_scores_the_same_whatever_shares_its_chunk(classifier) -> None:
    score = ChunkScorer.of_classifier(classifier, "tweet_text", batch_size=1)
    texts = ["love my new ipad", "the app keeps crashing at sxsw", "store line", "a"]

    together = score(chunk(texts)).drop_columns(["id"])
    alone = pa.concat_tables([score(chunk([text])).drop_columns(["id"]) for text in texts])

    assert together.equals(alone)


def test_scoring_is_one_call_per_chunk_that_can_be_replaced(classifier) -> None:
    calls = []

    def fake(texts):
        calls.append(list(texts))
        probabilities = np.tile(np.eye(len(classifier.labels))[-1], (len(texts), 1))
        return Scores(probabilities, [False] * len(texts))

    score = ChunkScorer.of_classifier(classifier, "tweet_text", score=fake)
    out = score(chunk(["Love it &amp; more", None, "so good"]))

    assert calls == [classifier.normalise(["Love it &amp; more", "so good"])]
    assert out.column("label").to_pylist() == [classifier.labels[-1], None, classifier.labels[-1]]


def test_added_columns_that_clash_with_the_input_need_a_prefix(classifier) -> None:
    score = ChunkScorer.of_classifier(classifier, "text")

    with pytest.raises(DataError, match=r"already has column\(s\) 'label'.*--column-prefix"):
        score.columns.check_free(["text", "label"], "gold.csv")

    prefixed = ChunkScorer.of_classifier(classifier, "text", prefix="pred_")
    prefixed.columns.check_free(["text", "label"], "gold.csv")
    out = prefixed(pa.table({"text": ["nice"], "label": ["Positive emotion"]}))
    assert out.column_names[:4] == ["text", "label", "pred_label", "pred_score"]
    assert out.schema.equals(
        prefixed.output_schema(pa.schema([("text", pa.string()), ("label", pa.string())]))
    )


def test_a_numeric_text_column_is_read_as_its_digits_and_a_nested_one_refused(classifier) -> None:
    score = ChunkScorer.of_classifier(classifier, "tweet_text")

    assert score(pa.table({"tweet_text": [42, None]})).column("skip_reason").to_pylist() == [
        None,
        "missing text",
    ]
    with pytest.raises(DataError, match="column 'tweet_text' holds struct"):
        score(pa.table({"tweet_text": [{"a": 1}]}))


def test_streams_give_the_scores_of_one_session(onnx_package) -> None:
    from sentiment_api.batch.scoring import classifier_scorer, stream_scorer
    from sentiment_api.core.engine import Classifier

    classifier = Classifier.load(onnx_package, threads=1)
    texts = [f"tweet number {i} about the ipad" + " really" * (i % 7) for i in range(101)]
    one = classifier_scorer(classifier, batch_size=1)(texts)
    streamed = stream_scorer(classifier, streams=3, threads=1, batch_size=16)(texts)
    assert streamed.probabilities.shape == one.probabilities.shape
    assert np.abs(streamed.probabilities - one.probabilities).max() <= 1e-6  # batch-invariant scheme
    assert list(streamed.truncated) == list(one.truncated)


def test_batch_scores_are_the_packages_calibrated_scores(onnx_package, tmp_path) -> None:
    calibrated = Classifier.load(with_temperature(onnx_package, tmp_path, 4.0), threads=1)
    texts = ["love my new ipad", "the app keeps crashing"]

    out = ChunkScorer.of_classifier(calibrated, "tweet_text", max_text_chars=1000)(chunk(texts)).to_pylist()

    logits = calibrated.logits(calibrated.tokenise(calibrated.normalise(texts)).ids)
    expected = softmax(logits, 4.0)
    for row, probabilities in zip(out, expected, strict=True):
        assert [row[f"score_{label}"] for label in calibrated.labels] == pytest.approx(
            probabilities.tolist(), abs=1e-5
        )


def test_min_score_adds_an_abstained_column_and_keeps_the_labels(classifier) -> None:
    texts = ["love my new ipad", None, "the app keeps crashing"]
    plain = ChunkScorer.of_classifier(classifier, "tweet_text")(chunk(texts)).to_pylist()
    # between the two scores, away from either (the output's scores are rounded to six digits)
    higher = (plain[0]["score"] + plain[2]["score"]) / 2

    scorer = ChunkScorer.of_classifier(classifier, "tweet_text", min_score=higher)
    out = scorer(chunk(texts)).to_pylist()

    assert scorer.columns.names[-2:] == ["abstained", "skip_reason"]
    assert [row["abstained"] for row in out] == [plain[0]["score"] < higher, None, plain[2]["score"] < higher]
    assert {row["abstained"] for row in out} == {True, False, None}
    assert [row["label"] for row in out] == [row["label"] for row in plain]
    assert "abstained" not in plain[0]
