import numpy as np
import pytest

from sentiment_api.core.errors import DataError
from sentiment_api.core.metrics import compute_metrics, format_report, label_indices, plot_confusion_matrix

LABELS = ["neg", "neu", "pos"]


def test_metrics_on_known_predictions() -> None:
    truth = ["neg", "neg", "neu", "neu", "neu", "pos"]
    guess = ["neg", "neu", "neu", "neu", "pos", "pos"]
    metrics = compute_metrics(truth, guess, LABELS)
    assert metrics.accuracy == round(4 / 6, 4)
    assert metrics.balanced_accuracy == round((1 / 2 + 2 / 3 + 1) / 3, 4)
    assert metrics.per_class["neg"].model_dump() == {
        "precision": 1.0,
        "recall": 0.5,
        "f1": 0.6667,
        "support": 2,
    }
    assert metrics.confusion_matrix == [[1, 1, 0], [0, 2, 1], [0, 0, 1]]
    expected_f1 = (2 / 3 + 2 * (2 / 3) * (2 / 3) / (4 / 3) + 2 / 3) / 3
    assert metrics.macro_f1 == round(expected_f1, 4)


def test_report_lists_every_label() -> None:
    report = format_report(compute_metrics(["neg", "pos"], ["neg", "neu"], LABELS), "test:")
    assert report.splitlines()[0] == "test:"
    assert all(label in report for label in LABELS)
    assert "accuracy 0.5000" in report


def test_confusion_matrix_plot_is_a_png(tmp_path) -> None:
    metrics = compute_metrics(["neg", "pos", "neu"], ["neg", "neu", "neu"], LABELS)
    path = plot_confusion_matrix(metrics, tmp_path / "plots" / "cm.png", "tiny")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["cm.png"]


def test_label_indices_are_columns_and_an_unknown_label_is_one_clear_error() -> None:
    assert label_indices(["pos", "neg", "pos"], LABELS).tolist() == [2, 0, 2]
    assert label_indices([], LABELS).dtype == np.int64
    with pytest.raises(DataError, match=r"labels \['joy'\] are not labels of the model"):
        label_indices(["neg", "joy"], LABELS)
