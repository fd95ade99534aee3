"""The ``/ui`` page: reading uploaded tables (``serving/uploads.py``), and the page itself in headless
Chromium against the real server process, with API keys on and two models served.

With ``UI_SCREENSHOTS=DIR`` set, the browser tests also write a screenshot of each view into
``DIR`` (``UI_SCREENSHOTS=docs`` refreshes the README's and docs' pictures).
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from pathlib import Path

import httpx
import pytest

from live_server import LiveServer, open_page
from sentiment_api.core.errors import InputError, PayloadTooLargeError, UnsupportedFileError
from sentiment_api.core.settings import default_model_dir
from sentiment_api.serving.errors import status_of
from sentiment_api.serving.schemas import request_models
from sentiment_api.serving.uploads import Table, bad_rows, read_upload, text_column, upload_format

MB = 1 << 20
KEY = "ui-test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
MAX_TEXT_CHARS = 280
MAX_BATCH_TEXTS = 16
UPLOAD_LIMIT = 64 * 1024  # over max_body_bytes below: the upload has a bound of its own
BODY_LIMIT = 16 * 1024
ROW_LIMIT = 1000
LABELS = ["Negative emotion", "No emotion toward brand or product", "Positive emotion"]
SCREENSHOTS = os.environ.get("UI_SCREENSHOTS")
VIEWPORT = {"width": 1000, "height": 700}


def read(data: bytes, name: str, max_bytes: int = MB, max_rows: int = 100):
    return read_upload(data, name, max_bytes, max_rows)


# ---- uploads: each format, as text


def test_a_csv_is_read_as_text_with_its_header_and_quoted_line_breaks() -> None:
    data = '\ufeffid,tweet_text,\n007,"I love it, really",x\n2,"two\nlines"\n\n3,NA,\n'.encode()

    table = read(data, "tweets.csv")

    assert (table.format, table.columns) == ("csv", ["id", "tweet_text", "Unnamed: 2"])
    assert table.rows == [
        ["007", "I love it, really", "x"],
        ["2", "two\nlines", None],  # a short row is padded
        ["3", "NA", ""],  # a blank line is no row; "NA" stays "NA"
    ]


def test_a_tsv_is_split_on_tabs() -> None:
    table = read(b"text\tscore\nhello, world\t1\n", "tweets.tsv")

    assert (table.format, table.columns, table.rows) == ("tsv", ["text", "score"], [["hello, world", "1"]])


def test_json_lines_get_every_key_as_a_column_and_values_as_text() -> None:
    lines = [{"id": 1, "text": "I love it"}, {"text": None, "tags": ["a", "b"]}, {"id": 3.5, "ok": True}]
    data = "\n".join(json.dumps(line) for line in lines).encode() + b"\n\n"

    table = read(data, "tweets.jsonl")

    assert table.columns == ["id", "text", "tags", "ok"]
    assert table.rows == [
        ["1", "I love it", None, None],
        [None, None, '["a", "b"]', None],
        ["3.5", None, None, "True"],
    ]


def test_an_xlsx_sheet_is_read_as_text_without_its_trailing_empty_rows(tmp_path) -> None:
    openpyxl = pytest.importorskip("openpyxl")
    book = openpyxl.Workbook()
    sheet = book.active
    for row in [("Tweet", "id", None), ("I love it", 7, None), (None, None, None), ("meh", 8, "x")]:
        sheet.append(row)
    sheet.append((None, None, None))
    book.save(tmp_path / "tweets.xlsx")

    table = read((tmp_path / "tweets.xlsx").read_bytes(), "tweets.xlsx")

    assert (table.format, table.columns) == ("xlsx", ["Tweet", "id", "Unnamed: 2"])
    assert table.rows == [["I love it", "7", None], [None, None, None], ["meh", "8", "x"]]


def test_a_parquet_file_is_read_with_its_columns(tmp_path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    texts = [f"tweet {i}" for i in range(2500)]  # more than one batch of the reader
    pq.write_table(pa.table({"tweet_text": texts, "n": list(range(2500))}), tmp_path / "t.parquet")

    table = read((tmp_path / "t.parquet").read_bytes(), "t.parquet", max_rows=5000)

    assert (table.format, table.columns) == ("parquet", ["tweet_text", "n"])
    assert len(table.rows) == 2500 and table.rows[2499] == ["tweet 2499", "2499"]


def test_pasted_lines_are_one_row_each_without_trailing_blank_lines() -> None:
    table = read("I love it\r\n\nmeh 😐\n\n  \n".encode(), "pasted lines.txt")

    assert (table.format, table.columns) == ("lines", ["text"])
    assert table.rows == [["I love it"], [""], ["meh 😐"]]


# ---- uploads: what is refused, and how


@pytest.mark.parametrize("name", ["tweets.doc", "tweets", "tweets.csv.gz"])
def test_a_file_of_another_format_is_a_415_naming_the_formats(name) -> None:
    with pytest.raises(UnsupportedFileError) as caught:
        read(b"text\nhi\n", name)

    assert status_of(caught.value) == 415
    assert name in str(caught.value)
    assert ".xlsx" in str(caught.value) or "compressed" in str(caught.value)


@pytest.mark.parametrize(
    ("name", "module", "label"), [("t.xlsx", "openpyxl", "XLSX"), ("t.pq", "pyarrow", "Parquet")]
)
def test_a_format_whose_reader_is_not_installed_is_a_415_naming_the_install(
    monkeypatch, name, module, label
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # any import of it now fails

    with pytest.raises(UnsupportedFileError) as caught:
        read(b"PK\x03\x04", name)

    assert status_of(caught.value) == 415
    assert str(caught.value) == (
        f"{name}: reading {label} needs {module}, which is not installed; "
        "install it with: pip install 'sentiment-api[data]'"
    )


def test_a_file_over_the_byte_limit_is_a_413_naming_the_setting() -> None:
    with pytest.raises(PayloadTooLargeError) as caught:
        read(b"text\n" + b"x\n" * 600, "big.csv", max_bytes=1024)

    assert status_of(caught.value) == 413
    assert "1024 bytes" in str(caught.value) and "ui_max_file_bytes" in str(caught.value)


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (b"text\n" + b"hi\n" * 11, "many.csv"),
        (b"hi\n" * 11, "many.txt"),
        (b'{"text": "hi"}\n' * 11, "many.jsonl"),
    ],
)
def test_a_file_over_the_row_limit_is_a_422_naming_the_setting(data, name) -> None:
    with pytest.raises(InputError) as caught:
        read(data, name, max_rows=10)

    assert status_of(caught.value) == 422
    assert "more than 10 rows" in str(caught.value) and "ui_max_rows" in str(caught.value)
    assert caught.value.errors[0]["type"] == "too_many_rows"


@pytest.mark.parametrize(
    ("data", "name", "reason"),
    [
        (b"", "empty.csv", "empty"),
        (b"text\n\xff\xfe caf\xe9\n", "latin1.csv", "not UTF-8"),
        (b'{"text": "hi"}\n[1, 2]\n', "tweets.jsonl", "line 2 is not a JSON object"),
        (b'{"text": "hi"\n', "tweets.jsonl", "cannot read it as jsonl"),
        (b"this is no workbook", "tweets.xlsx", "cannot read it as xlsx"),
        (b"PAR1 nor is this parquet", "tweets.parquet", "cannot read it as parquet"),
    ],
    ids=["empty", "not utf-8", "not objects", "bad json", "bad xlsx", "bad parquet"],
)
def test_a_file_that_cannot_be_read_is_a_422_saying_why(data, name, reason) -> None:
    pytest.importorskip("openpyxl")
    pytest.importorskip("pyarrow")
    with pytest.raises(InputError) as caught:
        read(data, name)

    assert status_of(caught.value) == 422
    assert str(caught.value).startswith(f"{name}: ") and reason in str(caught.value)
    assert "Traceback" not in str(caught.value)


def test_the_text_column_is_the_one_asked_for_else_a_usual_name_else_the_first() -> None:
    assert text_column(["id", "Tweet", "text"], None, "f.csv") == "Tweet"
    assert text_column(["id", "body"], None, "f.csv") == "id"
    assert text_column(["id", "body"], "body", "f.csv") == "body"
    with pytest.raises(InputError, match="no column 'tweet'; columns: id, body"):
        text_column(["id", "body"], "tweet", "f.csv")


def test_bad_rows_are_listed_by_the_rule_the_api_applies() -> None:
    texts = ["I love it", "", "   ", "bell\x07", "x" * (MAX_TEXT_CHARS + 1), "x" * MAX_TEXT_CHARS, None]
    table = Table("jsonl", ["text"], [[text] for text in texts])

    found = bad_rows(table, "text", MAX_TEXT_CHARS)

    assert [(bad.row, bad.type) for bad in found] == [
        (2, "blank_text"),
        (3, "blank_text"),
        (4, "control_character"),
        (5, "string_too_long"),
        (7, "blank_text"),
    ]
    assert "U+0007" in found[2].message and str(MAX_TEXT_CHARS) in found[3].message
    single, _ = request_models(MAX_TEXT_CHARS, MAX_BATCH_TEXTS)
    refused = {number for number, text in enumerate(texts, start=1) if not _accepted(single, text or "")}
    assert refused == {bad.row for bad in found}  # the page, the upload and the API agree


def _accepted(model, text: str) -> bool:
    try:
        model.model_validate({"text": text})
    except ValueError:
        return False
    return True


def test_a_name_says_the_format() -> None:
    assert [upload_format(n) for n in ("a.CSV", "b.ndjson", "c.json", "d.xlsm", "e.pq", "f.txt")] == [
        "csv", "jsonl", "jsonl", "xlsx", "parquet", "lines",
    ]  # fmt: skip


# ---- the page, in Chromium, against the real server


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory: pytest.TempPathFactory):
    """One real server for the module: the shipped package twice (``default`` and ``twin``), API keys
    on, small limits on texts, batches, bodies, uploads and rows."""
    package = default_model_dir()
    server = LiveServer(
        package,
        tmp_path_factory.mktemp("ui") / "server.log",
        options=("--model", f"twin={package}"),
        SENTIMENT_API_KEYS=KEY,
        SENTIMENT_MAX_TEXT_CHARS=str(MAX_TEXT_CHARS),
        SENTIMENT_MAX_BATCH_TEXTS=str(MAX_BATCH_TEXTS),
        SENTIMENT_MAX_BODY_BYTES=str(BODY_LIMIT),
        SENTIMENT_UI_MAX_FILE_BYTES=str(UPLOAD_LIMIT),
        SENTIMENT_UI_MAX_ROWS=str(ROW_LIMIT),
    )
    try:
        yield server.wait_ready()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def tweets_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """500 tweets in a CSV with an id and a source column; row 250's text is only whitespace."""
    path = tmp_path_factory.mktemp("tweets") / "tweets.csv"
    subjects = ["my new iPad", "the iPhone app", "Google's keynote", "the battery", "#sxsw"]
    verdicts = ["is great, love it", "crashed again, awful", "is out today", "meh", "made my day!"]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "tweet_text", "source"])
        for row in range(1, 501):
            text = "   " if row == 250 else f"{subjects[row % 5]} {verdicts[row // 5 % 5]} #{row}"
            writer.writerow([f"{row:04d}", text, "web" if row % 2 else "phone"])
    return path


