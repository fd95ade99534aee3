"""The ``sentiment-api`` command line: parse options, call the library, print the result.

Library errors (:class:`SentimentError`) become one line on stderr and exit code 1; bad usage exits 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, cast, get_args

import typer

from sentiment_api.batch.options import PredictOptions, RayOptions
from sentiment_api.cli.options import env_var, model_options
from sentiment_api.core.devices import DeviceChoice
from sentiment_api.core.errors import SentimentError
from sentiment_api.core.recipe import Selection, TrainingConfig
from sentiment_api.core.records import DataSpec, GateThresholds
from sentiment_api.core.settings import ENVIRONMENT_ONLY, SHOWN_DEFAULTS, Settings, load_settings
from sentiment_api.data.corpora import CorpusOptions

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
SECRET_SETTINGS = ENVIRONMENT_ONLY
SERVE_EPILOG = (
    "Every option can also be set by the SENTIMENT_* variable named in its help; an option given here "
    "wins over the environment. docs/configuration.md lists them by group, with the defaults by device. "
    "Set only in the environment, so that it never shows in a process list: "
    + " ".join(
        f"{env_var(Settings, name)}: {Settings.model_fields[name].description}" for name in SECRET_SETTINGS
    )
)


def _echo_json(payload: Any, path: Path | None) -> None:
    from sentiment_api.core.files import write_text_atomic

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
    from sentiment_api.data.tweets import split_file

    _echo_json(split_file(data, spec, out), None)


# the recipe's options, shared by `train` and `crossval`; corpora come from the --corpus options
recipe_options = model_options(
    TrainingConfig,
    into="config",
    exclude=("corpora",),
    rename={"teachers": "teacher", "distil_corpora": "distil_corpus"},
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
    resume: Annotated[
        bool, typer.Option(help="Go on from the checkpoint an interrupted run left in OUT.partial.")
    ] = False,
    checkpoint_every: Annotated[
        int, typer.Option(min=1, help="Steps between checkpoints (one is also saved after each epoch).")
    ] = 200,
    progress: Progress = True,
    spec: DataSpec,
) -> None:
    """Fine-tune a sequence classifier, keep the best epoch, evaluate it, save a checkpoint.

    With --corpus, it first learns from extra labelled corpora alone, then from the target data
    starting there; that first stage is kept in --stage-dir and reused by later runs.
    """
    from sentiment_api.core.metrics import format_report
    from sentiment_api.training import train as run_training

    config = config.model_copy(update={"corpora": corpora.specs()})
    card = run_training(
        data, out, config, spec, stage_dir=stage_dir, progress=progress, overwrite=overwrite,
        resume=resume, checkpoint_every=checkpoint_every, log=_stderr,
    )  # fmt: skip
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
    teacher_recipe: Annotated[
        Path | None,
        typer.Option(
            help="Cross-validate a student: each fold trains a teacher with this recipe (a JSON recipe, or "
            "a model card, whose hyperparameters are used) on the fold's own rows, and distils from it."
        ),
    ] = None,
    config: TrainingConfig,
    corpora: CorpusOptions,
    stage_dir: StageDir = None,
    progress: Progress = True,
    spec: DataSpec,
) -> None:
    """Cross-validate a training recipe: k stratified folds of the train and validation rows (test
    left out), mean ± sd of accuracy, balanced accuracy and macro-F1, per-label recall, a plot, and
    logit offsets tuned on the out-of-fold predictions. An interrupted run resumes."""  # fmt: skip
    from sentiment_api.training.crossval import cross_validate, format_crossval
    from sentiment_api.training.fold_teachers import load_recipe

    if tune_criterion not in (*get_args(Selection), "none"):
        raise typer.BadParameter(f"unknown criterion {tune_criterion!r}", param_hint="'--tune-criterion'")
    config = config.model_copy(update={"corpora": corpora.specs()})
    result = cross_validate(
        data, out, config, spec, folds=folds, seed=cv_seed,
        tune_criterion=None if tune_criterion == "none" else tune_criterion,
        teacher=load_recipe(teacher_recipe) if teacher_recipe else None,
        stage_dir=stage_dir, progress=progress, log=_stderr,
    )  # fmt: skip
    typer.echo(format_crossval(result))
    typer.echo(f"wrote {out / 'crossval.json'}, {out / 'crossval.md'} and {out / 'crossval.png'}")


@app.command("compare-crossval")
def compare_crossval(
    base: Annotated[Path, typer.Argument(help="A crossval output directory: the recipe to beat.")],
    candidate: Annotated[Path, typer.Argument(help="A crossval output directory on the same folds.")],
    teachers: Annotated[
        bool, typer.Option(help="Compare CANDIDATE's students with their own teachers instead of BASE.")
    ] = False,
) -> None:
    """Candidate minus base, fold by fold (the same folds): mean ± standard error of each figure,
    plain and with nested offsets, and whether the difference is beyond one standard error."""
    from sentiment_api.training.crossval import CrossValidation
    from sentiment_api.training.paired import compare, compare_scores, format_comparison

    def load(directory: Path) -> CrossValidation:
        path = directory / "crossval.json"
        if not path.is_file():
            raise typer.BadParameter(f"{path} does not exist: run crossval --out {directory} first")
        return CrossValidation.model_validate_json(path.read_text())

    left, right = load(base), load(candidate)
    if teachers:
        if right.teachers_scored is None:
            raise typer.BadParameter(f"{candidate} cross-validated no teachers (--teacher-recipe)")
        result = compare_scores(
            right, right.teachers_scored, (f"{candidate} students", f"{candidate} teachers")
        )
    else:
        result = compare(left, right, (str(base), str(candidate)))
    typer.echo(format_comparison(result))


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

    On --data, the split is rebuilt as the model's card says, and the scores' calibration (ECE, log
    loss, a reliability diagram) and coverage by min_score (accuracy and macro-F1 when abstaining
    below each threshold, a curve) come too. With --corpus instead, every row of each corpus file is
    scored, its labels mapped onto the model's with --corpus-label.
    """
    from sentiment_api.core.metrics import format_report
    from sentiment_api.training.evaluation import evaluate_model, format_confidence, write_scores

    if (data is None) == (not corpora.corpus):
        raise typer.BadParameter("give either --data or --corpus", param_hint="'--data'")
    evaluations = evaluate_model(model, data, split, sheet, corpora.specs())
    for number, evaluation in enumerate(evaluations):
        folder = None if out is None else (out if len(evaluations) == 1 else out / str(number))
        written = (
            [] if folder is None else write_scores(evaluation, folder, f"{model.name} on {evaluation.name}")
        )
        if as_json:
            confidence = evaluation.confidence
            body = evaluation.scores.model_dump(mode="json")
            if confidence is not None:
                body["confidence"] = confidence.model_dump(mode="json")
            _echo_json(body, None)
            continue
        typer.echo(format_report(evaluation.scores, f"{model} on {evaluation.name}:"))
        if evaluation.confidence is not None:
            typer.echo(format_confidence(evaluation.confidence))
        if written:
            typer.echo("wrote " + ", ".join(str(path) for path in written))


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
    from sentiment_api.batch.predict import predict as predict_rows
    from sentiment_api.core.settings import default_model_dir

    report = predict_rows(model or default_model_dir(), input, output, options, ray_options, log=_stderr)
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
    thresholds: GateThresholds,
    accept_gate_failure: Annotated[
        bool, typer.Option(help="Package a model that failed the gate (recorded in its card).")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output.")] = False,
    calibration_oof: Annotated[
        Path | None,
        typer.Option(help="A crossval run's oof.csv to fit the score calibration on (default: validation)."),
    ] = None,
) -> None:
    """Export a checkpoint to ONNX, fuse and quantise it, check its accuracy, calibrate its scores,
    write a package."""
    from sentiment_api.optimise.export import build_package

    card = build_package(
        checkpoint,
        out,
        data,
        variant=variant,
        thresholds=thresholds,
        accept_gate_failure=accept_gate_failure,
        overwrite=overwrite,
        calibration_oof=calibration_oof,
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
def calibrate(
    package: Annotated[Path, typer.Argument(help="Model package directory (its card is rewritten).")],
    *,
    data: Annotated[Path, typer.Option(help="The labelled file the model was trained on.")],
    oof: Annotated[
        Path | None, typer.Option(help="A crossval run's oof.csv to fit on instead of the validation split.")
    ] = None,
) -> None:
    """Fit the temperature a package's scores are calibrated with, again, and store it in its card.

    Labels do not change (a temperature keeps every arg-max); the ONNX file is untouched. ECE and
    log loss before and after, on validation and test, go into the card and are printed.
    """
    from sentiment_api.optimise.calibrate import calibrate_package

    calibrate_package(package, data, oof, log=typer.echo)


@app.command()
def bench(
    model: Annotated[Path, typer.Argument(help="Checkpoint (all variants) or package (itself).")],
    data: Annotated[Path, typer.Option(help="The labelled file; its test split is timed.")],
    out: Annotated[Path, typer.Option(help="Directory for bench.json, bench.md, bench.png.")],
    threads: Annotated[int, typer.Option(min=1, help="Inference threads.")] = 2,
    batch_size: Annotated[int, typer.Option(min=1, help="Texts per inference call.")] = 64,
    repeats: Annotated[int, typer.Option(min=1, help="Timed repeats; the median is reported.")] = 5,
    speed_only: Annotated[bool, typer.Option(help="Skip accuracy (for models with random weights).")] = False,
    device: Annotated[
        str,
        typer.Option(
            help="cpu (PyTorch and the int8 chain), cuda (PyTorch in fp16 and the fp16 chain on the GPU; "
            "the gpu extra) or auto (both chains, each variant on the GPU when it can be)."
        ),
    ] = "cpu",
) -> None:
    """Accuracy, throughput, latency, size and memory of every variant; table, JSON and chart."""
    from sentiment_api.optimise.bench import format_table, run_bench, write_bench

    if device not in get_args(DeviceChoice):
        raise typer.BadParameter(f"{device!r} is not cpu, cuda or auto", param_hint="'--device'")
    result = run_bench(
        model,
        data,
        threads=threads,
        batch_size=batch_size,
        repeats=repeats,
        speed_only=speed_only,
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
    shown=SHOWN_DEFAULTS,
    build=load_settings,  # the environment, then the options given: one ConfigError naming the variable
)
def serve(*, settings: Settings) -> None:
    """Serve a model package over HTTP."""
    from sentiment_api.serving.runner import serve as run_server

    run_server(settings)  # a model or device that cannot work is one line (main), not one per worker


def _stderr(message: str) -> None:
    typer.echo(message, err=True)


def main() -> None:
    """Entry point: run the app; a library error is one line on stderr and exit code 1."""
    try:
        app()  # standalone mode: click prints usage errors and exits 2 by itself
    except SentimentError as exc:
        _stderr(f"error: {exc}")
        sys.exit(1)
