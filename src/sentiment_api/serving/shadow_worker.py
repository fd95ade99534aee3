"""The process a shadow runs in: it loads the candidate package, answers the texts the live process
sends it over a socket, and compares each answer with the live model's.

A shadow in a process of its own shares no interpreter lock with the live requests, and the whole
process runs at ``SCHED_IDLE``: it gets a core only when no live thread wants one. The service also
pauses it (``SIGSTOP``) while a live request is under way, and it ends with the service. The live process
pays a pickle and one non-blocking ``send`` per shadowed request, and a few counter updates when the
comparison comes back; everything else (normalising, tokenising, inference, the per-text comparison)
happens here.

The messages are in ``shadow_protocol.py``. Nothing imports this module: it is the process's entry.

    python -m sentiment_api.serving.shadow_worker --socket-fd FD --package DIR [--device cpu] [--parent PID]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import pickle
import signal
import socket
import sys
from collections.abc import Sequence

from sentiment_api.core.engine import Classifier
from sentiment_api.serving.served_model import model_version
from sentiment_api.serving.shadow_protocol import MAX_MESSAGE, compare_rows

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def idle_process() -> None:
    """Let every thread of this process (those its imports started, and those started from now on,
    ONNX Runtime's too, which inherit it) run only when no other thread wants the core: Linux
    ``SCHED_IDLE``; elsewhere, the lowest priority it may take."""
    try:
        for thread in os.listdir("/proc/self/task"):
            os.sched_setscheduler(int(thread), os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        with contextlib.suppress(OSError):
            os.nice(19)


def die_with(parent: int) -> None:
    """End this process when the service that started it ends, even while it is paused: a process
    stopped by ``SIGSTOP`` cannot read that its socket closed, but Linux still delivers the
    ``SIGKILL`` it was asked to send when its parent goes (``PR_SET_PDEATHSIG``)."""
    with contextlib.suppress(AttributeError, OSError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the service had already gone before the request above
        sys.exit(0)


def one_line(error: BaseException) -> str:
    """An exception as the one line the live side reports."""
    return " ".join(str(error).split()) or type(error).__name__


def load(package: str, device: str) -> Classifier:
    """The candidate on one thread, warmed with a short and a long text."""
    classifier = Classifier.load(package, 1, False, device)  # type: ignore[arg-type]
    classifier.predict(["warm up", "warm up " * 512])
    return classifier


def answer(classifier: Classifier, request: bytes) -> tuple[object, ...]:
    """The reply to one request: the candidate's answer to its texts compared with the live one's."""
    number, texts, live, live_labels = pickle.loads(request)
    try:
        shadow, _ = classifier.probabilities(classifier.normalise(texts))
        return ("compared", number, compare_rows(live, live_labels, shadow, classifier.labels))
    except Exception as error:  # a request the candidate cannot take must not end the shadow
        return ("failed", number, one_line(error))


def serve(channel: socket.socket, package: str, device: str, parent: int | None = None) -> int:
    """Load, say ready (or why not), then answer until the live side closes its end."""
    if parent is not None:
        die_with(parent)
    idle_process()
    try:
        classifier = load(package, device)
    except Exception as error:
        channel.send(pickle.dumps(("failed", None, one_line(error))))
        return 1
    channel.send(pickle.dumps(("ready", model_version(classifier), classifier.labels)))
    buffer = bytearray(MAX_MESSAGE)
    while True:
        size = channel.recv_into(buffer)
        if not size:  # the live process closed its end, or went away
            return 0
        reply = answer(classifier, bytes(memoryview(buffer)[:size]))
        try:
            channel.send(pickle.dumps(reply))
        except OSError:  # the live process went away between the request and the reply
            return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A shadow model's process (the service starts it).")
    parser.add_argument("--socket-fd", type=int, required=True, help="the socket inherited from the service")
    parser.add_argument("--package", required=True, help="the candidate package")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto, as the service's")
    parser.add_argument("--parent", type=int, help="the service's pid: this process ends with it")
    args = parser.parse_args(argv)
    with socket.socket(fileno=args.socket_fd) as channel:
        return serve(channel, args.package, args.device, args.parent)


if __name__ == "__main__":
    sys.exit(main())
