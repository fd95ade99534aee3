"""Per-client limits that hold for the whole instance: token buckets in one SQLite database.

With several worker processes, a bucket kept in each process would let a client through once per
worker (N workers, N times the rate). So the buckets live in an SQLite file that every worker opens:
taking a token is one ``INSERT ... ON CONFLICT DO UPDATE`` statement, atomic across processes, a few
tens of microseconds on a temporary directory (BENCHMARKS.md, limits). SQLite's
locks are the kernel's, so a worker killed mid-statement leaves nothing locked. With one process the
database is in memory.

Two limits use it: the request rate per client (:class:`RateLimiter`) and the failed authentications
per client address (:class:`AuthFailureThrottle`).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from sentiment_api.core.errors import RateLimitedError

STATE_FILE = "limits.sqlite"
_SCHEMA = """CREATE TABLE IF NOT EXISTS buckets (
    key TEXT PRIMARY KEY,
    tokens REAL NOT NULL,  -- left after the last take
    stamp REAL NOT NULL,   -- time.monotonic() of the last take (the clock every process shares)
    full_at REAL NOT NULL  -- when the bucket is full again: a row past it is the same as no row
) WITHOUT ROWID"""
# one statement: refill by the time passed, take :cost tokens if there are that many; no row back
# means refused
_TAKE = """INSERT INTO buckets (key, tokens, stamp, full_at)
VALUES (:key, :burst - :cost, :now, :now + :cost / :rate)
ON CONFLICT (key) DO UPDATE SET
    tokens = min(:burst, tokens + max(0.0, :now - stamp) * :rate) - :cost,
    stamp = :now,
    full_at = :now + (:burst - (min(:burst, tokens + max(0.0, :now - stamp) * :rate) - :cost)) / :rate
