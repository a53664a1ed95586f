"""Device timestamps in CGM exports: the date styles they are written in, and their UTC instant.

Exports write the device's wall-clock time with no zone: `--tz` names the zone it ran in.

Date styles: `YYYY-MM-DD hh:mm[:ss]`, and `A-B-YYYY hh:mm` where A-B is day-month (most of
the world) or month-day (the US), with `-`, `/` or `.` between the numbers, a 24-hour or a
12-hour clock (`11:00 PM`, `11:00 p.m.`) and two- or four-digit years. Which of day-month or
month-day a file uses is decided from the whole file: a first number above 12 can only be a
day, a second number above 12 can only be a day. A file where both happen is refused; a file
where neither does fits both: dotted dates (`01.11.2026`, the European style) are read
day-month, others in the order the reader's locale hint gives, and the user is told so; the
user's --date-order decides either.

Clocks going back (daylight saving time ends) repeat an hour of wall-clock times. Within one
stream of readings (one device and record type), taken in the file's time order (a file
listing newest first is read from its end): a repeated-hour time is the first (summer-time)
instant until the times step back, at or below the latest one already read in that hour;
from there on they are the second (standard-time) instant. A file sorted by wall-clock time
instead never steps back but lists each time of the hour twice (a sensor reading every 1, 5
or 15 minutes reads at the same wall times in both passes): there the first row at a time is
the summer-time instant and the second the standard-time one. A time in the hour skipped when
clocks go forward (which no device writes) is read with the offset from before the change
(02:30 becomes 03:30 summer time), the rule of Python's `zoneinfo` for fold=0.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from nightlink.edge.sources.samples import SourceError

DMY, MDY = "dmy", "mdy"
ORDER_NAMES = {DMY: "day-month-year", MDY: "month-day-year"}
_STAMP = re.compile(
    r"^(\d{1,4})([-/.])(\d{1,2})[-/.](\d{1,4})(?:[ T]+|,\s*)(\d{1,2})[:.](\d{2})"
    r"(?:[:.](\d{2})(?:[.,]\d+)?)?(?:\s*([AaPp])\.?\s*[Mm]\.?)?$")
YEARS = range(2000, 2100)  # a date outside these is a corrupt row, not a reading


class Stamp(NamedTuple):
    first: str
    second: str
    third: str
    hour: int
    minute: int
    second_of_minute: int
    half: str  # "a", "p" or "" (24-hour clock)
    separator: str = "-"  # between the date's numbers: "-", "/" or "."

    @property
    def year_first(self) -> bool:
        return len(self.first) == 4


def split(text: str) -> Stamp | None:
    """The parts of a timestamp, or None if it is not one of the styles above."""
    m = _STAMP.match(text.strip())
    if m is None:
        return None
    return Stamp(m[1], m[3], m[4], int(m[5]), int(m[6]), int(m[7] or 0), (m[8] or "").lower(),
                 m[2])


class DateStyle:
    """Collects a file's timestamps' evidence for day-month or month-day, then decides."""

    def __init__(self, path: Path):
        self.path = path
        self.day_first: tuple[int, str] | None = None  # the first (line, text) proving it
        self.month_first: tuple[int, str] | None = None
        self.two_number_dates = 0
        self.readings_in_doubt = 0  # readings (not the preamble's dates) the order decides
        self.dotted = False  # a day.month.year date: the dotted style is day-first

    def see(self, text: str, line: int, *, date_only: bool = False) -> Stamp | None:
        """Read one timestamp (a date without time if `date_only`) and note its evidence."""
        stamp = split(text)
        if stamp is None and date_only:
            stamp = split(f"{text} 00:00")
        if stamp is None or stamp.year_first:
            return stamp
        self.two_number_dates += 1
        self.readings_in_doubt += not date_only
        self.dotted = self.dotted or stamp.separator == "."
        a, b = int(stamp.first), int(stamp.second)
        if 12 < a <= 31 and 1 <= b <= 12 and self.day_first is None:
            self.day_first = (line, text.strip())
        elif 12 < b <= 31 and 1 <= a <= 12 and self.month_first is None:
            self.month_first = (line, text.strip())
        return stamp

    def decide(self, hint: str | None, default: str, reason: str = "") -> tuple[str, str | None]:
        """(order, note): the file's order, and a sentence for the user when it was assumed."""
        if not self.two_number_dates:
            return hint or default, None
        if self.day_first and self.month_first:
            raise SourceError(f"{self.path} mixes day-first and month-first dates "
                              f"({_where(self.day_first)} and {_where(self.month_first)}).")
        found = DMY if self.day_first else MDY if self.month_first else None
        if hint:
            if found and found != hint:
                proof = self.day_first or self.month_first
                raise SourceError(f"--date-order {hint} does not fit {self.path}: "
                                  f"{_where(proof)}, which can only be {ORDER_NAMES[found]}.")
            return hint, None
        if found:
            return found, None
        if self.dotted:
            return DMY, None
        if not self.readings_in_doubt:  # only the preamble's dates: no reading depends on it
            return default, None
        other = MDY if default == DMY else DMY
        because = f" ({reason})" if reason else ""
        return default, (f"Every date in {self.path.name} reads as both day-month and "
                         f"month-day: they were read as {ORDER_NAMES[default]}{because}; "
                         f"pass --date-order {other} if that is wrong.")

    @staticmethod
    def naive(stamp: Stamp, order: str) -> datetime:
        """The wall-clock time of a timestamp; ValueError if it is not a real time."""
        a, b, c = int(stamp.first), int(stamp.second), int(stamp.third)
        if stamp.year_first:
            year, month, day = a, b, c
        elif order == DMY:
            day, month, year = a, b, c
        else:
            month, day, year = a, b, c
        if not stamp.year_first and len(stamp.third) <= 2:
            year += 2000
        hour = stamp.hour
        if stamp.half:
            if not 1 <= hour <= 12:
                raise ValueError(f"hour {hour} on a 12-hour clock")
            hour = hour % 12 + (12 if stamp.half == "p" else 0)
        if year not in YEARS:
            raise ValueError(f"year {year}")
        return datetime(year, month, day, hour, stamp.minute, stamp.second_of_minute)


