"""Input files: found from a file, a directory or a glob, checked up front, read in chunks.

Parquet is read by a pyarrow dataset, a batch at a time with one batch of read-ahead; CSV, TSV and
JSON Lines by pyarrow's streaming readers, a block of 1 MB at a time; XLSX by openpyxl in read-only
mode, row by row (``data.spreadsheets``). CSV and XLSX columns are read as text, as written: a tweet id
keeps its digits, "NA" stays "NA", and a column's type cannot change between the first block and
the millionth. Parquet and JSON Lines keep their own types.

Everything that would stop a run (no file, an unknown format, a file that cannot be read, a
missing column, files whose columns differ) is found before the first row is scored.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sentiment_api.core.errors import DataError
from sentiment_api.core.extras import require
from sentiment_api.data.formats import KNOWN, TEXT_COLUMN_GUESSES, InputFormat, format_of
from sentiment_api.data.spreadsheets import xlsx_columns, xlsx_rows, xlsx_tables

if TYPE_CHECKING:
    import pyarrow as pa

BLOCK_BYTES = 1 << 20


@dataclass(frozen=True)
class Source:
    """The files to read, in order, their format, their columns and the text column."""

    files: tuple[Path, ...]
    format: InputFormat
    schema: pa.Schema
    text_column: str
    sheet: str | None = None
    file_rows: tuple[int, ...] | None = None  # each file's rows; None where they cannot be known cheaply

    @property
    def rows(self) -> int | None:
        """Rows in all the files, or None."""
        return None if self.file_rows is None else sum(self.file_rows)

    @property
    def columns(self) -> list[str]:
        """The input columns, in order."""
        return list(self.schema.names)


def find_files(spec: str | Path, input_format: InputFormat | None = None) -> list[Path]:
    """The input files of a file, a directory (searched recursively) or a glob, sorted.

    In a directory, files whose names start with ``.`` or ``_`` (``_SUCCESS``, checksums) are
    skipped, as Spark and pyarrow skip them, and so are files of no known format unless
    ``input_format`` says what they are.
    """
    path = Path(spec)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(
            file
            for file in path.rglob("*")
            if file.is_file()
            and not any(part.startswith((".", "_")) for part in file.relative_to(path).parts)
            and (input_format is not None or format_of(file) is not None)
        )
        if not files:
            raise DataError(f"{path}: no input files in it ({KNOWN})")
        return files
    if any(character in str(spec) for character in "*?["):
        files = sorted(Path(name) for name in glob.glob(str(spec), recursive=True) if Path(name).is_file())
        if not files:
            raise DataError(f"{spec}: no file matches")
        return files
    raise DataError(f"{path}: no such file")


def open_source(
    spec: str | Path,
    text_column: str | None = None,
    sheet: str | None = None,
    input_format: InputFormat | None = None,
) -> Source:
    """Find the files, tell their format, check each one's columns and count the rows."""
    files = find_files(spec, input_format)
    formats = {input_format or format_of(file) for file in files}
    if None in formats:
        unknown = next(file for file in files if format_of(file) is None)
        raise DataError(
            f"{unknown}: unknown format {''.join(unknown.suffixes) or '(no suffix)'!r}; use {KNOWN}, "
            "or say which with --input-format"
        )
    if len(formats) > 1:
        raise DataError(
            f"{spec}: mixes {' and '.join(sorted(map(str, formats)))} files; read one format at a time"
        )
    file_format: InputFormat = formats.pop()  # type: ignore[assignment]
    schemas = [_schema(file, file_format, sheet) for file in files]
    first = schemas[0]
    column = pick_text_column(first.names, files[0], text_column)
    for file, schema in zip(files, schemas, strict=True):
        if column not in schema.names:
            raise DataError(f"{file}: no column {column!r}; columns: {', '.join(schema.names)}")
        if set(schema.names) != set(first.names):
            raise DataError(
                f"{file}: columns differ from {files[0]}'s ({', '.join(schema.names)} against "
                f"{', '.join(first.names)}); read files with the same columns together"
            )
    if file_format == "jsonl":
        first = _with_text_type(first, column)
    rows = _count_rows(files, file_format, first, column, sheet)
    return Source(tuple(files), file_format, first, column, sheet, rows)


def pick_text_column(columns: list[str], path: Path, column: str | None) -> str:
    """The column to classify: the one asked for, else the first usual name present."""
    if column is not None:
        if column not in columns:
            raise DataError(f"{path}: no column {column!r}; columns: {', '.join(columns)}")
        return column
    for guess in TEXT_COLUMN_GUESSES:
        if guess in columns:
            return guess
    raise DataError(f"{path}: no text column found; pass --text-column (columns: {', '.join(columns)})")


def read_tables(source: Source, chunk_rows: int) -> Iterator[pa.Table]:
    """Every row of every file, in order, as tables of at most ``chunk_rows`` rows of ``source.schema``."""
    for file in source.files:
        yield from read_file(source, file, chunk_rows)


def read_file(
    source: Source, file: Path, chunk_rows: int, row_groups: list[int] | None = None
) -> Iterator[pa.Table]:
    """The rows of one of ``source``'s files, in order, as tables of at most ``chunk_rows`` rows; of
    only ``row_groups`` of a Parquet file when given (``--ray`` reads a large file in such pieces)."""
    require("pyarrow")
    import pyarrow as pa

    try:
        if source.format == "xlsx":
            yield from xlsx_tables(file, source.sheet, chunk_rows)
            return
        if row_groups is None:
            batches = _batches(file, source.format, source.schema, source.text_column, chunk_rows)
        else:
            batches = _reader(file, "parquet", None, None).iter_batches(
                batch_size=chunk_rows, row_groups=row_groups, use_threads=False
            )
        for batch in batches:
            yield conform(pa.Table.from_batches([batch]), source.schema, file)
    except DataError:
        raise
    except Exception as exc:  # pyarrow and openpyxl raise many kinds; the user needs the file and why
        raise DataError(f"{file}: cannot read it as {source.format}: {_reason(exc)}") from exc


