"""Output files: a part appears under its name only when complete; parts are found in row order."""

from __future__ import annotations

import pyarrow as pa
import pytest

from sentiment_api.batch.sinks import part_files, table_writer

TABLE = pa.table({"tweet_text": ["bell \x07 in a tweet", "plain"], "score": [0.5, None]})


@pytest.mark.parametrize("suffix", ["parquet", "csv", "xlsx"])
def test_a_file_appears_under_its_name_only_when_complete(suffix, tmp_path) -> None:
    path = tmp_path / f"part-00000.{suffix}"

    with table_writer(path, suffix, TABLE.schema) as write:
        write(TABLE)
        assert not path.exists()
        assert [staged.name.startswith(".part-00000.") for staged in tmp_path.iterdir()] == [True]

    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    with (
        pytest.raises(RuntimeError),
        table_writer(tmp_path / f"part-00001.{suffix}", suffix, TABLE.schema) as write,
    ):
        write(TABLE)
        raise RuntimeError("interrupted")
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_xlsx_cells_lose_the_control_characters_excel_refuses(tmp_path) -> None:
    from openpyxl import load_workbook

    with table_writer(tmp_path / "out.xlsx", "xlsx", TABLE.schema) as write:
        write(TABLE)

    rows = list(load_workbook(tmp_path / "out.xlsx").worksheets[0].values)
    assert rows == [("tweet_text", "score"), ("bell  in a tweet", 0.5), ("plain", None)]


def test_part_files_come_in_row_order_by_number(tmp_path) -> None:
    for name in [
        "part-00001-0.parquet",
        "part-00000-10.parquet",
        "part-00000-9.parquet",
        ".part-00002.x.parquet",
    ]:
        (tmp_path / name).write_bytes(b"")

    assert [path.name for path in part_files(tmp_path)] == [
        "part-00000-9.parquet",
        "part-00000-10.parquet",
        "part-00001-0.parquet",
    ]
