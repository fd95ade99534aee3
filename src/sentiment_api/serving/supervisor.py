"""Several worker processes, each with its own listening socket on the same port (``SO_REUSEPORT``).

uvicorn's workers accept from one shared socket, and whichever wakes first takes the connection: a
persistent client's connections pile up on one worker (32 connections split 28 / 4 in one run, see
BENCHMARKS.md). With one ``SO_REUSEPORT`` socket per worker, the kernel hashes each new connection
to one of them, so they spread evenly. The sockets are bound here, in the supervising process, and
stay open when a worker dies: connections the kernel sends to a dead worker's socket wait in its
backlog for the replacement, which gets the same socket, instead of being refused.

:class:`SocketPerWorker` is uvicorn's own supervisor (health pings, restarting a worker that dies,
SIGHUP restarts, SIGTERM shutdown) with worker ``i`` always given socket ``i``.
"""

from __future__ import annotations

import logging
import socket

from uvicorn.config import STARTUP_FAILURE, Config
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from sentiment_api.core.errors import ConfigError

log = logging.getLogger("uvicorn.error")


def reuse_port_sockets(host: str, port: int, count: int, backlog: int) -> list[socket.socket]:
    """``count`` listening sockets bound to the same address with ``SO_REUSEPORT``.

    The kernel lets only sockets of the same user that all set ``SO_REUSEPORT`` share a port: another
    program on it is an error here, but a second instance of this service, started the same way on
    the same port, would join the group and take a share of the connections.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets = []
    for _ in range(count):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror} (SENTIMENT_PORT)") from None
        # listen now, not in the worker: the kernel sends connections only to listening sockets, and a
        # socket must be in the group before the first connection arrives to get its share
        sock.listen(backlog)
        sock.set_inheritable(True)
        sockets.append(sock)
    return sockets


class SocketPerWorker(Multiprocess):
    """uvicorn's ``Multiprocess`` supervisor, giving worker ``i`` only ``sockets[i]``."""

    def __init__(self, config: Config, sockets: list[socket.socket]) -> None:
        super().__init__(config, sockets)
        if len(sockets) != self.processes_num:
            raise ValueError(f"{self.processes_num} workers need as many sockets, not {len(sockets)}")

    def _spawn(self, index: int) -> Process:
        process = Process(self.config, [self.sockets[index]])
        process.start()
        return process

    def init_processes(self) -> None:
        self.processes = [self._spawn(index) for index in range(self.processes_num)]

    def keep_subprocess_alive(self) -> None:
        """As uvicorn's: a worker that died or stopped answering pings is replaced, on its socket. The
        dead are replaced first: a ping to a live worker under load can take seconds, and the dead
        one's connections wait in its socket's backlog meanwhile."""
        if self.should_exit.is_set():
            return
        for index, process in enumerate(self.processes):
            if not process.process.is_alive() and not self._replace(index, process):
                return
        for index, process in enumerate(self.processes):
            alive = process.is_alive(timeout=self.config.timeout_worker_healthcheck)
            if not alive and not self._replace(index, process):
                return

    def _replace(self, index: int, process: Process) -> bool:
        """Kill (if hung) and replace worker ``index``; false when the supervisor must stop instead."""
        process.kill()
        process.join()
        if process.exitcode == STARTUP_FAILURE:
            log.error(f"Child process [{process.pid}] failed to start, stopping the parent process.")
            self.should_exit.set()
            return False
        if self.should_exit.is_set():
            return False
        log.info(f"Child process [{process.pid}] died")
        self.processes[index] = self._spawn(index)
        return True

    def restart_all(self) -> None:
        """SIGHUP: replace each worker in turn, bringing the new one up before the old one goes."""
        for index, old in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            new = self._spawn(index)
            if not new.wait_until_ready(self.config.timeout_worker_healthcheck, self.should_exit):
                new.kill()
                new.join()
                if not self.should_exit.is_set():
                    log.error(f"New child process [{new.pid}] was not ready in time; keeping [{old.pid}].")
                return
            old.terminate()
            old.join()
            self.processes[index] = new

    def handle_ttin(self) -> None:
        log.warning("SIGTTIN ignored: the number of workers is fixed when each has its own socket")

    def handle_ttou(self) -> None:
        log.warning("SIGTTOU ignored: the number of workers is fixed when each has its own socket")
