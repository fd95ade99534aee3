"""Coverage by min_score: fewer answers as the threshold rises, the confident ones kept."""

from __future__ import annotations

import numpy as np

from sentiment_api.core.abstention import coverage_curve, plot_coverage

LABELS = ["a", "b"]


def test_raising_min_score_answers_fewer_tweets_and_keeps_the_confident_ones(tmp_path) -> None:
    probabilities = np.array([[0.95, 0.05], [0.9, 0.1], [0.55, 0.45], [0.4, 0.6]])
    truth = ["a", "a", "b", "a"]  # the two confident answers are right, the two unsure ones wrong

    points = {
        p.min_score: p for p in coverage_curve(truth, probabilities, LABELS, (0.0, 0.6, 0.85, 0.95, 0.99))
    }

    assert points[0.0].coverage == 1.0 and points[0.0].accuracy == 0.5
    assert points[0.6].coverage == 0.75
    assert points[0.85].coverage == 0.5 and points[0.85].accuracy == 1.0
    assert points[0.95].coverage == 0.25  # a score equal to min_score is answered
    assert points[0.99].coverage == 0.0 and points[0.99].accuracy is None
    assert plot_coverage(list(points.values()), tmp_path / "coverage.png").stat().st_size > 1000
