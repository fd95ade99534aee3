"""Uploaded tables for the ``/ui`` page: a file's bytes in, its columns and rows as text out, within
limits.

The page sends a file as it is and gets every row back, so it needs no parser of its own: CSV, TSV,
JSON Lines and plain text (one tweet a line, what the page sends for pasted lines) are read with the
standard library; XLSX with openpyxl, as batch prediction reads it (``data.spreadsheets``); Parquet
with pyarrow. A format whose reader is not installed is a 415 naming the install.

Every cell comes back as text (``None`` where empty), as batch prediction reads CSV and XLSX. Rows
are numbered from 1, the header not counted. A row whose text the API would refuse is not an error
here: :func:`bad_rows` lists it with the reason, by the API's own rule
(:func:`~sentiment_api.serving.schemas.check_text` and the ``max_text_chars`` limit).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

from pydantic_core import PydanticCustomError

from sentiment_api.core.errors import DependencyError, InputError, PayloadTooLargeError, UnsupportedFileError
from sentiment_api.core.extras import EXTRA_OF_MODULE, install_command, require
from sentiment_api.data.formats import COMPRESSIONS, SUFFIXES, TEXT_COLUMN_GUESSES
from sentiment_api.data.spreadsheets import header_names, xlsx_text_rows
from sentiment_api.serving.schemas import check_text

LINES = "lines"  # plain text, one tweet a line, in a column named TEXT
TEXT = "text"
LINE_SUFFIXES = (".txt",)
READERS = {"xlsx": ("openpyxl", "XLSX"), "parquet": ("pyarrow", "Parquet")}
LARGER = "score larger files with `sentiment-api predict`"
PARQUET_BATCH_ROWS = 1024

Cell = str | None


@dataclass(frozen=True)
class Table:
    """An uploaded file's format, column names and rows (each as wide as ``columns``)."""

    format: str
    columns: list[str]
    rows: list[list[Cell]]


@dataclass(frozen=True)
class BadRow:
    """A row whose text the API would refuse: its number (from 1) and why."""

    row: int
    message: str
    type: str


def upload_format(name: str) -> str:
    """The format a file's name says (``tweets.xlsx`` is xlsx, ``notes.txt`` lines), or a 415."""
    lower = name.lower()
    if lower.endswith(COMPRESSIONS):
        raise UnsupportedFileError(f"{name}: compressed files are not read here; upload the file itself")
    if lower.endswith(LINE_SUFFIXES):
        return LINES
    suffix = "." + lower.rpartition(".")[2] if "." in lower else ""
    if suffix not in SUFFIXES:
        known = ", ".join(sorted(SUFFIXES))
        raise UnsupportedFileError(
            f"{name}: unknown format {suffix or '(no suffix)'!r}; upload one of {known}, or .txt with "
            "one tweet a line"
        )
    return SUFFIXES[suffix]


def read_upload(data: bytes, name: str, max_bytes: int, max_rows: int) -> Table:
    """The table in ``data``, a file called ``name``: a 413 when it is over ``max_bytes``, a 415 for a
    format not read here, a 422 when it cannot be read or holds more than ``max_rows`` rows."""
    if len(data) > max_bytes:
        raise PayloadTooLargeError(
            f"{name}: {len(data)} bytes is over the limit of {max_bytes} bytes (ui_max_file_bytes); {LARGER}"
        )
    file_format = upload_format(name)
    if not data:
        raise _unreadable(name, "the file is empty")
    if file_format in READERS:
        _require_reader(file_format, name)
    try:
        table = Table(file_format, *_read(data, file_format, name, max_rows))
    except (InputError, UnsupportedFileError):
        raise
    except Exception as exc:  # csv, json, openpyxl and pyarrow raise many kinds; say which file and why
        raise _unreadable(name, f"cannot read it as {file_format}: {_reason(exc)}") from exc
    if not table.columns:
        raise _unreadable(name, "no columns: the first row should name them")
    return table


def text_column(columns: list[str], asked: str | None, name: str) -> str:
    """The column to classify: the one asked for, else the first usual name present, else the first."""
    if asked:
        if asked not in columns:
            message = f"{name}: no column {asked!r}; columns: {', '.join(columns)}"
            raise InputError(message, [_error("column", message, "unknown_column")])
        return asked
    return next((guess for guess in TEXT_COLUMN_GUESSES if guess in columns), columns[0])


def bad_rows(table: Table, column: str, max_chars: int) -> list[BadRow]:
    """The rows whose text in ``column`` the API would refuse, with the API's reasons."""
    index = table.columns.index(column)
    found = []
    for number, row in enumerate(table.rows, start=1):
        problem = text_problem(row[index], max_chars)
        if problem is not None:
            found.append(BadRow(number, *problem))
    return found


