"""Admission control: whether the inference queue may take more texts now.

A request is refused (:class:`QueueFullError`, 429 with ``Retry-After``) when its texts would not fit
in the queue, or would wait behind more than ``max_queue_wait_s`` of work. That wait is the queued
texts times the seconds each adds, estimated two ways, of which the slower counts: the inference time
per text of recent batches, and the rate a backlogged queue really drains at (under overload the
event loop, busy refusing, forms batches more slowly than the inference threads could run them; only
the drain rate sees that). A queue whose oldest text has waited that long already refuses whatever
the estimate says. Cheap, so a server can ask before it reads and tokenises a request it would refuse.
"""

from __future__ import annotations

from sentiment_api.core.errors import QueueFullError


class Admission:
    """The queue's limits, and the speed estimates that turn its depth into an expected wait."""

    def __init__(self, queue_size: int, max_queue_wait_s: float) -> None:
        self.queue_size = queue_size
        self.max_queue_wait_s = max_queue_wait_s
        self._seconds_per_text = 0.01
        self._speed_known = False  # no refusal by expected wait before a batch has been timed
        # wall time between batches taken while the queue held a backlog, per text
        self._drain_seconds_per_text = 0.0
        self._last_take: float | None = None  # when the last batch was taken, if others still waited

    @property
    def seconds_per_text(self) -> float:
        """What each queued text adds to the wait: the recent inference time per text, or the recent
        drain rate of a backlogged queue where that is slower."""
        return max(self._seconds_per_text, self._drain_seconds_per_text)

    def retry_after(self, depth: int) -> float:
        """Seconds until a queue of ``depth`` texts has likely drained, at the recent speed; at least one."""
        return max(1.0, depth * self.seconds_per_text)

    def assume_speed(self, seconds_per_text: float) -> None:
        """Start from this inference time per text (timed at warm-up) until batches are timed, so a
        burst arriving first meets the expected-wait limit as well."""
        if not self._speed_known:
            self._seconds_per_text = seconds_per_text
            self._speed_known = True

    def admit(self, texts: int, depth: int, oldest_waited: float | None) -> None:
        """Raise :class:`QueueFullError` unless ``texts`` more could join the ``depth`` texts queued
        now: within the queue's size, behind no more than ``max_queue_wait_s`` of work at the measured
        speed, and behind no text that has waited that long already (``oldest_waited`` seconds, or
        ``None`` for an empty queue)."""
        if depth + texts > self.queue_size:
            raise QueueFullError(
                f"the inference queue is full ({depth} of {self.queue_size} texts waiting); retry later",
                retry_after=self.retry_after(depth),
            )
        expected_wait = depth * self.seconds_per_text if self._speed_known else 0.0
        if oldest_waited is not None:
            expected_wait = max(expected_wait, oldest_waited)
        if depth and expected_wait > self.max_queue_wait_s:
            limit_ms = self.max_queue_wait_s * 1000
            raise QueueFullError(
                f"the inference queue is full: the {depth} texts waiting would take about "
                f"{expected_wait * 1000:.0f} ms, over the limit of {limit_ms:g} ms; retry later",
                retry_after=self.retry_after(depth),
            )

    def timed(self, seconds_per_text: float) -> None:
        """A batch ran at ``seconds_per_text`` of the queue's time (its run time over its texts, as a
        share of the streams it held)."""
        self._seconds_per_text = (
            0.8 * self._seconds_per_text + 0.2 * seconds_per_text if self._speed_known else seconds_per_text
        )
        self._speed_known = True

    def taken(self, now: float, texts: int, backlog: bool) -> None:
        """A batch of ``texts`` was taken from the queue at ``now``, ``backlog`` telling whether others
        still wait: the drain rate is updated only where the queue held texts all the time since the
        last batch was taken, so an idle gap never counts as slowness."""
        if texts and self._last_take is not None:
            per_text = (now - self._last_take) / texts
            self._drain_seconds_per_text = 0.8 * self._drain_seconds_per_text + 0.2 * per_text
        elif not texts and not backlog:
            self._drain_seconds_per_text = 0.0
        self._last_take = now if backlog else None
