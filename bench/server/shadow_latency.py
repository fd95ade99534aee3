"""What a shadow costs the live path: the same package served with and without itself as its
shadow (share 1), under wrk at one connection and at 32, runs alternated.

    python bench/server/shadow_latency.py [--rounds 3] [--seconds 8]   (make bench-shadow; needs wrk)

Both services are up at once (the shipped model, or MODEL=DIR); each round runs wrk against one then
the other, at 1 and at 32 connections, so a slow spell of a shared host falls on both. Prints each
run, then per load the median p50, p99 and requests/s without and with the shadow, what the shadow
compared and dropped, and the CPU model.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

import httpx
from models_memory import cpu_model
from wrk_load import SHIPPED_MODEL, require_wrk, run, serving, write_bodies

LOADS = (1, 32)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    require_wrk()
    model = os.environ.get("MODEL") or str(SHIPPED_MODEL)
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="shadow-bench-") as work:
        out = Path(work)
        bodies = write_bodies(out / "bodies.txt")
        shadowed_env = {"SENTIMENT_SHADOW": f"default={model}", "SENTIMENT_SHADOW_SHARE": "1"}
        with serving(out, "plain") as plain, serving(out, "shadowed", **shadowed_env) as shadowed:
            servers = {"without": plain, "with": shadowed}
            for server in servers.values():  # warm both before the first timed run
                run(f"{server.url}/predict", bodies, 4, 2)
            for number in range(1, args.rounds + 1):
                for connections in LOADS:
                    for name, server in servers.items():
                        found = run(f"{server.url}/predict", bodies, connections, args.seconds)
                        assert found.failed() == 0, found.outcomes()
                        row = {
                            "p50_ms": found.latency_ms["p50"],
                            "p99_ms": found.latency_ms["p99"],
                            "rps": found.answered() / found.seconds,
                        }
                        results.setdefault((name, connections), []).append(row)
                        print(
                            json.dumps({"round": number, "shadow": name, "connections": connections, **row})
                        )
            summary = httpx.get(f"{shadowed.url}/models/default/shadow", timeout=10).json()
    print("\n| connections | shadow | p50 ms | p99 ms | requests/s |\n|---|---|---|---|---|")
    for connections in LOADS:
        for name in ("without", "with"):
            rows = results[(name, connections)]
            medians = {key: statistics.median(r[key] for r in rows) for key in ("p50_ms", "p99_ms", "rps")}
            cells = f"{medians['p50_ms']:.2f} | {medians['p99_ms']:.2f} | {medians['rps']:.0f}"
            print(f"| {connections} | {name} | {cells} |")
    kept = {key: summary.get(key) for key in ("compared_texts", "dropped_requests", "agreement")}
    print(
        f"\nshadow: {json.dumps(kept)}; medians of {args.rounds} rounds of {args.seconds:g} s; {cpu_model()}"
    )


if __name__ == "__main__":
    main()
