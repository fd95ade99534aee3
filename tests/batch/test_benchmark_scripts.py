"""The batch benchmarks (bench/batch) run end to end on a small file: the commands BENCHMARKS.md
cites keep working."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "batch"


def script(name: str, *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCH / name), *map(str, args)], capture_output=True, text=True, timeout=300
    )


@pytest.mark.shared_data
def test_tweets_are_drawn_and_benchmarked(shared_data, onnx_package, tmp_path) -> None:
    tweets = tmp_path / "tweets.parquet"

    corpus = shared_data.parent / "tweeteval-sentiment" / "train.csv"
    made = script(
        "make_tweet_parquet.py",
        3000,
        tweets,
        "--row-group",
        1000,
        "--reference",
        shared_data,
        "--corpus",
        corpus,
    )
    timed = script(
        "batch_predict.py", tweets, tmp_path / "out", "--model", onnx_package, "--", "--part-rows", 1000
    )

    assert made.returncode == 0, made.stderr
    metadata = pq.read_metadata(tweets)
    assert (metadata.num_rows, metadata.num_row_groups) == (3000, 3)
    sources = set(pq.read_table(tweets, columns=["source"]).column("source").to_pylist())
    assert sources == {"reference", "tweeteval"}
    assert timed.returncode == 0, timed.stderr
    assert "| 3,000 | " in timed.stdout and "| --part-rows 1000 |" in timed.stdout
    assert sorted(path.name for path in (tmp_path / "out").glob("part-*")) == [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