def _streams(timed: Iterable[tuple[Any, datetime]]) -> list[list[tuple[Any, datetime]]]:
    """The (row, wall-clock time) of each stream (rows carry a `stream`), as listed."""
    streams: dict[str, list[tuple[Any, datetime]]] = {}
    for pair in timed:  # the pairs themselves, not copies: a file can hold half a million
        streams.setdefault(getattr(pair[0], "stream", ""), []).append(pair)
    return list(streams.values())


def _steps(rows: list[tuple[Any, datetime]]) -> int:
    """Rows whose time rises from the row before, less those whose time falls."""
    return sum((y > x) - (y < x) for (_, x), (_, y) in zip(rows, rows[1:], strict=False))


def streams_in_time_order(timed: Iterable[tuple[Any, datetime]]):
    """The (row, wall-clock time) of each stream (rows carry a `stream`), oldest first: a
    stream whose times mostly fall from row to row is listed newest first and is reversed.
    A list given is emptied, and each stream's list is the caller's to empty as it reads it,
    so that what a five-year export's rows took goes as they are placed."""
    streams = _streams(timed)
    if isinstance(timed, list):
        timed.clear()
    streams.reverse()
    while streams:
        rows = streams.pop()
        if _steps(rows) < 0:
            rows.reverse()
        yield rows


def _where(proof: tuple[int, str]) -> str:
    line, text = proof
    return f"line {line} has {text[:40]!r}"


