"""Read, clean, de-duplicate and split labelled tweets; read and write the tables they come in.

The defaults reproduce the reference split of ``nlp_data.xlsx`` to the row (see
``shared/data/README.md``): 5,759 rows, 4,607 train / 576 validation / 576 test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sentiment_api.core.errors import DataError
from sentiment_api.core.extras import require
from sentiment_api.core.files import file_sha256, staged_file
from sentiment_api.core.records import DataSpec
from sentiment_api.core.text import get_normaliser
from sentiment_api.data.formats import KNOWN, OUTPUT_SUFFIXES, format_of

if TYPE_CHECKING:
    import pandas as pd

TEXT = "text"
LABEL = "label"
SPLITS = ("train", "validation", "test")


@dataclass
class PreparedData:
    """The cleaned, de-duplicated rows of one file, with what happened to the others."""

    frame: pd.DataFrame
    source: Path
    sha256: str
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        """The label set in the model's order (sorted, so it does not depend on row order)."""
        return sorted(self.frame[LABEL].unique())


@dataclass
class Splits:
    """Train, validation and test frames with ``text`` and ``label`` columns."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame

    def items(self) -> list[tuple[str, pd.DataFrame]]:
        """(name, frame) pairs in the order train, validation, test."""
        return [(name, getattr(self, name)) for name in SPLITS]

    def sizes(self) -> dict[str, int]:
        """Rows per split."""
        return {name: len(frame) for name, frame in self.items()}


def read_table(path: Path, sheet: str | None = None) -> pd.DataFrame:
    """Read a CSV, Excel (one sheet, by name), Parquet or JSON Lines file into a frame, with errors
    that name the file. Files too large for memory are for ``predict``, which streams them."""
    require("pandas")
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    # the formats batch prediction and the page read (``formats.py``), and .txt as CSV, as ever
    kind = format_of(path) or ("csv" if suffix == ".txt" else None)
    if kind == "xlsx":
        require("openpyxl")  # inside the try below it would become "cannot read it as xlsx"
    if kind == "parquet":
        require("pyarrow")
    try:
        if kind == "xlsx":
            with pd.ExcelFile(path) as book:
                if sheet is None:
                    sheet = str(book.sheet_names[0])
                if sheet not in book.sheet_names:
                    names = ", ".join(map(str, book.sheet_names))
                    raise DataError(f"{path}: no sheet named {sheet!r}; sheets: {names}")
                return book.parse(sheet)
        if kind in ("csv", "tsv"):  # compressed ones too: pandas reads .gz, .bz2, .zst by suffix
            return pd.read_csv(path, sep="\t" if kind == "tsv" else ",")
        if kind == "parquet":
            return pd.read_parquet(path)
        if kind == "jsonl":
            # values as written: no digits turned into numbers, no strings into dates
            return pd.read_json(path, lines=True, dtype=False, convert_dates=False)
    except DataError:
        raise
    except Exception as exc:  # pandas raises many kinds; one clear line is what the user needs
        raise DataError(f"{path}: cannot read it as {kind}: {exc}") from exc
    raise DataError(f"{path}: unsupported file type {suffix!r}; use {KNOWN}")


def write_table(frame: pd.DataFrame, path: Path) -> Path:
    """Write CSV or XLSX (by suffix) to a temporary file beside ``path``, then rename it."""
    path = Path(path)
    kind = OUTPUT_SUFFIXES.get(path.suffix.lower())
    if kind not in ("csv", "xlsx"):
        raise DataError(f"{path}: unsupported output type {path.suffix.lower()!r}; use .csv or .xlsx")
    with staged_file(path) as staging:
        if kind == "csv":
            frame.to_csv(staging, index=False)
        else:
            frame.to_excel(staging, index=False, engine="openpyxl")
    return path


def require_column(frame: pd.DataFrame, column: str, path: Path) -> None:
    """Raise a :class:`DataError` naming the file, the column and the columns that exist."""
    if column not in frame.columns:
        names = ", ".join(map(str, frame.columns))
        raise DataError(f"{path}: no column {column!r}; columns: {names}")


def _row(index: int) -> int:
    """The spreadsheet row number of a frame index (the header is row 1)."""
    return int(index) + 2


def load_tweets(path: Path, spec: DataSpec | None = None) -> PreparedData:
    """Read labelled tweets, check them, normalise them and drop exact and near duplicates."""
    spec = spec or DataSpec()
    path = Path(path)
    frame = read_table(path, spec.sheet)
    for column in (spec.text_column, spec.label_column):
        require_column(frame, column, path)
    raw_text = frame[spec.text_column]
    raw_label = frame[spec.label_column]
    dropped: dict[str, int] = {}

    empty = raw_text.isna() | (raw_text.astype(str).str.strip() == "")
    if empty.any():
        if not spec.drop_empty:
            rows = ", ".join(str(_row(i)) for i in frame.index[empty][:5])
            raise DataError(f"{path}: column {spec.text_column!r} is empty in row(s) {rows}")
        dropped["empty text"] = int(empty.sum())

    missing_label = raw_label.isna() & ~empty
    if missing_label.any():
        row = _row(frame.index[missing_label][0])
        raise DataError(f"{path}: row {row} has no value in column {spec.label_column!r}")

    labels = raw_label.astype(str).str.strip()
    unwanted = labels.isin(spec.drop_labels) & ~empty
    if unwanted.any():
        dropped["dropped labels"] = int(unwanted.sum())
    keep = ~empty & ~unwanted
    if spec.labels is not None:
        unknown = keep & ~labels.isin(spec.labels)
        if unknown.any():
            first = frame.index[unknown][0]
            raise DataError(
                f"{path}: row {_row(first)} has label {labels[first]!r} in column "
                f"{spec.label_column!r}, which is not one of {spec.labels}; add it to the labels "
                "or to the labels to drop"
            )

    normalise = get_normaliser(spec.normaliser)
    require("pandas")
    import pandas as pd

    rows = pd.DataFrame(
        {
            "row": [_row(i) for i in frame.index[keep]],
            TEXT: [normalise(str(t)) for t in raw_text[keep]],
            LABEL: labels[keep].to_numpy(),
        }
    )
    before = len(rows)
    rows = rows.drop_duplicates(TEXT, keep="first")
    dropped["exact duplicates"] = before - len(rows)
    before = len(rows)
    if spec.near_duplicate_threshold < 100:
        rows = rows[near_duplicate_mask(rows[TEXT].tolist(), spec.near_duplicate_threshold)]
    rows = rows.reset_index(drop=True)
    dropped["near duplicates"] = before - len(rows)
    if rows[LABEL].nunique() < 2:
        raise DataError(f"{path}: fewer than two labels left after cleaning; nothing to learn")
    return PreparedData(rows, path, file_sha256(path), dropped)


def near_duplicate_mask(texts: list[str], threshold: float = 80.0, block: int = 1024) -> np.ndarray:
    """Keep a text only if its ``fuzz.ratio`` to every earlier *kept* text is at most ``threshold``.

    Gives exactly the rows of the earlier row-by-row loop (``tests/reference_dedup.py`` keeps it as
    the specification), but scores all pairs in blocks with
    rapidfuzz's C++ ``cdist`` on every core; only the pairs above the threshold reach Python.
    """
    require("rapidfuzz")
    from rapidfuzz import fuzz, process

    n = len(texts)
    earlier_similar: list[list[int]] = [[] for _ in range(n)]
    for start in range(0, n, block):
        stop = min(n, start + block)
        scores = process.cdist(
            texts[start:stop],
            texts[:stop],
            scorer=fuzz.ratio,
            score_cutoff=threshold,
            dtype=np.float32,
            workers=-1,
        )
        for i, j in zip(*np.nonzero(scores > threshold), strict=True):
            if j < i + start:
                earlier_similar[i + start].append(int(j))
    kept = np.zeros(n, dtype=bool)
    for i, similar in enumerate(earlier_similar):
        kept[i] = not kept[similar].any() if similar else True
    return kept


def split_tweets(data: PreparedData, spec: DataSpec | None = None) -> Splits:
    """Stratified train / validation / test split, as the reference split was made."""
    require("sklearn.model_selection")
    from sklearn.model_selection import train_test_split

    spec = spec or DataSpec()
    frame = data.frame
    try:
        train, held = train_test_split(
            frame, test_size=spec.holdout, random_state=spec.seed, stratify=frame[LABEL]
        )
        validation, test = train_test_split(held, test_size=0.5, random_state=spec.seed, stratify=held[LABEL])
    except ValueError as exc:
        raise DataError(f"{data.source}: cannot split stratified: {exc}") from exc
    return Splits(*(part.reset_index(drop=True) for part in (train, validation, test)))


def load_splits(path: Path, spec: DataSpec | None = None) -> tuple[PreparedData, Splits]:
    """Load, clean and split in one call."""
    spec = spec or DataSpec()
    data = load_tweets(path, spec)
    return data, split_tweets(data, spec)


def split_file(path: Path, spec: DataSpec | None = None, out: Path | None = None) -> dict[str, Any]:
    """Clean, de-duplicate and split ``path``; write the splits as CSVs into ``out`` when given.
    Returns what happened: the file's hash, rows kept and dropped, rows and labels per split."""
    prepared, splits = load_splits(path, spec)
    if out is not None:
        for name, frame in splits.items():
            write_table(frame, Path(out) / f"{name}.csv")
    return {
        "file": str(path),
        "sha256": prepared.sha256,
        "rows": len(prepared.frame),
        "dropped": prepared.dropped,
        "splits": {
            name: {"rows": len(frame), "labels": frame[LABEL].value_counts().to_dict()}
            for name, frame in splits.items()
        },
    }