WHERE min(:burst, tokens + max(0.0, :now - stamp) * :rate) >= :cost
RETURNING tokens"""
_PEEK = "SELECT min(:burst, tokens + max(0.0, :now - stamp) * :rate) FROM buckets WHERE key = :key"
_EVICT_EVERY_S = 10.0


@dataclass(frozen=True)
class Verdict:
    """One take: whether a token was there, what is left, and how long until the next one."""

    allowed: bool
    tokens: float
    retry_after: float


class TokenBuckets:
    """Token buckets by key, shared by every process that opens the same ``path`` (``None``: memory)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        # autocommit (every statement its own transaction); one event loop uses it, though not always
        # the thread that opened it (the in-process test client runs the app on another thread)
        self._db = sqlite3.connect(
            str(path) if path else ":memory:", timeout=5.0, isolation_level=None, check_same_thread=False
        )
        if path is not None:
            # WAL: readers never wait for the writer; no fsync: the state is worth nothing after a reboot
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute(_SCHEMA)
        self._evicted = float("-inf")

    @classmethod
    def create(cls, directory: Path) -> Path:
        """A fresh database in ``directory`` for the workers to share (before any worker starts)."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / STATE_FILE
        for stale in (path, path.with_name(STATE_FILE + "-wal"), path.with_name(STATE_FILE + "-shm")):
            stale.unlink(missing_ok=True)  # buckets from an earlier run hold another boot's clock
        cls(path).close()
        return path

    def take(
        self, key: str, rate: float, burst: float, now: float | None = None, cost: float = 1.0
    ) -> Verdict:
        """Take ``cost`` tokens (one by default) from ``key``'s bucket (``burst`` at most, refilled at
        ``rate`` per second); nothing is taken when fewer are there."""
        now = time.monotonic() if now is None else now
        params = {"key": key, "rate": rate, "burst": float(burst), "now": now, "cost": float(cost)}
        row = self._db.execute(_TAKE, params).fetchone()
        self._evict(now)
        if row is not None:
            return Verdict(True, float(row[0]), 0.0)
        tokens = self.tokens(key, rate, burst, now)
        return Verdict(False, tokens, (min(cost, burst) - tokens) / rate)

    def tokens(self, key: str, rate: float, burst: float, now: float | None = None) -> float:
        """Tokens in ``key``'s bucket now, without taking one (``burst`` for a client never seen)."""
        now = time.monotonic() if now is None else now
        params = {"key": key, "rate": rate, "burst": float(burst), "now": now}
        row = self._db.execute(_PEEK, params).fetchone()
        return float(burst) if row is None else float(row[0])

    def __len__(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM buckets").fetchone()[0])

    def _evict(self, now: float) -> None:
        """Forget buckets that are full again, so the table holds only clients seen lately."""
        if now - self._evicted >= _EVICT_EVERY_S:
            self._evicted = now
            self._db.execute("DELETE FROM buckets WHERE full_at <= ?", (now,))

    def close(self) -> None:
        """Close the connection."""
        self._db.close()


class RateLimiter:
    """``rate`` requests per second per client, up to ``burst`` at once."""

    def __init__(self, buckets: TokenBuckets, rate: float, burst: int) -> None:
        self.buckets = buckets
        self.rate = rate
        self.burst = burst

    def check(self, client: str, now: float | None = None, cost: float = 1.0, what: str = "") -> None:
        """Take ``cost`` tokens for ``client`` (one per request; a request that costs more runs, an
        explained one say, takes the rest once it is parsed) or raise :class:`RateLimitedError` saying
        when to retry; ``what`` says in that message what the cost was for."""
        verdict = self.buckets.take(f"rate:{client}", self.rate, self.burst, now, cost)
        if not verdict.allowed:
            raise RateLimitedError(
                f"rate limit of {self.rate:g} requests/s (burst {self.burst}) exceeded"
                + (f" by {what}" if what else "")
                + "; retry later",
                retry_after=verdict.retry_after,
            )


class AuthFailureThrottle:
    """At most ``limit`` failed authentications per ``window_s`` per client address: a bucket of
    ``limit`` tokens refilled over the window, one taken per failure. While it is empty, every request
    from that address is refused, a right key included, so that guessing costs time whatever the guess."""

    def __init__(self, buckets: TokenBuckets, limit: int, window_s: float) -> None:
        self.buckets = buckets
        self.limit = limit
        self.window_s = window_s
        self.rate = limit / window_s

    def check(self, address: str, now: float | None = None) -> None:
        """Raise :class:`RateLimitedError` while ``address`` has used up its failures."""
        tokens = self.buckets.tokens(f"auth:{address}", self.rate, self.limit, now)
        if tokens < 1.0:
            raise self._refusal(tokens)

    def attempt(self, address: str, matched: bool, presented: bool = True) -> bool:
        """One authentication from ``address``: :class:`RateLimitedError` while it has used up its
        failures, a right key included; otherwise a key that was sent and did not match takes a try.
        True when that used up its last try for now.

        A request with no key at all takes no try: it guesses nothing, and it is what a page opened
        before its key is typed or a probe on a protected path sends. Counting those would lock out
        an address whose people only forgot the key, and slow no guesser down."""
        self.check(address)
        return presented and not matched and self.failed(address)

    def failed(self, address: str, now: float | None = None) -> bool:
        """Count one failure for ``address``; true when that used up its last try for now.

        Raises :class:`RateLimitedError` when no try was left: another worker's failure took the last
        one between this request's :meth:`check` and now. Taking the try is one atomic statement, so
        across workers no more than ``limit`` failures per window are ever answered as such.
        """
        verdict = self.buckets.take(f"auth:{address}", self.rate, self.limit, now)
        if not verdict.allowed:
            raise self._refusal(verdict.tokens)
        return verdict.tokens < 1.0

    def _refusal(self, tokens: float) -> RateLimitedError:
        return RateLimitedError(
            f"too many failed authentications from this address (limit {self.limit} per "
            f"{self.window_s:g} s); retry later",
            retry_after=(1.0 - tokens) / self.rate,
        )
