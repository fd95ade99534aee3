"""Run the app under uvicorn on asyncio's event loop: one process, or several, each on a socket of its
own on the port, all sharing one metrics directory and one file of per-client limits.

asyncio, not uvloop: under overload uvloop accepts one connection per turn of the loop, so new
connections wait in the kernel's queue for seconds; asyncio accepts every waiting one at each turn.
"""

from __future__ import annotations

import os
import resource
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sentiment_api.core.errors import ConfigError
from sentiment_api.core.extras import require
from sentiment_api.core.settings import ENVIRONMENT_ONLY, Settings
from sentiment_api.serving.limits import TokenBuckets
from sentiment_api.serving.observability import MULTIPROC_ENV, logging_config

if TYPE_CHECKING:
    from uvicorn import Config

FACTORY = "sentiment_api.serving.app:app_from_env"
STATE_DIR_ENV = "SENTIMENT_STATE_DIR"


def prepare_metrics_dir(settings: Settings) -> Path | None:
    """With several workers, point Prometheus at an empty shared directory (before any worker starts)."""
    if settings.workers == 1 and settings.metrics_dir is None:
        return None
    directory = settings.metrics_dir or Path(tempfile.mkdtemp(prefix="sentiment-metrics-"))
    if directory.exists():
        shutil.rmtree(directory)  # stale files from an earlier run would be counted again
    directory.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(directory)
    return directory


def prepare_state_dir(settings: Settings) -> Path | None:
    """With several workers, a fresh database for the limits they share (before any worker starts)."""
    if settings.workers == 1 and settings.state_dir is None:
        return None  # one process: its buckets live in memory
    directory = settings.state_dir or Path(tempfile.mkdtemp(prefix="sentiment-state-"))
    TokenBuckets.create(directory)
    os.environ[STATE_DIR_ENV] = str(directory)
    return directory


def export_settings(settings: Settings) -> None:
    """Put the explicitly set fields into ``SENTIMENT_*`` variables, which every worker reads.

    API and admin keys are left where they came from (the environment or a key file): copying them
    into the environment would widen who can read them.
    """
    for name in settings.model_fields_set - set(ENVIRONMENT_ONLY):
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, list):
            value = ",".join(str(item) for item in value)
        elif isinstance(value, bool):
            value = "true" if value else "false"
        os.environ[f"SENTIMENT_{name.upper()}"] = str(value)


def raise_open_files_limit(settings: Settings) -> None:
    """Every connection is a file descriptor: lift the soft limit to the hard one when the connection
    limit would not fit under it (systemd's default soft limit is 1024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = settings.max_connections + 256  # model, metrics and log files, sockets to clients going away
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


def serve(settings: Settings) -> None:
    """Serve until SIGTERM or Ctrl-C; each worker builds its app from the same ``SENTIMENT_*`` settings.

    A missing or broken model card, or a device a model cannot run on, is one error now, before
    any worker starts, rather than one per worker."""
    require("uvicorn")
    require("httptools")
    import uvicorn

    from sentiment_api.core.engine import device_for
    from sentiment_api.serving.connections import GuardedHttpProtocol

    for package in settings.packages.values():
        device_for(package, settings.device)
    export_settings(settings)
    raise_open_files_limit(settings)
    cleanup: list[Callable[[], None]] = []
    metrics_dir = prepare_metrics_dir(settings)
    state_dir = prepare_state_dir(settings)
    if metrics_dir is not None and settings.metrics_dir is None:
        cleanup.append(lambda: shutil.rmtree(metrics_dir, ignore_errors=True))
    if state_dir is not None and settings.state_dir is None:
        cleanup.append(lambda: shutil.rmtree(state_dir, ignore_errors=True))
    config = uvicorn.Config(
        FACTORY,
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        http=GuardedHttpProtocol,
        loop="asyncio",
        ws="none",  # no WebSocket routes: no upgrade handling to expose
        log_config=logging_config(settings.log_level),
        log_level=settings.log_level,
        access_log=False,  # our own JSON line per request replaces it
        server_header=False,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        limit_concurrency=settings.max_connections,
        timeout_keep_alive=settings.keep_alive_s,
        timeout_graceful_shutdown=max(1, round(settings.shutdown_grace_s)),
    )
    try:
        if settings.metrics_port is not None:
            _check_free(settings.host, settings.metrics_port, "metrics", "SENTIMENT_METRICS_PORT")
        if settings.admin_port is not None:
            _check_free(settings.host, settings.admin_port, "the admin API", "SENTIMENT_ADMIN_PORT")
        if settings.workers == 1:
            _serve_one(config, settings.admin_port)  # the app serves metrics_port itself (see app.py)
        else:
            if settings.metrics_port is not None:
                cleanup.append(_serve_merged_metrics(settings))
            _serve_many(config, settings)
    finally:
        for step in cleanup:
            step()


def _serve_one(config: Config, admin_port: int | None = None) -> None:
    """One process; with ``admin_port``, listening there too (the app tells the ports apart)."""
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE

    server = uvicorn.Server(config)
    if admin_port is None:
        server.run()
    else:
        sockets = [config.bind_socket(), _admin_socket(config, admin_port)]
        server.run(sockets=sockets)
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def _serve_many(config: Config, settings: Settings) -> None:
    from sentiment_api.serving.supervisor import SocketPerWorker, reuse_port_sockets

    sockets = reuse_port_sockets(settings.host, settings.port, settings.workers, config.backlog)
    SocketPerWorker(config, sockets).run()


def _admin_socket(config: Config, port: int) -> socket.socket:
    """A listening socket on the admin port, bound as uvicorn binds the public one."""
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((config.host, port))
    listener.listen(config.backlog)
    listener.set_inheritable(True)
    return listener


def _check_free(host: str, port: int, what: str, variable: str) -> None:
    """Fail now, in one line, if a side port is taken (rather than in a worker's start-up)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"cannot serve {what} on {host}:{port}: {exc.strerror} ({variable})") from None


def _serve_merged_metrics(settings: Settings) -> Callable[[], None]:
    """Serve every worker's metrics on ``metrics_port`` from this, the supervising process, which
    outlives any one worker."""
    from sentiment_api.serving.observability import merged_registry, start_metrics_server

    assert settings.metrics_port is not None
    return start_metrics_server(settings.host, settings.metrics_port, merged_registry())
