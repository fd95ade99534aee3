"""Time ``sentiment-api predict`` on a file and watch its memory: the batch figures of BENCHMARKS.md.

Usage: python bench/batch/batch_predict.py INPUT OUT [--model DIR] [--max-rss-mb 1024]
           [-- any other predict options, e.g. --ray --ray-actors 2]

Runs the real command from scratch (OUT is deleted first, so nothing is resumed) and prints one
Markdown row: rows, wall seconds, tweets per second, the predict process's peak RSS (its high-water
mark, read from /proc every 0.2 s) and the peak of the sum of RSS over its whole process tree (with
--ray: the raylet, the actors and the object store, whose shared pages count more than once).
The CPU model and the load average before and after say how quiet the machine was. Exits 1 if the
predict process's peak RSS passes --max-rss-mb.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from sentiment_api.core.devices import this_cpu


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """A /proc status field of one process in KiB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def descendants(root: int) -> set[int]:
    """``root`` and every process below it."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
            parents[int(entry.name)] = int(stat.rpartition(")")[2].split()[1])
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier.extend(children)
    return tree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--max-rss-mb", type=float, default=1024.0)
    args, extra = parser.parse_known_args()
    extra = [arg for arg in extra if arg != "--"]

    shutil.rmtree(args.out, ignore_errors=True)
    command = [sys.executable, "-m", "sentiment_api", "predict"]
    command += [str(args.model)] if args.model else []
    command += ["--input", str(args.input), "--output", str(args.out), "--no-progress", *extra]
    load_before = os.getloadavg()
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    peak_kib = tree_kib = 0
    while process.poll() is None:
        peak_kib = max(peak_kib, rss_kib(process.pid, "VmHWM"))
        tree_kib = max(tree_kib, sum(rss_kib(pid) for pid in descendants(process.pid)))
        time.sleep(0.2)
    seconds = time.perf_counter() - started
    # the kernel's own high-water mark of the (only) waited-for child, in KiB on Linux
    peak_kib = max(peak_kib, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    output = process.stdout.read() if process.stdout else ""
    if process.returncode != 0:
        sys.exit(f"predict failed with exit code {process.returncode}")
    report = json.loads((args.out / "_report.json").read_text()) if args.out.is_dir() else {}
    rows = report.get("rows") or int(output.split()[1])
    print(output.strip())
    load = f"load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after"
    print(f"CPU: {this_cpu().model}, {os.cpu_count()} cores; {load}")
    print(
        "| rows | wall s | tweets/s | peak RSS of predict, MB | peak RSS of its process tree, MB | options |"
    )
    print(
        f"| {rows:,} | {seconds:.1f} | {rows / seconds:.0f} | {peak_kib / 1024:.0f} | {tree_kib / 1024:.0f} "
        f"| {' '.join(extra) or '(defaults)'} |"
    )
    if peak_kib / 1024 > args.max_rss_mb:
        sys.exit(f"peak RSS {peak_kib / 1024:.0f} MB is over {args.max_rss_mb:.0f} MB")


if __name__ == "__main__":
    main()
