"""The ``sentiment-api`` command line: parse options, call the library, print the result.

Library errors (:class:`SentimentError`) become one line on stderr and exit code 1; bad usage exits 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from .data import DataSpec
from .errors import SentimentError
from .recipe import TrainingConfig

app = typer.Typer(
    help="Train, evaluate and run a tweet-sentiment classifier.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Inspect and split labelled tweet files.", no_args_is_help=True)
app.add_typer(data_app, name="data")

_DEFAULT_SPEC = DataSpec()
_TRAINING = TrainingConfig()  # the command's defaults are the library's
DataFile = Annotated[Path, typer.Argument(help="Labelled tweets, .csv or .xlsx.")]
Sheet = Annotated[str, typer.Option(help="Excel sheet to read.")]
TextColumn = Annotated[str, typer.Option(help="Column with the tweet text.")]
LabelColumn = Annotated[str, typer.Option(help="Column with the label.")]
Labels = Annotated[
    list[str] | None,
    typer.Option("--label", help="Label to keep (repeat); default: every label found."),
]
DropLabels = Annotated[
    list[str] | None,
    typer.Option("--drop-label", help="Label whose rows are dropped (repeat) [default: I can't tell]."),
]
Normaliser = Annotated[str, typer.Option(help="Text normaliser, name@version.")]
Seed = Annotated[int, typer.Option("--split-seed", help="Random state of the stratified split.")]


def _spec(
    sheet: str,
    text_column: str,
    label_column: str,
    labels: list[str] | None,
    drop_labels: list[str] | None,
    normaliser: str,
    seed: int,
) -> DataSpec:
    return DataSpec(
        sheet=sheet,
        text_column=text_column,
        label_column=label_column,
        labels=labels or None,
        drop_labels=_DEFAULT_SPEC.drop_labels if drop_labels is None else drop_labels,
        normaliser=normaliser,
        seed=seed,
    )


def _echo_json(payload: Any, path: Path | None) -> None:
    from .files import write_text_atomic

    text = json.dumps(payload, indent=2, ensure_ascii=False) + "\n"
    if path is None:
        typer.echo(text, nl=False)
    else:
        write_text_atomic(path, text)


@data_app.command("split")
def data_split(
    data: DataFile,
    out: Annotated[Path | None, typer.Option(help="Write train/validation/test CSVs here.")] = None,
    sheet: Sheet = str(_DEFAULT_SPEC.sheet),
    text_column: TextColumn = _DEFAULT_SPEC.text_column,
    label_column: LabelColumn = _DEFAULT_SPEC.label_column,
    label: Labels = None,
    drop_label: DropLabels = None,
    normaliser: Normaliser = _DEFAULT_SPEC.normaliser,
    split_seed: Seed = _DEFAULT_SPEC.seed,
) -> None:
    """Clean, de-duplicate and split a labelled file; print the counts (and write the splits)."""
    from .data import LABEL, load_splits, write_table

    spec = _spec(sheet, text_column, label_column, label, drop_label, normaliser, split_seed)
    prepared, splits = load_splits(data, spec)
    summary = {
        "file": str(data),
        "sha256": prepared.sha256,
        "rows": len(prepared.frame),
        "dropped": prepared.dropped,
        "splits": {
            name: {"rows": len(frame), "labels": frame[LABEL].value_counts().to_dict()}
            for name, frame in splits.items()
        },
    }
    if out is not None:
        for name, frame in splits.items():
            write_table(frame, out / f"{name}.csv")
    _echo_json(summary, None)


@app.command()
def train(
    data: DataFile,
    out: Annotated[Path, typer.Option(help="Checkpoint directory to create.")],
    base_model: Annotated[str, typer.Option(help="Base model: local directory or hub id.")] = (
        _TRAINING.base_model
    ),
    epochs: Annotated[int, typer.Option(min=1)] = _TRAINING.epochs,
    batch_size: Annotated[int, typer.Option(min=1)] = _TRAINING.batch_size,
    learning_rate: Annotated[float, typer.Option(min=0.0)] = _TRAINING.learning_rate,
    weight_decay: Annotated[float, typer.Option(min=0.0)] = _TRAINING.weight_decay,
    warmup_ratio: Annotated[float, typer.Option(min=0.0, max=1.0)] = _TRAINING.warmup_ratio,
    max_length: Annotated[int, typer.Option(min=8)] = _TRAINING.max_length,
    layer_lr_decay: Annotated[
        float, typer.Option(min=0.01, max=1.0, help="Per-layer LR factor.")
    ] = _TRAINING.layer_lr_decay,
    label_smoothing: Annotated[float, typer.Option(min=0.0, max=0.99)] = _TRAINING.label_smoothing,
    class_weights: Annotated[
        bool, typer.Option(help="Inverse-frequency loss weights.")
    ] = _TRAINING.class_weights,
    freeze_embeddings: Annotated[
        bool, typer.Option(help="Keep word embeddings fixed.")
    ] = _TRAINING.freeze_embeddings,
    average_last: Annotated[
        int, typer.Option(min=1, help="Try the average of the last N epochs' weights.")
    ] = _TRAINING.average_last,
    seed: Annotated[int, typer.Option(help="Training seed.")] = _TRAINING.seed,
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    sheet: Sheet = str(_DEFAULT_SPEC.sheet),
    text_column: TextColumn = _DEFAULT_SPEC.text_column,
    label_column: LabelColumn = _DEFAULT_SPEC.label_column,
    label: Labels = None,
    drop_label: DropLabels = None,
    normaliser: Normaliser = _DEFAULT_SPEC.normaliser,
    split_seed: Seed = _DEFAULT_SPEC.seed,
) -> None:
    """Fine-tune a sequence classifier, keep the best epoch, evaluate it, save a checkpoint."""
    from .evaluation import format_report
    from .training import train as run_training

    config = TrainingConfig(
        base_model=base_model,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        warmup_ratio=warmup_ratio,
        max_length=max_length,
        label_smoothing=label_smoothing,
        layer_lr_decay=layer_lr_decay,
        class_weights=class_weights,
        average_last=average_last,
        freeze_embeddings=freeze_embeddings,
        seed=seed,
        threads=threads,
    )
    spec = _spec(sheet, text_column, label_column, label, drop_label, normaliser, split_seed)
    card = run_training(data, out, config, spec, progress=progress, overwrite=overwrite, log=_stderr)
    for split in ("validation", "test"):
        typer.echo(format_report(card.metrics[split], f"{split}:"))
    typer.echo(f"saved {out} (best epoch {card.training.best_epoch}, {card.training.seconds} s)")


@app.command()
def evaluate(
    model: Annotated[Path, typer.Argument(help="Model directory (checkpoint or package).")],
    data: Annotated[Path, typer.Option(help="Labelled tweets, .csv or .xlsx.")],
    split: Annotated[str, typer.Option(help="train, validation, test or all.")] = "test",
    sheet: Annotated[str | None, typer.Option(help="Sheet (default: the card's).")] = None,
    out: Annotated[Path | None, typer.Option(help="Directory for metrics.json and the plot.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON, not a table.")] = False,
) -> None:
    """Accuracy, balanced accuracy, macro-F1, per-class scores and a confusion-matrix plot."""
    from .engine import Classifier
    from .evaluation import evaluate_classifier, format_report, plot_confusion_matrix

    classifier = Classifier.load(model)
    metrics = evaluate_classifier(classifier, data, split, sheet)
    if out is not None:
        _echo_json(metrics.model_dump(mode="json"), out / "metrics.json")
        plot_confusion_matrix(metrics, out / "confusion_matrix.png", f"{model.name} on {split}")
    if as_json:
        _echo_json(metrics.model_dump(mode="json"), None)
    else:
        typer.echo(format_report(metrics, f"{model} on {data.name} ({split}):"))
        if out is not None:
            typer.echo(f"wrote {out / 'metrics.json'} and {out / 'confusion_matrix.png'}")


@app.command()
def predict(
    model: Annotated[Path, typer.Argument(help="Model directory (checkpoint or package).")],
    input: Annotated[Path, typer.Option("--input", help="Tweets to classify, .csv or .xlsx.")],
    output: Annotated[Path, typer.Option(help="Where to write rows with labels, .csv or .xlsx.")],
    sheet: Annotated[str | None, typer.Option(help="Sheet to read (default: the first).")] = None,
    text_column: Annotated[
        str | None, typer.Option(help="Text column (default: tweet_text, Tweet or text).")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Classify every row of a file and write it back with label and score columns."""
    from .engine import Classifier
    from .prediction import predict_file

    classifier = Classifier.load(model)
    result = predict_file(
        classifier,
        input,
        output,
        sheet=sheet,
        text_column=text_column,
        batch_size=batch_size,
        progress=progress,
    )
    shares = result["label"].value_counts().to_dict()
    typer.echo(f"wrote {len(result)} rows to {output}; labels {shares}")


