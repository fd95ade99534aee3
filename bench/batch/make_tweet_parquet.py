"""Write a Parquet file of tweets for batch-prediction benchmarks, of any number of rows.

Usage: python bench/batch/make_tweet_parquet.py ROWS OUT.parquet [--seed 0] [--row-group 100000]
           [--reference ../shared/data/nlp_data.xlsx] [--corpus ../shared/data/tweeteval-sentiment/train.csv]

Rows are drawn with replacement from the reference tweets (sheet Train, column tweet_text) and the
corpus (column text), every distinct tweet equally likely, in row groups of --row-group rows written
as they are drawn. A reader decodes a Parquet row group whole, so that, not the file's size, sets
what reading it costs in memory. Columns: id (the row number), tweet_text, source (reference or tweeteval).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def pool(reference: Path, corpus: Path) -> tuple[np.ndarray, np.ndarray]:
    """Every tweet of both files, and which file each came from."""
    ours = pd.read_excel(reference, sheet_name="Train")["tweet_text"].dropna().astype(str)
    theirs = pd.read_csv(corpus)["text"].dropna().astype(str)
    texts = np.concatenate([ours.to_numpy(), theirs.to_numpy()])
    sources = np.array(["reference"] * len(ours) + ["tweeteval"] * len(theirs))
    return texts, sources


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", type=int)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--row-group", type=int, default=100_000)
    parser.add_argument("--reference", type=Path, default=SHARED / "nlp_data.xlsx")
    parser.add_argument("--corpus", type=Path, default=SHARED / "tweeteval-sentiment" / "train.csv")
    args = parser.parse_args()

    texts, sources = pool(args.reference, args.corpus)
    rng = np.random.default_rng(args.seed)
    schema = pa.schema([("id", pa.int64()), ("tweet_text", pa.string()), ("source", pa.string())])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    staging = args.out.with_name(f".{args.out.name}.tmp")
    with pq.ParquetWriter(staging, schema, compression="zstd") as writer:
        for start in range(0, args.rows, args.row_group):
            picked = rng.integers(0, len(texts), min(args.row_group, args.rows - start))
            ids = np.arange(start, start + len(picked), dtype=np.int64)
            writer.write_table(pa.table([ids, texts[picked], sources[picked]], schema=schema))
    staging.replace(args.out)
    names = f"{args.reference.name}, {args.corpus.name}"
    print(f"wrote {args.rows} tweets drawn from {len(texts)} ({names}) to {args.out}")


if __name__ == "__main__":
    main()
