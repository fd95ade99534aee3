"""Memory of one service holding several models: resident memory with 1, 2 and 3 packages loaded.

    python bench/server/models_memory.py [--models 3] [--package DIR] [--requests 300]   (make bench-models)

For N = 1 .. --models, serve N packages in one process (``--model m1=DIR --model m2=DIR ...``; the
shipped model by default, or --package DIR, each name loading its own copy), wait until every model
is ready, send --requests single tweets to each model (so the inference arenas reach their working
size), and read the resident memory of the process. Prints one JSON line per N and a table: RSS,
and the increment per model over N = 1. The CPU model and the load average are printed beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import httpx
from wrk_load import SHIPPED_MODEL, tweets

from sentiment_api.serving.process import running_service


def cpu_model() -> str:
    """The CPU's model name, as /proc/cpuinfo gives it."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def measure(count: int, package: Path, requests: int) -> dict[str, object]:
    """RSS (MiB) of a service holding ``count`` copies of ``package``, after ``requests`` per model."""
    names = [f"m{i}" for i in range(1, count + 1)]
    options = [part for name in names[1:] for part in ("--model", f"{name}={package}")]
    texts = tweets()
    with running_service(package, options=options, settings={"default_model": None}) as service:
        ready_rss = service.rss_bytes()
        with httpx.Client(base_url=service.url, timeout=30) as client:
            served = ["default", *names[1:]]
            for name in served:
                for index in range(requests):
                    answer = client.post("/predict", json={"text": texts[index % len(texts)], "model": name})
                    answer.raise_for_status()
            listed = [entry["model"] for entry in client.get("/models").json()["models"]]
        assert listed == served, listed
        return {
            "models": count,
            "rss_ready_mib": round(ready_rss / 2**20, 1),
            "rss_mib": round(service.rss_bytes() / 2**20, 1),
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=int, default=3, help="measure 1 .. this many models")
    parser.add_argument("--package", type=Path, default=SHIPPED_MODEL, help="the package each name loads")
    parser.add_argument("--requests", type=int, default=300, help="single-tweet requests per model")
    args = parser.parse_args()
    size = sum(f.stat().st_size for f in args.package.iterdir() if f.is_file()) / 2**20
    print(
        f"# CPU {cpu_model()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; package {size:.1f} MiB"
    )
    rows = []
    for count in range(1, args.models + 1):
        row = measure(count, args.package, args.requests)
        rows.append(row)
        print(json.dumps(row), flush=True)
    first = float(rows[0]["rss_mib"])  # type: ignore[arg-type]
    print("| models | RSS when ready (MiB) | RSS after requests (MiB) | more than 1 model (MiB) |")
    print("|---|---|---|---|")
    for row in rows:
        extra = float(row["rss_mib"]) - first  # type: ignore[arg-type]
        print(f"| {row['models']} | {row['rss_ready_mib']} | {row['rss_mib']} | {extra:+.1f} |")


if __name__ == "__main__":
    main()