@app.command()
def export(
    checkpoint: Annotated[Path, typer.Argument(help="Training checkpoint directory.")],
    out: Annotated[Path, typer.Option(help="Model package directory to create.")],
    data: Annotated[Path, typer.Option(help="The labelled file, for the accuracy gate.")],
    variant: Annotated[str, typer.Option(help="onnx, onnx-optimised or onnx-int8.")] = "onnx-int8",
    quantisation: Annotated[str, typer.Option(help="int8 scheme: hybrid or dynamic.")] = "hybrid",
    max_probability_diff: Annotated[float, typer.Option(help="Gate: ONNX vs PyTorch.")] = 1e-4,
    min_label_agreement: Annotated[float, typer.Option(help="Gate: int8 vs fp32.")] = 0.98,
    max_macro_f1_drop: Annotated[float, typer.Option(help="Gate: int8 vs fp32.")] = 0.01,
    accept_gate_failure: Annotated[
        bool, typer.Option(help="Package a model that failed the gate (recorded in its card).")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output.")] = False,
) -> None:
    """Export a checkpoint to ONNX, fuse and quantise it, check its accuracy, write a package."""
    from .export import GateThresholds, build_package

    thresholds = GateThresholds(
        max_probability_diff=max_probability_diff,
        min_label_agreement=min_label_agreement,
        max_macro_f1_drop=max_macro_f1_drop,
    )
    card = build_package(
        checkpoint,
        out,
        data,
        variant=variant,
        scheme=quantisation,
        thresholds=thresholds,
        accept_gate_failure=accept_gate_failure,
        overwrite=overwrite,
        log=_stderr,
    )
    assert card.gate is not None and card.package is not None
    figures = {**card.gate.figures(), "passed": card.gate.passed, "override": card.gate.override}
    typer.echo(f"gate: {json.dumps(figures)}")
    test = card.metrics["test"]
    typer.echo(
        f"wrote {out} ({card.variant}, {card.package.size_bytes / 1e6:.1f} MB); test accuracy "
        f"{test.accuracy:.4f} balanced accuracy {test.balanced_accuracy:.4f} "
        f"macro-F1 {test.macro_f1:.4f}"
    )


@app.command()
def bench(
    model: Annotated[Path, typer.Argument(help="Checkpoint (all variants) or package (itself).")],
    data: Annotated[Path, typer.Option(help="The labelled file; its test split is timed.")],
    out: Annotated[Path, typer.Option(help="Directory for bench.json, bench.md, bench.png.")],
    threads: Annotated[int, typer.Option(min=1, help="Inference threads.")] = 2,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    repeats: Annotated[int, typer.Option(min=1, help="Timed repeats; the median is reported.")] = 5,
    speed_only: Annotated[bool, typer.Option(help="Skip accuracy (for models with random weights).")] = False,
    quantisation: Annotated[str, typer.Option(help="int8 scheme: hybrid or dynamic.")] = "hybrid",
) -> None:
    """Accuracy, throughput, latency, size and memory of every variant; table, JSON and chart."""
    from .bench import format_table, run_bench, write_bench

    result = run_bench(
        model,
        data,
        threads=threads,
        batch_size=batch_size,
        repeats=repeats,
        speed_only=speed_only,
        scheme=quantisation,
        log=_stderr,
    )
    write_bench(result, out)
    typer.echo(format_table(result))


@app.command()
def serve(
    model: Annotated[
        Path | None, typer.Option(help="Model package (default: the shipped model; env SENTIMENT_MODEL).")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on (default: 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: 8000).")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Server processes (default: 1).")] = None,
) -> None:
    """Serve the model over HTTP. Every setting can also come from a SENTIMENT_* variable (see config.py)."""
    from .config import load_settings
    from .model_card import ModelCard
    from .server.runner import serve as run_server

    given = {"model": model, "host": host, "port": port, "workers": workers}
    settings = load_settings(**{name: value for name, value in given.items() if value is not None})
    ModelCard.load(settings.model)  # fail now, in one line, rather than in every worker
    run_server(settings)


def _stderr(message: str) -> None:
    typer.echo(message, err=True)


def main() -> None:
    """Entry point: run the app; a library error is one line on stderr and exit code 1."""
    try:
        app()  # standalone mode: click prints usage errors and exits 2 by itself
    except SentimentError as exc:
        _stderr(f"error: {exc}")
        sys.exit(1)
