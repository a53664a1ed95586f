"""Which samples of a file one import can take (importer.py: a day ahead at most, then
MAX_SPAN_DAYS, the newest or those from `since`), known while a reader still reads it.

An Apple Health export is ordered by record type, not by time, so its reader cannot stop at
the window: it keeps what it finds and, each time that has doubled, drops what the import
would drop anyway. Its memory then holds about the window, not the years a watch recorded;
what the import's checks read (the file's newest sample, every sample out of range, the
file's first for the note) is kept or remembered, so the import is the same as before. A CSV
reader places every row's time first (common.finish), then makes samples of the rows the
window keeps only.
"""

from __future__ import annotations

TRIM_AT = 1 << 16  # samples held before the first trim


class SpanKeeper:
    """`lo`..`hi`: the times the import can store at all (the others it counts as skipped:
    kept here); `span_s` and `since` as importer._window takes them."""

    def __init__(self, lo: float, hi: float, span_s: float, since: float | None = None):
        self.lo, self.hi, self.span_s, self.since = lo, hi, span_s, since
        self.first: float | None = None  # the earliest storable sample's time in the file
        self.newest: float | None = None  # ... and the newest
        self.first_since: float | None = None  # the earliest storable one from `since` on
        self.dropped = 0
        self._trim_at = TRIM_AT

    def see(self, samples) -> None:
        """Note the times of samples a reader has just found."""
        self.see_times(s.t for s in samples)

    def see_times(self, times) -> None:
        """Note the times (Unix s) of samples a reader has found."""
        for t in times:
            if not self.lo <= t <= self.hi:
                continue
            if self.first is None or t < self.first:
                self.first = t
            if self.newest is None or t > self.newest:
                self.newest = t
            if self.since is not None and t >= self.since and (
                    self.first_since is None or t < self.first_since):
                self.first_since = t

    def keeps(self, t: float) -> bool:
        """Whether the import can take a sample of this time, once every time was seen."""
        if not self.lo <= t <= self.hi or t == self.newest:
            return True
        if self.since is None:
            return t > self.newest - self.span_s
        return self.first_since is not None and self.since <= t < self.first_since + self.span_s

    def trim(self, held: list) -> list:
        """`held`, or what of it the import can take once it has doubled since last time."""
        if len(held) < self._trim_at:
            return held
        kept = [s for s in held if self.keeps(s.t)]
        self.dropped += len(held) - len(kept)
        self._trim_at = max(TRIM_AT, 2 * len(kept))
        return kept
