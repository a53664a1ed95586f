"""A person's sleep schedule against the calendar, for the edge and the cloud alike.

A schedule is a bedtime and a wake time, minutes of the local day. Nights run from noon to
noon unless the schedule holds noon (a day sleeper's, on night shifts): then from the middle
of the waking hours (shared.epoch.night_boundary). A night is named by the local date it
begins on.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta, tzinfo

from nightlink.shared.epoch import NOON_MIN, night_boundary

Sleep = tuple[int, int]  # (bedtime, wake), minutes of the local day

_SCHEDULE = re.compile(r"([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)")


def parse_schedule(text) -> Sleep | None:
    """(bedtime, wake) of a "22:00-07:30" schedule, None for anything else."""
    m = _SCHEDULE.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        return None
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    return h1 * 60 + m1, h2 * 60 + m2


def boundary_of(sleep: Sleep | None) -> int:
    """Where the nights of this schedule begin and end (noon without one)."""
    return NOON_MIN if sleep is None else night_boundary(*sleep)


def sleep_span(night: str, sleep: Sleep, tz: tzinfo | None) -> tuple[float, float]:
    """[start, end) Unix seconds of night `night`'s schedule: from the first bedtime after
    the night begins (on its evening for most people, after midnight for a bedtime before
    noon) to the wake time after it, local time in `tz` (None: the machine's zone; summer
    time included)."""
    bed, wake = sleep
    day = date.fromisoformat(night)
    start_day = day if bed >= night_boundary(bed, wake) else day + timedelta(days=1)
    end_day = start_day if wake > bed else start_day + timedelta(days=1)
    start = datetime.combine(start_day, time(bed // 60, bed % 60), tz).timestamp()
    end = datetime.combine(end_day, time(wake // 60, wake % 60), tz).timestamp()
    return start, end


def night_ending_on(day: str, sleep: Sleep | None = None) -> str:
    """The night whose sleep ends on local date `day`: the night before, unless the wake time
    comes after the nights' boundary (a day sleeper's, or an afternoon sleeper's): then the
    night of that date."""
    same = sleep is not None and sleep[1] > boundary_of(sleep)
    return (date.fromisoformat(day) - timedelta(days=0 if same else 1)).isoformat()
