"""What a per-client limit shared by the worker processes costs: one token taken from the SQLite
buckets (server/limits.py), in memory and in a shared file, by one process and by two at once.

    python scripts/time_rate_limiter.py [--takes 20000]

Prints microseconds per take (median of 5 runs) for each case, and for comparison the cost of one
whole request as the service measures it (BENCHMARKS.md: about 2 ms of CPU each at 500 requests/s on
2 cores). Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path

from sentiment_api.server.limits import TokenBuckets


def takes(path: str | None, count: int, clients: int = 1000) -> float:
    """Seconds per take, ``count`` takes spread over ``clients`` keys."""
    buckets = TokenBuckets(Path(path) if path else None)
    started = time.perf_counter()
    for number in range(count):
        buckets.take(f"rate:{number % clients}", rate=1000.0, burst=1000)
    return (time.perf_counter() - started) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--takes", type=int, default=20_000)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="limits-"))
    shared = str(TokenBuckets.create(directory))

    def median_us(path: str | None, processes: int) -> float:
        runs = []
        for _ in range(5):
            with multiprocessing.get_context("spawn").Pool(processes) as pool:
                runs.append(max(pool.starmap(takes, [(path, args.takes)] * processes)))
        return statistics.median(runs) * 1e6

    print("| buckets | processes taking at once | microseconds per take |")
    print("|---|---|---|")
    print(f"| SQLite in memory (one worker: nothing to share) | 1 | {median_us(None, 1):.1f} |")
    print(f"| shared SQLite file (WAL, no fsync) | 1 | {median_us(shared, 1):.1f} |")
    print(f"| shared SQLite file (WAL, no fsync) | 2 | {median_us(shared, 2):.1f} |")


if __name__ == "__main__":
    main()
