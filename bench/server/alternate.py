"""Servers that are up at once, measured under wrk in turn: what shadow_latency.py and
request_path.py share.

Each round runs wrk against every server at each load, one after the other, so a slow spell of a
shared host falls on all of them, and the order turns by one server each round, so that none is
always the one after the heaviest run. A shared host drifts by a fifth within minutes, so short runs
and many rounds pair better than a few long ones; the comparison that counts is the paired one: per
round, each server's p50 and requests/s divided by the first server's, their mean and standard error
over the rounds. The table also gives per server and load the medians, and every run is printed as a
JSON line as it ends. Failed requests (a 429 from an admission that sheds, a socket error) are
counted, not fatal.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

from wrk_load import run

Results = dict[tuple[str, int], list[dict[str, float]]]


def alternate(
    urls: Mapping[str, str], bodies: Path, loads: Sequence[int], rounds: int, seconds: float
) -> Results:
    """``rounds`` rounds of wrk on ``/predict`` of every server (name -> base URL) at every load;
    each run's p50, p99 (ms), requests/s and failed requests, by (server, connections), in round order."""
    for url in urls.values():  # warm every server before the first timed run
        run(f"{url}/predict", bodies, 4, 2)
    results: Results = {}
    names = list(urls)
    for number in range(1, rounds + 1):
        turn = (number - 1) % len(names)
        for connections in loads:
            for name in names[turn:] + names[:turn]:
                found = run(f"{urls[name]}/predict", bodies, connections, seconds)
                row = {
                    "p50_ms": found.latency_ms["p50"],
                    "p99_ms": found.latency_ms["p99"],
                    "rps": found.answered() / found.seconds,
                    "failed": float(found.failed()),
                }
                results.setdefault((name, connections), []).append(row)
                print(json.dumps({"round": number, "server": name, "connections": connections, **row}))
    return results


def paired(results: Results, name: str, reference: str, connections: int, key: str) -> tuple[float, float]:
    """The mean over rounds of ``name``'s ``key`` divided by ``reference``'s in the same round, and
    its standard error."""
    ratios = [
        ours[key] / theirs[key]
        for ours, theirs in zip(results[(name, connections)], results[(reference, connections)], strict=True)
    ]
    spread = statistics.stdev(ratios) / len(ratios) ** 0.5 if len(ratios) > 1 else float("nan")
    return statistics.mean(ratios), spread


def table(results: Results, names: Sequence[str], loads: Sequence[int]) -> str:
    """The medians as a Markdown table, with the paired ratios to the first server and each round's p50."""
    reference = names[0]
    lines = [
        f"| connections | server | p50 ms | p99 ms | requests/s | failed | p50 / {reference}'s | "
        f"requests/s / {reference}'s | p50 of each round |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for connections in loads:
        for name in names:
            rows = results[(name, connections)]
            medians = {key: statistics.median(r[key] for r in rows) for key in ("p50_ms", "p99_ms", "rps")}
            failed = sum(r["failed"] for r in rows)
            each = " / ".join(f"{r['p50_ms']:.2f}" for r in rows)
            ratios = [
                "1"
                if name == reference
                else "{:.3f} ± {:.3f}".format(*paired(results, name, reference, connections, key))
                for key in ("p50_ms", "rps")
            ]
            lines.append(
                f"| {connections} | {name} | {medians['p50_ms']:.2f} | {medians['p99_ms']:.2f} | "
                f"{medians['rps']:.0f} | {failed:.0f} | {ratios[0]} | {ratios[1]} | {each} |"
            )
    return "\n".join(lines)
