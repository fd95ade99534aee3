"""What a shadow costs the live path, and how much traffic it sees: the same package served with
and without itself as its shadow (share 1), under wrk at one connection and at 32, runs alternated;
then the shadowed service at a paced rate, one connection (hey), and the share the shadow compared.

    python bench/server/shadow_latency.py [--rounds 8] [--seconds 4] [--rates 20 50 100]
    (make bench-shadow; needs wrk, and hey for the paced runs)

Both services are up at once (the shipped model, or MODEL=DIR); each round runs wrk against one then
the other, at 1 and at 32 connections, so a slow spell of a shared host falls on both. Prints each
run, then per load the median p50, p99 and requests/s without and with the shadow, what the shadow
compared and dropped, and the CPU model. wrk keeps the service always busy, and the shadow runs only
while no request is under way, so there it compares little; the paced runs leave gaps, as traffic
below capacity does.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import httpx
from alternate import alternate, table
from models_memory import cpu_model
from wrk_load import SHIPPED_MODEL, require_wrk, serving, write_bodies

LOADS = (1, 32)
PACED_TEXT = '{"text": "the new ipad is great but the battery dies by noon"}'


def paced(url: str, rate: float, seconds: float) -> dict[str, object]:
    """``rate`` requests/s on one connection for ``seconds`` (hey), and what the shadow made of them."""

    def counts() -> tuple[int, int]:
        summary = httpx.get(f"{url}/models/default/shadow", timeout=10).json()
        return summary["compared_texts"], summary["dropped_requests"]

    compared, dropped = counts()
    command = [
        "hey", "-z", f"{max(1, round(seconds))}s", "-q", f"{rate:g}", "-c", "1", "-m", "POST",
        "-T", "application/json", "-d", PACED_TEXT, f"{url}/predict",
    ]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    p50 = next(line.split()[2] for line in output.splitlines() if line.strip().startswith("50%"))
    httpx.get(f"{url}/", timeout=10)  # the last comparison comes back while nothing is under way
    now_compared, now_dropped = counts()
    offered = (now_compared - compared) + (now_dropped - dropped)
    share = round((now_compared - compared) / offered, 3) if offered else None
    return {"rate": rate, "p50_ms": round(float(p50) * 1000, 2), "offered": offered, "compared_share": share}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rates", type=float, nargs="*", default=[20, 50, 100], help="paced requests/s")
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
            if shutil.which("hey") is None:
                print("paced runs skipped: hey is missing (apt-get install -y hey)")
                rates = []
            else:
                rates = [paced(shadowed.url, rate, 10) for rate in args.rates]
    print("\n" + table(results, list(urls), LOADS))
    kept = {
        key: summary.get(key) for key in ("compared_texts", "dropped_requests", "agreement", "latency_ms")
    }
    print(
        f"\nshadow: {json.dumps(kept)}; medians of {args.rounds} rounds of {args.seconds:g} s; {cpu_model()}"
    )
    if rates:
        print("\n| paced requests/s (one connection, 10 s) | p50 ms | offered | share the shadow compared |")
        print("|---|---|---|---|")
        for row in rates:
            print(f"| {row['rate']:g} | {row['p50_ms']} | {row['offered']} | {row['compared_share']} |")


if __name__ == "__main__":
    main()
