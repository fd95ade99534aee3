"""Check that batch prediction's memory does not grow with the rows: the real reader, chunker, part
writer and tokenizer on a file of any size, with a constant in place of the network (so a million
rows take a minute), RSS sampled every 100,000 rows.

Usage: python scripts/check_batch_memory.py INPUT OUT [--max-growth-mb 50] [--max-rss-mb 1024]

Exits 1 if RSS at the last sample is more than --max-growth-mb above the first, or the peak passes
--max-rss-mb. The network's own memory does not depend on the rows (one text per call); the full
command's peak is scripts/bench_batch_predict.py's to measure.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sentiment_api.batch.options import PredictOptions
from sentiment_api.batch.runner import predict_files
from sentiment_api.batch.scoring import Scores
from sentiment_api.config import default_model_dir
from sentiment_api.engine import Classifier

EVERY = 100_000


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--max-growth-mb", type=float, default=50.0)
    parser.add_argument("--max-rss-mb", type=float, default=1024.0)
    args = parser.parse_args()

    classifier = Classifier.load(default_model_dir(), threads=1, spin=False)
    seen = 0
    samples: list[tuple[int, float]] = []

    def constant(texts: Sequence[str]) -> Scores:
        nonlocal seen
        classifier.tokenizer.encode(texts)  # the real tokenizer; only the network is left out
        seen += len(texts)
        if seen // EVERY > (seen - len(texts)) // EVERY:
            samples.append((seen, rss_mb()))
        labels = len(classifier.labels)
        return Scores(np.full((len(texts), labels), 1 / labels), [False] * len(texts))

    shutil.rmtree(args.out, ignore_errors=True)
    started = time.perf_counter()
    report = predict_files(classifier, args.input, args.out, PredictOptions(progress=False), score=constant)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{report.rows:,} rows in {time.perf_counter() - started:.0f} s; peak RSS {peak:.0f} MB")
    print("RSS every 100,000 rows (MB): " + ", ".join(f"{mb:.0f}" for _, mb in samples))
    growth = samples[-1][1] - samples[0][1] if samples else 0.0
    if growth > args.max_growth_mb or peak > args.max_rss_mb:
        sys.exit(f"memory grew by {growth:.0f} MB (peak {peak:.0f} MB)")


if __name__ == "__main__":
    main()
