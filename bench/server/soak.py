"""Soak the service: measure its capacity, then hold it at a share of that for a long time, and check
that nothing fails, slows down or leaks.

    python bench/server/soak.py [--minutes 30] [--share 0.7] [--out runs/soak/STAMP]      (make soak)

1. Serve the shipped model (MODEL=dir for another) with the default settings (SENTIMENT_* apply) on a
   free loopback port.
2. Capacity: wrk, 32 connections posting back to back for --capacity-s seconds (after a warm-up);
   requests/s answered 200.
3. Soak: --share of that rate for --minutes, as one wrk run per --window-s window, each connection
   waiting between its requests (post.lua's delay), the wait set anew after every window so that the
   rate holds. wrk has no open loop: a stall slows its senders down rather than piling requests up,
   so a window's p99 is "with up to --connections requests waiting" (by default enough connections
   for each to send about 4 requests a second). Every window: requests/s, errors, p50/p99 latency,
   resident memory and open files of the server's processes, the machine's load.
4. Verdict, after --warmup-minutes: zero errors; p99 of the last --compare-minutes within 20 % of the
   first; resident memory grown by less than 5 %; open files other than sockets flat (within 2), and
   sockets back to their number before the soak once its connections are closed. Exit 1 if any fails.

Writes soak.csv (one row per window), soak.json (capacity, settings, verdict) and soak.png (requests/s,
p99 and memory over time) into --out. Needs wrk (apt-get install -y wrk). The load generator shares
the machine with the server: run it on a quiet machine, and read the capacity as "with this client on
the same cores". A short run (--minutes 1 --warmup-minutes 0.2 --capacity-s 5) checks the script.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from wrk_load import REPO, require_wrk, run, serving, write_bodies

from sentiment_api.core.devices import this_cpu
from sentiment_api.core.plots import pyplot, save_png
from sentiment_api.serving.process import ServiceProcess


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
    delay_ms: int  # each connection's mean wait between requests in this window


def measure_capacity(server: ServiceProcess, bodies: Path, seconds: float) -> float:
    """Requests/s answered 200 by 32 connections posting back to back, after a warm-up."""
    run(server.url, bodies, 32, min(10.0, seconds / 2))  # warm every path up
    measured = run(server.url, bodies, 32, seconds)
    return measured.answered() / measured.seconds


def soak(
    server: ServiceProcess, bodies: Path, rate: float, seconds: float, window_s: float, connections: int
) -> list[Row]:
    """``rate`` requests/s for ``seconds``, one wrk run per window; memory and files sampled as each
    window ends. After each window the connections' wait is set so that the next one hits ``rate``:
    what a connection spends per request beyond its wait (latency, wrk's own turn) is measured, and
    the wait is what is left of ``connections / rate``."""
    period_s = connections / rate  # each connection sends once per period
    delay_s = period_s
    rows: list[Row] = []
    windows = max(1, math.ceil(seconds / window_s))
    for index in range(windows):
        delay_ms = max(1, round(delay_s * 1000))
        window = run(server.url, bodies, connections, window_s, options=[f"delay={delay_ms}"])
        rss, (sockets, others) = server.rss_bytes() / 2**20, server.open_files()
        if window.requests:
            overhead_s = connections * window.seconds / window.requests - delay_ms / 1000
            wanted_s = min(2 * period_s, max(0.001, period_s - overhead_s))
            delay_s = (delay_s + wanted_s) / 2  # halfway: a noisy window moves the rate less
        rows.append(
            Row(
                seconds=(index + 1) * window_s,
                requests_per_s=window.answered() / window.seconds,
                errors=window.failed(),
                p50_ms=window.quantile_ms("p50"),
                p99_ms=window.quantile_ms("p99"),
                rss_mib=rss,
                sockets=sockets,
                other_files=others,
                outcomes=json.dumps(window.outcomes()),
                load_1m=os.getloadavg()[0],
                delay_ms=delay_ms,
            )
        )
        print(
            f"{rows[-1].seconds:6.0f} s: {rows[-1].requests_per_s:6.1f} requests/s, p99 "
            f"{rows[-1].p99_ms or 0:.1f} ms, {rows[-1].errors} errors, {rss:.0f} MiB",
            flush=True,
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
    plt = pyplot()
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
    save_png(figure, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the soak")
    parser.add_argument("--share", type=float, default=0.7, help="share of the measured capacity")
    parser.add_argument("--rate", type=float, help="requests/s to send, instead of measuring capacity")
    parser.add_argument("--capacity-s", type=float, default=30.0, help="seconds of the capacity run")
    parser.add_argument("--warmup-minutes", type=float, default=2.0)
    parser.add_argument("--compare-minutes", type=float, default=5.0, help="first and last stretch compared")
    parser.add_argument("--window-s", type=int, default=10, help="seconds of each window (one wrk run)")
    parser.add_argument("--connections", type=int, help="wrk's connections (default: rate / 4)")
    parser.add_argument("--workers", type=int, default=1)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "soak" / stamp)
    args = parser.parse_args()
    require_wrk()
    args.out.mkdir(parents=True, exist_ok=True)
    bodies = write_bodies(args.out / "bodies.txt")

    load_before = os.getloadavg()
    with serving(args.out, "server", workers=args.workers) as server:
        capacity = None if args.rate else measure_capacity(server, bodies, args.capacity_s)
        rate = args.rate or args.share * (capacity or 0.0)
        if rate <= 0:
            sys.exit(f"no rate to soak at: the capacity run got no 200 (see {server.log})")
        connections = args.connections or min(512, max(2, math.ceil(rate / 4)))
        measured = f"capacity {round(capacity)} requests/s; " if capacity else ""
        print(
            f"{measured}soaking at {rate:.0f} requests/s for {args.minutes:g} min, {connections} connections",
            flush=True,
        )
        time.sleep(2)  # the capacity run's connections are closed by now
        sockets_before = server.open_files()[0]
        rows = soak(server, bodies, rate, args.minutes * 60, args.window_s, connections)
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
        "connections": connections,
        "load_generator": "wrk, one run per window (bench/server/post.lua)",
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
