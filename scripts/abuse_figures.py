"""The figures behind BENCHMARKS.md's "Limits and abuse": how connections spread over workers, and
what overload, slow clients and a killed worker do to the service.

    python scripts/abuse_figures.py [spread] [overload] [slow] [kill] [--out runs/abuse/STAMP]

- spread:   2 workers, 32 connections opened at once (each sends one request and stays open),
            counted per worker process with `ss`; with one shared socket (SENTIMENT_REUSE_PORT=false,
            as before) and with one socket per worker (the default); --rounds times each.
- overload: the default settings, 512 connections posting back to back for --overload-s seconds:
            answers by status, p50/p99 of each, resident memory before, at peak and after, and how
            long until one client alone sees its usual latency again.
- slow:     100 idle connections, 100 trickling their headers, 100 never finishing their body, held
            open past the default read timeout (10 s); one ordinary client's latency before and
            during, and how many of the 300 the server closed, with which answer.
- kill:     2 workers under 32 connections; one worker killed with SIGKILL: requests failed and why,
            seconds until the replacement answers; then the same behind NGINX (two instances), if
            nginx is installed.

Writes abuse.json and abuse.md into --out. The load generator shares the machine with the server:
run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from http_load import REPO, Server, closed_loop, free_port, read_response, request_bytes, serving
from soak import cpu_model

TWEET = b'{"text": "Great line at the Apple pop-up store for the new iPad 2 #sxsw"}'


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


# --- spread


async def hold_32(port: int) -> list[asyncio.StreamWriter]:
    """32 connections opened at once, as a load generator (wrk, k6) opens them, each having sent and
    been answered one request, still open."""

    async def one() -> asyncio.StreamWriter:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request_bytes(b'{"text": "hello"}'))
        await read_response(reader)
        return writer

    return list(await asyncio.gather(*(one() for _ in range(32))))


def connections_per_process(port: int) -> Counter[int]:
    """Established connections to ``port`` by the process holding them, from `ss -tnp`."""
    out = subprocess.run(
        ["ss", "-Htnp", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return Counter(int(pid) for pid in re.findall(r"pid=(\d+)", out))


def spread(out: Path, rounds: int) -> dict[str, list[list[int]]]:
    if shutil.which("ss") is None:
        sys.exit("ss is missing: apt-get install -y iproute2")
    result: dict[str, list[list[int]]] = {}
    for name, reuse in (("one shared socket (before)", "false"), ("one socket per worker (after)", "true")):
        with serving(out, f"spread-{reuse}", "--workers", "2", SENTIMENT_REUSE_PORT=reuse) as server:
            splits = []
            for _ in range(rounds):

                async def one_round(server: Server = server) -> Counter[int]:
                    writers = await hold_32(server.port)
                    await asyncio.sleep(0.2)
                    counts = connections_per_process(server.port)
                    for writer in writers:
                        writer.close()
                    await asyncio.sleep(0.5)
                    return counts

                counts = asyncio.run(one_round())
                splits.append(sorted((counts.get(pid, 0) for pid in server.workers()), reverse=True))
            result[name] = splits
        print(f"{name}: {splits}", flush=True)
    return result


# --- overload


async def alone(port: int, count: int) -> float:
    """Median latency of ``count`` requests sent one after another on one connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    latencies = []
    for _ in range(count):
        started = time.monotonic()
        writer.write(
            request_bytes(b'{"text": "Great line at the Apple pop-up store for the new iPad 2 #sxsw"}')
        )
        await read_response(reader)
        latencies.append(time.monotonic() - started)
    writer.close()
    return sorted(latencies)[len(latencies) // 2]


def overload(out: Path, seconds: float, connections: int) -> dict[str, object]:
    with serving(out, "overload") as server:

        async def run() -> dict[str, object]:
            await alone(server.port, 20)
            usual = await alone(server.port, 50)
            rss_before = server.rss_bytes()
            peak = [rss_before]

            async def watch() -> None:
                while True:
                    peak[0] = max(peak[0], server.rss_bytes())
                    await asyncio.sleep(0.2)

            watcher = asyncio.ensure_future(watch())
            window = await closed_loop(server.port, connections, seconds)
            watcher.cancel()
            stopped = time.monotonic()
            recovered = None
            while time.monotonic() - stopped < 30:
                if await alone(server.port, 5) <= 2 * usual + 0.005:
                    recovered = time.monotonic() - stopped
                    break
            await asyncio.sleep(2)
            return {
                "connections": connections,
                "seconds": seconds,
                "usual_median_ms": ms(usual),
                "answers": window.statuses,
                "per_s": {status: round(count / seconds, 1) for status, count in window.statuses.items()},
                "p50_ms": {status: ms(window.quantile(0.5, status)) for status in window.latencies},
                "p99_ms": {status: ms(window.quantile(0.99, status)) for status in window.latencies},
                "rss_mib": {
                    "before": round(rss_before / 2**20, 1),
                    "peak": round(peak[0] / 2**20, 1),
                    "after": round(server.rss_bytes() / 2**20, 1),
                },
                "usual_latency_again_after_s": None if recovered is None else round(recovered, 2),
            }

        figures = asyncio.run(run())
    print(f"overload: {figures}", flush=True)
    return figures


# --- slow clients


def slow(out: Path, hold_s: float) -> dict[str, object]:
    with serving(out, "slow") as server:

        async def run() -> dict[str, object]:
            before = await alone(server.port, 30)
            opened = time.monotonic()
            idle = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(100)]
            trickling = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(100)]
            unfinished = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(100)]
            stop = asyncio.Event()

            async def trickle(writer: asyncio.StreamWriter) -> None:
                writer.write(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
                while not stop.is_set():
                    writer.write(b"X")
                    await asyncio.sleep(0.5)

            tricklers = [asyncio.ensure_future(trickle(writer)) for _, writer in trickling]
            for _, writer in unfinished:
                writer.write(request_bytes(b'{"text": "never finished"}')[:-5])
            await asyncio.sleep(1)
            during = await alone(server.port, 30)
            await asyncio.sleep(max(0.0, hold_s - (time.monotonic() - opened)))

            async def fate(reader: asyncio.StreamReader) -> str:
                """What the server did with a slow connection: its answer's status, a close, or nothing."""
                try:
                    data = await asyncio.wait_for(reader.read(65536), 0.5)
                except TimeoutError:
                    return "still open"
                except OSError:
                    return "reset"
                return (
                    data.split(b" ", 2)[1].decode()
                    if data.startswith(b"HTTP/")
                    else "closed without an answer"
                )

            fates = {
                kind: Counter([await fate(reader) for reader, _ in group])
                for kind, group in (
                    ("idle", idle),
                    ("trickling headers", trickling),
                    ("unfinished body", unfinished),
                )
            }
            stop.set()
            await asyncio.gather(*tricklers, return_exceptions=True)
            for _, writer in idle + trickling + unfinished:
                writer.close()
            return {
                "median_ms_alone": ms(before),
                "median_ms_beside_300_slow": ms(during),
                f"after_{hold_s:g}_s": {kind: dict(counts) for kind, counts in fates.items()},
            }

        figures = asyncio.run(run())
    print(f"slow clients: {figures}", flush=True)
    return figures


# --- a killed worker


def kill_under_load(target_port: int, server: Server, seconds: float) -> dict[str, object]:
    """32 connections to ``target_port`` for ``seconds``; one of ``server``'s workers killed a third
    of the way in."""

    async def run() -> dict[str, object]:
        load = asyncio.ensure_future(closed_loop_reconnecting(target_port, 32, seconds))
        await asyncio.sleep(seconds / 3)
        before = set(server.workers())
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        replaced = None
        while time.monotonic() - killed < 60:
            if len(set(server.workers()) - before) == 1:
                replaced = time.monotonic() - killed
                break
            await asyncio.sleep(0.1)
        outcomes = await load
        return {
            "answers": dict(outcomes),
            "failed": sum(count for status, count in outcomes.items() if status != "200"),
            "replacement_started_after_s": None if replaced is None else round(replaced, 2),
        }

    return asyncio.run(run())


async def closed_loop_reconnecting(port: int, connections: int, seconds: float) -> Counter[str]:
    """Like ``closed_loop``, but a client whose connection fails counts it and connects again."""
    outcomes: Counter[str] = Counter()
    end = time.monotonic() + seconds

    async def client() -> None:
        while time.monotonic() < end:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError as exc:
                outcomes[type(exc).__name__] += 1
                await asyncio.sleep(0.05)
                continue
            try:
                while time.monotonic() < end:
                    writer.write(request_bytes(b'{"text": "love the new ipad"}'))
                    outcomes[str(await asyncio.wait_for(read_response(reader), 60))] += 1
            except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                outcomes[type(exc).__name__] += 1
            finally:
                writer.close()

    await asyncio.gather(*(client() for _ in range(connections)))
    return outcomes


def nginx_in_front(out: Path, ports: list[int]) -> tuple[subprocess.Popen[bytes], int]:
    prefix = out / "nginx"
    prefix.mkdir(exist_ok=True)
    port = free_port()
    shipped = REPO / "deploy" / "nginx"
    config = (shipped / "nginx.conf").read_text().replace("listen 8080;", f"listen 127.0.0.1:{port};")
    (prefix / "nginx.conf").write_text(config.replace("rate=50r/s", "rate=100000r/s"))
    lines = [line for line in (shipped / "upstream.conf").read_text().splitlines() if "server " not in line]
    at = lines.index("    least_conn;") + 1
    lines[at:at] = [f"    server 127.0.0.1:{p} max_fails=1 fail_timeout=10s;" for p in ports]
    (prefix / "upstream.conf").write_text("\n".join(lines) + "\n")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    process = subprocess.Popen(
        [nginx, "-p", str(prefix), "-c", "nginx.conf", "-g", "daemon off;"],
        stdout=(prefix / "nginx.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    time.sleep(1)
    return process, port


def kill(out: Path, seconds: float) -> dict[str, object]:
    figures: dict[str, object] = {}
    with serving(out, "kill-direct", "--workers", "2") as server:
        figures["direct, 2 workers"] = kill_under_load(server.port, server, seconds)
    print(f"kill, direct: {figures['direct, 2 workers']}", flush=True)
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        figures["behind NGINX"] = "nginx is not installed (apt-get install -y nginx)"
        return figures
    with (
        serving(out, "kill-two-workers", "--workers", "2") as two,
        serving(out, "kill-other") as other,
    ):
        nginx, port = nginx_in_front(out, [two.port, other.port])
        try:
            figures["behind NGINX (2 instances)"] = kill_under_load(port, two, seconds)
        finally:
            nginx.send_signal(signal.SIGQUIT)
            nginx.wait(10)
    print(f"kill, behind NGINX: {figures['behind NGINX (2 instances)']}", flush=True)
    return figures


def markdown(results: dict[str, object]) -> str:
    lines = [f"# Limits and abuse figures ({results['cpu']}, {results['cores']} cores)", ""]
    for name, value in results.items():
        lines += [f"## {name}", "", "```json", json.dumps(value, indent=2), "```", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("figures", nargs="*", default=["spread", "overload", "slow", "kill"])
    parser.add_argument("--rounds", type=int, default=5, help="rounds of 32 connections for spread")
    parser.add_argument("--overload-s", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=512)
    parser.add_argument("--hold-s", type=float, default=12.0, help="how long the slow clients stay")
    parser.add_argument("--kill-s", type=float, default=12.0)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "abuse" / stamp)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    results: dict[str, object] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "load_average_before": os.getloadavg(),
    }
    if "spread" in args.figures:
        results["spread of 32 connections over 2 workers"] = spread(args.out, args.rounds)
    if "overload" in args.figures:
        results["overload"] = overload(args.out, args.overload_s, args.connections)
    if "slow" in args.figures:
        results["slow clients"] = slow(args.out, args.hold_s)
    if "kill" in args.figures:
        results["worker killed under load"] = kill(args.out, args.kill_s)
    results["load_average_after"] = os.getloadavg()
    (args.out / "abuse.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "abuse.md").write_text(markdown(results))
    print(f"wrote {args.out / 'abuse.json'} and abuse.md")


if __name__ == "__main__":
    main()