def row_group_rows(file: Path) -> list[int]:
    """The rows of each row group of a Parquet file (from its footer)."""
    metadata = _reader(file, "parquet", None, None).metadata
    return [metadata.row_group(index).num_rows for index in range(metadata.num_row_groups)]


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def _schema(file: Path, file_format: InputFormat, sheet: str | None) -> pa.Schema:
    try:
        if file_format == "xlsx":
            return _text_schema(xlsx_columns(file, sheet))
        reader = _reader(file, file_format, None, None)
        schema = reader.schema_arrow if file_format == "parquet" else reader.schema
        return _text_schema(schema.names) if file_format in ("csv", "tsv") else schema
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{file}: cannot read it as {file_format}: {_reason(exc)}") from exc


def _text_schema(names: list[str]) -> pa.Schema:
    require("pyarrow")
    import pyarrow as pa

    return pa.schema([(name, pa.string()) for name in names])


def _with_text_type(schema: pa.Schema, column: str) -> pa.Schema:
    """JSON Lines: the text column is text even where the first rows hold none (null)."""
    require("pyarrow")
    import pyarrow as pa

    index = schema.get_field_index(column)
    return schema.set(index, pa.field(column, pa.string()))


def _batches(
    file: Path, file_format: InputFormat, schema: pa.Schema, column: str, chunk_rows: int
) -> Iterator[Any]:
    """The record batches of one file, in order, about ``chunk_rows`` rows or one block each."""
    if file_format != "parquet":
        for block in _reader(file, file_format, schema, column):
            for start in range(0, block.num_rows, chunk_rows):
                yield block.slice(start, chunk_rows)  # without copying
        return
    require("pyarrow")
    import pyarrow.dataset as ds

    # no pre-buffering (it fetches row groups ahead: memory growing with the file), pages read
    # through a small buffer, one thread, one batch of read-ahead; a row group is still decoded
    # whole, so its size, not the file's, sets the memory
    options = ds.ParquetFragmentScanOptions(pre_buffer=False, use_buffered_stream=True, buffer_size=1 << 20)
    dataset = ds.dataset(str(file), format=ds.ParquetFileFormat(default_fragment_scan_options=options))
    yield from dataset.to_batches(
        batch_size=chunk_rows, batch_readahead=1, fragment_readahead=1, use_threads=False
    )


def _reader(file: Path, file_format: InputFormat, schema: pa.Schema | None, column: str | None) -> Any:
    """A reader of one file's record batches: pyarrow's streaming CSV and JSON readers, a block of
    ``BLOCK_BYTES`` at a time on one thread (their dataset scanners read a hundred MB ahead), or a
    Parquet file's footer. With ``schema``, CSV columns are read as the text they are."""
    require("pyarrow")
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson
    import pyarrow.parquet as pq

    if file_format == "parquet":
        return pq.ParquetFile(file)  # only its footer is asked of it: schema and row count
    if file_format == "jsonl":
        explicit = pa.schema([(column, pa.string())]) if column else None
        return pajson.open_json(
            str(file),  # decompressed by its suffix
            read_options=pajson.ReadOptions(block_size=BLOCK_BYTES, use_threads=False),
            parse_options=pajson.ParseOptions(explicit_schema=explicit, unexpected_field_behavior="infer"),
        )
    convert = None
    if schema is not None:
        convert = pacsv.ConvertOptions(column_types={name: pa.string() for name in schema.names})
    return pacsv.open_csv(
        str(file),
        read_options=pacsv.ReadOptions(block_size=BLOCK_BYTES, use_threads=False),
        parse_options=csv_parse_options(file_format),
        convert_options=convert,
    )


def csv_parse_options(file_format: InputFormat) -> Any:
    """Commas or tabs, and quoted values that span lines (tweets hold line breaks)."""
    require("pyarrow")
    import pyarrow.csv as pacsv

    return pacsv.ParseOptions(delimiter="\t" if file_format == "tsv" else ",", newlines_in_values=True)


def conform(table: pa.Table, schema: pa.Schema, where: object) -> pa.Table:
    """``table`` as exactly ``schema``: the first file's column order and types."""
    require("pyarrow")
    import pyarrow as pa

    table = table.select(schema.names)
    if table.schema.equals(schema):
        return table
    try:
        return table.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise DataError(f"{where}: column types differ from the first file's: {_reason(exc)}") from exc


def _count_rows(
    files: list[Path], file_format: InputFormat, schema: pa.Schema, column: str, sheet: str | None
) -> tuple[int, ...] | None:
    """Rows in each file: Parquet's footers say; CSV and JSON Lines are parsed once more, which
    costs seconds per million rows against the hours that scoring them takes; XLSX sheets record
    their size (roughly: trailing empty rows count), or not at all."""
    require("pyarrow")
    import pyarrow as pa

    counts: list[int] = []
    for file in files:
        try:
            if file_format == "xlsx":
                rows = xlsx_rows(file, sheet)
                if rows is None:
                    return None
                counts.append(rows)
            elif file_format == "parquet":
                counts.append(_reader(file, file_format, schema, column).metadata.num_rows)
            else:
                counts.append(sum(batch.num_rows for batch in _reader(file, file_format, schema, column)))
                # counting parsed the file: give back what the allocator kept of it
                pa.default_memory_pool().release_unused()
        except DataError:
            raise
        except Exception as exc:
            raise DataError(f"{file}: cannot read it as {file_format}: {_reason(exc)}") from exc
    return tuple(counts)