class LocalClock:
    """Places wall-clock times of one zone in UTC, the repeated hour by the rule above."""

    def __init__(self, zone: ZoneInfo):
        self.zone = zone

    def place(self, timed: Iterable[tuple[Any, datetime]]) -> list[tuple[Any, float]]:
        """(row, Unix seconds) for each (row, wall-clock time); rows carry a `stream`. A
        list given is emptied."""
        out = []
        for ordered in streams_in_time_order(timed):
            paired = self._sorted_by_wall_clock(ordered)
            latest: dict[object, datetime] = {}  # per repeated hour: latest first-pass time
            stepped_back: set[object] = set()
            seen: set[datetime] = set()
            for k, (row, when) in enumerate(ordered):
                ordered[k] = None  # its wall-clock time goes once placed
                fold = 0
                if self._repeated(when):
                    key = when.date()
                    if key in paired:  # the second of two rows at one wall time is the later
                        fold = 1 if when in seen else 0
                        seen.add(when)
                    elif key in stepped_back or (key in latest and when <= latest[key]):
                        stepped_back.add(key)
                        fold = 1
                    else:
                        latest[key] = when
                out.append((row, when.replace(tzinfo=self.zone, fold=fold).timestamp()))
        return out

    def _sorted_by_wall_clock(self, rows: list[tuple[Any, datetime]]) -> set[object]:
        """The repeated hours (by date) that a file lists sorted by wall-clock time: times
        that never step back within the hour, but repeat. A sensor whose interval divides
        the hour reads at the same wall times in both passes, so such a file holds each
        time twice, the first pass's reading first (a stable sort keeps the file's order)."""
        last: dict[object, datetime] = {}
        back: set[object] = set()
        repeats: set[object] = set()
        for _, when in rows:
            if not self._repeated(when):
                continue
            key = when.date()
            if key in last and when < last[key]:
                back.add(key)
            elif key in last and when == last[key]:
                repeats.add(key)
            last[key] = max(when, last.get(key, when))
        return repeats - back

    def _repeated(self, when: datetime) -> bool:
        """Whether a wall-clock time happens twice (the hour repeated when clocks go back)."""
        first = when.replace(tzinfo=self.zone, fold=0)
        if first.utcoffset() == when.replace(tzinfo=self.zone, fold=1).utcoffset():
            return False
        return first.astimezone(UTC).astimezone(self.zone).replace(tzinfo=None) == when


class PumpClock:
    """Places times read from a device clock that has no time zone and no summer time (an
    insulin pump): it keeps one UTC offset until someone sets it.

    `sets` holds each setting as (the clock's time just before, the time it was set to), in
    the file's order, which lists them newest first when `newest_first` (as its readings are:
    CareLink does). The clock is taken as right after the latest setting, in `zone` (a time
    set into an hour the clocks repeat is its second pass: one sets the pump back after the
    change); each earlier span as off from that by what the settings after it moved the clock. Within a stream, in
    time order, a row is past a setting once its time is past the clock's time before the
    setting, or, for a setting that moved the clock back, once the times step back to at least
    the time it was set to (the span it moved back over is read twice); one step back passes
    one such setting.
    """

    def __init__(self, zone: ZoneInfo, sets: Iterable[tuple[datetime, datetime]],
                 newest_first: bool = False):
        sets = list(sets)
        self.sets = sets[::-1] if newest_first else sets
        last = self.sets[-1][1].replace(tzinfo=zone, fold=1).utcoffset()
        offsets = [last]
        for before, after in reversed(self.sets):
            offsets.append(offsets[-1] - (after - before))
        self.offsets = offsets[::-1]  # offsets[k]: the clock's offset after k settings

    def place(self, timed: Iterable[tuple[Any, datetime]]) -> list[tuple[Any, float]]:
        """(row, Unix seconds) for each (row, time on the device's clock). A list given is
        emptied."""
        out = []
        for ordered in streams_in_time_order(timed):
            passed, previous = 0, None
            for k, (row, when) in enumerate(ordered):
                ordered[k] = None  # its time on the device's clock goes once placed
                while passed < len(self.sets):
                    how = self._past(self.sets[passed], when, previous)
                    if how is None:
                        break
                    passed += 1
                    if how == "back":
                        break  # the next setting back needs a step back of its own
                previous = when
                utc = when.replace(tzinfo=UTC) - self.offsets[passed]
                out.append((row, utc.timestamp()))
        return out

    @staticmethod
    def _past(setting: tuple[datetime, datetime], when: datetime,
              previous: datetime | None) -> str | None:
        """"ahead" when `when` is past the clock's time before the setting, "back" when the
        times stepped back into what a setting back moved over, None when not past it."""
        before, after = setting
        if when > before:
            return "ahead"
        if after < before and previous is not None and after <= when < previous:
            return "back"
        return None


def listed_newest_first(timed: Iterable[tuple[Any, datetime]]) -> bool:
    """Whether a file's rows (row, wall-clock time; rows carry a `stream`) are mostly listed
    newest first within their streams."""
    return sum(_steps(rows) for rows in _streams(timed)) < 0
