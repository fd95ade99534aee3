"""Batch prediction on one machine: every output format, part files, resume, the bad-row report."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sentiment_api.batch.options import PredictOptions
from sentiment_api.batch.runner import predict_files
from sentiment_api.batch.scoring import classifier_scorer
from sentiment_api.core.errors import DataError
from tweet_files import tweets, write

QUIET = {"progress": False}


def options(**settings) -> PredictOptions:
    return PredictOptions(**{**QUIET, **settings})


def read_output(path) -> list[list[str]]:
    """Any output (a file of any format, or a directory of parts) as rows of strings, the header first."""
    if path.is_dir():
        parts = [read_output(part) for part in sorted(path.glob("part-*"))]
        return parts[0][:1] + [row for part in parts for row in part[1:]]
    if path.suffix == ".parquet":
        frame = pq.read_table(path).to_pandas()
    elif path.suffix == ".csv":
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    else:
        frame = pd.read_excel(path, dtype=str, keep_default_na=False)
    return canonical(frame)


def canonical(frame: pd.DataFrame) -> list[list[str]]:
    """One spelling per value whatever the format: empty for missing, floats to 6 places, booleans."""

    def cell(value) -> str:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return ""
        text = str(value)
        if text.lower() in ("true", "false"):
            return text.lower()
        try:
            return f"{float(text):.6f}" if "." in text else text
        except ValueError:
            return text

    return [list(frame.columns)] + [[cell(value) for value in row] for row in frame.itertuples(index=False)]


@pytest.fixture(scope="module")
def reference(classifier, tmp_path_factory) -> pd.DataFrame:
    """The 40 tweets, from CSV, scored once to Parquet in one go."""
    directory = tmp_path_factory.mktemp("reference")
    source = write(tweets(40), directory / "in.csv")
    predict_files(classifier, source, directory / "out.parquet", options())
    return pq.read_table(directory / "out.parquet").to_pandas()


@pytest.mark.parametrize("output", ["out.parquet", "out.csv", "out.xlsx", "parts", "csv-parts", "xlsx-parts"])
def test_every_output_format_holds_every_input_column_and_the_predictions(
    output, classifier, reference, tmp_path
) -> None:
    source = write(tweets(40), tmp_path / "in.csv")
    file_format = {"parts": "parquet", "csv-parts": "csv", "xlsx-parts": "xlsx"}.get(output)

    report = predict_files(
        classifier, source, tmp_path / output, options(part_rows=16, output_format=file_format)
    )

    written = read_output(tmp_path / output)
    assert written[0][:3] == ["id", "tweet_text", "note"]
    assert written == canonical(reference)
    assert report.rows == 40
    assert report.parts == 3  # of 16 rows: a one-file output is merged from them
    assert not list(tmp_path.glob(".*"))  # no staging file or directory left


def test_a_directory_output_is_numbered_parts_a_manifest_and_a_report(classifier, tmp_path) -> None:
    source = write(tweets(35), tmp_path / "in.jsonl")

    report = predict_files(classifier, source, tmp_path / "out", options(part_rows=10, chunk_rows=4))

    names = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert names == [
        "_manifest.json",
        "_report.json",
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
        "part-00003.parquet",
    ]
    rows = [pq.read_metadata(tmp_path / "out" / name).num_rows for name in names[2:]]
    assert rows == [10, 10, 10, 5]
    # chunks of 4 rows gathered into one row group per part, not 3 small ones
    assert {pq.ParquetFile(tmp_path / "out" / name).num_row_groups for name in names[2:]} == {1}
    assert json.loads((tmp_path / "out" / "_report.json").read_text()) == report.model_dump()


def test_bad_rows_are_counted_reported_and_marked_never_fatal(classifier, tmp_path) -> None:
    source = write(tweets(40), tmp_path / "in.parquet")

    report = predict_files(classifier, source, tmp_path / "out.parquet", options())

    assert report.skipped == {"empty text": 1, "missing text": 1, "over 1000 characters": 1}
    assert report.scored == 37 and sum(report.labels.values()) == 37
    reasons = pq.read_table(tmp_path / "out.parquet").column("skip_reason").to_pylist()
    assert [i for i, reason in enumerate(reasons) if reason] == [3, 7, 11]
    assert (
        "skipped 3 row(s), kept with their reason: empty text 1, missing text 1, over 1000 characters 1"
        in (report.summary())
    )


class Interrupted(Exception):
    """What the user's Ctrl-C or a lost machine is, here."""


def scorer_that_stops(classifier, after_calls: int, calls: list[int]):
    score = classifier_scorer(classifier)

    def stopping(texts):
        if len(calls) == after_calls:
            raise Interrupted
        calls.append(len(texts))
        return score(texts)

    return stopping


