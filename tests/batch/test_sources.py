"""Input files: every format read in chunks to the same rows; directories and globs; clear errors."""

from __future__ import annotations

import gzip
import shutil

import pyarrow as pa
import pytest

from sentiment_api.batch.sources import open_source, read_tables
from sentiment_api.core.errors import DataError
from tweet_files import tweets, write

FORMATS = ["data.csv", "data.csv.gz", "data.tsv", "data.parquet", "data.jsonl", "data.xlsx"]


def read_all(spec, chunk_rows: int = 7, **kwargs) -> pa.Table:
    source = open_source(spec, **kwargs)
    tables = list(read_tables(source, chunk_rows))
    assert all(0 < table.num_rows <= chunk_rows for table in tables)
    return pa.concat_tables(tables)


@pytest.mark.parametrize("name", FORMATS)
def test_every_format_is_read_in_chunks_to_the_same_rows(name, tmp_path) -> None:
    frame = tweets(40)
    if name.endswith(".gz"):
        plain = write(frame, tmp_path / "plain.csv")
        with plain.open("rb") as source, gzip.open(tmp_path / name, "wb") as target:
            shutil.copyfileobj(source, target)
    else:
        write(frame, tmp_path / name)

    table = read_all(tmp_path / name)

    assert table.column_names == ["id", "tweet_text", "note"]
    assert table.column("id").to_pylist() == frame["id"].tolist()  # 19 digits, none lost
    texts = table.column("tweet_text").to_pylist()
    expected = frame["tweet_text"].tolist()
    # a CSV (and a spreadsheet cell written by pandas) cannot tell a missing text from an empty one
    assert texts[3] in (None, "")
    assert texts[:3] + texts[4:] == expected[:3] + expected[4:]
    assert open_source(tmp_path / name).rows == 40


def test_csv_columns_are_read_as_the_text_written(tmp_path) -> None:
    path = tmp_path / "t.csv"
    path.write_text('tweet_text,zip,flag\n"line one\nline two",00042,NA\nplain,7,true\n')

    table = read_all(path)

    assert table.to_pylist() == [
        {"tweet_text": "line one\nline two", "zip": "00042", "flag": "NA"},
        {"tweet_text": "plain", "zip": "7", "flag": "true"},
    ]


def test_a_directory_is_read_in_sorted_order_without_hidden_files(tmp_path) -> None:
    frame = tweets(30)
    (tmp_path / "in" / "b").mkdir(parents=True)
    write(frame[:10], tmp_path / "in" / "a.parquet")
    write(frame[10:20], tmp_path / "in" / "b" / "part-0.parquet")
    write(frame[20:], tmp_path / "in" / "b" / "part-1.parquet")
    (tmp_path / "in" / "_SUCCESS").write_text("")
    write(frame[:5], tmp_path / "in" / ".staging.parquet")
    (tmp_path / "in" / "README.md").write_text("not data")

    source = open_source(tmp_path / "in")

    assert [path.relative_to(tmp_path / "in").as_posix() for path in source.files] == [
        "a.parquet",
        "b/part-0.parquet",
        "b/part-1.parquet",
    ]
    assert source.rows == 30
    assert read_all(tmp_path / "in").column("note").to_pylist() == frame["note"].tolist()


def test_a_glob_reads_the_files_it_matches(tmp_path) -> None:
    frame = tweets(20)
    write(frame[:10], tmp_path / "day-1.jsonl")
    write(frame[10:], tmp_path / "day-2.jsonl")
    write(frame, tmp_path / "other.jsonl")

    table = read_all(str(tmp_path / "day-*.jsonl"))

    assert table.column("note").to_pylist() == frame["note"].tolist()


def test_xlsx_sheet_is_chosen_and_trailing_blank_rows_dropped(tmp_path) -> None:
    from openpyxl import Workbook

    book = Workbook()
    book.active.title = "Other"
    sheet = book.create_sheet("Tweets")
    for row in [("tweet_text", None), ("first", 1), (None, None), ("third", 3.5), (None, None), (None, None)]:
        sheet.append(row)
    book.save(tmp_path / "t.xlsx")

    table = read_all(tmp_path / "t.xlsx", sheet="Tweets")

    assert table.to_pylist() == [
        {"tweet_text": "first", "Unnamed: 1": "1"},
        {"tweet_text": None, "Unnamed: 1": None},
        {"tweet_text": "third", "Unnamed: 1": "3.5"},
    ]


@pytest.mark.parametrize(
    ("setup", "spec", "kwargs", "message"),
    [
        (lambda d: None, "missing.csv", {}, "missing.csv: no such file"),
        (lambda d: (d / "empty").mkdir(), "empty", {}, "empty: no input files in it"),
        (lambda d: None, "nothing-*.csv", {}, "nothing-*.csv: no file matches"),
        (lambda d: (d / "t.txt").write_text("a\n"), "t.txt", {}, "t.txt: unknown format '.txt'"),
        (
            lambda d: (d / "t.parquet").write_text("tweet_text\nnot parquet\n"),
            "t.parquet",
            {},
            "t.parquet: cannot read it as parquet: ",
        ),
        (
            lambda d: (d / "t.xlsx").write_bytes(b"PK\x03\x04 not a workbook"),
            "t.xlsx",
            {},
            "t.xlsx: cannot read it as xlsx: ",
        ),
        (
            lambda d: write(tweets(3), d / "t.csv"),
            "t.csv",
            {"text_column": "body"},
            "t.csv: no column 'body'; columns: id, tweet_text, note",
        ),
        (
            lambda d: write(tweets(3)[["id", "note"]], d / "t.csv"),
            "t.csv",
            {},
            "t.csv: no text column found; pass --text-column (columns: id, note)",
        ),
        (
            lambda d: write(tweets(3), d / "t.xlsx"),
            "t.xlsx",
            {"sheet": "Test"},
            "t.xlsx: no sheet named 'Test'; sheets: Tweets",
        ),
    ],
    ids=[
        "no file",
        "empty directory",
        "glob without match",
        "unknown format",
        "unreadable parquet",
        "unreadable xlsx",
        "missing column",
        "no text column",
        "missing sheet",
    ],
)
def test_what_would_stop_a_run_is_one_clear_error(setup, spec, kwargs, message, tmp_path) -> None:
    setup(tmp_path)

    with pytest.raises(DataError) as caught:
        open_source(str(tmp_path / spec), **kwargs)

    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_files_of_two_formats_or_with_other_columns_are_refused(tmp_path) -> None:
    (tmp_path / "mixed").mkdir()
    write(tweets(3), tmp_path / "mixed" / "a.csv")
    write(tweets(3), tmp_path / "mixed" / "b.parquet")
    (tmp_path / "columns").mkdir()
    write(tweets(3), tmp_path / "columns" / "a.csv")
    write(tweets(3).drop(columns="note"), tmp_path / "columns" / "b.csv")

    with pytest.raises(DataError, match="mixes csv and parquet files"):
        open_source(tmp_path / "mixed")
    with pytest.raises(DataError, match=r"b\.csv: columns differ from .*a\.csv's"):
        open_source(tmp_path / "columns")


def test_input_format_names_files_without_a_known_suffix(tmp_path) -> None:
    write(tweets(5), tmp_path / "export.csv").rename(tmp_path / "export.dat")

    assert read_all(tmp_path / "export.dat", input_format="csv").num_rows == 5
