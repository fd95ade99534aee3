"""XLSX input, read with openpyxl in read-only mode: a row at a time, whatever the sheet's size.

Every cell is read as text (``str`` of what openpyxl returns), so a column keeps one type from the
first chunk to the last; empty rows at the end of a sheet are dropped, as pandas drops them. Batch
prediction reads files this way (:func:`xlsx_tables`), and so does the page's upload (``serving``),
from the bytes it was sent (:func:`xlsx_text_rows`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from sentiment_api.core.errors import DataError
from sentiment_api.core.extras import require

if TYPE_CHECKING:
    import pyarrow as pa


@contextmanager
def workbook(file: Path | IO[bytes]) -> Iterator[Any]:
    """An openpyxl workbook in read-only mode, closed on exit (read-only mode keeps the file open)."""
    require("openpyxl")
    import openpyxl

    book = openpyxl.load_workbook(file, read_only=True, data_only=True)
    try:
        yield book
    finally:
        book.close()


def sheet_of(book: Any, file: object, sheet: str | None) -> Any:
    """The sheet named ``sheet`` (the first if None), or a :class:`DataError` naming the sheets."""
    if sheet is None:
        return book.worksheets[0]
    if sheet not in book.sheetnames:
        raise DataError(f"{file}: no sheet named {sheet!r}; sheets: {', '.join(book.sheetnames)}")
    return book[sheet]


def xlsx_columns(file: Path, sheet: str | None) -> list[str]:
    """The column names of a sheet, from its first row."""
    with workbook(file) as book:
        header = next(sheet_of(book, file, sheet).iter_rows(max_row=1, values_only=True), ())
    return header_names(header)


def xlsx_rows(file: Path, sheet: str | None) -> int | None:
    """The data rows a sheet says it has (trailing empty rows included), or None if it does not say."""
    with workbook(file) as book:
        last = sheet_of(book, file, sheet).max_row
    return None if last is None else max(0, last - 1)


def header_names(header: tuple[Any, ...]) -> list[str]:
    """Column names from a header row, as pandas makes them: blanks ``Unnamed: i``, repeats ``x.1``."""
    names: list[str] = []
    for index, value in enumerate(header):
        name = f"Unnamed: {index}" if value is None else str(value)
        base, count = name, 0
        while name in names:
            count += 1
            name = f"{base}.{count}"
        names.append(name)
    return names


@contextmanager
def xlsx_text_rows(
    file: Path | IO[bytes], sheet: str | None, where: object = None
) -> Iterator[tuple[list[str], Iterator[list[str | None]]]]:
    """A sheet's column names (:func:`header_names`) and its rows, each cell as text or None and each
    row as wide as the header, while the workbook is open; ``where`` names the file in errors."""
    with workbook(file) as book:
        rows = sheet_of(book, file if where is None else where, sheet).iter_rows(values_only=True)
        names = header_names(next(rows, ()))
        yield names, _text_rows(rows, len(names))


def _text_rows(rows: Iterable[tuple[Any, ...]], width: int) -> Iterator[list[str | None]]:
    blank = 0  # empty rows seen but not kept yet: kept only if a row with data follows
    for row in rows:
        if all(value is None for value in row):
            blank += 1
            continue
        for _ in range(blank):
            yield [None] * width
        blank = 0
        cells = [None if value is None else str(value) for value in row[:width]]
        yield cells + [None] * (width - len(cells))


def xlsx_tables(file: Path, sheet: str | None, chunk_rows: int) -> Iterator[pa.Table]:
    """The rows of one sheet, as text, ``chunk_rows`` at a time."""
    with xlsx_text_rows(file, sheet) as (names, rows):
        chunk: list[list[str | None]] = []
        for row in rows:
            chunk.append(row)
            if len(chunk) == chunk_rows:
                yield _text_table(chunk, names)
                chunk = []
        if chunk:
            yield _text_table(chunk, names)


def _text_table(rows: list[list[str | None]], names: list[str]) -> pa.Table:
    require("pyarrow")
    import pyarrow as pa

    columns = [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in names]
    return pa.table(
        {name: pa.array(column, pa.string()) for name, column in zip(names, columns, strict=True)}
    )