@pytest.mark.parametrize("output", ["parts", "out.csv"])
def test_an_interrupted_run_resumes_after_the_last_complete_part_with_the_same_output(
    output, classifier, tmp_path
) -> None:
    source = write(tweets(40), tmp_path / "in.csv")
    settings = options(part_rows=10, chunk_rows=5)
    whole = predict_files(classifier, source, tmp_path / "whole" / output, settings)
    parts = tmp_path / "resumed" / (output if output == "parts" else f".{output}.parts")

    first: list[int] = []
    with pytest.raises(Interrupted):  # in the 3rd part's second chunk
        predict_files(
            classifier,
            source,
            tmp_path / "resumed" / output,
            settings,
            score=scorer_that_stops(classifier, 5, first),
        )
    assert sorted(path.name for path in parts.glob("part-*")) == ["part-00000.parquet", "part-00001.parquet"]
    (parts / ".part-00002.stray.parquet").write_bytes(b"half a file, as a killed run leaves it")

    second: list[int] = []
    resumed = predict_files(
        classifier,
        source,
        tmp_path / "resumed" / output,
        settings,
        score=scorer_that_stops(classifier, -1, second),
    )

    assert second == [5, 5, 5, 5]  # the 3rd and 4th parts' chunks only
    assert resumed.parts_reused == 2
    assert resumed.model_dump(
        exclude={"seconds", "rows_per_second", "parts_reused", "output"}
    ) == whole.model_dump(exclude={"seconds", "rows_per_second", "parts_reused", "output"})
    assert read_output(tmp_path / "resumed" / output) == read_output(tmp_path / "whole" / output)
    if output == "parts":
        assert not list(parts.glob(".*"))
    else:
        assert not parts.exists()


def test_parts_of_another_run_are_kept_from_harm(classifier, tmp_path) -> None:
    source = write(tweets(20), tmp_path / "in.csv")
    predict_files(classifier, source, tmp_path / "out", options(part_rows=10))

    with pytest.raises(DataError, match="other input, model or settings; pass --overwrite"):
        predict_files(classifier, source, tmp_path / "out", options(part_rows=5))
    report = predict_files(classifier, source, tmp_path / "out", options(part_rows=5, overwrite=True))
    assert report.parts == 4 and report.parts_reused == 0

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="holds files that batch prediction did not write"):
        predict_files(classifier, source, tmp_path / "mine", options(overwrite=True))
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_a_rerun_of_a_finished_run_scores_nothing(classifier, tmp_path) -> None:
    source = write(tweets(20), tmp_path / "in.parquet")
    first = predict_files(classifier, source, tmp_path / "out", options(part_rows=10))

    calls: list[int] = []
    again = predict_files(
        classifier,
        source,
        tmp_path / "out",
        options(part_rows=10),
        score=scorer_that_stops(classifier, 0, calls),
    )

    assert calls == [] and again.parts_reused == 2
    assert again.labels == first.labels


def test_an_empty_input_gives_an_empty_output_with_every_column(classifier, tmp_path) -> None:
    source = write(tweets(3)[:0], tmp_path / "in.parquet")

    report = predict_files(classifier, source, tmp_path / "out.csv", options())

    assert report.rows == 0
    header = (tmp_path / "out.csv").read_text().splitlines()
    assert header[0].startswith('"id","tweet_text","note","label","score","truncated"')
    assert len(header) == 1


def test_an_output_a_sheet_cannot_hold_is_refused_at_once(classifier, tmp_path) -> None:
    source = write(tweets(3), tmp_path / "in.csv")

    with pytest.raises(DataError, match="more than a worksheet holds"):
        predict_files(
            classifier, source, tmp_path / "parts", options(output_format="xlsx", part_rows=2_000_000)
        )
    with pytest.raises(DataError, match=r"unsupported output type '\.json'"):
        predict_files(classifier, source, tmp_path / "out.json", options())
    assert not (tmp_path / "parts").exists()


def test_chunks_never_span_two_parts_whatever_sizes_the_reader_gives() -> None:
    from sentiment_api.batch.runner import part_chunks

    tables = [
        pa.table({"n": list(range(start, start + size))})
        for start, size in [(0, 3), (3, 11), (14, 1), (15, 9)]
    ]

    chunks = [(index, chunk.column("n").to_pylist()) for index, chunk in part_chunks(tables, 4, 10)]

    assert chunks == [
        (0, [0, 1, 2, 3]),
        (0, [4, 5, 6, 7]),
        (0, [8, 9]),
        (1, [10, 11, 12, 13]),
        (1, [14, 15, 16, 17]),
        (1, [18, 19]),
        (2, [20, 21, 22, 23]),
    ]
