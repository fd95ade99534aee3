"""The real ``sentiment-api`` command, run as a process: exit codes and output."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from tiny_models import LABELS

COMMANDS = [
    [],
    ["data"],
    ["data", "split"],
    ["train"],
    ["crossval"],
    ["evaluate"],
    ["predict"],
    ["export"],
    ["bench"],
    ["serve"],
]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sentiment_api", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "root")
def test_every_command_has_help(command) -> None:
    result = run(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout


def test_bad_usage_exits_2() -> None:
    result = run("train")
    assert result.returncode == 2
    assert "Missing argument" in result.stderr
    assert run("frobnicate").returncode == 2


def test_library_error_is_one_line_and_exit_1(tmp_path) -> None:
    result = run("data", "split", tmp_path / "missing.csv")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path / 'missing.csv'}: no such file"]
    assert "Traceback" not in result.stderr


def test_data_split_writes_the_splits(tiny_csv, tmp_path) -> None:
    result = run("data", "split", tiny_csv, "--out", tmp_path / "splits")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert {name: s["rows"] for name, s in summary["splits"].items()} == {
        "train": 48,
        "validation": 6,
        "test": 6,
    }
    assert len(pd.read_csv(tmp_path / "splits" / "test.csv")) == 6


def test_train_evaluate_predict_round_trip(tiny_csv, tiny_bert, tmp_path) -> None:
    model = tmp_path / "model"
    trained = run(
        "train",
        tiny_csv,
        "--out",
        model,
        "--base-model",
        tiny_bert,
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--learning-rate",
        "0.005",
        "--no-progress",
    )
    assert trained.returncode == 0, trained.stderr
    assert "validation:" in trained.stdout and "macro_f1" in trained.stdout
    assert "epoch 1:" in trained.stderr

    evaluated = run("evaluate", model, "--data", tiny_csv, "--out", tmp_path / "eval", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    metrics = json.loads(evaluated.stdout)
    assert metrics["n"] == 6 and metrics["labels"] == LABELS
    card = json.loads((model / "model_card.json").read_text())
    assert metrics["macro_f1"] == card["metrics"]["test"]["macro_f1"]
    assert (tmp_path / "eval" / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    for plot in ("reliability.png", "coverage.png"):  # calibration, and coverage by min_score
        assert (tmp_path / "eval" / plot).read_bytes()[:4] == b"\x89PNG"
    coverage = metrics["confidence"]["coverage"]
    assert coverage[0] == {**coverage[0], "min_score": 0.0, "coverage": 1.0, "accuracy": metrics["accuracy"]}
    assert [p["coverage"] for p in coverage] == sorted((p["coverage"] for p in coverage), reverse=True)
    assert 0.0 <= metrics["confidence"]["calibration"]["ece"] <= 1.0

    unlabelled = tmp_path / "in.xlsx"
    pd.DataFrame({"Tweet": ["love my ipad", None, "the app keeps crashing"]}).to_excel(
        unlabelled, sheet_name="Test", index=False
    )
    predicted = run(
        "predict", model, "--input", unlabelled, "--sheet", "Test", "--output", tmp_path / "o.csv"
    )
    assert predicted.returncode == 0, predicted.stderr
    rows = pd.read_csv(tmp_path / "o.csv")
    assert list(rows.columns[:4]) == ["Tweet", "label", "score", "truncated"]
    assert len(rows) == 3
    assert rows["skip_reason"].fillna("").tolist() == ["", "missing text", ""]  # kept, marked, not scored
    scored = rows.dropna(subset=["label"])
    assert set(scored["label"]) <= set(LABELS) and scored["score"].between(1 / 3, 1).all()
    assert len(scored) == 2


def test_predict_names_a_missing_text_column(trained_tiny_bert, tiny_csv, tmp_path) -> None:
    result = run(
        "predict",
        trained_tiny_bert,
        "--input",
        tiny_csv,
        "--text-column",
        "body",
        "--output",
        tmp_path / "o.csv",
    )
    assert result.returncode == 1
    assert "no column 'body'" in result.stderr
    assert not (tmp_path / "o.csv").exists()


def test_train_with_a_corpus_and_crossval_from_the_command_line(tiny_csv, tiny_bert, tmp_path) -> None:
    from tiny_models import MAP, labelled_rows, write_corpus

    names = {target: corpus for corpus, target in MAP.items()}
    corpus = write_corpus(
        tmp_path / "corpus.csv", [(t, names[label]) for t, label in labelled_rows(10, seed=3)]
    )
    mapping = [arg for source, target in MAP.items() for arg in ("--corpus-label", f"{source}={target}")]
    common = [
        "--base-model",
        tiny_bert,
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--no-progress",
        "--corpus",
        corpus,
    ]
    trained = run("train", tiny_csv, "--out", tmp_path / "model", *common, *mapping,
                  "--stage-dir", tmp_path / "stages", "--logit-offsets", f"{LABELS[0]}=0.5")  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert "corpus validation (labels mapped):" in trained.stdout.replace(tmp_path.name, "corpus")
    card = json.loads((tmp_path / "model" / "model_card.json").read_text())
    [stage] = (tmp_path / "stages").iterdir()  # the first stage, kept where --stage-dir says
    assert card["corpora"][0]["stage_checkpoint"] == stage.name and card["corpora"][0]["label_map"] == MAP
    assert card["hyperparameters"]["logit_offsets"] == {LABELS[0]: 0.5}

    scored = run("evaluate", tmp_path / "model", "--corpus", corpus, *mapping, "--json")
    assert scored.returncode == 0, scored.stderr
    assert json.loads(scored.stdout)["n"] == 30 and json.loads(scored.stdout)["split"] == "all"
    neither = run("evaluate", tmp_path / "model")
    assert neither.returncode == 2 and "give either --data or --corpus" in neither.stderr

    unmapped = run("train", tiny_csv, "--out", tmp_path / "other", *common)
    assert unmapped.returncode == 1 and "Traceback" not in unmapped.stderr
    [error] = [line for line in unmapped.stderr.splitlines() if line.startswith("error:")]
    assert "corpus.csv: label 'negative'" in error and "--corpus-label 'negative=" in error

    folds = run("crossval", tiny_csv, "--out", tmp_path / "cv", "--folds", "2", "--base-model", tiny_bert,
                "--epochs", "1", "--batch-size", "8", "--no-progress")  # fmt: skip
    assert folds.returncode == 0, folds.stderr
    assert "| **mean ± sd** |" in folds.stdout and (tmp_path / "cv" / "crossval.png").is_file()


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--corpus-label", "negative", "'negative' is not KEY=VALUE"),
        ("--logit-offsets", "neg=high", "not a float"),
    ],
)
def test_a_bad_key_value_option_is_a_usage_error(option, value, message, tiny_csv, tmp_path) -> None:
    result = run("train", tiny_csv, "--out", tmp_path / "m", option, value)
    assert result.returncode == 2 and message in result.stderr
