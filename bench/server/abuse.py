"""The figures behind BENCHMARKS.md's "Limits and abuse": how connections spread over workers, and
what overload, slow clients and a killed worker do to the service.

    python bench/server/abuse.py [spread] [overload] [slow] [kill] [--out runs/abuse/STAMP]
                                                                              (make abuse-figures)

- spread:   2 workers (one listening socket each), 32 connections opened at once by wrk (each sends
            one request and stays open), counted per worker process with `ss`; --rounds times.
- overload: the default settings, wrk with 512 connections posting back to back for --overload-s
            seconds: answers by status, p50/p99 latency (wrk's, of every answer; by answer, from 8
            more clients of our own beside wrk), resident memory before, at peak and after, and how
            long until one client alone sees its usual latency again.
- slow:     100 idle connections, 100 trickling their headers, 100 never finishing their body, held
            open past the default read timeout (10 s); one ordinary client's latency before and
            during, and how many of the 300 the server closed, with which answer.
- kill:     2 workers under wrk's 32 connections; one worker killed with SIGKILL: requests failed and
            why, seconds until the replacement answers; then the same behind NGINX (two instances),
            if nginx is installed.

The load is wrk (wrk_load.py, post.lua). What wrk cannot measure stays in Python here, small: "one
client alone" (requests one after another on one connection), latency by answer under overload (a
few clients beside wrk), and the slow clients, which hold raw sockets half-written on purpose.

Writes abuse.json and abuse.md into --out. Needs wrk and ss (apt-get install -y wrk iproute2; nginx
for the last figure). The load generator shares the machine with the server: run it on a quiet
machine. A short run checks the script: --rounds 1 --overload-s 3 --connections 64 --hold-s 3
--kill-s 6.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from wrk_load import REPO, Run, finish, require_wrk, serving, start, write_bodies

from sentiment_api.core.devices import this_cpu
from sentiment_api.serving.process import ServiceProcess, free_port

TWEET = {"text": "Great line at the Apple pop-up store for the new iPad 2 #sxsw"}


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def answers(load: Run) -> dict[str, int]:
    """Every outcome of a wrk run: answers by status, socket errors by kind."""
    return {status: count for status, count in load.statuses.items()} | load.outcomes()


# --- Python clients for what wrk cannot measure: one client alone, latency by answer


def alone(port: int, count: int) -> float:
    """Median latency of ``count`` requests sent one after another on one connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    latencies = []
    try:
        for _ in range(count):
            started = time.monotonic()
            connection.request("POST", "/predict", json.dumps(TWEET), {"Content-Type": "application/json"})
            connection.getresponse().read()
            latencies.append(time.monotonic() - started)
    finally:
        connection.close()
    return sorted(latencies)[len(latencies) // 2]


def sample_by_answer(port: int, stop: threading.Event, clients: int = 8) -> dict[str, list[float]]:
    """Latencies by answer (a status, or the error), of ``clients`` connections posting back to back
    until ``stop``: wrk times every request but not by status, so a few clients of our own sample
    the same load (the server treats every connection alike)."""
    found: dict[str, list[float]] = {}
    lock = threading.Lock()
    body = json.dumps(TWEET)

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while not stop.is_set():
            started = time.monotonic()
            try:
                connection.request("POST", "/predict", body, {"Content-Type": "application/json"})
                answer = connection.getresponse()
                answer.read()
                outcome = str(answer.status)
            except (OSError, http.client.HTTPException) as exc:
                outcome = type(exc).__name__
                connection.close()  # the next request connects again
            with lock:
                found.setdefault(outcome, []).append(time.monotonic() - started)
        connection.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return found


def quantile(values: list[float], q: float) -> float | None:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else None


# --- spread


def connections_per_process(port: int) -> Counter[int]:
    """Established connections to ``port`` by the process holding them, from `ss -tnp`."""
    out = subprocess.run(
        ["ss", "-Htnp", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return Counter(int(pid) for pid in re.findall(r"pid=(\d+)", out))


def hold_32(server: ServiceProcess, bodies: Path) -> list[int]:
    """wrk opens 32 connections at once, each sends one request and then waits; the connections each
    worker holds once all 32 are accepted, most first."""
    load = start(server.url, bodies, 32, 60, options=["delay=600000", "free=32"])
    try:
        workers = server.worker_pids()
        deadline = time.monotonic() + 30
        while True:
            counts = connections_per_process(server.port)
            if sum(counts.get(pid, 0) for pid in workers) >= 32 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        load.terminate()
        load.communicate()
    time.sleep(0.5)  # the connections are closed before the next round
    return sorted((counts.get(pid, 0) for pid in workers), reverse=True)


def spread(out: Path, bodies: Path, rounds: int) -> list[list[int]]:
    if shutil.which("ss") is None:
        sys.exit("ss is missing: apt-get install -y iproute2")
    with serving(out, "spread", workers=2) as server:
        splits = [hold_32(server, bodies) for _ in range(rounds)]
    print(f"spread of 32 connections over 2 workers: {splits}", flush=True)
    return splits


# --- overload


def overload(out: Path, bodies: Path, seconds: float, connections: int) -> dict[str, object]:
    with serving(out, "overload") as server:
        alone(server.port, 20)
        usual = alone(server.port, 50)
        rss_before = server.rss_bytes()
        peak = rss_before
        stop = threading.Event()
        sampled: dict[str, list[float]] = {}
        sampler = threading.Thread(target=lambda: sampled.update(sample_by_answer(server.port, stop)))
        load = start(server.url, bodies, connections, seconds, threads=2)
        sampler.start()
        while load.poll() is None:
            peak = max(peak, server.rss_bytes())
            time.sleep(0.2)
        stop.set()
        window = finish(load)
        sampler.join()
        stopped = time.monotonic()
        recovered = None
        while time.monotonic() - stopped < 30:
            if alone(server.port, 5) <= 2 * usual + 0.005:
                recovered = time.monotonic() - stopped
                break
        time.sleep(2)
        figures = {
            "connections": connections,
            "seconds": seconds,
            "usual_median_ms": ms(usual),
            "answers": answers(window),
            "per_s": {status: round(count / window.seconds, 1) for status, count in answers(window).items()},
            "p50_ms_all_answers": window.quantile_ms("p50"),
            "p99_ms_all_answers": window.quantile_ms("p99"),
            "sampled_by_answer": {status: len(values) for status, values in sampled.items()},
            "p50_ms": {status: ms(quantile(values, 0.5)) for status, values in sampled.items()},
            "p99_ms": {status: ms(quantile(values, 0.99)) for status, values in sampled.items()},
            "rss_mib": {
                "before": round(rss_before / 2**20, 1),
                "peak": round(peak / 2**20, 1),
                "after": round(server.rss_bytes() / 2**20, 1),
            },
            "usual_latency_again_after_s": None if recovered is None else round(recovered, 2),
        }
    print(f"overload: {figures}", flush=True)
    return figures


# --- slow clients: raw sockets, on purpose never finishing what they send


def unfinished_request(body: bytes) -> bytes:
    """A POST /predict whose last 5 bytes never come."""
    head = (
        f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
    )
    return (head + "\r\n\r\n").encode() + body[:-5]


def slow(out: Path, hold_s: float) -> dict[str, object]:
    with serving(out, "slow") as server:

        async def run_slow() -> dict[str, object]:
            before = alone(server.port, 30)
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
                writer.write(unfinished_request(b'{"text": "never finished"}'))
            await asyncio.sleep(1)
            during = await asyncio.to_thread(alone, server.port, 30)  # the loop keeps trickling
            await asyncio.sleep(max(0.0, hold_s - (time.monotonic() - opened)))

            async def fate(reader: asyncio.StreamReader) -> str:
                """What the server did with a slow connection: its answer's status, a close, or nothing."""
                try:
                    data = await asyncio.wait_for(reader.read(65536), 0.5)
                except TimeoutError:
                    return "still open"
                except OSError:
                    return "reset"
                if data.startswith(b"HTTP/"):
                    return data.split(b" ", 2)[1].decode()
                return "closed without an answer"

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

        figures = asyncio.run(run_slow())
    print(f"slow clients: {figures}", flush=True)
    return figures


# --- a killed worker


def kill_under_load(url: str, bodies: Path, server: ServiceProcess, seconds: float) -> dict[str, object]:
    """wrk's 32 connections to ``url`` for ``seconds`` (a connection that fails connects again); one
    of ``server``'s workers killed a third of the way in."""
    load = start(url, bodies, 32, seconds, threads=2)
    time.sleep(seconds / 3)
    before = server.worker_pids()
    os.kill(min(before), signal.SIGKILL)
    killed = time.monotonic()
    replaced = None
    while time.monotonic() - killed < 60:
        if len(server.worker_pids() - before) == 1:
            replaced = time.monotonic() - killed
            break
        time.sleep(0.1)
    outcomes = finish(load)
    return {
        "answers": answers(outcomes),
        "failed": outcomes.failed(),
        "replacement_started_after_s": None if replaced is None else round(replaced, 2),
    }


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


def kill(out: Path, bodies: Path, seconds: float) -> dict[str, object]:
    figures: dict[str, object] = {}
    with serving(out, "kill-direct", workers=2) as server:
        figures["direct, 2 workers"] = kill_under_load(server.url, bodies, server, seconds)
    print(f"kill, direct: {figures['direct, 2 workers']}", flush=True)
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        figures["behind NGINX"] = "nginx is not installed (apt-get install -y nginx)"
        return figures
    with serving(out, "kill-two-workers", workers=2) as two, serving(out, "kill-other") as other:
        nginx, port = nginx_in_front(out, [two.port, other.port])
        try:
            url = f"http://127.0.0.1:{port}"
            figures["behind NGINX (2 instances)"] = kill_under_load(url, bodies, two, seconds)
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
    parser.add_argument("--overload-s", type=int, default=10)
    parser.add_argument("--connections", type=int, default=512)
    parser.add_argument("--hold-s", type=float, default=12.0, help="how long the slow clients stay")
    parser.add_argument("--kill-s", type=int, default=12)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "abuse" / stamp)
    args = parser.parse_args()
    unknown = set(args.figures) - {"spread", "overload", "slow", "kill"}
    if unknown:
        parser.error(f"no such figure: {', '.join(sorted(unknown))}")
    require_wrk()
    args.out.mkdir(parents=True, exist_ok=True)
    bodies = write_bodies(args.out / "bodies.txt")

    results: dict[str, object] = {
        "cpu": this_cpu().model,
        "cores": os.cpu_count(),
        "load_average_before": os.getloadavg(),
        "load_generator": "wrk (bench/server/post.lua)",
    }
    if "spread" in args.figures:
        results["spread of 32 connections over 2 workers"] = spread(args.out, bodies, args.rounds)
    if "overload" in args.figures:
        results["overload"] = overload(args.out, bodies, args.overload_s, args.connections)
    if "slow" in args.figures:
        results["slow clients"] = slow(args.out, args.hold_s)
    if "kill" in args.figures:
        results["worker killed under load"] = kill(args.out, bodies, args.kill_s)
    results["load_average_after"] = os.getloadavg()
    (args.out / "abuse.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "abuse.md").write_text(markdown(results))
    print(f"wrote {args.out / 'abuse.json'} and abuse.md")


if __name__ == "__main__":
    main()
