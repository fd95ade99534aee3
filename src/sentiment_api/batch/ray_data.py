"""The same batch prediction on Ray Data, for inputs one machine cannot score in time.

Ray's readers read the files (with the options the single-machine path reads them with, so the
columns and their types are the same), ``map_batches`` hands chunks to a pool of actors that each
load the model package once and score with the same :class:`ChunkScorer`, and Ray writes Parquet
parts in input order. With one text per inference call (the default) every row's scores depend on
its text alone, so the output equals the single-machine output row for row, however Ray cuts the
input into blocks and batches.

Every node needs this package (the project's image with the ``ray`` extra) and must see the model,
the input and the output at the same paths: a volume every pod mounts, on Kubernetes.
A Ray run is not resumable part by part: Ray retries failed tasks itself, and an interrupted
run starts again from the first row.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, DataError, SentimentError
from ..extras import require
from ..files import staged_directory, write_text_atomic
from ..model_card import ModelCard
from .options import PredictOptions, RayOptions
from .runner import REPORT, BatchReport, check_size, clear_output, plan_output
from .scoring import ChunkScorer, OutputColumns
from .sinks import PART_PREFIX, merge_parts, part_files, tally_parts
from .sources import BLOCK_BYTES, Source, conform, csv_parse_options, open_source

if TYPE_CHECKING:
    import pyarrow as pa


class RayChunkScorer:
    """A Ray actor's work: load the model package once, then score every batch it is handed."""

    def __init__(
        self, model: str, schema: pa.Schema, text_column: str, options: dict[str, Any], threads: int
    ) -> None:
        from ..engine import Classifier

        self.schema = schema

        settings = PredictOptions.model_validate(options)
        # spinning threads only pay for latency; an actor is one of several on a node
        classifier = Classifier.load(Path(model), threads=threads, spin=False)
        self.score = ChunkScorer.of_classifier(
            classifier,
            text_column,
            batch_size=settings.batch_size,
            max_text_chars=settings.max_text_chars,
            prefix=settings.column_prefix,
        )

    def __call__(self, batch: pa.Table) -> pa.Table:
        """One batch, with the prediction columns added."""
        # Ray infers JSON types block by block: the columns and types the first file has, as on one machine
        return self.score(conform(batch, self.schema, "a Ray block"))


def predict_on_ray(
    model: Path, input: str | Path, output: Path, options: PredictOptions, ray_options: RayOptions
) -> BatchReport:
    """Classify every row of ``input`` into ``output`` on Ray Data, locally or on a cluster."""
    require("pyarrow")  # a missing extra is the first thing to say, before any file is looked at
    ray = require("ray")
    if options.device != "cpu":
        # the actors reserve CPUs (--ray-actor-cpus), not GPUs: on a GPU they would contend unseen
        raise ConfigError(
            f"--device {options.device} with --ray: Ray actors run on the CPU; drop one of them"
        )
    started = time.perf_counter()
    source = open_source(input, options.text_column, options.sheet, options.input_format)
    if source.format == "xlsx":
        raise DataError(
            f"{input}: Ray Data reads no XLSX; convert it to Parquet or CSV, or run without --ray"
        )
    card = ModelCard.load(model)
    columns = OutputColumns(tuple(card.labels), options.column_prefix)
    columns.check_free(source.columns, input)
    plan = plan_output(output, options.output_format)
    if not plan.single_file and plan.format != "parquet":
        raise DataError(f"{output}: Ray writes Parquet part files; for CSV or XLSX name one output file")
    check_size(plan, source, options)
    if not plan.single_file and plan.target.exists():
        # Ray's parts replace the directory as a whole, so only an earlier output of ours may be there
        clear_output(plan.target, options.overwrite)

    try:
        _start(ray_options, options.progress)
        dataset = _read(source)
        scored = dataset.map_batches(
            RayChunkScorer,
            fn_constructor_kwargs={
                "model": str(Path(model).resolve()),
                "schema": source.schema,
                "text_column": source.text_column,
                "options": options.model_dump(),
                "threads": ray_options.ray_actor_cpus,
            },
            batch_size=options.chunk_rows,
            batch_format="pyarrow",
            compute=_actor_pool(ray, ray_options),
            num_cpus=ray_options.ray_actor_cpus,
        )
        with staged_directory(plan.parts_dir) as staging:
            # a fresh directory: overwriting is what lets the files have plain names
            scored.write_parquet(str(staging), filename_provider=_part_names(), mode="overwrite")
    except Exception as exc:
        raise _one_line(exc) from exc
    finally:
        ray.shutdown()  # stops the Ray this started, only disconnects from a cluster; else nothing

    parts = part_files(plan.parts_dir)
    tally = tally_parts(parts, "parquet", columns)
    if plan.single_file:
        schema = columns.output_schema(source.schema)
        merge_parts(parts, plan.target, plan.format, schema, options.chunk_rows)
        shutil.rmtree(plan.parts_dir)
    seconds = time.perf_counter() - started
    report = BatchReport.of(plan, tally, len(parts), 0, seconds, tally.rows)
    if not plan.single_file:
        write_text_atomic(plan.parts_dir / REPORT, report.model_dump_json(indent=2) + "\n")
    return report


