"""What every CGM export reader shares: reading the file, telling rows apart, the numbers,
the rows it could not use, and turning candidate rows into time-ordered `Glucose` samples.

A reader finds its header and collects `Candidate` rows (line number, local timestamp text,
glucose cell); `finish` reads the timestamps in the file's date order (`localtime.py`),
places them in UTC, converts the values and counts the rows it had to skip, so that one bad
row costs one row, and the user gets one summary line instead of a line per row.
"""

from __future__ import annotations

import csv
import logging
import math
import re
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from nightlink.edge.importers.localtime import (
    DateStyle,
    LocalClock,
    PumpClock,
    listed_newest_first,
    split,
)
from nightlink.edge.importers.span import SpanKeeper
from nightlink.edge.sources.samples import Glucose, Readings, SourceError
from nightlink.shared import units

_LOGGER = logging.getLogger(__name__)
_MAX_SKIPPED_LINES = 20
_DELIMITERS = (",", ";", "\t")
UNIT = re.compile(r"(mg/dl|mmol/l)\)?$", re.IGNORECASE)
_DIGITS = re.compile(r"\d+")


class ImportedReadings(Readings):
    """A reader's samples, oldest first, with what the user should hear about them:
    `first_bad` names the first skipped row and why, `notes` any assumption made."""

    def __init__(self, items=(), *, skipped: int = 0, skipped_lines: list[int] | None = None,
                 first_bad: str | None = None, notes: list[str] | None = None):
        super().__init__(items, skipped=skipped, skipped_lines=skipped_lines)
        self.first_bad = first_bad
        self.notes = notes or []
        self.pump_clock = False  # placed by a pump's own clock (localtime.PumpClock)


@dataclass(slots=True)  # a five-year export has half a million of them
class Candidate:
    """A row that holds a glucose reading, before its time and value are read."""

    line: int  # 1-based line of the file
    stamp: str  # the local timestamp as written
    raw: str  # the glucose cell as written
    stream: str = ""  # rows of one stream are in time order (device, record type)
    rate: str = ""  # Clarity's rate of change, mg/dL/min (or mmol/L/min), if any
    whose: str = ""  # the sensor (and display) whose own steady clock `tick` is on
    tick: float | None = None  # the reading's seconds on that clock, if the file has them


@dataclass
class Values:
    """How a format's glucose cells read: unit, the sensor's range, words for off-range."""

    mmol: bool
    max_mgdl: int
    words: dict[str, int] | None = None  # lower-case text -> sgv (Clarity's "Low"/"High")


class BadRows:
    """Rows that looked like readings but could not be used: counted, the first one named."""

    def __init__(self) -> None:
        self.count = 0
        self.split = 0  # of which a decimal comma split the glucose number (`shifted`)
        self._lines: list[int] = []
        self._first: tuple[int, str] | None = None

    def add(self, number: int, why: str, unit: str = "line", *, split: bool = False) -> None:
        """Row `number` (a 1-based line, or an entry of a JSON array) is skipped for `why`;
        `split`: because a decimal comma split its cells."""
        self.count += 1
        self.split += split
        if self._first is None or number < self._first[0]:
            self._first = (number, f"{unit} {number}: {why}")
        if unit == "line":
            self._lines.append(number)

    @property
    def lines(self) -> list[int]:
        """The first few skipped line numbers, in file order."""
        return sorted(self._lines)[:_MAX_SKIPPED_LINES]

    @property
    def first(self) -> str | None:
        """The earliest skipped row in the file and why, e.g. "line 17: bad timestamp ..."."""
        return self._first[1] if self._first else None


def zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # OSError: "Europe", a folder
        raise SourceError(f"{tz!r} is not a known time zone name.") from exc


