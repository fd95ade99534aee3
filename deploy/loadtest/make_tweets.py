"""Write the reference test tweets, as people wrote them, for the load tests: deploy/loadtest/tweets.json.

    python deploy/loadtest/make_tweets.py [../shared/data/nlp_data.xlsx] [--out deploy/loadtest/tweets.json]

The test split comes from the project's own split (``sentiment_api.data.tweets.load_splits``, the reference
split to the row); each tweet is the raw text of its spreadsheet row, not the normalised one, so the
service does the cleaning work it does for real clients. The file is a JSON list of strings, in the
split's order.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sentiment_api.core.records import DataSpec
from sentiment_api.data.tweets import load_splits, read_table

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "data", nargs="?", type=Path, default=REPO.parent / "shared" / "data" / "nlp_data.xlsx"
    )
    parser.add_argument("--out", type=Path, default=REPO / "deploy" / "loadtest" / "tweets.json")
    args = parser.parse_args()

    spec = DataSpec()
    _, splits = load_splits(args.data, spec)
    raw = read_table(args.data, spec.sheet)[spec.text_column]
    tweets = [str(raw.iloc[row - 2]) for row in splits.test["row"]]  # spreadsheet row 2 is frame row 0
    args.out.write_text(json.dumps(tweets, ensure_ascii=False, indent=0) + "\n")
    print(f"wrote {len(tweets)} tweets ({args.out.stat().st_size / 1024:.0f} KiB) to {args.out}")


if __name__ == "__main__":
    main()
