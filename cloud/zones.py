"""A patient's time zone over time: where the bedside node was when each night was recorded.

A phone edge taken abroad reports its new zone; the nights before the trip stay in the zone
they were recorded in (their windows, their local times on the reports) and only the time
after the change is counted in the new one. `ZoneHistory` is a `tzinfo`, so every
`datetime.fromtimestamp(t, tz)` and `datetime.combine(day, time, tz)` of the reports and the
fusion picks the zone in effect at that moment without knowing there is a history.
"""

from __future__ import annotations

import bisect
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo

_EPOCH = datetime(1970, 1, 1)
_REACH_S = 26 * 3600  # no zone's offset from UTC is larger


class ZoneHistory(tzinfo):
    """Zones in effect from given moments on: `segments` [(since Unix s, ZoneInfo)], the first
    in effect since forever, each until the next; the last is the current zone.

    A local time that two segments both hold (a flight west repeats hours) is read with the
    earlier segment, or with the later one for fold=1 (PEP 495); one that no segment holds (a
    flight east skips hours) with the segment before the change, as a zone does for a
    daylight-saving gap."""

    def __init__(self, segments: list[tuple[float, ZoneInfo]]):
        if not segments:
            raise ValueError("a zone history needs at least one zone")
        self.segments = [(float("-inf"), segments[0][1])] + [(float(s), z)
                                                             for s, z in segments[1:]]
        self._since = [s for s, _ in self.segments]

    @property
    def key(self) -> str:
        """The current zone's IANA name (what the pages show as the patient's zone)."""
        return self.segments[-1][1].key

    def at(self, unix_s: float) -> ZoneInfo:
        """The zone in effect at a moment."""
        return self.segments[max(0, bisect.bisect_right(self._since, unix_s) - 1)][1]

    # -- tzinfo ---------------------------------------------------------------------------

    def _near(self, wall_s: float) -> range:
        """The segments a wall time (its seconds read as UTC) can belong to: no zone is
        further than _REACH_S from UTC, so one or two, not every segment."""
        lo = bisect.bisect_right(self._since, wall_s - _REACH_S) - 1
        hi = bisect.bisect_right(self._since, wall_s + _REACH_S) - 1
        return range(max(0, lo), max(0, hi) + 1)

    def _local_zone(self, dt: datetime) -> ZoneInfo:
        wall = dt.replace(tzinfo=None)
        wall_s = (wall - _EPOCH).total_seconds()
        held, gap = [], None
        near = self._near(wall_s)
        for i in near:
            since, zone = self.segments[i]
            until = self.segments[i + 1][0] if i + 1 < len(self.segments) else float("inf")
            unix = wall_s - zone.utcoffset(wall.replace(tzinfo=zone, fold=dt.fold)).total_seconds()
            if since <= unix < until:
                held.append(zone)
            elif unix >= until:
                gap = zone  # past this segment's end: the last such is the one before the skip
        if held:
            return held[-1] if dt.fold and len(held) > 1 else held[0]
        return gap or self.segments[near[0]][1]

    def utcoffset(self, dt):
        if dt is None:
            return None
        zone = self._local_zone(dt)
        return zone.utcoffset(dt.replace(tzinfo=zone))

    def dst(self, dt):
        if dt is None:
            return None
        zone = self._local_zone(dt)
        return zone.dst(dt.replace(tzinfo=zone))

    def tzname(self, dt):
        if dt is None:
            return self.key
        zone = self._local_zone(dt)
        return zone.tzname(dt.replace(tzinfo=zone))

    def fromutc(self, dt):
        unix = (dt.replace(tzinfo=None) - _EPOCH).total_seconds()
        i = max(0, bisect.bisect_right(self._since, unix) - 1)
        zone = self.segments[i][1]
        local = zone.fromutc(dt.replace(tzinfo=zone))
        # The zone's own fold (the repeated hour when its clocks go back), flipped where the
        # wall time is held by another segment as well (the hours a flight west repeats).
        out = local.replace(tzinfo=self)
        if len(self._near(unix)) > 1 and self._local_zone(out) is not zone:
            out = out.replace(fold=1 - out.fold)
        return out

    def _keys(self) -> tuple:
        return tuple((s, z.key) for s, z in self.segments)

    def __eq__(self, other):
        return isinstance(other, ZoneHistory) and self._keys() == other._keys()

    def __hash__(self):
        return hash(self._keys())

    def __reduce__(self):
        return (_rebuild, (self._keys(),))

    def __repr__(self):
        return "ZoneHistory(" + ", ".join(
            z.key if s == float("-inf") else
            f"{datetime.fromtimestamp(s, UTC):%Y-%m-%d %H:%M}Z {z.key}"
            for s, z in self.segments) + ")"


def _rebuild(segments):
    return ZoneHistory([(s, ZoneInfo(k)) for s, k in segments])


def changes(tz: tzinfo) -> list[tuple[float, str, str]]:
    """(Unix s, zone before, zone after) of each change of a history; none of a plain zone."""
    if not isinstance(tz, ZoneHistory):
        return []
    return [(s, tz.segments[i][1].key, z.key) for i, (s, z) in enumerate(tz.segments[1:])]


def named(current: str, changes=()) -> tzinfo:
    """The zone a report names: `current` (an IANA name) after the `changes` it lists
    ({"at_ms", "from", "to"}, oldest first; see `changes`), so the page shows each time in
    the zone the report counted it in."""
    if not changes:
        return ZoneInfo(current)
    return history([(0, ZoneInfo(changes[0]["from"]))]
                   + [(c["at_ms"] / 1000, ZoneInfo(c["to"])) for c in changes], ZoneInfo(current))


def wall(unix_s: float, tz: tzinfo) -> datetime:
    """datetime.fromtimestamp(unix_s, tz), its tzinfo the zone in effect then: the same wall
    time, four times faster for a history (loops over months of readings)."""
    return datetime.fromtimestamp(unix_s, zone_at(tz, unix_s))


def zone_at(tz: tzinfo, unix_s: float) -> ZoneInfo:
    """The zone in effect at a moment, of a history or of a plain zone (itself)."""
    return tz.at(unix_s) if isinstance(tz, ZoneHistory) else tz


def segments(changes: list[tuple[float, object]], current, key=lambda v: v) -> list:
    """What a status report field was over time: [(since Unix s, value)] from `changes`
    ((from when, value), oldest first) with repeats merged and the last change's value giving
    way to `current` (what the newest status report says; another node's, when two report).
    One segment: the value has held for all time."""
    out: list = []
    for since, value in changes:
        if not out or key(out[-1][1]) != key(value):
            out.append((since, value))
    if not out:
        return [(float("-inf"), current)]
    out[-1] = (out[-1][0], current)
    if len(out) > 1 and key(out[-2][1]) == key(current):
        out.pop()
    return [(float("-inf"), out[0][1])] + out[1:]


def history(changes: list[tuple[float, ZoneInfo]], current: ZoneInfo) -> tzinfo:
    """The patient's zone: `current` alone, or a ZoneHistory when the bedside node reported
    other zones before (`changes`: (Unix s from when, zone), oldest first; see `segments`)."""
    held = segments(changes, current, key=lambda z: z.key)
    return current if len(held) == 1 else ZoneHistory(held)


__all__ = ["ZoneHistory", "changes", "history", "named", "segments", "wall", "zone_at"]
