"""The requests under way in this process, and who is told when it turns busy or idle.

The request log counts every request in and out (any route). Two readers care: a lone request may
run inline only when it has no company (``ModelMetrics.in_company``), and a shadow's process is
paused while any request is under way, so that it takes no core, cache or memory bandwidth from one
(``Shadow.busy`` / ``Shadow.idle``). Reading the count costs nothing; the listeners are called only
on the turns from none to one and from one to none.
"""

from __future__ import annotations

from typing import Protocol


class Listener(Protocol):
    def busy(self) -> None:
        """The first request has come in."""

    def idle(self) -> None:
        """The last request under way has been answered."""


class Activity:
    """The number of requests under way, with listeners told of the turns between none and some."""

    def __init__(self) -> None:
        self.requests = 0
        self._listeners: list[Listener] = []

    def enter(self) -> None:
        self.requests += 1
        if self.requests == 1:
            for listener in self._listeners:
                listener.busy()

    def leave(self) -> None:
        self.requests -= 1
        if not self.requests:
            for listener in self._listeners:
                listener.idle()

    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def forget(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)
