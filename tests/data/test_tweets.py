import pandas as pd
import pytest
from rapidfuzz import fuzz

from reference_dedup import reference_near_duplicate_mask
from sentiment_api.core.errors import DataError
from sentiment_api.core.records import DataSpec
from sentiment_api.data.tweets import load_splits, load_tweets, near_duplicate_mask, read_table, write_table
from tiny_models import LABEL_COLUMN, TEXT_COLUMN, write_rows


@pytest.mark.shared_data
def test_reference_split_is_reproduced_to_the_row(shared_data) -> None:
    data, splits = load_splits(shared_data)
    assert len(data.frame) == 5759
    assert splits.sizes() == {"train": 4607, "validation": 576, "test": 576}
    assert splits.test["label"].value_counts().to_dict() == {
        "No emotion toward brand or product": 345,
        "Positive emotion": 190,
        "Negative emotion": 41,
    }
    assert data.dropped["empty text"] == 1 and data.dropped["dropped labels"] == 9
    assert data.sha256 == "4c5b5c09f5197f005ccc33b57547bb4491e59611fde6545ad5f503995d66b447"
    # the very rows: spreadsheet row numbers of the first test tweets are stable
    again = load_splits(shared_data)[1]
    assert again.test["row"].tolist() == splits.test["row"].tolist()
    assert not set(splits.test["row"]) & set(splits.train["row"])


@pytest.mark.shared_data
def test_near_duplicate_removal_matches_the_legacy_loop(shared_data) -> None:
    texts = load_tweets(shared_data, DataSpec(near_duplicate_threshold=100)).frame["text"].tolist()
    sample = texts[:2500]
    assert (near_duplicate_mask(sample, block=512) == reference_near_duplicate_mask(sample)).all()


def test_near_duplicate_threshold_is_exclusive() -> None:
    # ratio("abcde", "abcdf") is exactly 80: kept; a closer pair is dropped
    assert fuzz.ratio("abcde", "abcdf") == 80
    assert near_duplicate_mask(["abcde", "abcdf", "abcde!"]).tolist() == [True, True, False]


def test_a_dropped_row_does_not_knock_out_later_rows() -> None:
    texts = ["aaaaaaaaaa", "aaaaaaaaab", "aaaaaaaabb"]
    assert near_duplicate_mask(texts, block=1).tolist() == reference_near_duplicate_mask(texts).tolist()


def test_missing_column_is_named(tiny_csv) -> None:
    with pytest.raises(DataError, match=r"no column 'tweet'.*columns: tweet_text"):
        load_tweets(tiny_csv, DataSpec(text_column="tweet"))


def test_missing_sheet_lists_the_sheets(tmp_path) -> None:
    path = tmp_path / "tweets.xlsx"
    pd.DataFrame({TEXT_COLUMN: ["a"], LABEL_COLUMN: ["x"]}).to_excel(path, sheet_name="Data")
    with pytest.raises(DataError, match="no sheet named 'Train'; sheets: Data"):
        load_tweets(path)


def test_unknown_label_names_the_row_and_value(tmp_path) -> None:
    path = write_rows(tmp_path / "t.csv", [("good one", "Positive emotion"), ("meh", "Sarcasm")])
    with pytest.raises(DataError, match=r"row 3 has label 'Sarcasm'"):
        load_tweets(path, DataSpec(labels=["Positive emotion", "Negative emotion"]))


def test_empty_text_is_an_error_when_not_dropped(tmp_path) -> None:
    path = write_rows(tmp_path / "t.csv", [("good", "Positive emotion"), ("", "Negative emotion")])
    with pytest.raises(DataError, match=r"empty in row\(s\) 3"):
        load_tweets(path, DataSpec(drop_empty=False))


def test_missing_label_names_the_row(tmp_path) -> None:
    path = write_rows(tmp_path / "t.csv", [("good", "Positive emotion"), ("bad", "")])
    with pytest.raises(DataError, match=r"row 3 has no value"):
        load_tweets(path)


def test_chosen_labels_are_dropped(tiny_csv) -> None:
    spec = DataSpec(drop_labels=["Negative emotion"])
    data = load_tweets(tiny_csv, spec)
    assert data.labels == ["No emotion toward brand or product", "Positive emotion"]
    assert data.dropped["dropped labels"] == 20


def test_missing_file_and_unsupported_type(tmp_path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_tweets(tmp_path / "nope.csv")
    (tmp_path / "t.doc").write_text("{}")
    with pytest.raises(DataError, match=r"unsupported file type '\.doc'"):
        load_tweets(tmp_path / "t.doc")


def test_parquet_and_json_lines_load_as_the_csv_does(tiny_csv, tmp_path) -> None:
    frame = pd.read_csv(tiny_csv)
    frame.to_parquet(tmp_path / "t.parquet", index=False)
    frame.to_json(tmp_path / "t.jsonl", orient="records", lines=True)
    expected = load_tweets(tiny_csv)

    for path in (tmp_path / "t.parquet", tmp_path / "t.jsonl"):
        loaded = load_tweets(path)
        assert loaded.frame.equals(expected.frame)
        assert loaded.dropped == expected.dropped


def test_csv_split_is_stratified(tiny_csv) -> None:
    _, splits = load_splits(tiny_csv)
    assert splits.sizes() == {"train": 48, "validation": 6, "test": 6}
    assert splits.test["label"].value_counts().tolist() == [2, 2, 2]


def test_write_table_is_atomic_and_checks_the_suffix(tmp_path) -> None:
    frame = pd.DataFrame({"a": [1]})
    write_table(frame, tmp_path / "out.xlsx")
    assert pd.read_excel(tmp_path / "out.xlsx")["a"].tolist() == [1]
    with pytest.raises(DataError, match="unsupported output type"):
        write_table(frame, tmp_path / "out.parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.xlsx"]


def test_read_table_knows_the_formats_batch_prediction_and_the_page_read(tmp_path) -> None:
    frame = pd.DataFrame({"tweet_text": ["love it", "awful"], "label": ["pos", "neg"]})
    frame.to_csv(tmp_path / "t.csv.gz", index=False)  # compressed, by its suffix
    frame.to_json(tmp_path / "t.json", orient="records", lines=True)  # JSON Lines named .json
    frame.to_csv(tmp_path / "t.txt", index=False)  # a CSV by another name, read as ever
    (tmp_path / "t.xls").write_bytes(b"old excel")

    for name in ("t.csv.gz", "t.json", "t.txt"):
        assert read_table(tmp_path / name).to_dict("list") == frame.to_dict("list"), name
    with pytest.raises(DataError, match=r"unsupported file type '\.xls'; use \.csv, \.tsv, \.parquet"):
        read_table(tmp_path / "t.xls")