def _start(ray_options: RayOptions, progress: bool) -> None:
    """Join Ray (``--ray-address``, or ``RAY_ADDRESS`` inside a job) or start it on this machine."""
    require("ray")
    import ray
    import ray.data

    logging.getLogger("ray").setLevel(logging.WARNING)
    if ray_options.ray_address is not None:
        _check_reachable(ray_options.ray_address)
    joining = ray_options.ray_address is not None or os.environ.get("RAY_ADDRESS")
    # Ray refuses settings of a cluster it only joins; one it starts here needs no dashboard
    local: dict[str, Any] = {} if joining else {"include_dashboard": False}
    ray.init(
        address=ray_options.ray_address,
        logging_level=logging.WARNING,
        log_to_driver=False,
        **local,
    )
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # Ray Data sets its own on import
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # parts in input order, as on one machine
    context.enable_progress_bars = progress


def _check_reachable(address: str) -> None:
    """Fail in one line if nothing listens at ``HOST:PORT``: ``ray.init`` would wait for it for ever."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # "auto" and the like: Ray finds the cluster itself
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as exc:
        raise DataError(f"cannot reach the Ray cluster at {address}: {exc}") from exc


def _actor_pool(ray: Any, ray_options: RayOptions) -> Any:
    """A fixed pool of ``--ray-actors``, or one that grows with the input up to the cluster's CPUs."""
    if ray_options.ray_actors is not None:
        return ray.data.ActorPoolStrategy(size=ray_options.ray_actors)
    most = max(1, int(ray.cluster_resources().get("CPU", 1) // ray_options.ray_actor_cpus))
    return ray.data.ActorPoolStrategy(min_size=1, max_size=most)


def _read(source: Source) -> Any:
    """The input as a Ray dataset, read as ``sources`` reads it: CSV columns as text, the same
    JSON Lines types."""
    require("pyarrow")
    require("ray")
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson
    import ray.data

    paths = [str(file) for file in source.files]
    if source.format == "parquet":
        return ray.data.read_parquet(paths, file_extensions=None)
    if source.format == "jsonl":
        explicit = pa.schema([(source.text_column, pa.string())])
        parse = pajson.ParseOptions(explicit_schema=explicit, unexpected_field_behavior="infer")
        return ray.data.read_json(paths, file_extensions=None, parse_options=parse)
    return ray.data.read_csv(
        paths,
        file_extensions=None,
        parse_options=csv_parse_options(source.format),
        convert_options=pacsv.ConvertOptions(column_types={name: pa.string() for name in source.columns}),
        read_options=pacsv.ReadOptions(block_size=BLOCK_BYTES),
    )


def _part_names() -> Any:
    """Ray names its files ``part-00000.parquet`` and so on, in write-task order: input order."""
    require("ray")
    from ray.data.datasource import FilenameProvider

    class PartNames(FilenameProvider):
        def get_filename_for_task(self, write_uuid: str, task_index: int) -> str:
            return f"{PART_PREFIX}{task_index:05d}.parquet"

    return PartNames(file_format="parquet")


def _one_line(exc: Exception) -> SentimentError:
    """A failure inside Ray as the error it was (a DataError raised in an actor), or as one line
    naming the first cause; Ray has logged the traceback already."""
    causes: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and cause not in causes:
        if isinstance(cause, SentimentError):
            return cause
        causes.append(cause)
        cause = getattr(cause, "cause", None) or cause.__cause__  # RayTaskError keeps it in .cause
    root = causes[-1]
    message = next((line.strip() for line in str(root).splitlines() if line.strip()), "")
    return DataError(f"the Ray job failed: {type(root).__name__}: {message[:300]}")
