"""Shadow traffic: a candidate model answers a share of a live model's requests off the response path,
and how it agrees with the live one is measured before anyone promotes it.

The client never waits for the shadow: its answer is computed after the live one was, in a task of
its own. Shadow work is the first dropped under load (while the live model has texts queued, or the
shadow is still busy with an earlier request), and every dropped request is counted.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import random
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sentiment_api.serving.observability import Metrics
from sentiment_api.serving.served_model import Outcome, ServedModel, State

log = logging.getLogger("sentiment_api.serving")
LARGEST = 5  # the largest probability differences kept for the summary
LATENCIES = 1000  # the last shadow latencies kept for its p50 and p99
SHADOW_TIMEOUT_S = 30.0


@dataclass
class ShadowStats:
    """What the comparison found so far (this process)."""

    compared: int = 0  # texts
    agreed: int = 0
    dropped: int = 0  # requests
    failed: int = 0  # requests
    live_labels: Counter[str] = field(default_factory=Counter)
    shadow_labels: Counter[str] = field(default_factory=Counter)
    largest: list[tuple[float, str, str]] = field(default_factory=list)  # (|Δp|, live, shadow) heap
    seconds: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCIES))


class Shadow:
    """A candidate attached to one live model, answering ``share`` of its requests off the response path."""

    def __init__(self, live_name: str, candidate: ServedModel, share: float, metrics: Metrics) -> None:
        self.live_name = live_name
        self.candidate = candidate
        self.share = share
        self.stats = ShadowStats()
        self._metrics = metrics
        self._busy = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._random = random.Random(0)

    def offer(self, texts: list[str], live: Outcome, live_labels: list[str], live_queued: int) -> None:
        """Run ``texts`` on the candidate too, unless the draw, the load or its state says no
        (``live_labels``: the order of the live answer's probability columns)."""
        if self._random.random() >= self.share:
            return
        if self.candidate.state is not State.READY or live_queued or self._busy:
            self.stats.dropped += 1
            self._metrics.shadow_requests.labels(self.live_name, "dropped").inc()
            return
        self._busy += 1
        task = asyncio.get_running_loop().create_task(self._compare(texts, live, live_labels))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _compare(self, texts: list[str], live: Outcome, live_labels: list[str]) -> None:
        started = time.monotonic()
        try:
            outcome = await self.candidate.predict(texts, 1, started + SHADOW_TIMEOUT_S)
        except Exception as error:  # the shadow must never hurt the live path: count it, log it
            self.stats.failed += 1
            self._metrics.shadow_requests.labels(self.live_name, "failed").inc()
            log.warning("shadow of %s failed: %s", self.live_name, error)
            return
        finally:
            self._busy -= 1
        if outcome is None or self.candidate.classifier is None:
            return
        self._record(live, live_labels, outcome, self.candidate.classifier.labels, time.monotonic() - started)

    def _record(
        self, live: Outcome, live_labels: list[str], shadow: Outcome, shadow_labels: list[str], seconds: float
    ) -> None:
        stats, metrics, name = self.stats, self._metrics, self.live_name
        stats.seconds.append(seconds)
        metrics.shadow_seconds.labels(name).observe(seconds)
        metrics.shadow_requests.labels(name, "compared").inc()
        rows = zip(live.probabilities, shadow.probabilities, strict=True)
        for ours, theirs in rows:
            live_p = dict(zip(live_labels, ours.tolist(), strict=True))
            shadow_p = dict(zip(shadow_labels, theirs.tolist(), strict=True))
            live_label, shadow_label = (
                max(live_p, key=live_p.__getitem__),
                max(shadow_p, key=shadow_p.__getitem__),
            )
            agreed = live_label == shadow_label
            stats.compared += 1
            stats.agreed += agreed
            stats.live_labels[live_label] += 1
            stats.shadow_labels[shadow_label] += 1
            metrics.shadow_agreement.labels(name, "true" if agreed else "false").inc()
            metrics.shadow_predictions.labels(name, shadow_label).inc()
            diff = max(
                abs(live_p.get(label, 0.0) - shadow_p.get(label, 0.0)) for label in {*live_p, *shadow_p}
            )
            metrics.shadow_diff.labels(name).observe(diff)
            entry = (round(diff, 4), live_label, shadow_label)
            if len(stats.largest) < LARGEST:
                heapq.heappush(stats.largest, entry)
            else:
                heapq.heappushpop(stats.largest, entry)

    def summary(self) -> dict[str, Any]:
        """Agreement, each model's label shares, the largest differences, the shadow's latency."""
        stats = self.stats
        seconds = np.array(stats.seconds) if stats.seconds else None

        def shares(counts: Counter[str]) -> dict[str, float]:
            total = sum(counts.values())
            return (
                {label: round(count / total, 4) for label, count in sorted(counts.items())} if total else {}
            )

        return {
            "model": self.live_name,
            "shadow_version": self.candidate.version,
            "state": self.candidate.state.value,
            "share": self.share,
            "compared_texts": stats.compared,
            "agreement": round(stats.agreed / stats.compared, 4) if stats.compared else None,
            "live_label_shares": shares(stats.live_labels),
            "shadow_label_shares": shares(stats.shadow_labels),
            "largest_differences": [
                {"probability_difference": diff, "live": live, "shadow": shadow}
                for diff, live, shadow in sorted(stats.largest, reverse=True)
            ],
            "latency_ms": None
            if seconds is None
            else {
                "p50": round(float(np.percentile(seconds, 50)) * 1000, 3),
                "p99": round(float(np.percentile(seconds, 99)) * 1000, 3),
            },
            "dropped_requests": stats.dropped,
            "failed_requests": stats.failed,
        }

    async def stop(self) -> None:
        """Let the comparisons under way finish, then stop the candidate."""
        if self._tasks:
            await asyncio.wait(set(self._tasks))
        await self.candidate.stop()
