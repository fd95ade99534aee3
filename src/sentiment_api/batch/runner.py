"""Batch prediction on one machine: chunks read, scored and written to part files as they go.

Part ``p`` holds input rows ``p * part_rows`` up to the next part's first row, in the order of the
sorted input files; a chunk never spans two parts. The directory of parts holds a manifest of the
input files, model and settings; a rerun with the same manifest skips the parts already complete
and writes only the rest, so an interrupted run ends with the output an uninterrupted one has.
A one-file output is merged from Parquet parts kept in a hidden directory beside it until then.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from sentiment_api.batch.options import PredictOptions
from sentiment_api.batch.scoring import ChunkScorer, ScoreChunk
from sentiment_api.batch.sinks import (
    PART_PREFIX,
    Tally,
    merge_parts,
    part_files,
    part_path,
    table_writer,
    tally_parts,
)
from sentiment_api.batch.sources import Source, open_source, read_tables
from sentiment_api.core.errors import DataError
from sentiment_api.core.extras import require
from sentiment_api.core.files import write_text_atomic
from sentiment_api.data.formats import OUTPUT_SUFFIXES, XLSX_MAX_ROWS, OutputFormat

if TYPE_CHECKING:
    import pyarrow as pa

    from sentiment_api.core.engine import Classifier

MANIFEST = "_manifest.json"
REPORT = "_report.json"
Log = Callable[[str], None]


class BatchReport(BaseModel):
    """What a batch prediction wrote: rows, labels, rows skipped and why, and how long it took."""

    output: str = Field(description="The file or directory written.")
    rows: int = Field(description="Rows in the output: every input row.")
    scored: int = Field(description="Rows with a label.")
    skipped: dict[str, int] = Field(description="Rows not scored, by reason (empty when none).")
    labels: dict[str, int] = Field(description="Rows per label.")
    single_file: bool = Field(description="Whether the output is one file, merged from the parts.")
    parts: int = Field(description="Part files written or reused: the units an interrupted run resumes by.")
    parts_reused: int = Field(0, description="Part files found complete from an earlier run.")
    seconds: float = Field(description="Wall time of this run.")
    rows_per_second: float = Field(description="Rows scored by this run per second of it.")

    @classmethod
    def of(
        cls, plan: OutputPlan, tally: Tally, parts: int, reused: int, seconds: float, rows_now: int
    ) -> BatchReport:
        """The report of a finished run."""
        return cls(
            output=str(plan.target),
            single_file=plan.single_file,
            rows=tally.rows,
            scored=tally.rows - sum(tally.skipped.values()),
            skipped=dict(sorted(tally.skipped.items())),
            labels=dict(sorted(tally.labels.items())),
            parts=parts,
            parts_reused=reused,
            seconds=round(seconds, 2),
            rows_per_second=round(rows_now / seconds, 1) if seconds > 0 else 0.0,
        )

    def summary(self) -> str:
        """Two or three lines for a person."""
        parts = "" if self.single_file else f"{self.parts} part file(s)"
        if self.parts_reused:
            parts += f"{', ' if parts else ''}{self.parts_reused} of {self.parts} parts from an earlier run"
        lines = [
            f"wrote {self.rows} rows to {self.output}{f' ({parts})' if parts else ''} in "
            f"{self.seconds:.1f} s, {self.rows_per_second:.0f} rows/s",
            f"labels: {json.dumps(self.labels, ensure_ascii=False)}",
        ]
        if self.skipped:
            reasons = ", ".join(f"{reason} {count}" for reason, count in self.skipped.items())
            lines.append(f"skipped {sum(self.skipped.values())} row(s), kept with their reason: {reasons}")
        return "\n".join(lines)


@dataclass(frozen=True)
class OutputPlan:
    """Where the parts go and what becomes of them."""

    target: Path
    format: OutputFormat
    single_file: bool
    parts_dir: Path
    parts_format: OutputFormat


def plan_output(output: Path, output_format: OutputFormat | None) -> OutputPlan:
    """A path with a known suffix is one file; a directory, or a path without one, gets part files."""
    output = Path(output)
    suffix_format = OUTPUT_SUFFIXES.get(output.suffix.lower())
    if output.is_dir() or suffix_format is None:
        if output.suffix and suffix_format is None and output_format is None and not output.is_dir():
            raise DataError(
                f"{output}: unsupported output type {output.suffix!r}; use .parquet, .csv or .xlsx, "
                "or a directory for part files"
            )
        file_format = output_format or "parquet"
        return OutputPlan(output, file_format, False, output, file_format)
    if output_format is not None and output_format != suffix_format:
        raise DataError(f"{output}: the suffix says {suffix_format}, --output-format says {output_format}")
    # a one-file output is merged from Parquet parts: typed, compact, read back fast
    return OutputPlan(output, suffix_format, True, output.parent / f".{output.name}.parts", "parquet")


def predict_files(
    classifier: Classifier,
    input: str | Path,
    output: Path,
    options: PredictOptions | None = None,
    *,
    score: ScoreChunk | None = None,
    log: Log | None = None,
) -> BatchReport:
    """Classify every row of ``input`` (a file, a directory or a glob) into ``output``.

    ``score`` replaces the classifier's own session for the inference of each chunk (by default
    ``classifier.probabilities`` in batches of ``options.batch_size``).
    """
    require("pyarrow")  # a missing extra is the first thing to say, before any file is looked at
    require("tqdm")
    options = options or PredictOptions()
    started = time.perf_counter()
    source = open_source(input, options.text_column, options.sheet, options.input_format)
    scorer = ChunkScorer.of_classifier(
        classifier,
        source.text_column,
        batch_size=options.batch_size,
        max_text_chars=options.max_text_chars,
        prefix=options.column_prefix,
        score=score,
        min_score=options.min_score,
    )
    scorer.columns.check_free(source.columns, input)
    plan = plan_output(output, options.output_format)
    check_size(plan, source, options)
    manifest = _manifest(source, classifier, options, plan)
    prepare_parts(plan.parts_dir, manifest, options.overwrite)
    done = {path.name for path in part_files(plan.parts_dir)}
    if done and log is not None:
        log(f"resuming: {len(done)} complete part file(s) in {plan.parts_dir} are kept")
    schema = scorer.output_schema(source.schema)
    rows_now = _write_parts(source, scorer, plan, schema, options, done)
    parts = part_files(plan.parts_dir)
    tally = tally_parts(parts, plan.parts_format, scorer.columns)
    if plan.single_file:
        merge_parts(parts, plan.target, plan.format, schema, options.chunk_rows)
        shutil.rmtree(plan.parts_dir)
    report = BatchReport.of(plan, tally, len(parts), len(done), time.perf_counter() - started, rows_now)
    if not plan.single_file:
        write_text_atomic(plan.parts_dir / REPORT, report.model_dump_json(indent=2) + "\n")
    return report


def check_size(plan: OutputPlan, source: Source, options: PredictOptions) -> None:
    """Refuse at once what a worksheet cannot hold."""
    if plan.format != "xlsx":
        return
    if not plan.single_file and options.part_rows > XLSX_MAX_ROWS:
        raise DataError(f"--part-rows {options.part_rows} is more than a worksheet holds ({XLSX_MAX_ROWS})")
    if plan.single_file and source.rows is not None and source.rows > XLSX_MAX_ROWS:
        raise DataError(
            f"{plan.target}: {source.rows} rows are more than a worksheet holds ({XLSX_MAX_ROWS}); "
            "write Parquet or CSV, or a directory of XLSX parts"
        )


def prepare_parts(directory: Path, manifest: dict[str, Any], overwrite: bool) -> None:
    """Make ``directory`` ready for this run's parts: new, or holding parts of the very same run
    (kept, to resume), or, with ``overwrite``, parts of another run (deleted)."""
    written = directory / MANIFEST
    if directory.exists():
        same = written.is_file() and json.loads(written.read_text()) == manifest
        if not same:
            clear_output(directory, overwrite)
        for stray in directory.glob(f".{PART_PREFIX}*"):  # what an interrupted run was writing
            stray.unlink()
    directory.mkdir(parents=True, exist_ok=True)
    write_text_atomic(written, json.dumps(manifest, indent=2) + "\n")


def clear_output(directory: Path, overwrite: bool) -> None:
    """Empty an existing output directory of an earlier run, if ``overwrite`` says so; refuse one
    that holds anything batch prediction did not write, whatever it says."""
    if not directory.is_dir():
        raise DataError(f"{directory}: exists and is not a directory")
    others = sorted(path.name for path in directory.iterdir() if not _is_ours(path))
    if others:
        raise DataError(
            f"{directory}: holds files that batch prediction did not write ({', '.join(others[:3])}); "
            "choose another output"
        )
    if any(directory.iterdir()):
        if not overwrite:
            raise DataError(
                f"{directory}: holds the output of a run with other input, model or settings; "
                "pass --overwrite to replace it, or choose another output"
            )
        for path in directory.iterdir():
            path.unlink()


def _is_ours(path: Path) -> bool:
    return path.is_file() and path.name.startswith((PART_PREFIX, f".{PART_PREFIX}", MANIFEST, REPORT))


def _manifest(
    source: Source, classifier: Classifier, options: PredictOptions, plan: OutputPlan
) -> dict[str, Any]:
    """Everything the rows of a part depend on: a rerun resumes only if it is the same."""
    files = [[str(file.resolve()), file.stat().st_size, file.stat().st_mtime_ns] for file in source.files]
    card = classifier.card.model_dump_json().encode()
    return {
        "input": files,
        "format": source.format,
        "sheet": source.sheet,
        "text_column": source.text_column,
        "model_card_sha256": hashlib.sha256(card).hexdigest(),
        "device": classifier.device,  # fp16 on a GPU scores to about 1e-3 of the CPU: not the same rows
        "parts_format": plan.parts_format,
        "settings": options.model_dump(
            include={"batch_size", "chunk_rows", "part_rows", "max_text_chars", "column_prefix", "min_score"}
        ),
    }


def _write_parts(
    source: Source,
    scorer: ChunkScorer,
    plan: OutputPlan,
    schema: pa.Schema,
    options: PredictOptions,
    done: set[str],
) -> int:
    """Score and write every part not in ``done``; the rows scored."""
    require("tqdm")
    from tqdm.auto import tqdm

    initial = min(len(done) * options.part_rows, source.rows) if source.rows is not None else 0
    scored = 0
    current = -1
    with (
        tqdm(
            total=source.rows,
            initial=initial,
            disable=not options.progress,
            desc="predicting",
            unit="row",
            unit_scale=True,
        ) as bar,
        ExitStack() as part,
    ):
        chunks = part_chunks(read_tables(source, options.chunk_rows), options.chunk_rows, options.part_rows)
        for index, chunk in chunks:
            path = part_path(plan.parts_dir, index, plan.parts_format)
            if path.name in done:
                continue
            if index != current:
                part.close()  # the previous part is complete: renamed to its final name now
                write = part.enter_context(table_writer(path, plan.parts_format, schema))
                current = index
            write(scorer(chunk))
            scored += chunk.num_rows
            bar.update(chunk.num_rows)
    if current < 0 and not done:  # no rows at all: one empty part, so that the output has its columns
        with table_writer(part_path(plan.parts_dir, 0, plan.parts_format), plan.parts_format, schema):
            pass
    return scored


def part_chunks(
    tables: Iterable[pa.Table], chunk_rows: int, part_rows: int
) -> Iterator[tuple[int, pa.Table]]:
    """(part index, chunk): ``chunk_rows`` rows at a time, cut where a part ends, whatever sizes the
    tables come in; so the parts of a rerun hold exactly the rows of the first run's."""
    require("pyarrow")
    import pyarrow as pa

    buffer: list[pa.Table] = []
    buffered = 0
    offset = 0
    for table in tables:
        buffer.append(table)
        buffered += table.num_rows
        while buffered and buffered >= (wanted := min(chunk_rows, part_rows - offset % part_rows)):
            merged = pa.concat_tables(buffer)
            yield offset // part_rows, merged.slice(0, wanted)
            offset += wanted
            rest = merged.slice(wanted)
            buffer, buffered = [rest], rest.num_rows
    if buffered:
        yield offset // part_rows, pa.concat_tables(buffer)
