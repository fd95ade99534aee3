"""``predict --ray``: the same scoring on a local Ray gives the single-machine output row for row.

Ray is the ``ray`` extra, which ``make test`` installs: these tests fail, never skip, without it.
Each starts a local Ray (about 5 s on 2 cores) through the real command.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sentiment_api.batch import ray_data
from sentiment_api.batch.sources import open_source
from sentiment_api.core.errors import DataError
from tweet_files import tweets, write

pytestmark = pytest.mark.slow


def predict(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sentiment_api", "predict", *map(str, args), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=240,
    )


def thousands_of_tweets() -> pd.DataFrame:
    frame = pd.concat([tweets(1000, seed) for seed in range(3)], ignore_index=True)
    frame["id"] = [str(i) for i in range(len(frame))]
    return frame


def assert_same_rows(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Every column equal row for row; scores to 1e-5, since an actor may run on fewer threads
    than the local engine and ONNX Runtime's kernels may then sum in another order."""
    floats = [name for name in expected.columns if expected[name].dtype.kind == "f"]
    exact = [name for name in expected.columns if name not in floats]
    differing = [name for name in exact if not got[name].equals(expected[name])]
    assert not differing, f"columns differ: {differing}\n{got[differing].compare(expected[differing]).head()}"
    gap = (got[floats] - expected[floats]).abs().max().max()
    assert gap <= 1e-5, f"scores differ by up to {gap}"


def test_ray_writes_the_local_parquet_output_row_for_row(onnx_package, tmp_path) -> None:
    frame = thousands_of_tweets()
    (tmp_path / "in").mkdir()
    write(frame[:1700], tmp_path / "in" / "a.parquet")
    write(frame[1700:], tmp_path / "in" / "b.parquet")
    common = [onnx_package, "--input", tmp_path / "in", "--chunk-rows", "500"]

    local = predict(*common, "--output", tmp_path / "local", "--part-rows", "1000")
    on_ray = predict(*common, "--output", tmp_path / "ray", "--part-rows", "1000", "--ray", "--ray-actors=2")

    assert local.returncode == 0, local.stderr
    assert on_ray.returncode == 0, on_ray.stderr
    expected = pq.read_table(tmp_path / "local")
    got = pq.read_table(tmp_path / "ray")
    assert got.num_rows == len(frame) == 3000
    assert got.schema == expected.schema
    # the same parts, each with the same rows in the same order (Ray itself swaps blocks now and then)
    assert [path.name for path in sorted((tmp_path / "ray").iterdir())] == [
        "_report.json",
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    assert_same_rows(got.to_pandas(), expected.to_pandas())
    reports = [json.loads((tmp_path / name / "_report.json").read_text()) for name in ("local", "ray")]
    same = ("rows", "scored", "skipped", "labels")
    assert [{key: report[key] for key in same} for report in reports] == [
        {key: reports[0][key] for key in same}
    ] * 2
    assert reports[1]["skipped"] == {"empty text": 3, "missing text": 3, "over 1000 characters": 3}


def test_ray_reads_csv_as_text_and_merges_into_the_same_csv_file(onnx_package, tmp_path) -> None:
    write(thousands_of_tweets()[:2000], tmp_path / "in.csv")
    common = [onnx_package, "--input", tmp_path / "in.csv", "--chunk-rows", "300"]

    local = predict(*common, "--output", tmp_path / "local.csv")
    on_ray = predict(*common, "--output", tmp_path / "ray.csv", "--ray", "--ray-actors", "1")

    assert local.returncode == 0, local.stderr
    assert on_ray.returncode == 0, on_ray.stderr
    assert (tmp_path / "ray.csv").read_bytes() == (tmp_path / "local.csv").read_bytes()
    assert on_ray.stdout.splitlines()[1:] == local.stdout.splitlines()[1:]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["in.csv", "local.csv", "ray.csv"]


def write_partition(root, part: int, name: str, rows: list[int]) -> None:
    directory = root / f"{ray_data.PART}={part}"
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": [str(row) for row in rows], ray_data.ROW: rows}), directory / name)


def test_rows_ray_wrote_out_of_order_are_put_back_in_order_part_by_part(tmp_path) -> None:
    unordered = tmp_path / "unordered"
    write_partition(unordered, 1, "b.parquet", [4, 3])  # blocks swapped across and within files
    write_partition(unordered, 0, "a.parquet", [2, 0])
    write_partition(unordered, 0, "c.parquet", [1])
    ray_data._put_in_order(unordered, tmp_path, pa.schema([("id", pa.string())]), part_rows=3, rows=5)

    assert sorted(path.name for path in tmp_path.iterdir()) == ["part-00000.parquet", "part-00001.parquet"]
    assert pq.read_table(tmp_path / "part-00000.parquet").column("id").to_pylist() == ["0", "1", "2"]
    assert pq.read_table(tmp_path / "part-00001.parquet").column("id").to_pylist() == ["3", "4"]


@pytest.mark.parametrize("rows", [[0, 1], [0, 1, 2, 2], [0, 1, 3]], ids=["lost", "repeated", "foreign"])
def test_a_part_whose_rows_ray_lost_or_repeated_fails_in_one_line(tmp_path, rows) -> None:
    write_partition(tmp_path / "unordered", 0, "a.parquet", rows)
    with pytest.raises(DataError, match=r"the Ray job lost or repeated rows 0-2 \(part 0\); run again"):
        ray_data._put_in_order(tmp_path / "unordered", tmp_path, pa.schema([("id", pa.string())]), 3, 3)
    assert not list(tmp_path.glob("part-*"))


def test_an_input_column_named_like_the_row_position_is_refused(onnx_package, tmp_path) -> None:
    frame = tweets(5).assign(**{ray_data.ROW: 1})
    source = write(frame, tmp_path / "in.parquet")
    result = predict(onnx_package, "--input", source, "--output", tmp_path / "out", "--ray")
    assert result.returncode == 1, result.stderr
    assert f"column '{ray_data.ROW}' is a name --ray uses for itself; rename it" in result.stderr


def test_a_large_parquet_file_is_read_in_pieces_of_row_groups_with_their_positions(
    tmp_path, monkeypatch
) -> None:
    frame = tweets(1000)
    write(tweets(300, 1), tmp_path / "a.parquet")  # a small file first: the big one's positions follow it
    pq.write_table(
        pa.Table.from_pandas(frame, preserve_index=False), tmp_path / "b.parquet", row_group_size=150
    )
    monkeypatch.setattr(ray_data, "PIECE_ROWS", 400)
    source = open_source(tmp_path, "tweet_text")

    tasks = ray_data._positioned_files(source, chunk_rows=64).get_read_tasks(1)
    read = [pa.concat_tables(task.read_fn()) for task in tasks]

    assert [task.metadata.num_rows for task in tasks] == [300, 450, 450, 100]  # row groups of 150, kept whole
    assert [table.num_rows for table in read] == [300, 450, 450, 100]
    whole = pa.concat_tables(read)
    assert whole.column(ray_data.ROW).to_pylist() == list(range(1300))
    assert whole.column("id").to_pylist()[300:] == frame["id"].tolist()
