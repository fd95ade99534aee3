"""Tweets written in every input format the batch tests read."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tiny_models import labelled_rows

LONG = "love the new ipad " * 80  # 1,440 characters: over the default limit of 1,000


def tweets(count: int = 40, seed: int = 0) -> pd.DataFrame:
    """``count`` rows: an id, a text column with a few rows that cannot be scored, and a note."""
    texts: list[str | None] = [text for text, _ in labelled_rows(count // 3 + 1, seed)][:count]
    for index, bad in ((3, None), (7, "   "), (11, LONG)):
        if index < count:
            texts[index] = bad
    return pd.DataFrame(
        {
            "id": [f"{1_700_000_000_000_000_000 + i}" for i in range(count)],  # tweet ids: 19 digits
            "tweet_text": texts,
            "note": [f"n{i}" for i in range(count)],
        }
    )


def write(frame: pd.DataFrame, path: Path) -> Path:
    """``frame`` as the format ``path``'s suffix names (CSV compressed when it ends in .gz)."""
    name = path.name
    if name.endswith((".csv", ".csv.gz")):
        frame.to_csv(path, index=False)
    elif name.endswith(".tsv"):
        frame.to_csv(path, index=False, sep="\t")
    elif name.endswith(".parquet"):
        frame.to_parquet(path, index=False)
    elif name.endswith(".jsonl"):
        frame.to_json(path, orient="records", lines=True)
    elif name.endswith(".xlsx"):
        frame.to_excel(path, sheet_name="Tweets", index=False)
    else:
        raise ValueError(name)
    return path
