"""Output files: numbered part files, each written to a temporary name and renamed when complete;
one file merged from them; and the tally of what they hold.

A part file under its final name is always complete (``files.staged_file``), which is what lets an
interrupted run resume after the last one. Parquet, CSV and XLSX are written a table at a time
(openpyxl's write-only mode streams rows), so memory does not grow with the output.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sentiment_api.batch.scoring import OutputColumns
from sentiment_api.core.extras import require
from sentiment_api.core.files import staged_file
from sentiment_api.data.formats import EXTENSIONS, OutputFormat
from sentiment_api.data.spreadsheets import workbook

if TYPE_CHECKING:
    import pyarrow as pa

PART_PREFIX = "part-"
ROW_GROUP_ROWS = 16_384
XLSX_SHEET = "predictions"

WriteTable = Callable[["pa.Table"], None]


def part_path(directory: Path, index: int, file_format: OutputFormat) -> Path:
    """Where part ``index`` goes: ``part-00000.parquet`` and so on, in row order."""
    return directory / f"{PART_PREFIX}{index:05d}{EXTENSIONS[file_format]}"


def part_files(directory: Path) -> list[Path]:
    """The complete part files in ``directory``, in row order (by number: Ray's ``part-00000-10``
    follows ``part-00000-9``)."""
    return sorted(
        directory.glob(f"{PART_PREFIX}*.*"),
        key=lambda path: [int(number) for number in re.findall(r"\d+", path.name)],
    )


@contextmanager
def table_writer(path: Path, file_format: OutputFormat, schema: pa.Schema) -> Iterator[WriteTable]:
    """A function that appends tables of ``schema`` to ``path``; the file appears, complete and under
    its name, only when the block ends without an error."""
    with staged_file(path) as staging:
        if file_format == "parquet":
            with _parquet_writer(staging, schema) as write:
                yield write
        elif file_format == "csv":
            with _csv_writer(staging, schema) as write:
                yield write
        else:
            with _xlsx_writer(staging, schema) as write:
                yield write


@contextmanager
def _parquet_writer(path: Path, schema: pa.Schema) -> Iterator[WriteTable]:
    """Chunks gathered into row groups of about ``ROW_GROUP_ROWS``: a chunk each would make
    thousands of small row groups that slow every later reader, and this costs a few MB."""
    require("pyarrow")
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = pq.ParquetWriter(str(path), schema, compression="zstd")
    pending: list[pa.Table] = []

    def flush() -> None:
        if pending:
            writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP_ROWS)
            pending.clear()

    def write(table: pa.Table) -> None:
        pending.append(table)
        if sum(part.num_rows for part in pending) >= ROW_GROUP_ROWS:
            flush()

    try:
        yield write
        flush()
    finally:
        writer.close()


@contextmanager
def _csv_writer(path: Path, schema: pa.Schema) -> Iterator[WriteTable]:
    require("pyarrow")
    import pyarrow.csv as pacsv

    writer = pacsv.CSVWriter(str(path), schema)
    try:
        yield writer.write_table
    finally:
        writer.close()


@contextmanager
def _xlsx_writer(path: Path, schema: pa.Schema) -> Iterator[WriteTable]:
    require("openpyxl")
    from openpyxl import Workbook
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    book = Workbook(write_only=True)
    sheet = book.create_sheet(XLSX_SHEET)
    sheet.append(list(schema.names))

    def cell(value: Any) -> Any:
        # control characters (a tweet can hold them) make openpyxl refuse the whole row
        return ILLEGAL_CHARACTERS_RE.sub("", value) if isinstance(value, str) else value

    def write(table: pa.Table) -> None:
        for row in zip(*(column.to_pylist() for column in table.columns), strict=True):
            sheet.append([cell(value) for value in row])

    try:
        yield write
    except BaseException:
        # openpyxl streams rows to a temporary file of its own: finish it now, or its generator,
        # closed whenever it is collected, writes to a file closed by then
        sheet.close()
        raise
    book.save(path)


def merge_parts(
    parts: Sequence[Path], target: Path, file_format: OutputFormat, schema: pa.Schema, batch_rows: int
) -> None:
    """Write the rows of Parquet ``parts``, in order, as one file, ``batch_rows`` at a time."""
    require("pyarrow")
    import pyarrow as pa
    import pyarrow.parquet as pq

    with table_writer(target, file_format, schema) as write:
        for part in parts:
            for batch in pq.ParquetFile(part).iter_batches(batch_size=batch_rows):
                write(pa.Table.from_batches([batch]).cast(schema))


@dataclass
class Tally:
    """What part files hold: rows, rows per label, rows skipped per reason."""

    rows: int = 0
    labels: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)

    def add(self, labels: Sequence[str | None], reasons: Sequence[str | None]) -> None:
        """Count one table's label and reason columns."""
        self.rows += len(labels)
        self.labels.update(label for label in labels if label is not None)
        self.skipped.update(reason for reason in reasons if reason is not None)


def tally_parts(parts: Sequence[Path], file_format: OutputFormat, columns: OutputColumns) -> Tally:
    """Count what the finished part files hold: the report is what the output says, so a resumed run
    or one on Ray reports the same as a run in one go. Parquet parts are counted a row group at a
    time; CSV and XLSX parts (of at most ``part_rows`` rows) whole."""
    tally = Tally()
    for part in parts:
        for labels, reasons in _label_and_reason(part, file_format, columns.label, columns.reason):
            tally.add(labels, reasons)
    return tally


def _label_and_reason(
    path: Path, file_format: OutputFormat, label: str, reason: str
) -> Iterator[tuple[list[Any], list[Any]]]:
    require("pyarrow")
    import pyarrow as pa

    if file_format == "parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(columns=[label, reason]):
            yield batch.column(0).to_pylist(), batch.column(1).to_pylist()
    elif file_format == "csv":
        import pyarrow.csv as pacsv

        convert = pacsv.ConvertOptions(
            include_columns=[label, reason],
            column_types={label: pa.string(), reason: pa.string()},
            strings_can_be_null=True,  # the writer writes a missing value as an empty field
        )
        parse = pacsv.ParseOptions(newlines_in_values=True)
        table = pacsv.read_csv(path, pacsv.ReadOptions(), parse, convert)
        yield table.column(label).to_pylist(), table.column(reason).to_pylist()
    else:
        yield _label_and_reason_xlsx(path, label, reason)


def _label_and_reason_xlsx(path: Path, label: str, reason: str) -> tuple[list[Any], list[Any]]:
    with workbook(path) as book:
        rows = book.worksheets[0].iter_rows(values_only=True)
        header = list(next(rows, ()))
        i, j = header.index(label), header.index(reason)
        # a row's trailing empty cells are not stored, so a row can be shorter than the header
        pairs = [tuple(row[k] if k < len(row) else None for k in (i, j)) for row in rows]
    return [first for first, _ in pairs], [second for _, second in pairs]
