"""The file formats the project reads and writes, told apart by their suffix, and the usual names
of the column that holds the text.

Batch prediction (``sentiment_api.batch``) and the page's uploads (``sentiment_api.serving.uploads``)
both name a file's format from here, so a file one of them reads is one the other recognises.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

InputFormat = Literal["csv", "tsv", "parquet", "jsonl", "xlsx"]
OutputFormat = Literal["parquet", "csv", "xlsx"]

SUFFIXES: dict[str, InputFormat] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",  # what Spark and most data lakes write as .json is JSON Lines
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
}
# CSV and JSON Lines may be compressed as a whole; pyarrow decompresses them by this suffix
COMPRESSIONS = (".gz", ".bz2", ".zst", ".lz4")
EXTENSIONS: dict[OutputFormat, str] = {"parquet": ".parquet", "csv": ".csv", "xlsx": ".xlsx"}
OUTPUT_SUFFIXES: dict[str, OutputFormat] = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".xlsx": "xlsx",
}
# a worksheet holds 1,048,576 rows, the header included
XLSX_MAX_ROWS = 1_048_575
# the text column when none is named: the first of these a file has
TEXT_COLUMN_GUESSES = ("tweet_text", "Tweet", "text", "tweet")
KNOWN = ".csv, .tsv, .parquet, .jsonl (.ndjson, .json) or .xlsx, optionally .gz, .bz2, .zst or .lz4"


def format_of(path: Path) -> InputFormat | None:
    """The input format a file's suffix says (``tweets.csv.gz`` is CSV), or None."""
    name = path.name.lower()
    for compression in COMPRESSIONS:
        if name.endswith(compression):
            name = name[: -len(compression)]
    return SUFFIXES.get(Path(name).suffix)
