"""Latency of an explained request against a plain one, and of raw scores and abstention.

    python bench/server/explain_latency.py [--package DIR] [--requests 300]   (make bench-explain)

Serves the package (the shipped model by default) as a real process, then sends --requests test
tweets one at a time, in turn: plain, with ``"raw_scores": true, "min_score": 0.6``, and with
``"explain": true`` (one model run per word, in the same batch as the tweet). Prints the p50 and p99
of each, the words per tweet, the ratio of explained to plain, and the CPU model.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import httpx
import numpy as np
from models_memory import cpu_model
from wrk_load import SHIPPED_MODEL, tweets

from sentiment_api.serving.process import running_service

KINDS = {
    "plain": {},
    "raw_scores + min_score": {"raw_scores": True, "min_score": 0.6},
    "explain": {"explain": True},
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--package", type=Path, default=SHIPPED_MODEL)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    texts = tweets()[: args.requests]
    latencies: dict[str, list[float]] = {kind: [] for kind in KINDS}
    with (
        running_service(args.package, settings={"explain_max_words": 200}) as service,
        httpx.Client(base_url=service.url, timeout=30) as client,
    ):
        for text in texts[:20]:  # warm-up
            for extra in KINDS.values():
                client.post("/predict", json={"text": text, **extra}).raise_for_status()
        for text in texts:
            for kind, extra in KINDS.items():
                started = time.perf_counter()
                client.post("/predict", json={"text": text, **extra}).raise_for_status()
                latencies[kind].append((time.perf_counter() - started) * 1000)
    words = [len(text.split()) for text in texts]
    rows = {
        kind: {
            "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2),
        }
        for kind, ms in latencies.items()
    }
    print(
        json.dumps(
            {"cpu": cpu_model(), "requests": len(texts), "words_mean": statistics.mean(words), "rows": rows}
        )
    )
    print("| request | p50 ms | p99 ms | p50 / plain |\n|---|---|---|---|")
    for kind, row in rows.items():
        print(
            f"| {kind} | {row['p50_ms']} | {row['p99_ms']} | {row['p50_ms'] / rows['plain']['p50_ms']:.2f}x |"
        )
    print(f"\n{len(texts)} test tweets, {statistics.mean(words):.1f} words each on average; {cpu_model()}")


if __name__ == "__main__":
    main()
