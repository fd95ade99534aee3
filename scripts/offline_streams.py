"""The engine offline, fed the way the server feeds it: arrival-order batches on N streams of T threads.

Usage: python scripts/offline_streams.py MODEL DATA [--streams 2 --threads 1 --batch 12 --bucket 8]

The reference test tweets, tokenised up front, in batches of ``--batch`` in their file order (as
requests arrive), each batch run by ``Classifier.probabilities_of_ids`` in buckets of ``--bucket`` on
one of ``--streams`` threads sharing one ONNX Runtime session of ``--threads`` threads. Median of
``--repeats`` passes after a warm-up pass. This is the like-for-like offline figure for the server's
throughput: the same engine, batches and threads, without HTTP.
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sentiment_api.data import TEXT, DataSpec, load_splits
from sentiment_api.engine import Classifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("--streams", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--bucket", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    classifier = Classifier.load(args.model, args.threads, spin=False)
    _, splits = load_splits(args.data, DataSpec(normaliser=classifier.card.normaliser))
    texts = splits.test[TEXT].tolist()
    ids = classifier.tokenizer.encode(texts).ids
    batches = [ids[start : start + args.batch] for start in range(0, len(ids), args.batch)]

    def run(batch):
        return classifier.probabilities_of_ids(batch, args.bucket)

    seconds = []
    with ThreadPoolExecutor(args.streams) as pool:
        for attempt in range(args.repeats + 1):
            started = time.perf_counter()
            list(pool.map(run, batches))
            if attempt:  # the first pass warms up
                seconds.append(time.perf_counter() - started)
    rate = len(texts) / statistics.median(seconds)
    print(
        f"{rate:.0f} tweets/s offline: {len(texts)} test tweets, arrival-order batches of {args.batch} "
        f"in buckets of {args.bucket}, {args.streams} stream(s) x {args.threads} thread(s), "
        f"median of {args.repeats}"
    )


if __name__ == "__main__":
    main()
