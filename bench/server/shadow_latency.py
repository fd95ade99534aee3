"""What a shadow costs the live path: the same package served with and without itself as its
shadow (share 1), under wrk at one connection and at 32, runs alternated.

    python bench/server/shadow_latency.py [--rounds 8] [--seconds 4]   (make bench-shadow; needs wrk)

Both services are up at once (the shipped model, or MODEL=DIR); each round runs wrk against one then
the other, at 1 and at 32 connections, so a slow spell of a shared host falls on both. Prints each
run, then per load the median p50, p99 and requests/s without and with the shadow, what the shadow
compared and dropped, and the CPU model.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import httpx
from alternate import alternate, table
from models_memory import cpu_model
from wrk_load import SHIPPED_MODEL, require_wrk, serving, write_bodies

LOADS = (1, 32)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    require_wrk()
    model = os.environ.get("MODEL") or str(SHIPPED_MODEL)
    with tempfile.TemporaryDirectory(prefix="shadow-bench-") as work:
        out = Path(work)
        bodies = write_bodies(out / "bodies.txt")
        shadowed_env = {"SENTIMENT_SHADOW": f"default={model}", "SENTIMENT_SHADOW_SHARE": "1"}
        with serving(out, "plain") as plain, serving(out, "shadowed", **shadowed_env) as shadowed:
            urls = {"without shadow": plain.url, "with shadow": shadowed.url}
            results = alternate(urls, bodies, LOADS, args.rounds, args.seconds)
            summary = httpx.get(f"{shadowed.url}/models/default/shadow", timeout=10).json()
    print("\n" + table(results, list(urls), LOADS))
    kept = {
        key: summary.get(key) for key in ("compared_texts", "dropped_requests", "agreement", "latency_ms")
    }
    print(
        f"\nshadow: {json.dumps(kept)}; medians of {args.rounds} rounds of {args.seconds:g} s; {cpu_model()}"
    )


if __name__ == "__main__":
    main()
