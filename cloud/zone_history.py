"""A patient's time zone over time, as one tzinfo: the zone their bedside node reported for
each period (travel, a move), so that past nights keep the zone they were recorded in.

The cloud names and cuts nights, days and reports by the patient's local clock. With one
zone for all history, a node that reports a new zone (a phone edge taken to Tokyo) re-dated
every past night: a New York night of the 10th became the night of the 11th. `ZoneHistory`
keeps each period's zone: a moment is local in the zone in effect then, and a local time is
placed in the zone whose period it falls in. A night (from local noon to local noon) is
wholly in the zone of its evening (`zone_for_night`).
"""

from __future__ import annotations

from bisect import bisect_right
from datetime import UTC, date, datetime, time, tzinfo
from zoneinfo import ZoneInfo


class ZoneHistory(tzinfo):
    """Zones by period: spans[i] = (since Unix s, zone), oldest first; the first holds from
    the beginning. `key` is the newest zone's name (what a page names as "the" zone)."""

    def __init__(self, spans: list[tuple[float, ZoneInfo]]):
        if not spans:
            raise ValueError("A zone history needs at least one zone.")
        self.spans = sorted(spans, key=lambda s: s[0])
        self._since = [s for s, _ in self.spans]
        self.key = self.spans[-1][1].key

    def __repr__(self) -> str:
        return f"ZoneHistory({[(s, z.key) for s, z in self.spans]})"

    def at(self, unix_s: float) -> ZoneInfo:
        """The zone in effect at that moment."""
        return self.spans[max(0, bisect_right(self._since, unix_s) - 1)][1]

    def at_local(self, naive: datetime) -> ZoneInfo:
        """The zone a wall-clock time belongs to: the first whose period holds the moment that
        time names in it (a time on the day of a change may name a moment in both)."""
        for i, (since, zone) in enumerate(self.spans):
            moment = naive.replace(tzinfo=zone).timestamp()
            end = self._since[i + 1] if i + 1 < len(self.spans) else float("inf")
            if since <= moment < end or (i == 0 and moment < since):
                return zone
        return self.spans[-1][1]

    def utcoffset(self, dt):
        naive = dt.replace(tzinfo=None)
        zone = self.at_local(naive)
        return zone.utcoffset(naive.replace(tzinfo=zone))

    def dst(self, dt):
        naive = dt.replace(tzinfo=None)
        zone = self.at_local(naive)
        return zone.dst(naive.replace(tzinfo=zone))

    def tzname(self, dt):
        if dt is None:
            return self.key
        naive = dt.replace(tzinfo=None)
        zone = self.at_local(naive)
        return zone.tzname(naive.replace(tzinfo=zone))

    def fromutc(self, dt):
        utc = dt.replace(tzinfo=UTC)
        local = utc.astimezone(self.at(utc.timestamp()))
        return local.replace(tzinfo=self)


def zone_for_night(tz: tzinfo, night: str) -> tzinfo:
    """The zone a night (the local date of its evening) is named and cut in: under a zone
    history, the zone in effect at that evening's 18:00; any other zone as it is."""
    if not isinstance(tz, ZoneHistory):
        return tz
    return tz.at_local(datetime.combine(date.fromisoformat(night), time(18)))


def zone_for_moment(tz: tzinfo, unix_s: float) -> tzinfo:
    """The zone in effect at a moment (a zone history's), else the zone as it is."""
    return tz.at(unix_s) if isinstance(tz, ZoneHistory) else tz

