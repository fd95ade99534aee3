"""What soak.py and abuse_figures.py share: start and stop the service, load it over raw HTTP/1.1,
and read a process tree's memory and open files.

The load is sent with asyncio streams rather than an HTTP library: at a few hundred requests a second
the client must stay cheap, because it shares the machine with the server it measures. Bodies are
single tweets drawn from the reference test tweets (deploy/loadtest/tweets.json) or from TWEETS.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("VENV", REPO / ".venv"))
SHIPPED_MODEL = REPO / "src" / "sentiment_api" / "models" / "default"
KEEP_IDLE_S = 4.0  # reuse a connection idle for less than this (the server keeps them 5 s)


def tweets() -> list[bytes]:
    """Request bodies: the reference test tweets, or the file named by TWEETS (JSON list or lines)."""
    path = Path(os.environ.get("TWEETS") or REPO / "deploy" / "loadtest" / "tweets.json")
    text = path.read_text(encoding="utf-8")
    texts = json.loads(text) if path.suffix == ".json" else text.splitlines()
    return [json.dumps({"text": str(t)}).encode() for t in texts if str(t).strip()]


def request_bytes(body: bytes, headers: dict[str, str] | None = None) -> bytes:
    """A POST /predict with ``body``."""
    lines = ["POST /predict HTTP/1.1", "Host: load", "Content-Type: application/json"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader) -> int:
    """Read one response (the service always sends Content-Length); its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    length = 0
    for line in lines:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    await reader.readexactly(length)
    return int(status_line.split()[1])


@dataclass
class Window:
    """What happened to the requests sent in one time window: outcomes (a status, or the error that
    stopped a request) and latencies by outcome."""

    start: float
    latencies: dict[str, list[float]] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)

    def add(self, outcome: str, latency: float | None) -> None:
        """Count one request; latencies only for answered ones."""
        self.statuses[outcome] = self.statuses.get(outcome, 0) + 1
        if latency is not None:
            self.latencies.setdefault(outcome, []).append(latency)

    def quantile(self, q: float, outcome: str = "200") -> float | None:
        """The ``q`` quantile of the latencies of ``outcome``, in seconds."""
        ordered = sorted(self.latencies.get(outcome, []))
        if not ordered:
            return None
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def closed_loop(
    port: int, connections: int, seconds: float, headers: dict[str, str] | None = None
) -> Window:
    """``connections`` clients posting back to back for ``seconds``; every outcome and latency."""
    bodies = tweets()
    window = Window(time.monotonic())
    end = window.start + seconds

    async def client() -> None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError as exc:
            window.add(type(exc).__name__, None)
            return
        try:
            while time.monotonic() < end:
                started = time.monotonic()
                writer.write(request_bytes(random.choice(bodies), headers))
                try:
                    status = await asyncio.wait_for(read_response(reader), 60)
                except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                    window.add(type(exc).__name__, None)
                    return
                window.add(str(status), time.monotonic() - started)
        finally:
            writer.close()

    await asyncio.gather(*(client() for _ in range(connections)))
    return window


