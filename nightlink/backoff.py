"""Waiting after a refusal: delays doubling to a ceiling, each with jitter.

Used wherever a peer refuses or is unreachable (the cloud ingest's broker and database, the
edge sync's broker and store), so they all back off the same way."""

from __future__ import annotations

import random


class Backoff:
    """Delays doubling from `first` up to `ceiling`, each drawn from [d/2, d] (jitter), so
    workers that failed together do not all try again at the same moment."""

    def __init__(self, first: float = 0.5, ceiling: float = 30.0, rng: random.Random | None = None):
        self.first = first
        self.ceiling = max(first, ceiling)
        self._delay = first
        self._rng = rng or random.Random()

    def next(self) -> float:
        d = self._delay
        self._delay = min(d * 2, self.ceiling)
        return self._rng.uniform(d / 2, d)

    def reset(self) -> None:
        self._delay = self.first