def keyed_page(browser, server, hash_: str = ""):
    """The page with the key typed in and the models loaded."""
    page, elsewhere = open_page(browser, server, viewport=VIEWPORT)
    page.goto(f"{server.url}/ui{hash_}")
    page.fill("#key", KEY)
    page.press("#key", "Enter")
    page.wait_for_selector("#model option[value=twin]", state="attached")
    return page, elsewhere


def screenshot(page, name: str, **options) -> None:
    if SCREENSHOTS:
        # transitions run to their end first: the bars as they settle, not half-way
        page.screenshot(path=str(Path(SCREENSHOTS) / name), animations="disabled", **options)


def test_upload_route_answers_columns_rows_and_bad_rows(ui_server, tweets_csv) -> None:
    response = httpx.post(
        f"{ui_server.url}/ui/table",
        params={"name": "tweets.csv"},
        content=tweets_csv.read_bytes(),
        headers=AUTH,
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == ["name", "format", "columns", "text_column", "row_count", "rows", "bad_rows"]
    assert (body["format"], body["columns"], body["text_column"]) == (
        "csv",
        ["id", "tweet_text", "source"],
        "tweet_text",
    )
    assert body["row_count"] == 500 and body["rows"][0][0] == "0001"
    assert body["bad_rows"] == [
        {"row": 250, "message": "is empty or only whitespace; send some text", "type": "blank_text"}
    ]
    assert tweets_csv.stat().st_size > BODY_LIMIT  # the route's own bound, not max_body_bytes


def test_upload_route_sits_behind_the_keys_and_bounds_bodies_and_rows(ui_server) -> None:
    url = f"{ui_server.url}/ui/table"

    keyless = httpx.post(url, params={"name": "t.txt"}, content=b"hi\n")
    too_big = httpx.post(
        url, params={"name": "t.txt"}, content=b"x\n" * (UPLOAD_LIMIT // 2 + 1), headers=AUTH
    )
    too_many = httpx.post(url, params={"name": "t.txt"}, content=b"hi\n" * (ROW_LIMIT + 1), headers=AUTH)
    unnamed = httpx.post(url, content=b"hi\n", headers=AUTH)
    no_such_column = httpx.post(
        url, params={"name": "t.txt", "column": "tweet"}, content=b"hi\n", headers=AUTH
    )

    assert keyless.status_code == 401 and "API key is required" in keyless.json()["detail"]
    assert too_big.status_code == 413 and f"limit of {UPLOAD_LIMIT} bytes" in too_big.json()["detail"]
    assert too_many.status_code == 422 and "ui_max_rows" in too_many.json()["detail"]
    assert too_many.json()["errors"][0]["type"] == "too_many_rows"
    assert unnamed.status_code == 422 and unnamed.json()["errors"][0]["field"] == "name"
    assert no_such_column.status_code == 422 and no_such_column.json()["errors"][0]["field"] == "column"


def test_the_page_without_a_key_shows_the_401_and_with_it_classifies(browser, ui_server) -> None:
    page, elsewhere = open_page(browser, ui_server, viewport=VIEWPORT)

    page.goto(f"{ui_server.url}/ui")
    page.wait_for_function("document.querySelector('#notice').textContent !== ''")
    refused = page.inner_text("#notice")
    page.fill("#text", "I love my new iPad")
    page.press("#text", "Enter")
    page.wait_for_function("document.querySelector('#error').textContent !== ''")
    refused_again = page.inner_text("#error")
    page.fill("#key", KEY)
    page.press("#key", "Enter")
    page.wait_for_selector("#model-choice:not([hidden])")
    page.click("#go")
    page.wait_for_selector("#result .row")

    assert "an API key is required" in refused and "an API key is required" in refused_again
    assert page.inner_text("#notice") == "" and page.inner_text("#error") == ""
    assert page.locator("#model option").all_inner_texts() == ["default", "twin"]
    assert elsewhere == []


def test_one_tweet_shows_label_bars_the_words_that_decided_it_and_not_sure(browser, ui_server) -> None:
    page, elsewhere = keyed_page(browser, ui_server)
    text = "I love my new iPad 😍 but the battery sucks at #sxsw"

    page.select_option("#model", "twin")
    page.fill("#min-score", "1")  # no score reaches 1: the answer abstains
    page.fill("#text", text)
    page.press("#text", "Enter")
    page.wait_for_selector("#result .row")
    page.wait_for_function("document.querySelector('#result .bar').style.width !== ''")
    labels = [row.get_attribute("data-label") for row in page.locator("#result .row").all()]
    scores = page.locator("#result .score").all_inner_texts()
    screenshot(page, "ui-tweet.png")

    assert sorted(labels) == LABELS
    assert all(score.endswith("%") for score in scores)
    assert page.inner_text("#abstained") == "not sure"
    assert "twin" in page.inner_text("#meta")
    assert not page.locator("#raw").is_hidden()
    words = page.locator("#words .word")
    assert words.count() == len(text.split())
    assert page.inner_text("#words") == text  # every word in place, the emoji's offsets included
    assert any(float(word.get_attribute("data-weight")) != 0 for word in words.all())
    assert elsewhere == []


def test_one_tweet_shows_the_reason_for_bad_input(browser, ui_server) -> None:
    page, _ = keyed_page(browser, ui_server)

    page.fill("#text", "   ")
    page.click("#go")
    page.wait_for_function("document.querySelector('#error').textContent !== ''")

    assert "whitespace" in page.inner_text("#error")


@pytest.fixture(scope="module")
def scored_page(browser, ui_server, tweets_csv):
    """The page after scoring ``tweets_csv``: 499 results, the whitespace row left out."""
    page, elsewhere = keyed_page(browser, ui_server, "#file")
    page.set_input_files("#file", str(tweets_csv))
    page.wait_for_selector("#table-info:not([hidden])")
    page.click("#score")
    page.wait_for_selector("#progress[aria-valuenow='100']")
    page.wait_for_selector("#results:not([hidden])")
    yield page, elsewhere
    page.close()


def test_a_file_is_scored_in_batches_with_progress_and_its_bad_row_listed(scored_page) -> None:
    page, elsewhere = scored_page
    if SCREENSHOTS:
        page.eval_on_selector("#summary", "summary => summary.scrollIntoView()")
        screenshot(page, "ui-file.png")

    assert page.locator("#table tbody tr").count() == 499
    assert page.inner_text("#progress-text") == "499 of 499 tweets scored (100%)"
    assert page.get_attribute("#progress", "aria-valuetext") == "499 of 499 tweets scored"
    assert page.locator("#bad-list li").all_text_contents() == [
        "row 250: is empty or only whitespace; send some text"
    ]
    assert page.locator("#table tbody tr[data-row='250']").count() == 0
    counts = [int(bar.get_attribute("data-count")) for bar in page.locator("#chart rect[data-label]").all()]
    assert sum(counts) == 499
    assert elsewhere == []


def test_the_results_sort_by_score_and_label_and_filter(scored_page) -> None:
    page, _ = scored_page

    page.click("#table th button[data-sort=score]")
    by_score = [float(score.rstrip("%")) for score in page.locator("#table tbody td.score").all_inner_texts()]
    page.click("#table th button[data-sort=label]")
    by_label = page.locator("#table tbody td.label").evaluate_all("cells => cells.map(c => c.dataset.label)")
    label = by_label[0]
    page.select_option("#filter-label", label)
    page.fill("#filter-score", "0.5")
    filtered = page.locator("#table tbody tr")
    shown = filtered.count()
    page.select_option("#filter-label", "")
    page.fill("#filter-score", "")

    assert by_score == sorted(by_score, reverse=True)
    assert page.get_attribute("#table th:nth-child(3)", "aria-sort") == "ascending"
    assert by_label == sorted(by_label)
    assert 0 < shown <= by_label.count(label)
    assert page.inner_text("#shown") == "Showing 499 of 499 results."


def test_the_download_holds_every_result_with_its_row_and_the_file_columns(scored_page, tweets_csv) -> None:
    page, _ = scored_page

    with page.expect_download() as download:
        page.click("#download")
    downloaded = Path(download.value.path()).read_text(encoding="utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(downloaded)))
    with tweets_csv.open(newline="", encoding="utf-8") as handle:
        original = list(csv.DictReader(handle))

    assert download.value.suggested_filename == "tweets-scored.csv"
    assert list(rows[0]) == ["row", "text", "label", "score", "id", "tweet_text", "source"]
    assert len(rows) == 499 and "250" not in {row["row"] for row in rows}
    for row in rows:
        source = original[int(row["row"]) - 1]
        assert row["text"] == row["tweet_text"] == source["tweet_text"] and row["id"] == source["id"]
        assert row["label"] in LABELS and 0 < float(row["score"]) <= 1


def test_the_download_defuses_cells_a_spreadsheet_would_run_as_formulas(browser, ui_server, tmp_path) -> None:
    path = tmp_path / "formulas.csv"
    cells = [
        ('=HYPERLINK("http://example.invalid","love the ipad")', "-3"),
        ("@apple the battery died again", "+2.5"),
        ("+1 for the keynote", "=1+1"),
        ("a plain tweet about the iphone", "@SUM(A1)"),
    ]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["tweet_text", "note"])
        writer.writerows(cells)
    page, _ = keyed_page(browser, ui_server, "#file")
    page.set_input_files("#file", str(path))
    page.wait_for_selector("#table-info:not([hidden])")
    page.click("#score")
    page.wait_for_selector("#results:not([hidden])")
    with page.expect_download() as download:
        page.click("#download")
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text(encoding="utf-8-sig"))))
    page.close()

    assert [(row["tweet_text"], row["note"]) for row in rows] == [
        ("'" + text if text[0] in "=+-@" else text, "'" + note if note[0] in "=@" else note)
        for text, note in cells
    ]  # formulas get a leading quote; the numbers -3 and +2.5 stay numbers
    assert [row["text"] for row in rows] == [row["tweet_text"] for row in rows]
    assert all(row["label"] in LABELS for row in rows)


