import pandas as pd
import pytest

from sentiment_api.engine import Classifier
from sentiment_api.errors import DataError
from sentiment_api.prediction import pick_text_column, predict_frame


def test_predict_frame_adds_label_and_score_columns(trained_tiny_bert) -> None:
    classifier = Classifier.load(trained_tiny_bert)
    frame = pd.DataFrame({"Tweet": ["great app", float("nan"), "x " * 200], "id": [1, 2, 3]})
    result = predict_frame(classifier, frame, "Tweet", batch_size=2, progress=False)
    assert list(result["id"]) == [1, 2, 3]
    assert result["truncated"].tolist() == [False, False, True]
    score_columns = [f"score_{label}" for label in classifier.labels]
    assert (result[score_columns].sum(axis=1) - 1).abs().max() < 1e-4
    assert (result["score"] == result[score_columns].max(axis=1)).all()


def test_text_column_is_guessed_or_named(tmp_path) -> None:
    path = tmp_path / "x.csv"
    assert pick_text_column(pd.DataFrame({"Tweet": []}), path, None) == "Tweet"
    with pytest.raises(DataError, match="pass --text-column"):
        pick_text_column(pd.DataFrame({"body": []}), path, None)
