import json

import pytest

from sentiment_api.core.engine import Classifier
from sentiment_api.optimise.bench import format_table, run_bench, write_bench
from sentiment_api.training.evaluation import evaluate_classifier


def test_bench_measures_every_variant_of_a_checkpoint(trained_tiny_bert, tiny_csv, tmp_path) -> None:
    result = run_bench(trained_tiny_bert, tiny_csv, threads=1, batch_size=4, repeats=2, log=lambda _: None)
    rows = {row["variant"]: row for row in result["rows"]}
    assert list(rows) == ["pytorch", "onnx", "onnx-optimised", "onnx-int8"]
    assert rows["pytorch"]["improvement"] == 1.0
    # the bench scores the very test split that evaluating the checkpoint scores
    evaluated = evaluate_classifier(Classifier.load(trained_tiny_bert), tiny_csv, "test")
    assert result["tweets"] == evaluated.n == 6
    assert (rows["pytorch"]["accuracy"], rows["pytorch"]["macro_f1"]) == (
        evaluated.accuracy,
        evaluated.macro_f1,
    )
    for row in rows.values():
        assert row["accuracy"] in {round(right / 6, 4) for right in range(7)}  # a share of six tweets
        assert row["batched_per_second"] == pytest.approx(result["tweets"] / row["total_seconds"])
        assert row["improvement"] == pytest.approx(rows["pytorch"]["total_seconds"] / row["total_seconds"])
        assert row["latency_p99_ms"] >= row["latency_p50_ms"] > 0
        assert row["peak_memory_mb"] > 10 and row["size_mb"] > 0
    assert rows["onnx"]["accuracy"] == rows["pytorch"]["accuracy"]
    assert rows["onnx-int8"]["size_mb"] < rows["onnx"]["size_mb"]
    # each variant's own peak: the ONNX child never imports torch
    assert rows["onnx-int8"]["peak_memory_mb"] < rows["pytorch"]["peak_memory_mb"] - 100
    assert result["machine"]["threads"] == 1 and result["machine"]["cores"] >= 1

    files = write_bench(result, tmp_path / "bench")
    assert json.loads(files["json"].read_text())["rows"][0]["variant"] == "pytorch"
    assert files["png"].read_bytes()[:4] == b"\x89PNG"
    assert files["reliability"].read_bytes()[:4] == b"\x89PNG"  # each variant's scores against accuracy
    assert all(
        0.0 <= row["ece"] <= 1.0 and sum(n for *_, n in row["reliability"]) == 6 for row in rows.values()
    )
    table = format_table(result)
    assert table.splitlines()[0].startswith("| variant | accuracy | macro-F1 | ECE | total s | improvement")
    assert len([line for line in table.splitlines() if line.startswith("| onnx")]) == 3


def test_speed_only_bench_of_a_package_skips_accuracy(trained_tiny_bert, tiny_csv, tmp_path) -> None:
    from sentiment_api.optimise.export import build_package

    build_package(trained_tiny_bert, tmp_path / "p", tiny_csv, log=lambda _: None)
    result = run_bench(tmp_path / "p", tiny_csv, threads=1, repeats=1, speed_only=True, log=lambda _: None)
    assert [row["variant"] for row in result["rows"]] == ["onnx-int8"]
    assert "accuracy" not in result["rows"][0] and result["rows"][0]["improvement"] is None
    assert "—" in format_table(result)
