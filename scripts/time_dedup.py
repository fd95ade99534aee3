"""Time the earlier service's near-duplicate loop against ours on the reference file.

Usage: python scripts/time_dedup.py ../shared/data/nlp_data.xlsx
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from sentiment_api.data import DataSpec, load_tweets, near_duplicate_mask

# The earlier loop is kept beside the tests that use it as the specification: not in the package
TESTS = Path(__file__).resolve().parents[1] / "tests"


def main(path: Path) -> None:
    sys.path.insert(0, str(TESTS))
    from reference_dedup import reference_near_duplicate_mask

    texts = load_tweets(path, DataSpec(near_duplicate_threshold=100)).frame["text"].tolist()
    timings = {}
    for name, function in (("legacy", reference_near_duplicate_mask), ("ours", near_duplicate_mask)):
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            mask = function(texts)
            best = min(best, time.perf_counter() - start)
        timings[name] = (best, int(mask.sum()))
    for name, (seconds, kept) in timings.items():
        print(f"{name}: {seconds:.2f} s, {kept} of {len(texts)} rows kept (best of 3)")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
