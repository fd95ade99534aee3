"""Where the CPU goes while a load generator runs: the server's event loop, its other threads, the client.

    python scripts/cpu_split.py SERVER_PID -- taskset -c 1 wrk -t1 -c32 -d20s -s bodies.lua URL

Runs the command after the ``--`` (a wrk run), passing its output through, and reads the CPU time
(user + system, from ``/proc``) that the server's process tree spent during it: the main threads
(where uvicorn's event loop runs: HTTP, JSON, validation, tokenising, logging, metrics) apart from
every other thread (the inference streams and ONNX Runtime's pools), and the client's own CPU time.
Prints each per request and as a share of the machine's cores, and the throughput the engine would
have had with every core to itself (``requests/s × cores / inference cores``): on a machine where the
HTTP layer and the client share the engine's cores, that is what the server can reach at most.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _ticks(stat_file: Path) -> int:
    """utime + stime of one /proc stat file (the command name may hold spaces: split after ')')."""
    fields = stat_file.read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _tree(root: int) -> list[int]:
    """``root`` and its descendants."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    found, queue = [], [root]
    while queue:
        pid = queue.pop()
        found.append(pid)
        queue.extend(parents.get(pid, []))
    return found


def snapshot(root: int) -> tuple[int, int]:
    """(main-thread ticks, all-thread ticks) over the process tree of ``root``."""
    main = total = 0
    for pid in _tree(root):
        try:
            main += _ticks(Path(f"/proc/{pid}/task/{pid}/stat"))
            total += _ticks(Path(f"/proc/{pid}/stat"))
        except OSError:
            continue
    return main, total


def main() -> None:
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.exit(__doc__)
    root, command = int(sys.argv[1]), sys.argv[3:]
    before, started = snapshot(root), time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    after, seconds = snapshot(root), time.perf_counter() - started
    client = resource.getrusage(resource.RUSAGE_CHILDREN)
    sys.stdout.write(result.stdout)
    match = re.search(r"(\d+) requests in", result.stdout)
    if not match:
        sys.exit("no 'N requests in' line in the command's output")
    requests = int(match.group(1))
    cores = os.cpu_count() or 1
    loop = (after[0] - before[0]) / TICK
    engine = (after[1] - before[1]) / TICK - loop
    client_seconds = client.ru_utime + client.ru_stime
    rate = requests / seconds
    print(f"CPU split over {seconds:.1f} s, {requests} requests ({rate:.0f}/s), {cores} cores:")
    for name, spent in (("event loop (main threads)", loop), ("other server threads", engine),
                        ("client", client_seconds)):  # fmt: skip
        share = spent / seconds / cores
        print(f"  {name}: {spent / requests * 1e6:.0f} µs per request, {share:.0%} of the cores")
    idle = max(0.0, 1 - (loop + engine + client_seconds) / seconds / cores)
    print(f"  idle: {idle:.0%} of the cores")
    if engine:
        print(f"  the engine alone on every core: about {rate * cores * seconds / engine:.0f} requests/s")


if __name__ == "__main__":
    main()
