"""The ``sentiment-api`` command line: parse options, call the library, print the result.

Library errors (:class:`SentimentError`) become one line on stderr and exit code 1; bad usage exits 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, cast, get_args

import typer

from .batch.options import PredictOptions, RayOptions
from .cli_options import env_var, model_options
from .config import Settings, load_settings
from .corpora import CorpusOptions
from .data import DataSpec
from .devices import DeviceChoice
from .errors import SentimentError
from .gate import GateThresholds
from .quantise import DEFAULT_SCHEME
from .recipe import Selection, TrainingConfig

# Plain click help, not Rich panels: those truncate option names and defaults outside a wide
# terminal (CI logs, pipes, 80 columns); click's formatter wraps and never cuts.
app = typer.Typer(
    help="Train, evaluate and run a tweet-sentiment classifier.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)
data_app = typer.Typer(
    help="Inspect and split labelled tweet files.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(data_app, name="data")

DataFile = Annotated[Path, typer.Argument(help="Labelled tweets, .csv or .xlsx.")]
# the data options of `data split` and `train`, under the names they have always had
data_options = model_options(
    DataSpec,
    into="spec",
    rename={"labels": "label", "drop_labels": "drop-label", "seed": "split-seed"},
)
# API keys come from the environment or a key file: on a command line, `ps` would show them
SECRET_SETTINGS = ("api_keys",)
SERVE_EPILOG = (
    "Every option can also be set by the SENTIMENT_* variable named in its help; an option given here "
    "wins over the environment. Set only in the environment, so that it never shows in a process list: "
    + " ".join(
        f"{env_var(Settings, name)}: {Settings.model_fields[name].description}" for name in SECRET_SETTINGS
    )
)


def _echo_json(payload: Any, path: Path | None) -> None:
    from .files import write_text_atomic

    text = json.dumps(payload, indent=2, ensure_ascii=False) + "\n"
    if path is None:
        typer.echo(text, nl=False)
    else:
        write_text_atomic(path, text)


@data_app.command("split")
@data_options
def data_split(
    data: DataFile,
    out: Annotated[Path | None, typer.Option(help="Write train/validation/test CSVs here.")] = None,
    *,
    spec: DataSpec,
) -> None:
    """Clean, de-duplicate and split a labelled file; print the counts (and write the splits)."""
    from .data import LABEL, load_splits, write_table

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


# the recipe's options, shared by `train` and `crossval`; corpora come from the --corpus options
recipe_options = model_options(
    TrainingConfig, into="config", exclude=("corpora",), rename={"teachers": "teacher"}
)
corpus_options = model_options(CorpusOptions, into="corpora")
StageDir = Annotated[
    Path | None,
    typer.Option(
        help="Where first-stage checkpoints are kept and found again "
        "[default: $XDG_CACHE_HOME/sentiment-api/stages, else ~/.cache/sentiment-api/stages]."
    ),
]
Progress = Annotated[bool, typer.Option(help="Show a progress bar.")]


@app.command()
@recipe_options
@corpus_options
@data_options
def train(
    data: DataFile,
    *,
    out: Annotated[Path, typer.Option(help="Checkpoint directory to create.")],
    config: TrainingConfig,
    corpora: CorpusOptions,
    stage_dir: StageDir = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output.")] = False,
    progress: Progress = True,
    spec: DataSpec,
) -> None:
    """Fine-tune a sequence classifier, keep the best epoch, evaluate it, save a checkpoint.

    With --corpus, it also learns from extra labelled corpora: first on them alone
    (--corpus-mode stage: that checkpoint is kept in --stage-dir and reused by later runs), or mixed
    into the target's batches (mix, joint).
    """
    from .evaluation import format_report
    from .training import train as run_training

    config = config.model_copy(update={"corpora": corpora.specs()})
    card = run_training(
        data, out, config, spec, stage_dir=stage_dir, progress=progress, overwrite=overwrite, log=_stderr
    )
    for split in ("validation", "test"):
        typer.echo(format_report(card.metrics[split], f"{split}:"))
    for record in card.corpora:
        if record.metrics is not None:
            typer.echo(format_report(record.metrics, f"{record.name} validation (labels mapped):"))
    typer.echo(f"saved {out} (best epoch {card.training.best_epoch}, {card.training.seconds} s)")


@app.command()
@recipe_options
@corpus_options
@data_options
def crossval(
    data: DataFile,
    *,
    out: Annotated[Path, typer.Option(help="Directory for folds, out-of-fold predictions, table and plot.")],
    folds: Annotated[int, typer.Option(min=2, help="Number of stratified folds.")] = 5,
    cv_seed: Annotated[int, typer.Option(help="Random state of the folds.")] = 0,
    tune_criterion: Annotated[
        str,
        typer.Option(
            help="Score the logit offsets are tuned for: macro_f1, balanced_accuracy, "
            "f1_and_balanced, acc_f1_balanced (see --selection), or none."
        ),
    ] = "f1_and_balanced",
    config: TrainingConfig,
    corpora: CorpusOptions,
    stage_dir: StageDir = None,
    progress: Progress = True,
    spec: DataSpec,
) -> None:
    """Cross-validate a training recipe: k stratified folds of the train and validation rows (test
    left out), mean ± sd of accuracy, balanced accuracy and macro-F1, per-label recall, a plot, and
    logit offsets tuned on the out-of-fold predictions. An interrupted run resumes."""  # fmt: skip
    from .crossval import cross_validate, format_crossval

    if tune_criterion not in (*get_args(Selection), "none"):
        raise typer.BadParameter(f"unknown criterion {tune_criterion!r}", param_hint="'--tune-criterion'")
    config = config.model_copy(update={"corpora": corpora.specs()})
    result = cross_validate(
        data, out, config, spec, folds=folds, seed=cv_seed,
        tune_criterion=None if tune_criterion == "none" else tune_criterion,
        stage_dir=stage_dir, progress=progress, log=_stderr,
    )  # fmt: skip
    typer.echo(format_crossval(result))
    typer.echo(f"wrote {out / 'crossval.json'}, {out / 'crossval.md'} and {out / 'crossval.png'}")


@app.command()
@corpus_options
def evaluate(
    model: Annotated[Path, typer.Argument(help="Model directory (checkpoint or package).")],
    data: Annotated[
        Path | None, typer.Option(help="The labelled file the model was trained on (.csv or .xlsx).")
    ] = None,
    split: Annotated[str, typer.Option(help="train, validation, test or all.")] = "test",
    sheet: Annotated[str | None, typer.Option(help="Sheet (default: the card's).")] = None,
    out: Annotated[Path | None, typer.Option(help="Directory for metrics.json and the plot.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON, not a table.")] = False,
    *,
    corpora: CorpusOptions,
) -> None:
    """Accuracy, balanced accuracy, macro-F1, per-class scores and a confusion-matrix plot.

    On --data, the split is rebuilt as the model's card says. With --corpus instead, every row of
    each corpus file is scored, its labels mapped onto the model's with --corpus-label.
    """
    from .corpora import score_on_file
    from .engine import Classifier
    from .evaluation import evaluate_classifier, format_report, plot_confusion_matrix

    if (data is None) == (not corpora.corpus):
        raise typer.BadParameter("give either --data or --corpus", param_hint="'--data'")
    classifier = Classifier.load(model)
    scored = (
        [(f"{data.name} ({split})", evaluate_classifier(classifier, data, split, sheet))]
        if data is not None
        else [(spec.path.name, score_on_file(classifier, spec)) for spec in corpora.specs()]
    )
    for number, (name, metrics) in enumerate(scored):
        folder = None if out is None else (out if len(scored) == 1 else out / str(number))
        if folder is not None:
            _echo_json(metrics.model_dump(mode="json"), folder / "metrics.json")
            plot_confusion_matrix(metrics, folder / "confusion_matrix.png", f"{model.name} on {name}")
        if as_json:
            _echo_json(metrics.model_dump(mode="json"), None)
        else:
            typer.echo(format_report(metrics, f"{model} on {name}:"))
            if folder is not None:
                typer.echo(f"wrote {folder / 'metrics.json'} and {folder / 'confusion_matrix.png'}")


@app.command()
@model_options(PredictOptions, into="options")
@model_options(RayOptions, into="ray_options")
def predict(
    model: Annotated[
        Path | None,
        typer.Argument(
            help="Model directory (checkpoint or package) [default: the shipped model].", show_default=False
        ),
    ] = None,
    *,
    input: Annotated[
        str,
        typer.Option(
            "--input",
            help="Tweets to classify: a file, a directory or a quoted glob of .csv, .tsv, .parquet, "
            ".jsonl or .xlsx files (CSV and JSON Lines may be compressed).",
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            help="A .parquet, .csv or .xlsx file, or a directory of numbered part files (Parquet "
            "unless --output-format says otherwise: what large inputs want)."
        ),
    ],
    options: PredictOptions,
    ray_options: RayOptions,
) -> None:
    """Classify every row of files of any size and write them back with label and score columns.

    Reads, scores and writes a chunk at a time, so memory stays bounded. Rows without text or with
    too much are kept, marked with the reason, and counted at the end. After an interruption, the
    same command again resumes after the last complete part file. With --ray, the same scoring runs
    on Ray Data, on this machine or on a cluster, with the same output.
    """
    from .config import default_model_dir

    model = model or default_model_dir()
    if ray_options.enabled:
        from .batch.ray_data import predict_on_ray

        report = predict_on_ray(model, input, output, options, ray_options)
    else:
        from .batch.runner import predict_files
        from .batch.scoring import stream_scorer
        from .engine import ONNX_FILE, Classifier

        # spinning threads buy latency with idle CPU; a batch job wants throughput, and halves it
        # with spin on when other work shares the cores
        streams, threads = options.stream_layout()
        # a package's session is the first stream; a PyTorch checkpoint keeps every thread asked for
        package = (Path(model) / ONNX_FILE).is_file()
        classifier = Classifier.load(
            model, threads=threads if package else options.threads, spin=False, device=options.device
        )
        score = None
        if classifier.device == "cpu":  # a GPU runs whole batches itself; CPUs run them on streams
            score = stream_scorer(classifier, streams, threads, options.batch_size)
        report = predict_files(classifier, input, output, options, score=score, log=_stderr)
    typer.echo(report.summary())


@app.command()
@model_options(GateThresholds, into="thresholds")
def export(
    checkpoint: Annotated[Path, typer.Argument(help="Training checkpoint directory.")],
    *,
    out: Annotated[Path, typer.Option(help="Model package directory to create.")],
    data: Annotated[Path, typer.Option(help="The labelled file, for the accuracy gate.")],
    variant: Annotated[
        str, typer.Option(help="onnx, onnx-optimised, onnx-int8 (CPU) or onnx-fp16 (GPU).")
    ] = "onnx-int8",
    quantisation: Annotated[
        str,
        typer.Option(
            help="int8 scheme: rowwise (per-token scales; batch-invariant, the fastest that keeps the "
            "gate), static (calibrated on training tweets; batch-invariant), hybrid or dynamic."
        ),
    ] = DEFAULT_SCHEME,
    thresholds: GateThresholds,
    accept_gate_failure: Annotated[
        bool, typer.Option(help="Package a model that failed the gate (recorded in its card).")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output.")] = False,
) -> None:
    """Export a checkpoint to ONNX, fuse and quantise it, check its accuracy, write a package."""
    from .export import build_package

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
    batch_size: Annotated[int, typer.Option(min=1, help="Texts per inference call.")] = 64,
    repeats: Annotated[int, typer.Option(min=1, help="Timed repeats; the median is reported.")] = 5,
    speed_only: Annotated[bool, typer.Option(help="Skip accuracy (for models with random weights).")] = False,
    quantisation: Annotated[
        str,
        typer.Option(
            help="int8 scheme: rowwise (per-token scales; batch-invariant, the fastest that keeps the "
            "gate), static (calibrated on training tweets; batch-invariant), hybrid or dynamic."
        ),
    ] = DEFAULT_SCHEME,
    device: Annotated[
        str,
        typer.Option(
            help="cpu (PyTorch and the int8 chain), cuda (PyTorch in fp16 and the fp16 chain on the GPU; "
            "the gpu extra) or auto (both chains, each variant on the GPU when it can be)."
        ),
    ] = "cpu",
) -> None:
    """Accuracy, throughput, latency, size and memory of every variant; table, JSON and chart."""
    from .bench import format_table, run_bench, write_bench

    if device not in get_args(DeviceChoice):
        raise typer.BadParameter(f"{device!r} is not cpu, cuda or auto", param_hint="'--device'")
    result = run_bench(
        model,
        data,
        threads=threads,
        batch_size=batch_size,
        repeats=repeats,
        speed_only=speed_only,
        scheme=quantisation,
        device=cast(DeviceChoice, device),  # checked above
        log=_stderr,
    )
    write_bench(result, out)
    typer.echo(format_table(result))


@app.command(epilog=SERVE_EPILOG)
@model_options(
    Settings,
    into="settings",
    exclude=SECRET_SETTINGS,
    shown={"model": "the model shipped with the package"},
    build=load_settings,  # the environment, then the options given: one ConfigError naming the variable
)
def serve(*, settings: Settings) -> None:
    """Serve a model package over HTTP."""
    from .engine import device_for
    from .server.runner import serve as run_server

    # a missing or broken card, a changed model, or a device it cannot run on: one line now, not per worker
    device_for(settings.model, settings.device)
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
