"""The shadow's process: loads a package, answers requests over its socket with the comparison, and
says why when it cannot."""

from __future__ import annotations

import pickle
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sentiment_api.serving.shadow_protocol import MAX_MESSAGE, compare_rows


def test_rows_are_compared_by_label_name_whatever_the_column_order() -> None:
    live = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    shadow = np.array([[0.2, 0.8, 0.0], [0.5, 0.1, 0.4]])  # columns b, a, d
    rows = compare_rows(live, ["a", "b", "c"], shadow, ["b", "a", "d"])

    assert [row[:3] for row in rows] == [(True, "a", "a"), (False, "c", "b")]
    # row 1: a 0.7 vs 0.8, b 0.2 vs 0.2, c 0.1 vs (none) 0, d (none) 0 vs 0 -> 0.1
    # row 2: b 0.3 vs 0.5, c 0.6 vs 0 -> 0.6
    assert [round(row[3], 6) for row in rows] == [0.1, 0.6]


class Worker:
    """The worker started as the service starts it, with the service's end of the socket."""

    def __init__(self, package: Path) -> None:
        self.channel, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            command = [
                sys.executable, "-m", "sentiment_api.serving.shadow_worker",
                "--socket-fd", str(theirs.fileno()), "--package", str(package),
            ]  # fmt: skip
            self.process = subprocess.Popen(command, pass_fds=(theirs.fileno(),))
        self.channel.settimeout(120)

    def receive(self) -> tuple:
        return pickle.loads(self.channel.recv(MAX_MESSAGE))

    def send(self, message: object) -> None:
        self.channel.send(pickle.dumps(message))


def test_the_worker_answers_with_the_comparison_survives_a_bad_request_and_exits_when_closed(
    onnx_package: Path,
) -> None:
    from sentiment_api.core.engine import Classifier

    classifier = Classifier.load(onnx_package, 1)
    texts = ["love the ipad", "the battery died again"]
    live = classifier.probabilities(classifier.normalise(texts))[0]
    worker = Worker(onnx_package)
    try:
        kind, version, labels = worker.receive()
        worker.send((7, texts, live, classifier.labels))
        compared = worker.receive()
        worker.send((8, [None], live[:1], classifier.labels))  # not a text: that request fails
        failed = worker.receive()
        worker.send((9, texts, live, classifier.labels))
        again = worker.receive()
    finally:
        worker.channel.close()
    code = worker.process.wait(60)

    assert kind == "ready" and labels == classifier.labels and version.startswith(classifier.card.name)
    assert compared[:2] == ("compared", 7) and len(compared[2]) == 2
    assert all(agreed for agreed, *_ in compared[2])  # the same package: the same labels
    assert max(diff for *_, diff in compared[2]) < 1e-5
    assert failed[:2] == ("failed", 8) and failed[2]
    assert again[:2] == ("compared", 9)
    assert code == 0


def test_a_package_the_worker_cannot_load_is_one_line_and_exit_code_1(tmp_path: Path) -> None:
    worker = Worker(tmp_path / "missing")
    try:
        kind, number, reason = worker.receive()
    finally:
        worker.channel.close()

    assert (kind, number) == ("failed", None) and "\n" not in reason and reason
    assert worker.process.wait(60) == 1


def test_a_request_larger_than_one_message_is_dropped_and_never_sent(onnx_package: Path) -> None:
    from types import SimpleNamespace

    from prometheus_client import CollectorRegistry

    from sentiment_api.serving.observability import Metrics
    from sentiment_api.serving.served_model import State
    from sentiment_api.serving.shadow import Shadow

    shadow = Shadow("brand", onnx_package, 1.0, Metrics(CollectorRegistry()))
    shadow.state = State.READY
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, theirs:
        ours.setblocking(False)
        theirs.setblocking(False)
        shadow._channel = ours
        live = SimpleNamespace(probabilities=np.zeros((1, 3), dtype=np.float32))
        shadow.offer(["x" * (MAX_MESSAGE + 1)], live, ["a", "b", "c"], 0)  # type: ignore[arg-type]
        with pytest.raises(BlockingIOError):
            theirs.recv(MAX_MESSAGE)  # nothing was sent
        shadow.offer(["a tweet"], live, ["a", "b", "c"], 0)  # type: ignore[arg-type]
        sent = pickle.loads(theirs.recv(MAX_MESSAGE))
        shadow._channel = None

    assert shadow.stats.dropped == 1
    assert sent[1] == ["a tweet"] and sent[3] == ["a", "b", "c"]


PARENT = """
import os, pickle, socket, subprocess, sys
ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
command = [sys.executable, "-m", "sentiment_api.serving.shadow_worker", "--socket-fd", str(theirs.fileno()),
           "--package", sys.argv[1], "--parent", str(os.getpid())]
worker = subprocess.Popen(command, pass_fds=(theirs.fileno(),))
theirs.close()
print(worker.pid, pickle.loads(ours.recv(1 << 22))[0], flush=True)
sys.stdin.read()
"""


def process_state(pid: int) -> str:
    """R, S, T (stopped), Z (ended, not yet reaped) or "gone"."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_paused_worker_ends_when_the_service_that_started_it_is_killed(onnx_package: Path) -> None:
    import os
    import signal

    from live_server import wait_until

    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(onnx_package)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None
    pid_text, kind = parent.stdout.readline().split()
    pid = int(pid_text)
    try:
        os.kill(pid, signal.SIGSTOP)  # paused, as while live requests are under way
        wait_until(lambda: process_state(pid) == "T", timeout=10)
        parent.kill()  # the service goes without closing anything
        parent.wait(10)
        wait_until(lambda: process_state(pid) in ("Z", "gone"), timeout=10)
    finally:
        if process_state(pid) not in ("Z", "gone"):
            os.kill(pid, signal.SIGKILL)

    assert kind == "ready"