def test_pasted_lines_are_read_and_their_blank_line_left_out(browser, ui_server) -> None:
    page, _ = keyed_page(browser, ui_server, "#file")

    page.fill("#lines", "I love my iPad\n\nthe keynote was awful\n")
    page.press("#lines", "Control+Enter")
    page.wait_for_selector("#table-info:not([hidden])")
    page.click("#score")
    page.wait_for_selector("#progress[aria-valuenow='100']")
    page.wait_for_selector("#results:not([hidden])")

    assert page.locator("#table tbody td.text").all_inner_texts() == [
        "I love my iPad",
        "the keynote was awful",
    ]
    assert page.locator("#bad-list li").all_text_contents() == [
        "row 2: is empty or only whitespace; send some text"
    ]


def test_the_card_tab_shows_scores_per_split_the_confusion_matrix_the_gate_and_calibration(
    browser, ui_server
) -> None:
    page, _ = keyed_page(browser, ui_server)
    card = httpx.get(f"{ui_server.url}/models/default", headers=AUTH).json()

    page.click("#tab-card")
    page.wait_for_selector("#card-scores")
    splits = page.locator("#card-scores tbody tr td:first-child").all_inner_texts()
    matrix = page.locator("table.matrix tbody td").all_inner_texts()
    screenshot(page, "ui-card.png")

    assert page.get_attribute("#tab-card", "aria-selected") == "true" and page.is_hidden("#panel-tweet")
    assert splits == list(card["metrics"])
    test = card["metrics"]["test"]
    assert [int(count) for count in matrix] == [count for row in test["confusion_matrix"] for count in row]
    assert f"{test['macro_f1']:.3f}" in page.inner_text("#card-scores")
    assert page.inner_text("#card-gate .passed, #card-gate .failed") == (
        "passed" if card["gate"]["passed"] else "failed"
    )
    if card.get("calibration"):
        assert page.locator("#calibration-scores tbody tr").count() == len(card["calibration"]["before"])
    else:
        assert "Not calibrated" in page.inner_text("#card-calibration")


def test_the_tabs_work_from_the_keyboard(browser, ui_server) -> None:
    page, _ = keyed_page(browser, ui_server)

    page.focus("#tab-tweet")
    page.keyboard.press("ArrowRight")
    on_file = page.evaluate("document.activeElement.id"), page.is_visible("#panel-file")
    page.keyboard.press("End")
    on_card = page.evaluate("document.activeElement.id"), page.is_visible("#panel-card")
    page.keyboard.press("Home")

    assert on_file == ("tab-file", True)
    assert on_card == ("tab-card", True)
    assert page.get_attribute("#tab-tweet", "aria-selected") == "true"
    assert page.get_attribute("#tab-file", "tabindex") == "-1"
    assert page.get_attribute("#progress", "role") == "progressbar"