async def open_loop(port: int, rate: float, seconds: float, window_s: float, on_window) -> None:
    """Requests at ``rate`` per second for ``seconds``, whatever the answers (an open loop, as real
    traffic is); latency counts from when a request was due, so a stall is not hidden by fewer
    requests. ``on_window(window)`` gets each finished window of ``window_s`` seconds."""
    bodies = tweets()
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
    start = time.monotonic()
    windows: dict[int, Window] = {}
    pending: set[asyncio.Task[None]] = set()

    def window_of(due: float) -> Window:
        index = int((due - start) // window_s)
        return windows.setdefault(index, Window(start + index * window_s))

    async def connection() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """An idle connection the server has not closed (as an HTTP client's pool does: the server
        closes connections idle for SENTIMENT_KEEP_ALIVE_S, 5 s), else a new one."""
        while idle:
            reader, writer, since = idle.pop()
            if not reader.at_eof() and time.monotonic() - since < KEEP_IDLE_S:
                return reader, writer
            writer.close()
        return await asyncio.open_connection("127.0.0.1", port)

    async def one(due: float) -> None:
        window = window_of(due)
        try:
            reader, writer = await connection()
        except OSError as exc:
            window.add(type(exc).__name__, None)
            return
        try:
            writer.write(request_bytes(random.choice(bodies)))
            status = await asyncio.wait_for(read_response(reader), 60)
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            writer.close()
            window.add(type(exc).__name__, None)
            return
        window.add(str(status), time.monotonic() - due)
        idle.append((reader, writer, time.monotonic()))

    sent = 0
    reported = 0
    while (due := start + sent / rate) < start + seconds:
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        task = asyncio.ensure_future(one(due))
        pending.add(task)
        task.add_done_callback(pending.discard)
        sent += 1
        # a window is done 90 s after it ends: its last requests have answered or timed out (60 s)
        finished = int((time.monotonic() - start - 90) // window_s)
        while reported < finished:
            on_window(windows.pop(reported, Window(start + reported * window_s)))
            reported += 1
    await asyncio.gather(*pending)
    for index in sorted(windows):
        on_window(windows.pop(index))
    for _, writer, _ in idle:
        writer.close()


# --- the service as a child process, and what it holds


@dataclass
class Server:
    """``sentiment-api serve`` started by :func:`serving`."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        """The server process and every process under it (workers, the resource tracker)."""
        found, todo = [], [self.process.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            for task in Path(f"/proc/{pid}/task").glob("*"):
                try:
                    todo += [int(child) for child in (task / "children").read_text().split()]
                except OSError:
                    continue
        return found

    def workers(self) -> list[int]:
        """The processes that serve: the children started by uvicorn (itself with one worker)."""
        workers = [pid for pid in self.pids()[1:] if b"spawn_main" in _read(f"/proc/{pid}/cmdline")]
        return workers or [self.process.pid]

    def rss_bytes(self) -> int:
        """Resident memory of the whole process tree."""
        return sum(_status_kib(pid, "VmRSS:") * 1024 for pid in self.pids())

    def open_files(self) -> tuple[int, int]:
        """Open file descriptors of the whole process tree: (sockets, everything else). Sockets follow
        the clients' connections; the rest (files, pipes, event fds) should not move at all."""
        sockets = others = 0
        for pid in self.pids():
            try:
                names = os.listdir(f"/proc/{pid}/fd")
            except OSError:
                continue
            for name in names:
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{name}")
                except OSError:
                    continue
                if target.startswith("socket:"):
                    sockets += 1
                else:
                    others += 1
        return sockets, others


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError:
        return b""


def _status_kib(pid: int, key: str) -> int:
    for line in _read(f"/proc/{pid}/status").decode().splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return 0


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def serving(out: Path, name: str, *args: str, **env: str) -> Iterator[Server]:
    """The shipped model (or MODEL) served on a free loopback port until the block ends, however it
    ends; its log in ``out/name.log``."""
    port = free_port()
    log = out / f"{name}.log"
    model = os.environ.get("MODEL", str(SHIPPED_MODEL))
    command = [str(VENV / "bin" / "sentiment-api"), "serve", "--model", model, "--port", str(port), *args]
    environment = {**os.environ, "SENTIMENT_LOG_LEVEL": "warning", **env}
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, env=environment, start_new_session=True
        )
        server = Server(process, port, log)
        try:
            wait_ready(server, 180)
            yield server
        finally:
            stop(server)


def wait_ready(server: Server, seconds: float) -> None:
    """Until every worker answers /readyz; exits with the log's tail if the server dies first."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            sys.exit(f"the server exited:\n{server.log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{server.url}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    time.sleep(3)  # the other workers warm up as well
                    return
        except OSError:
            pass
        time.sleep(0.5)
    sys.exit(f"{server.url} was not ready within {seconds} s")


def stop(server: Server) -> None:
    """SIGTERM, SIGKILL to the whole group if it lingers."""
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait(10)