def text_problem(text: Cell, max_chars: int) -> tuple[str, str] | None:
    """Why ``/predict`` would refuse ``text`` (message, error type), or None when it would take it."""
    text = text or ""
    if len(text) > max_chars:
        return f"has {len(text)} characters, more than the {max_chars} of max_text_chars", "string_too_long"
    try:
        check_text(text)
    except PydanticCustomError as error:
        return error.message(), error.type
    return None


def _read(data: bytes, file_format: str, name: str, max_rows: int) -> tuple[list[str], list[list[Cell]]]:
    """The column names and the rows, read no further than one row past ``max_rows``."""
    if file_format == "xlsx":
        with xlsx_text_rows(io.BytesIO(data), None, where=name) as (columns, rows):
            return columns, _at_most(rows, max_rows, name)
    if file_format == "parquet":
        columns, rows = _parquet(data)
    else:
        text = _decoded(data, name)
        if file_format == LINES:
            columns, rows = [TEXT], _lines(text)
        elif file_format == "jsonl":
            columns, rows = _json_lines(text, name, max_rows)
        else:
            columns, rows = _csv(text, "\t" if file_format == "tsv" else ",")
    return columns, _at_most(rows, max_rows, name)


def _at_most(rows: Iterable[list[Cell]], max_rows: int, name: str) -> list[list[Cell]]:
    """``rows`` as a list, or a 422 as soon as there are more than ``max_rows``."""
    kept: list[list[Cell]] = []
    for row in rows:
        if len(kept) == max_rows:
            message = f"{name}: more than {max_rows} rows, the limit of ui_max_rows; {LARGER}"
            raise InputError(message, [_error("body", message, "too_many_rows")])
        kept.append(row)
    return kept


def _decoded(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _unreadable(name, f"not UTF-8 text (byte {exc.start}); save it as UTF-8") from None


def _lines(text: str) -> Iterator[list[Cell]]:
    """One row per line; blank lines at the end are dropped, blank lines between are rows (bad ones)."""
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    return ([line] for line in lines)


def _csv(text: str, delimiter: str) -> tuple[list[str], Iterator[list[Cell]]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    columns = header_names(tuple(cell or None for cell in next(reader, [])))
    # a blank line is no row, as pandas reads it
    return columns, (_as_wide(row, len(columns)) for row in reader if row)


def _json_lines(text: str, name: str, max_rows: int) -> tuple[list[str], Iterator[list[Cell]]]:
    """Every key of the objects is a column, in the order first seen; one object past ``max_rows``
    is parsed, enough for the limit to tell."""
    records = list(islice(_objects(text, name), max_rows + 1))
    columns = list(dict.fromkeys(key for record in records for key in record))
    return columns, ([_cell(record.get(column)) for column in columns] for record in records)


def _objects(text: str, name: str) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        record = json.loads(line)
        if not isinstance(record, dict):
            raise _unreadable(name, f"line {number} is not a JSON object; JSON Lines hold one object a line")
        yield record


def _parquet(data: bytes) -> tuple[list[str], Iterator[list[Cell]]]:
    """The columns, and the rows a batch at a time (so a limit stops the reading early)."""
    require("pyarrow.parquet")
    import pyarrow.parquet as pq

    file = pq.ParquetFile(io.BytesIO(data))

    def rows() -> Iterator[list[Cell]]:
        for batch in file.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            values = [column.to_pylist() for column in batch.columns]
            for row in zip(*values, strict=True):
                yield [_cell(value) for value in row]

    return header_names(tuple(file.schema_arrow.names)), rows()


def _cell(value: object) -> Cell:
    """A JSON or Parquet value as text: strings as they are, lists and objects as JSON."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _as_wide(row: list[str], width: int) -> list[Cell]:
    cells: list[Cell] = list(row[:width])
    return cells + [None] * (width - len(cells))


def _require_reader(file_format: str, name: str) -> None:
    module, label = READERS[file_format]
    try:
        require(module)
    except DependencyError:
        raise UnsupportedFileError(
            f"{name}: reading {label} needs {module}, which is not installed; install it with: "
            f"{install_command(EXTRA_OF_MODULE[module])}"
        ) from None


def _unreadable(name: str, why: str) -> InputError:
    message = f"{name}: {why}"
    return InputError(message, [_error("body", message, "unreadable_file")])


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def _error(field: str, message: str, kind: str) -> dict[str, str]:
    return {"field": field, "message": message, "type": kind}
