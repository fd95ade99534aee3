"""The same batch prediction on Ray Data, for inputs one machine cannot score in time.

Ray Data reads the files through a ``Datasource`` of ours: one read task per file (per run of row
groups, for a large Parquet file), read with the pyarrow readers the single-machine path reads with
(so the columns and their types are the same), each row tagged with its position in the input.
``map_batches`` hands chunks to a pool of actors that each load the model package once and score
with the same :class:`ChunkScorer`, and Ray writes Parquet, partitioned by the part file each row
belongs to. Ray does not promise to keep blocks in input order (Ray 2.60 swaps them now and then,
even with ``preserve_order``), so the driver then puts each part's rows in order by their positions,
one part at a time, and writes the parts the single-machine path would have written: the output is
the same row for row, and part for part.

Every node needs this package (the project's image with the ``ray`` extra) and must see the model,
the input and the output at the same paths: a volume every pod mounts, on Kubernetes.
A Ray run is not resumable part by part: Ray retries failed tasks itself, and an interrupted
run starts again from the first row.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sentiment_api.batch.options import PredictOptions, RayOptions
from sentiment_api.batch.runner import REPORT, BatchReport, check_size, clear_output, plan_output
from sentiment_api.batch.scoring import ChunkScorer, OutputColumns
from sentiment_api.batch.sinks import merge_parts, part_files, part_path, table_writer, tally_parts
from sentiment_api.batch.sources import Source, open_source, read_file, row_group_rows
from sentiment_api.core.errors import ConfigError, DataError, SentimentError
from sentiment_api.core.extras import require
from sentiment_api.core.files import staged_directory, write_text_atomic
from sentiment_api.core.model_card import ModelCard

if TYPE_CHECKING:
    import pyarrow as pa

ROW = "__sentiment_row"  # each row's position in the input, carried through Ray
PART = "__sentiment_part"  # the part file a row belongs to: what Ray partitions its output by
UNORDERED = "_unordered"  # Ray's output, before its rows are put in order
PIECE_ROWS = 65_536  # a Parquet file of more rows is read by several tasks, a run of row groups each


class RayChunkScorer:
    """A Ray actor's work: load the model package once, then score every batch it is handed."""

    def __init__(self, model: str, text_column: str, options: dict[str, Any], threads: int) -> None:
        from sentiment_api.core.engine import Classifier

        settings = PredictOptions.model_validate(options)
        self.part_rows = settings.part_rows
        # spinning threads only pay for latency; an actor is one of several on a node
        classifier = Classifier.load(Path(model), threads=threads, spin=False)
        self.score = ChunkScorer.of_classifier(
            classifier,
            text_column,
            batch_size=settings.batch_size,
            max_text_chars=settings.max_text_chars,
            prefix=settings.column_prefix,
            min_score=settings.min_score,
        )

    def __call__(self, batch: pa.Table) -> pa.Table:
        """One batch, with the prediction columns added, and each row's position and part kept."""
        require("pyarrow")
        import pyarrow as pa

        rows = batch.column(ROW)
        scored = self.score(batch.drop_columns([ROW]))
        parts = pa.array(rows.to_numpy() // self.part_rows, pa.int64())
        return scored.append_column(ROW, rows).append_column(PART, parts)


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
    columns = OutputColumns(tuple(card.labels), options.column_prefix, options.min_score)
    columns.check_free(source.columns, input)
    if taken := sorted({ROW, PART} & set(source.columns)):
        raise DataError(f"{input}: column {taken[0]!r} is a name --ray uses for itself; rename it")
    plan = plan_output(output, options.output_format)
    if not plan.single_file and plan.format != "parquet":
        raise DataError(f"{output}: Ray writes Parquet part files; for CSV or XLSX name one output file")
    check_size(plan, source, options)
    if not plan.single_file and plan.target.exists():
        # Ray's parts replace the directory as a whole, so only an earlier output of ours may be there
        clear_output(plan.target, options.overwrite)

    try:
        _start(ray_options, options.progress)
        # reading is light beside scoring: it takes no CPU of its own, so a pool of actors on every CPU
        # cannot starve it
        dataset = ray.data.read_datasource(_positioned_files(source, options.chunk_rows), num_cpus=0)
        scored = dataset.map_batches(
            RayChunkScorer,
            fn_constructor_kwargs={
                "model": str(Path(model).resolve()),
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
            scored.write_parquet(str(staging / UNORDERED), partition_cols=[PART])
            schema = columns.output_schema(source.schema)
            _put_in_order(staging / UNORDERED, staging, schema, options.part_rows, source.rows or 0)
    except SentimentError:
        raise
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
    # not what keeps the output in order (the parts are sorted afterwards), but it keeps the blocks of
    # one part together, so a part is finished and written by few tasks
    context.execution_options.preserve_order = True
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


def _positioned_files(source: Source, chunk_rows: int) -> Any:
    """A Ray ``Datasource`` of ``source``'s files: a read task per file (per run of row groups of
    about :data:`PIECE_ROWS` rows, for a large Parquet file), each row of which carries its position
    in the whole input (the files' row counts are known from ``open_source``)."""
    require("pyarrow")
    require("ray")
    import numpy as np
    import pyarrow as pa
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    if source.file_rows is None:
        raise DataError(f"{source.files[0]}: its rows cannot be counted, so --ray cannot keep their order")
    starts = np.cumsum((0, *source.file_rows[:-1])).tolist()
    pieces: list[tuple[Path, list[int] | None, int, int]] = []  # file, row groups (all: None), start, rows
    for file, start, rows in zip(source.files, starts, source.file_rows, strict=True):
        if source.format != "parquet" or rows <= PIECE_ROWS:
            pieces.append((file, None, start, rows))
            continue
        groups: list[int] = []
        taken = 0
        for index, group_rows in enumerate(row_group_rows(file)):
            groups.append(index)
            taken += group_rows
            if taken >= PIECE_ROWS:
                pieces.append((file, groups, start, taken))
                start, groups, taken = start + taken, [], 0
        if groups:
            pieces.append((file, groups, start, taken))

    def read(file: Path, groups: list[int] | None, start: int) -> Iterator[pa.Table]:
        for table in read_file(source, file, chunk_rows, groups):
            yield table.append_column(ROW, pa.array(np.arange(start, start + table.num_rows), pa.int64()))
            start += table.num_rows

    class PositionedFiles(Datasource):
        def estimate_inmemory_data_size(self) -> int | None:
            return None

        def get_read_tasks(self, parallelism: int, *args: Any, **kwargs: Any) -> list[Any]:
            return [
                ReadTask(
                    functools.partial(read, file, groups, start),
                    BlockMetadata(num_rows=rows, size_bytes=None, input_files=(str(file),), exec_stats=None),
                )
                for file, groups, start, rows in pieces
            ]

        def get_name(self) -> str:
            return "TweetFiles"

    return PositionedFiles()  # type: ignore[no-untyped-call]


def _put_in_order(unordered: Path, parts_dir: Path, schema: pa.Schema, part_rows: int, rows: int) -> None:
    """Ray's partitions as the numbered part files of the single-machine path: each partition's rows
    sorted by their input position (one part in memory at a time) and checked to be all there."""
    require("pyarrow")
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    partitions = {int(path.name.partition("=")[2]): path for path in unordered.glob(f"{PART}=*")}
    for index in range(max(1, -(-rows // part_rows))):  # no rows at all: one empty part, as on one machine
        first, end = index * part_rows, min(rows, (index + 1) * part_rows)
        files = sorted(partitions[index].glob("*.parquet")) if index in partitions else []
        table = pa.concat_tables(pq.read_table(file) for file in files).sort_by(ROW) if files else None
        positions = table.column(ROW).to_numpy() if table is not None else np.arange(0)
        if not np.array_equal(positions, np.arange(first, end)):
            raise DataError(f"the Ray job lost or repeated rows {first}-{end - 1} (part {index}); run again")
        with table_writer(part_path(parts_dir, index, "parquet"), "parquet", schema) as write:
            if table is not None:
                write(table.drop_columns([ROW]).cast(schema))
    shutil.rmtree(unordered)


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
