"""The real ``sentiment-api predict`` command: progress, the report, and one line for what stops it."""

from __future__ import annotations

import re
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from live_server import free_port
from tweet_files import tweets, write


def predict(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sentiment_api", "predict", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_a_glob_is_scored_into_parts_with_progress_and_a_report(onnx_package, tmp_path) -> None:
    frame = tweets(40)
    write(frame[:25], tmp_path / "monday.jsonl")
    write(frame[25:], tmp_path / "tuesday.jsonl")

    result = predict(
        onnx_package, "--input", tmp_path / "*day.jsonl", "--output", tmp_path / "out", "--part-rows", "16"
    )

    assert result.returncode == 0, result.stderr
    # rows done of all, time spent < time left, rows per second
    assert re.search(r"40(\.0)?/40(\.0)? \[\d\d:\d\d<\d\d:\d\d, +[\d.]+k?row/s\]", result.stderr)
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"wrote 40 rows to {tmp_path / 'out'} (3 part file(s)) in ")
    assert lines[1].startswith("labels: {")
    assert lines[2] == (
        "skipped 3 row(s), kept with their reason: empty text 1, missing text 1, over 1000 characters 1"
    )
    assert pq.read_table(tmp_path / "out").column("note").to_pylist() == frame["note"].tolist()


@pytest.mark.parametrize(
    ("make", "extra", "message"),
    [
        (
            lambda d: write(tweets(5), d / "in.csv"),
            ["--text-column", "body"],
            "in.csv: no column 'body'; columns: ",
        ),
        (
            lambda d: (d / "in.parquet").write_bytes(b"\x00" * 64),
            [],
            "in.parquet: cannot read it as parquet: ",
        ),
        (
            lambda d: write(tweets(5), d / "in.csv").rename(d / "in.txt"),
            [],
            "in.txt: unknown format '.txt'; ",
        ),
    ],
    ids=["missing column", "unreadable file", "unknown format"],
)
def test_what_stops_a_run_is_one_line_and_exit_1_with_nothing_written(
    make, extra, message, onnx_package, tmp_path
) -> None:
    make(tmp_path)
    source = next(path for path in tmp_path.iterdir() if path.name.startswith("in."))

    result = predict(onnx_package, "--input", source, "--output", tmp_path / "out", *extra)

    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == [source.name]


def test_a_ray_cluster_that_cannot_be_reached_is_one_line_not_a_hang(onnx_package, tmp_path) -> None:
    source = write(tweets(5), tmp_path / "in.parquet")
    nothing_there = f"127.0.0.1:{free_port()}"

    result = predict(
        onnx_package, "--input", source, "--output", tmp_path / "out", "--ray-address", nothing_there
    )

    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: cannot reach the Ray cluster at {nothing_there}: [Errno 111] Connection refused"
    ]
