"""The service as a child process on loopback: a smoke test of a model package, and what the tests and
benchmarks start when they need the real server.

    from sentiment_api.serving.process import running_service

    with running_service("runs/package", settings={"max_batch_texts": 16}) as service:
        urllib.request.urlopen(f"{service.url}/predict", data=b'{"text": "I love my #iPad"}')

:class:`ServiceProcess` starts ``python -m sentiment_api serve`` with this interpreter (so in this
environment) on a free loopback port, the settings given as ``SENTIMENT_*`` variables on top of this
process's environment, and its output in a log file. :meth:`~ServiceProcess.wait_ready` waits until
``GET /readyz`` answers 200; :meth:`~ServiceProcess.stop` sends SIGTERM, and SIGKILL to the whole
process group (the workers too) past a timeout. A service that exits, or is not ready in time, raises
:class:`ServiceStartError` with the end of its log: a start never hangs and never fails silently.

The module launches the service; it uses only the standard library and :mod:`sentiment_api.core`
itself. Reading the process tree (workers, memory, open files) needs Linux's ``/proc``.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType

from sentiment_api.core.errors import SentimentError
from sentiment_api.core.settings import Settings, default_model_dir

LOOPBACK = "127.0.0.1"
READY_TIMEOUT_S = 120.0
"""How long :meth:`ServiceProcess.wait_ready` waits by default: loading and warming a model on a
busy machine takes seconds, several workers longer."""
STOP_TIMEOUT_S = 30.0
"""How long :meth:`ServiceProcess.stop` waits after SIGTERM before SIGKILL (the service drains first)."""
LOG_TAIL_CHARS = 4000
"""How much of the end of the log a :class:`ServiceStartError` carries."""
ARGUMENTS = frozenset({"model", "host", "port", "workers"})
"""Settings given as arguments of :class:`ServiceProcess` (and as options of ``serve``), not in
``settings``."""


class ServiceStartError(SentimentError):
    """The service exited before it was ready, or was not ready in time; the message ends with its log."""


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nothing listens on right now: the kernel's pick (another program may still take it
    before the service binds it, which then fails to start, saying so)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def setting_variables(settings: Mapping[str, object]) -> dict[str, str | None]:
    """``SENTIMENT_*`` environment variables for ``settings``, keyed by :class:`Settings` field names.

    ``True``/``False`` become ``true``/``false``, lists comma-separated values, secrets their value;
    ``None`` means "unset": the variable is removed from the child's environment, so the default
    applies. The values are checked by the service itself, which refuses a bad one at start (a
    :class:`ServiceStartError` here); an unknown name is a :class:`ValueError` now.
    """
    unknown = sorted(set(settings) - set(Settings.model_fields))
    if unknown:
        raise ValueError(f"no such setting: {', '.join(unknown)} (`sentiment-api serve --help` lists them)")
    given = sorted(ARGUMENTS & set(settings))
    if given:
        raise ValueError(f"give {', '.join(given)} as arguments of ServiceProcess, not in settings")
    return {
        f"SENTIMENT_{name.upper()}": None if value is None else _as_variable(value)
        for name, value in settings.items()
    }


def _as_variable(value: object) -> str:
    secret = getattr(value, "get_secret_value", None)
    if callable(secret):
        return str(secret())
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple | set | frozenset):
        return ",".join(_as_variable(item) for item in value)
    return str(value)


class ServiceProcess:
    """``python -m sentiment_api serve`` as a child process, started at construction.

    ``model`` is a package directory (default: the shipped model); ``settings`` maps
    :class:`Settings` field names to values (see :func:`setting_variables`) and ``env`` adds raw
    environment variables (``settings`` win); ``port`` defaults to a free one; the output (stdout
    and stderr) goes to ``log``, by default a temporary file removed by :meth:`stop` (kept when the
    start failed). ``options`` are more ``serve`` options. The child runs in its own session, so that
    :meth:`stop` can reach every worker, and never inherits a parent's Prometheus multiprocess
    directory.

    Use it as a context manager (it stops on exit), or call :meth:`wait_ready` and :meth:`stop`.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        settings: Mapping[str, object] | None = None,
        env: Mapping[str, str] | None = None,
        workers: int = 1,
        host: str = LOOPBACK,
        port: int | None = None,
        log: str | os.PathLike[str] | None = None,
        python: str | None = None,
        options: Sequence[str] = (),
    ) -> None:
        variables = setting_variables(settings or {})
        self.model = Path(model) if model is not None else default_model_dir()
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.workers = workers
        self.url = f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"
        self._own_log = log is None
        if log is None:
            handle, name = tempfile.mkstemp(prefix="sentiment-api-serve-", suffix=".log")
            os.close(handle)
            log = name
        self.log = Path(log)
        self._failed = False
        environment = dict(os.environ)
        environment.pop("PROMETHEUS_MULTIPROC_DIR", None)  # the parent's metrics are not the child's
        environment["PYTHONUNBUFFERED"] = "1"  # the log shows what happened up to a crash
        environment.update(env or {})
        for name, value in variables.items():
            if value is None:
                environment.pop(name, None)
            else:
                environment[name] = value
        self.command = [
            python or sys.executable, "-m", "sentiment_api", "serve", "--model", str(self.model),
            "--host", host, "--port", str(self.port), "--workers", str(workers), *options,
        ]  # fmt: skip
        self._output = self.log.open("wb")
        try:
            self.process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=self._output,
                stderr=subprocess.STDOUT,
                env=environment,
                start_new_session=True,
            )
        except BaseException:
            self._output.close()
            raise

    @property
    def pid(self) -> int:
        """The server process (with several workers, their supervisor)."""
        return self.process.pid

    def __enter__(self) -> ServiceProcess:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # --- start and stop

    def ready(self) -> bool:
        """Whether ``GET /readyz`` answers 200 now (on a new connection, so with several workers, from
        whichever the kernel picks)."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy
        try:
            with opener.open(f"{self.url}/readyz", timeout=2) as answer:
                return bool(answer.status == 200)
        except (OSError, http.client.HTTPException):  # refused, reset, timed out, 503 (HTTPError)
            return False

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> ServiceProcess:
        """Block until ``/readyz`` answers 200; with several workers, until it has answered 200 on
        four times as many fresh connections in a row as there are workers, so that most likely every
        worker has loaded its model. Raises :class:`ServiceStartError` (and stops the service) when it
        exits or is not ready within ``timeout_s``."""
        needed = 1 if self.workers == 1 else 4 * self.workers
        deadline = time.monotonic() + timeout_s
        streak = 0
        while True:
            code = self.process.poll()
            if code is not None:
                self._failed = True
                self.stop()
                raise ServiceStartError(
                    f"the service exited with code {code} before it was ready{self._tail()}"
                )
            if self.ready():
                streak += 1
                if streak >= needed:
                    return self
                continue
            streak = 0
            if time.monotonic() >= deadline:
                self._failed = True
                self.stop()
                raise ServiceStartError(
                    f"{self.url}/readyz did not answer 200 within {timeout_s:g} s{self._tail()}"
                )
            time.sleep(0.2)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, then SIGKILL to the whole process group if it has not exited within ``timeout_s``;
        its exit code (negative: the signal that ended it). Safe to call again."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.process.pid, signal.SIGKILL)  # not reaped yet: still its group
                self.process.wait()
        if not self._output.closed:
            self._output.close()
            if self._own_log and not self._failed:
                self.log.unlink(missing_ok=True)
        return self.process.returncode

    # --- what it wrote and holds

    def log_text(self) -> str:
        """What the service wrote so far (empty once a temporary log is removed)."""
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _tail(self) -> str:
        text = self.log_text()
        cut = text[-LOG_TAIL_CHARS:] if len(text) > LOG_TAIL_CHARS else text
        if not cut.strip():
            return f" (its log {self.log} is empty)"
        return f"; the end of its log ({self.log}):\n{cut}"

    def pids(self) -> list[int]:
        """The server process and every live process under it (workers, resource trackers)."""
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

    def worker_pids(self) -> set[int]:
        """The processes that serve: the workers started by the supervisor (itself, with one)."""
        workers = {pid for pid in self.pids()[1:] if b"spawn_main" in _read(f"/proc/{pid}/cmdline")}
        return workers or {self.process.pid}

    def rss_bytes(self) -> int:
        """Resident memory of the whole process tree."""
        return sum(_status_kib(pid, "VmRSS:") * 1024 for pid in self.pids())

    def open_files(self) -> tuple[int, int]:
        """Open file descriptors of the whole process tree: (sockets, everything else)."""
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


@contextlib.contextmanager
def running_service(
    model: str | os.PathLike[str] | None = None,
    *,
    settings: Mapping[str, object] | None = None,
    env: Mapping[str, str] | None = None,
    workers: int = 1,
    host: str = LOOPBACK,
    port: int | None = None,
    log: str | os.PathLike[str] | None = None,
    ready_timeout_s: float = READY_TIMEOUT_S,
    stop_timeout_s: float = STOP_TIMEOUT_S,
    python: str | None = None,
    options: Sequence[str] = (),
) -> Iterator[ServiceProcess]:
    """A :class:`ServiceProcess` once it is ready, stopped when the block ends, however it ends.
    Raises :class:`ServiceStartError`, with the end of the service's log, if it never gets ready."""
    service = ServiceProcess(
        model,
        settings=settings,
        env=env,
        workers=workers,
        host=host,
        port=port,
        log=log,
        python=python,
        options=options,
    )
    try:
        service.wait_ready(ready_timeout_s)
        yield service
    finally:
        service.stop(stop_timeout_s)


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError:
        return b""


def _status_kib(pid: int, key: str) -> int:
    for line in _read(f"/proc/{pid}/status").decode(errors="replace").splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return 0