def read_text(path: Path, kind: str) -> str:
    """The file as text: UTF-8 (with or without a BOM), UTF-16 with a BOM, else Windows-1252,
    the encodings these exports are written in."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SourceError(f"{path} cannot be read as a {kind} export "
                          f"({exc.strerror or exc}).") from exc
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return data.decode("utf-16", errors="replace")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def delimiter_of(line: str) -> str:
    """The delimiter a header line uses: whichever of comma, semicolon and tab it has most."""
    return max(_DELIMITERS, key=line.count)


def cells(line: str, delimiter: str) -> list[str]:
    """One line's cells. Each line is read on its own, so a stray quote in one row cannot
    swallow the rows after it; a quote never closed (or text after a closing one) splits the
    line at every delimiter instead: read leniently, it swallowed the rest of its own line,
    and the row, short, was passed over as one that holds no reading."""
    try:
        row = next(csv.reader([line], delimiter=delimiter, strict=True), [])
    except csv.Error:
        row = line.split(delimiter)
    return [c.strip() for c in row]


def usual_width(rows, header: list[str]) -> int:
    """The cells every row of a section has, at least the header's: a file whose rows all end
    with an extra empty cell has one more than its header."""
    return min((len(r) for r in rows if len(r) >= len(header)), default=len(header))


def rows_below(lines: list[str], at: int, delimiter: str, header: list[str]):
    """(usual_width of the rows below the header at line `at`, those rows as (index, cells)
    one at a time). Each line's cells are read twice rather than all kept: a two-year export
    is 220,000 rows, and a list of their cells took 0.5 GB."""
    usual = usual_width((cells(line, delimiter) for line in islice(lines, at + 1, None)), header)
    return usual, ((k, cells(line, delimiter))
                   for k, line in enumerate(islice(lines, at + 1, None), at + 1))


def shifted(row: list[str], header: list[str], glucose: int, usual: int) -> str | None:
    """Why a row's cells cannot be trusted, or None. A decimal comma in a comma-separated file
    splits a number in two cells and moves every cell after it: the row is wider than the
    header and than the file's other rows, has cells past the header filled, or its glucose
    cell and the one after it are both bare digits ("5", "5" for 5,5)."""
    if len(row) <= len(header):
        return None
    if any(row[len(header):]) or len(row) > usual:
        return (f"{len(row)} cells where the header has {len(header)} (a decimal comma in a "
                "comma-separated file?)")
    after = row[glucose + 1] if glucose + 1 < len(row) else ""
    if _DIGITS.fullmatch(row[glucose]) and _DIGITS.fullmatch(after):
        return (f"glucose {row[glucose]},{after} is split in two cells by a decimal comma in a "
                "comma-separated file")
    return None


def name(cell: str) -> str:
    """A header cell compared without case or repeated spaces."""
    return " ".join(cell.casefold().split())


def number(text: str) -> float:
    """A finite number written with a decimal point or a decimal comma."""
    value = float(text.replace(",", "."))
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    return value


def glucose(raw: str, values: Values) -> int:
    """mg/dL of a glucose cell; ValueError with the reason if it holds none."""
    word = raw.strip().casefold()
    if values.words and word in values.words:
        return values.words[word]
    if not word:
        raise ValueError("no glucose value")
    try:
        value = number(raw)
    except ValueError:
        raise ValueError(f"bad glucose value {raw[:40]!r}") from None
    sgv = units.from_mmoll(value) if values.mmol else round(value)
    if not units.SGV_MIN_VALID <= sgv <= values.max_mgdl:
        raise ValueError(f"glucose value {raw[:40]} is outside the sensor's range")
    return sgv


def finish(path: Path, kind: str, candidates: list[Candidate], values: Values, tz: str, *,
           source: str, bad: BadRows, date_order: str | None = None,
           default_order: str = "mdy", order_reason: str = "",
           extra_stamps: tuple[tuple[int, str], ...] = (),
           clock_sets: tuple[tuple[int, str, str], ...] = (),
           device_clocks: bool = True, window: SpanKeeper | None = None) -> ImportedReadings:
    """The candidates as Glucose samples, oldest first; the rows that failed are in `bad`.
    The list of candidates is emptied: each row's text goes once its time is read.

    `date_order` is the user's --date-order (dmy or mdy; None to detect from the file),
    `default_order` what an export whose dates all fit both orders is read in, and
    `order_reason` why (said in the note). `extra_stamps` are further (line, date) of the
    same style (LibreView's "generated on") that help tell the order. `clock_sets` are
    (line, time before, time after) of each time a device without a time zone (an insulin
    pump) had its clock set: its times are then placed by that clock (`PumpClock`), and
    candidates with a `tick` where a display's clock moved by their sensor's
    (`by_sensor_clock`); `device_clocks` False places every time on the wall clock of `tz`.
    `window` (an import's, span.py): once every time is placed, samples are made only of
    the rows it keeps (every row's value is still read, and a bad one counted), and the
    file's first time is kept for the import's note, so that a five-year export holds the
    import's 120 days of samples, not five years'.
    """
    style = DateStyle(path)
    for line, text in extra_stamps:
        style.see(text, line, date_only=True)
    seen_sets = [(line, (style.see(before, line), style.see(after, line)))
                 for line, before, after in clock_sets]
    # Every timestamp is read twice, for the file's date order and then in it, rather than
    # its parts kept in between: a five-year export is half a million rows. For the same
    # reason each step's list goes once the next is made.
    for c in candidates:
        if style.see(c.stamp, c.line) is None:
            bad.add(c.line, f"bad timestamp {c.stamp[:40]!r}")
    order, note = style.decide(date_order, default_order, order_reason)
    timed = []
    for c in candidates:
        parts = split(c.stamp)
        if parts is None:
            continue  # counted above
        try:
            timed.append((c, style.naive(parts, order)))
        except ValueError:
            bad.add(c.line, f"bad timestamp {c.stamp[:40]!r}")
    candidates.clear()
    local = zone(tz)
    if device_clocks:
        clock = _device_clock(local, seen_sets, order, listed_newest_first(timed), bad)
        placed = clock.place(timed)
        del timed
        placed, moved = by_sensor_clock(placed, local)
    else:
        clock, moved = None, []
        placed = LocalClock(local).place(timed)
        del timed
    if window is not None:
        window.see_times(t for _c, t in placed)
    out: dict[tuple[float, int], Glucose] = {}
    words: dict[str, int] = {}  # off-scale words as written ("LO", "High") -> readings
    outside = 0  # readings (numbers and words) the window leaves out
    for i, (c, t) in enumerate(placed):
        placed[i] = None  # the row's text goes once read
        try:
            sgv = glucose(c.raw, values)
        except ValueError as exc:
            bad.add(c.line, str(exc))
            continue
        word = bool(values.words) and c.raw.strip().casefold() in values.words
        if word:
            words[c.raw.strip()] = words.get(c.raw.strip(), 0) + 1
        if window is not None and not window.keeps(t):
            window.dropped += 1
            outside += 1
            continue
        direction = None
        if c.rate:
            try:
                rate = number(c.rate)
                direction = units.direction(rate * units.MGDL_PER_MMOLL if values.mmol else rate)
            except ValueError:
                pass  # the rate is optional; a bad one leaves the direction unknown
        out.setdefault((t, sgv), Glucose(t=t, sgv=sgv, direction=direction, source=source))
    notes = [note] if note else []
    if moved:
        notes.append(_moved_note(moved))
    if words:
        notes.append(_off_scale(words, values))
    del placed
    numeric = len(out) + outside - sum(words.values())
    if out and (bad.split > numeric or (bad.count and not numeric)):
        # Most glucose numbers split by unquoted decimal commas, or only off-scale words
        # readable: what is left is no sample of the file but a skewed part of it (its "LO"
        # rows alone read as a night of lows).
        raise SourceError(f"{path}: {bad.count} of its {len(out) + outside + bad.count} "
                          f"glucose rows could not be read (first: {bad.first}), and the rest "
                          "would not show the file's readings fairly; nothing was stored.")
    got = result(path, kind, list(out.values()), bad, notes)
    got.pump_clock = isinstance(clock, PumpClock)
    got.first_t = window.first if window is not None else None
    return got


MOVED_S = 1800  # a display clock this far from the sensor's: moved (travel, set by hand)
MOVED_MAX_S = 26 * 3600  # the farthest two time zones are apart: beyond, no clock move
ZONE_STEP_S = 900  # zones differ by whole quarter hours: a move is counted in them


def by_sensor_clock(placed: list[tuple[Candidate, float]], local=None):
    """(placed, moved): readings whose sensor counts its own steady seconds (`tick`) re-placed
    where the display's clock had moved (travel, a phone's clock set by hand).

    In the order of a sensor's seconds, the gap between the display's instant and the
    sensor's seconds is constant while the display's clock stays put; a step of MOVED_S or
    more that the next reading keeps is a move (one odd row is a bad row, not a clock). A
    change of summer time is no move: the display's instant is read in the zone already. A
    new sensor (a Dexcom ONE+ or G7 starts one every 10 days) starts on the clock its display
    (phone or receiver: each keeps its own) last showed. The clock each display showed its
    newest readings on is taken as right in the zone, as a pump's clock is after its latest
    setting (people export and import at home); readings shown on another are placed by how
    far it had moved from that one. A sensor whose seconds start again (a transmitter reset)
    shows, in the order of its seconds, the display's instant going back by more than any
    clock move: it counts as a new sensor. Moves are counted in whole quarter hours (a real
    export's trip read -60 and +61 minutes: a phone's clock is seldom to the second), so a
    hand-set clock is placed within 7.5 min. `moved` lists (stamp, minutes off) of the
    re-placed readings, but for those whose move is the zone's own change of clocks (`local`):
    an hour read twice that the display's times alone placed on the wrong pass."""
    # A five-year export is half a million readings: runs hold indexes into `placed` (a gap
    # is worked out again where it is needed), moves one entry per reading of a few values.
    def gap(i: int) -> float:
        c, t = placed[i]
        return t - c.tick

    sensors: dict[str, list[int]] = {}  # indexes in placed, per sensor
    for i, (c, _) in enumerate(placed):
        if c.tick is not None:
            sensors.setdefault(c.whose, []).append(i)
    runs: list[list[int]] = []  # indexes in placed, in the order of their sensor's seconds
    for whose in sorted(sensors):
        held = sensors.pop(whose)
        held.sort(key=lambda i: (placed[i][0].tick, placed[i][1]))
        runs.append([])
        for i in held:
            if runs[-1] and gap(i) - gap(runs[-1][-1]) < -MOVED_MAX_S:
                runs.append([])
            runs[-1].append(i)
    if not runs:
        return placed, []
    runs.sort(key=lambda run: placed[run[0]][1])  # sensors in the order they started
    offset: list[float | None] = [None] * len(placed)  # how far each one's display had moved
    shown: dict[str, tuple[float, float]] = {}  # display -> (its clock's move, when it ended)
    for run in runs:
        display = placed[run[0]][0].stream  # the phone or receiver that showed them
        state, ended = shown.get(display, (0.0, -math.inf))
        base = gap(run[0])
        for k, i in enumerate(run):
            step = gap(i) - base
            if abs(step) >= MOVED_S and k + 1 < len(run) and abs(gap(run[k + 1]) - gap(i)) < 300:
                state, base = state + round(step / ZONE_STEP_S) * ZONE_STEP_S, gap(i)
            offset[i] = state
        end = placed[run[-1]][1]
        if end >= ended:
            shown[display] = (state, end)
    out, moved = [], []
    for i, (c, t) in enumerate(placed):
        off = offset[i] - shown[c.stream][0] if offset[i] is not None else 0.0
        if off:
            if not _zone_change(local, t, off):
                moved.append((c.stamp, round(off / 60)))
            out.append((c, t - off))
        else:
            out.append(placed[i])
    return out, moved


def _zone_change(local, t: float, off: float) -> bool:
    """Whether moving an instant by `off` seconds only undoes the zone's own change of clocks
    (its offset differs by exactly that much on either side)."""
    if local is None:
        return False
    from datetime import UTC, datetime

    a = datetime.fromtimestamp(t, UTC).astimezone(local).utcoffset()
    b = datetime.fromtimestamp(t - off, UTC).astimezone(local).utcoffset()
    return a is not None and b is not None and abs((a - b).total_seconds()) == abs(off)


def _moved_note(moved: list[tuple[str, int]]) -> str:
    stamp, minutes = min(moved)
    return (f"{len(moved)} readings were shown on a clock moved against the sensor's own (the "
            f"first at {stamp.replace('T', ' ')[:16]}, {minutes:+d} min: travel, or a phone's "
            "clock set by hand); they are placed by the sensor's clock, as if the display's "
            "clock at the end of the file was right in the zone given.")


def _device_clock(local, sets, order: str, newest_first: bool,
                  bad: BadRows) -> LocalClock | PumpClock:
    """The clock a file's times are read on: the zone's wall clock, or a pump's own clock if
    the file says when it was set. A setting whose times do not read cannot be undone: the
    file is then read on the wall clock, and that setting is counted as a bad row."""
    naive = []
    for line, (before, after) in sets:
        try:
            if before is None or after is None:
                raise ValueError
            naive.append((DateStyle.naive(before, order), DateStyle.naive(after, order)))
        except ValueError:
            bad.add(line, "a clock setting whose times do not read (the readings are placed "
                    "on the wall clock)")
            return LocalClock(local)
    return PumpClock(local, naive, newest_first) if naive else LocalClock(local)


def _off_scale(words: dict[str, int], values: Values) -> str:
    """The note counting readings written as words, e.g. "2 'LO' read as 39"."""
    told = ", ".join(f"{n} {w!r} read as {values.words[w.casefold()]}"
                     for w, n in words.items())
    return f"{sum(words.values())} readings were off the sensor's scale: {told}."


def result(path: Path, kind: str, samples: list[Glucose], bad: BadRows,
           notes: list[str]) -> ImportedReadings:
    """The readings oldest first, or the one sentence that says why there are none."""
    if not samples:
        if bad.count:
            raise SourceError(f"{path} has {bad.count} glucose rows but none could be read "
                              f"(first: {bad.first}).")
        raise SourceError(f"{path} is a {kind} export with no glucose readings in it.")
    samples.sort(key=lambda g: g.t)
    if bad.count:
        _LOGGER.info("%s: %d rows skipped (first: %s)", path, bad.count, bad.first)
    return ImportedReadings(samples, skipped=bad.count, skipped_lines=bad.lines,
                            first_bad=bad.first, notes=notes)
