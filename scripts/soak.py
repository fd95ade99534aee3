"""Soak the service: measure its capacity, then hold it at a share of that for a long time, and check
that nothing fails, slows down or leaks.

    python scripts/soak.py [--minutes 30] [--share 0.7] [--out runs/soak/STAMP]

1. Serve the shipped model (MODEL=dir for another) with the default settings (SENTIMENT_* apply) on a
   free loopback port.
2. Capacity: 32 connections posting back to back for --capacity-s seconds (after a warm-up);
   requests/s answered 200.
3. Soak: requests at --share of that rate, sent on time whatever the answers (an open loop), for
   --minutes; every --window-s seconds: requests/s, errors, p50/p99 latency (from when each request
   was due), resident memory and open files of the server's processes.
4. Verdict, after --warmup-minutes: zero errors; p99 of the last --compare-minutes within 20 % of the
   first; resident memory grown by less than 5 %; open files other than sockets flat (within 2), and
   sockets back to their number before the soak once its connections are closed. Exit 1 if any fails.

Writes soak.csv (one row per window), soak.json (capacity, settings, verdict) and soak.png (requests/s,
p99 and memory over time) into --out. The load generator shares the machine with the server: run it
on a quiet machine, and read the capacity as "with this client on the same cores".
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from http_load import REPO, Server, Window, closed_loop, open_loop, serving

from sentiment_api.devices import this_cpu


@dataclass
class Row:
    """One window of the soak."""

    seconds: float
    requests_per_s: float
    errors: int
    p50_ms: float | None
    p99_ms: float | None
    rss_mib: float
    sockets: int
    other_files: int
    outcomes: str  # what the requests that were not answered 200 got instead
    load_1m: float  # the machine's load average: other work on it shows here


def measure_capacity(server: Server, seconds: float) -> float:
    asyncio.run(closed_loop(server.port, 32, min(10.0, seconds / 2)))  # warm every path up
    window = asyncio.run(closed_loop(server.port, 32, seconds))
    return window.statuses.get("200", 0) / seconds


def soak(server: Server, rate: float, seconds: float, window_s: float) -> list[Row]:
    """Open-loop load at ``rate``; one row per window, memory and files sampled as each one ends."""
    samples: dict[int, tuple[float, tuple[int, int], float]] = {}
    windows: dict[int, Window] = {}

    async def sample(start: float) -> None:
        index = 0
        while True:
            await asyncio.sleep(max(0.0, start + (index + 1) * window_s - time.monotonic()))
            samples[index] = (server.rss_bytes() / 2**20, server.open_files(), os.getloadavg()[0])
            index += 1

    async def main() -> None:
        start = time.monotonic()
        sampler = asyncio.ensure_future(sample(start))

        def done(window: Window) -> None:
            windows[round((window.start - start) / window_s)] = window

        await open_loop(server.port, rate, seconds, window_s, done)
        sampler.cancel()

    asyncio.run(main())
    rows = []
    for index in sorted(windows):
        window = windows[index]
        if index not in samples:
            continue
        answered = window.statuses.get("200", 0)
        p50, p99 = window.quantile(0.5), window.quantile(0.99)
        rows.append(
            Row(
                seconds=(index + 1) * window_s,
                requests_per_s=answered / window_s,
                errors=sum(count for status, count in window.statuses.items() if status != "200"),
                p50_ms=None if p50 is None else p50 * 1000,
                p99_ms=None if p99 is None else p99 * 1000,
                rss_mib=samples[index][0],
                sockets=samples[index][1][0],
                other_files=samples[index][1][1],
                outcomes=json.dumps({k: v for k, v in window.statuses.items() if k != "200"}),
                load_1m=samples[index][2],
            )
        )
    return rows


def verdict(
    rows: list[Row], warmup_s: float, compare_s: float, sockets: tuple[int, int]
) -> dict[str, object]:
    """The soak's four checks on the windows after the warm-up."""
    settled = [row for row in rows if row.seconds > warmup_s]
    if len(settled) < 2:
        return {"passed": False, "reason": "too short: no windows after the warm-up"}
    first = [row for row in settled if row.seconds <= settled[0].seconds - 1e-9 + compare_s]
    last = [row for row in settled if row.seconds > settled[-1].seconds - compare_s]
    p99_first = statistics.median(row.p99_ms for row in first if row.p99_ms is not None)
    p99_last = statistics.median(row.p99_ms for row in last if row.p99_ms is not None)
    rss_start, rss_end = settled[0].rss_mib, max(row.rss_mib for row in last)
    files = [row.other_files for row in settled]
    checks = {
        "errors": sum(row.errors for row in rows),
        "p99_first_ms": round(p99_first, 1),
        "p99_last_ms": round(p99_last, 1),
        "p99_change": round(p99_last / p99_first - 1, 3),
        "rss_start_mib": round(rss_start, 1),
        "rss_end_mib": round(rss_end, 1),
        "rss_growth": round(rss_end / rss_start - 1, 4),
        "other_files_min": min(files),
        "other_files_max": max(files),
        "sockets_before": sockets[0],
        "sockets_after": sockets[1],
        "not_200": dict(sum((Counter(json.loads(row.outcomes)) for row in rows), Counter())),
    }
    passed = {
        "zero errors": checks["errors"] == 0,
        "p99 stable (last within 20 % of first)": abs(p99_last / p99_first - 1) <= 0.20,
        "memory growth under 5 %": rss_end / rss_start - 1 < 0.05,
        "open files flat (within 2, sockets aside)": max(files) - min(files) <= 2,
        "no socket left open": sockets[1] <= sockets[0],
    }
    return {**checks, "checks": passed, "passed": all(passed.values())}


