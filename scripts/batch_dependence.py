"""How much a tweet's int8 scores depend on the other tweets in its inference batch.

Usage: python scripts/batch_dependence.py [MODEL] [--data ../shared/data/nlp_data.xlsx] [--rows 3000]

Scores the first --rows reference tweets (sheet Train) three ways: in chunks of 1,000 and of 1,024
with batches of 64 (length-bucketed, as the service batches), and one tweet per call. Prints the
largest probability difference and how many labels change between each pair. The int8 model
quantises its attention inputs with one scale per batch, so a tweet's scores move with its batch
mates; one tweet per call is what makes batch prediction's output independent of chunking.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from sentiment_api.config import default_model_dir
from sentiment_api.engine import Classifier

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, nargs="?", default=default_model_dir())
    parser.add_argument("--data", type=Path, default=SHARED / "nlp_data.xlsx")
    parser.add_argument("--rows", type=int, default=3000)
    args = parser.parse_args()

    classifier = Classifier.load(args.model, threads=1, spin=False)
    texts = pd.read_excel(args.data, sheet_name="Train")["tweet_text"].dropna().astype(str).tolist()
    clean = [classifier.normalise(text) for text in texts[: args.rows]]

    def scored(chunk: int, batch: int) -> np.ndarray:
        parts = [
            classifier.probabilities_of_clean(clean[i : i + chunk], batch)[0]
            for i in range(0, len(clean), chunk)
        ]
        return np.concatenate(parts)

    runs = {
        "chunks of 1,000, batches of 64": scored(1000, 64),
        "chunks of 1,024, batches of 64": scored(1024, 64),
    }
    runs["one tweet per call"] = scored(1000, 1)
    names = list(runs)
    print(f"{len(clean)} reference tweets, {args.model}")
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            a, b = runs[first], runs[second]
            flips = int((a.argmax(axis=1) != b.argmax(axis=1)).sum())
            print(f"{first} vs {second}: largest difference {np.abs(a - b).max():.4f}, {flips} labels change")
    again = scored(1024, 1)
    print(
        f"one tweet per call, chunks of 1,000 vs 1,024: identical = {np.array_equal(runs[names[2]], again)}"
    )


if __name__ == "__main__":
    main()
