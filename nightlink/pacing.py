"""A token bucket: how fast something may go (the edge's backfill rows, the ingest's messages
per device), with bursts up to a bound; and how often a repeated warning is logged."""

from __future__ import annotations

import time


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up; starts full."""

    def __init__(self, rate: float, burst: float, now: float):
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.at = now

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now

    def take(self, now: float, want: int = 1) -> int:
        """Take up to `want` whole tokens; return how many were taken (0 when none is there)."""
        self._refill(now)
        got = int(min(want, self.tokens))
        self.tokens -= got
        return got

    def give_back(self, n: int) -> None:
        """Return tokens taken but not used."""
        self.tokens = min(self.burst, self.tokens + n)

    def wait_s(self, now: float) -> float:
        """Seconds until a token is there."""
        self._refill(now)
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate

    def full(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= self.burst


class LogThrottle:
    """At most one log line per key every `every_s` seconds, counting what it held back."""

    def __init__(self, every_s: float):
        self.every_s = every_s
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def ok(self, key: str) -> int | None:
        """None to stay quiet; else how many lines were held back since the last one."""
        now = time.monotonic()
        if now - self._last.get(key, -1e9) < self.every_s:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        if len(self._last) > 10000:  # keys may come from senders: memory stays bounded
            self._last.clear()
            self._held.clear()
        self._last[key] = now
        return self._held.pop(key, 0)
