"""What soak.py and abuse.py share: the service started for a measurement, and wrk as its load.

The load is wrk (apt-get install -y wrk): C, cheap per request, so it stays out of the way of the
server it shares the machine with. It posts single tweets through ``post.lua`` beside this file,
drawn from the reference test tweets (deploy/loadtest/tweets.json) or from TWEETS=FILE (a JSON list
or one tweet per line), and the JSON line post.lua prints at the end is read back as a :class:`Run`.
The service is started by :mod:`sentiment_api.serving.process`, as any user of the package would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sentiment_api.serving.process import ServiceProcess, ServiceStartError, running_service

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
POST_LUA = HERE / "post.lua"
SHIPPED_MODEL = REPO / "src" / "sentiment_api" / "models" / "default"


def require_wrk() -> None:
    """Exit with the apt-get line when wrk is missing."""
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing: apt-get install -y wrk")


def tweets() -> list[str]:
    """The texts to send: the reference test tweets, or the file named by TWEETS."""
    path = Path(os.environ.get("TWEETS") or REPO / "deploy" / "loadtest" / "tweets.json")
    text = path.read_text(encoding="utf-8")
    texts = json.loads(text) if path.suffix == ".json" else text.splitlines()
    return [str(t) for t in texts if str(t).strip()]


def write_bodies(path: Path, texts: Sequence[str] | None = None) -> Path:
    """``texts`` (default :func:`tweets`) as POST /predict bodies, one JSON body a line, for post.lua."""
    lines = [json.dumps({"text": text}) for text in (tweets() if texts is None else texts)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@dataclass
class Run:
    """One wrk run, as post.lua reports it: answers by status, socket errors by kind, latency (ms,
    of every answer whatever its status)."""

    seconds: float
    requests: int
    statuses: dict[str, int]
    errors: dict[str, int]
    latency_ms: dict[str, float]

    def answered(self, status: str = "200") -> int:
        """Answers with ``status``."""
        return self.statuses.get(status, 0)

    def outcomes(self) -> dict[str, int]:
        """Every outcome that was not a 200: statuses, and socket errors ("read error", "timeout")."""
        found = {status: count for status, count in self.statuses.items() if status != "200"}
        for kind in ("connect", "read", "write", "timeout"):
            if self.errors.get(kind):
                found[kind if kind == "timeout" else f"{kind} error"] = self.errors[kind]
        return found

    def failed(self) -> int:
        """Requests not answered 200: other statuses and socket errors."""
        return sum(self.outcomes().values())

    def quantile_ms(self, name: str) -> float | None:
        """A latency percentile ("p50", "p99"), or None when nothing was answered."""
        return self.latency_ms[name] if self.requests else None


def command(
    url: str,
    bodies: Path,
    connections: int,
    seconds: float,
    threads: int = 1,
    options: Sequence[str] = (),
) -> list[str]:
    """The wrk command line: ``connections`` over ``threads`` for ``seconds`` (whole seconds, at
    least one: wrk takes no fractions), requests timing out after 60 s."""
    duration = max(1, round(seconds))
    threads = max(1, min(threads, connections))
    return [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "60s",
        "-s", str(POST_LUA), url, "--", str(bodies), *options,
    ]  # fmt: skip


def parse(output: str) -> Run:
    """The :class:`Run` in wrk's output (post.lua's last line)."""
    for line in reversed(output.splitlines()):
        if line.startswith('{"wrk":'):
            found = json.loads(line)["wrk"]
            return Run(
                seconds=found["seconds"],
                requests=found["requests"],
                statuses=found["statuses"],
                errors=found["errors"],
                latency_ms=found["latency_ms"],
            )
    raise RuntimeError(f"wrk printed no results:\n{output[-2000:]}")


def run(url: str, bodies: Path, connections: int, seconds: float, **options: object) -> Run:
    """One wrk run to its end (see :func:`command` for the options)."""
    process = start(url, bodies, connections, seconds, **options)
    return finish(process)


def start(
    url: str,
    bodies: Path,
    connections: int,
    seconds: float,
    threads: int = 1,
    options: Sequence[str] = (),
) -> subprocess.Popen[str]:
    """wrk started in the background: :func:`finish` waits for it and reads its results."""
    line = command(url, bodies, connections, seconds, threads, options)
    return subprocess.Popen(line, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen[str]) -> Run:
    """Wait for a wrk started by :func:`start`; its :class:`Run`."""
    output, _ = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"wrk failed with exit code {process.returncode}:\n{output[-2000:]}")
    return parse(output)


@contextmanager
def serving(
    out: Path, name: str, workers: int = 1, model: Path | None = None, **env: str
) -> Iterator[ServiceProcess]:
    """``model`` (default: MODEL, or the shipped model) served on a free loopback port until the
    block ends, however it ends, logging warnings only unless SENTIMENT_LOG_LEVEL says otherwise; its
    log in ``out/name.log``. Exits with the end of that log if it does not start."""
    model = model or Path(os.environ.get("MODEL") or SHIPPED_MODEL)
    environment = {"SENTIMENT_LOG_LEVEL": os.environ.get("SENTIMENT_LOG_LEVEL", "warning"), **env}
    try:
        with running_service(
            model, env=environment, workers=workers, log=out / f"{name}.log", ready_timeout_s=300
        ) as service:
            yield service
    except ServiceStartError as exc:
        sys.exit(str(exc))