def plot(rows: list[Row], warmup_s: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [row.seconds / 60 for row in rows]
    figure, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    series = [
        ([row.requests_per_s for row in rows], "requests/s (200)"),
        ([row.p99_ms for row in rows], "p99 latency (ms)"),
        ([row.rss_mib for row in rows], "resident memory (MiB)"),
    ]
    for axis, (values, label) in zip(axes, series, strict=True):
        axis.plot(minutes, values, marker=".", linewidth=1)
        axis.set_ylabel(label)
        axis.axvline(warmup_s / 60, color="grey", linestyle="--", linewidth=0.8)
        axis.grid(alpha=0.3)
    axes[2].set_xlabel("minutes (dashed: end of warm-up)")
    axes[0].set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the soak")
    parser.add_argument("--share", type=float, default=0.7, help="share of the measured capacity")
    parser.add_argument("--rate", type=float, help="requests/s to send, instead of measuring capacity")
    parser.add_argument("--capacity-s", type=float, default=30.0, help="seconds of the capacity run")
    parser.add_argument("--warmup-minutes", type=float, default=2.0)
    parser.add_argument("--compare-minutes", type=float, default=5.0, help="first and last stretch compared")
    parser.add_argument("--window-s", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=1)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "soak" / stamp)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    load_before = os.getloadavg()
    with serving(args.out, "server", "--workers", str(args.workers)) as server:
        capacity = None if args.rate else measure_capacity(server, args.capacity_s)
        rate = args.rate or args.share * (capacity or 0.0)
        measured = f"capacity {round(capacity)} requests/s; " if capacity else ""
        print(f"{measured}soaking at {rate:.0f} requests/s for {args.minutes:g} min", flush=True)
        time.sleep(2)  # the capacity run's connections are closed by now
        sockets_before = server.open_files()[0]
        rows = soak(server, rate, args.minutes * 60, args.window_s)
        time.sleep(2)
        sockets_after = server.open_files()[0]
    warmup_s = args.warmup_minutes * 60
    compare_s = min(args.compare_minutes * 60, max(args.window_s, (args.minutes * 60 - warmup_s) / 3))
    result = verdict(rows, warmup_s, compare_s, (sockets_before, sockets_after))

    with (args.out / "soak.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(Row.__dataclass_fields__)
        writer.writerows([list(vars(row).values()) for row in rows])
    summary = {
        "cpu": this_cpu().model,
        "cores": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "capacity_requests_per_s": capacity,
        "rate_requests_per_s": rate,
        "minutes": args.minutes,
        "warmup_minutes": args.warmup_minutes,
        "compared_minutes": compare_s / 60,
        "workers": args.workers,
        "settings": {name: value for name, value in os.environ.items() if name.startswith("SENTIMENT_")},
        "verdict": result,
    }
    (args.out / "soak.json").write_text(json.dumps(summary, indent=2) + "\n")
    title = (
        f"soak: {rate:.0f} requests/s for {args.minutes:g} min ({this_cpu().model}, {os.cpu_count()} cores)"
    )
    plot(rows, warmup_s, args.out / "soak.png", title)
    print(json.dumps(result, indent=2))
    print(f"wrote {args.out / 'soak.csv'}, soak.json and soak.png")
    sys.exit(0 if result["passed"] else 1)


if __name__ == "__main__":
    main()
