"""Wearable importers: an Apple Health `export.xml` and Garmin/Fitbit FIT files.

Both return samples oldest first, as a `Readings` list whose `skipped` counts unusable items.
"""

from __future__ import annotations

import logging
import math
import re
import struct
from datetime import UTC, datetime
from operator import attrgetter
from pathlib import Path
from xml.etree import ElementTree

import fitparse

from nightlink.edge.importers.localtime import YEARS
from nightlink.edge.importers.span import SpanKeeper
from nightlink.edge.sources.samples import Beat, HeartRate, Motion, Readings, SourceError, SpO2

_LOGGER = logging.getLogger(__name__)

Sample = Beat | HeartRate | SpO2 | Motion

# -- Apple Health ---------------------------------------------------------------------------------

HK_HEART_RATE = "HKQuantityTypeIdentifierHeartRate"
HK_OXYGEN_SATURATION = "HKQuantityTypeIdentifierOxygenSaturation"
HK_HRV_SDNN = "HKQuantityTypeIdentifierHeartRateVariabilitySDNN"
_APPLE_TYPES = frozenset((HK_HEART_RATE, HK_OXYGEN_SATURATION, HK_HRV_SDNN))
# Beat times inside an HRV record: "11:01:02.43 PM" (en_US) or "23:01:02,43" (24-hour locales).
_BEAT_TIME = re.compile(r"(\d{1,2}):(\d\d):(\d\d)(?:[.,](\d+))?\s*([AaPp])?\.?[Mm]?\.?$")


def read_apple_health(path, start: float | None = None, end: float | None = None,
                      keep: SpanKeeper | None = None) -> Readings:
    """Heart rate, SpO2 and beat-to-beat samples from an Apple Health export.xml.

    The export is streamed, but Apple orders it by record type, not by time, so the samples
    in [start, end) are collected and returned sorted by t; `keep` (an import's window)
    drops as it goes what the import would drop, so years of records are not all held.
    Beats come from the InstantaneousBeatsPerMinute list of HRV records (rr = 60000 / bpm);
    the SDNN values themselves are not imported.
    """
    path = Path(path)
    out: list[Sample] = []
    skipped = 0
    try:
        with open(path, "rb") as fh:
            if fh.read(4) == b"PK\x03\x04":
                raise SourceError(f"{path} is not an Apple Health export: it is the zip archive; "
                                  "unzip it and import apple_health_export/export.xml.")
            fh.seek(0)
            root = None
            depth = 0
            for event, elem in _xml_events(fh):
                if event == "start":
                    if root is None:
                        root = elem
                        if elem.tag != "HealthData":
                            raise SourceError(f"{path} is not an Apple Health export: its root "
                                              f"element is <{elem.tag}>, not <HealthData>.")
                    depth += 1
                    continue
                depth -= 1
                if depth == 1:  # a child of HealthData is complete: use it, then drop it
                    if elem.tag == "Record" and elem.get("type") in _APPLE_TYPES:
                        try:
                            found = _apple_record(elem, start, end)
                            out.extend(found)
                            if keep is not None:
                                keep.see(found)
                                out = keep.trim(out)
                        except ValueError as exc:
                            skipped += 1
                            _LOGGER.debug("Skipped an Apple Health record in %s: %s", path, exc)
                    root.clear()
    except (ElementTree.ParseError, LookupError, ValueError) as exc:  # LookupError: encoding
        raise SourceError(f"{path} is not an Apple Health export: the XML is broken "
                          f"({exc}).") from exc
    except OSError as exc:
        raise SourceError(f"{path} cannot be read: {exc.strerror or exc}.") from exc
    if skipped:
        _LOGGER.warning("Skipped %d unusable records in %s.", skipped, path)
    out.sort(key=attrgetter("t"))
    got = Readings(out, skipped=skipped)
    got.first_t = keep.first if keep is not None else None
    return got


_XML_CONTROL = bytes(c for c in range(32) if c not in b"\t\n\r")  # not allowed in XML 1.0
_HEAD_LIMIT = 4 << 20  # the root element comes within this


def _xml_events(fh, chunk: int = 1 << 16):
    """(event, element) of an export streamed through `_clean`."""
    parser = ElementTree.XMLPullParser(events=("start", "end"))
    for data in _clean(fh, chunk):
        parser.feed(data)
        yield from parser.read_events()
    parser.close()
    yield from parser.read_events()


def _clean(fh, chunk: int):
    """The export's bytes without the internal DTD before <HealthData> (iOS 16 and later
    write one that is not well-formed) and without the control characters XML does not
    allow (some exports hold \\x0b in a source name). UTF-8 never has these bytes inside a
    multi-byte character, so they are dropped byte by byte."""
    head = b""
    while len(head) < _HEAD_LIMIT and b"<HealthData" not in head:
        data = fh.read(chunk)
        if not data:
            break
        head += data
    start, root = head.find(b"<!DOCTYPE"), head.find(b"<HealthData")
    if 0 <= start < root:
        head = head[:start] + head[root:]
    yield head.translate(None, _XML_CONTROL)
    while data := fh.read(chunk):
        yield data.translate(None, _XML_CONTROL)


def apple_time(text: str) -> float:
    """Unix seconds from an Apple Health date, "2026-01-15 23:01:02 +0100"."""
    return _apple_datetime(text).timestamp()


def _apple_datetime(text: str | None) -> datetime:
    if text is None or len(text) != 25 or text[19] != " " or text[10] != " ":
        raise ValueError(f"{text!r} is not an Apple Health date (YYYY-MM-DD HH:MM:SS +HHMM).")
    when = datetime.fromisoformat(text[:19] + text[20:])
    if when.year not in YEARS:  # year 1 or 9999 moved by its offset is no date at all
        raise ValueError(f"{text!r} is not a date of a recording.")
    return when


def _in(t: float, start: float | None, end: float | None) -> bool:
    return (start is None or t >= start) and (end is None or t < end)


# A heart rate a person can have (beats per minute); outside it a record is corrupt, and
# 1e300 bpm or 1e-320 bpm (an RR interval of 6e324 ms) was stored as it was.
BPM_RANGE = (20.0, 300.0)


def _number(elem, name: str) -> float:
    text = elem.get(name)
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={text!r} is not a number.") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}={text!r} is not a positive number.")
    return value


def _bpm(value: float) -> float:
    if not BPM_RANGE[0] <= value <= BPM_RANGE[1]:
        raise ValueError(f"{value:g} beats a minute is not a heart rate.")
    return value


def _apple_record(elem, start: float | None, end: float | None) -> list[Sample]:
    kind = elem.get("type")
    begin = _apple_datetime(elem.get("startDate"))
    t = begin.timestamp()
    if kind == HK_HEART_RATE:
        if not _in(t, start, end):
            return []
        bpm = _number(elem, "value")
        unit = elem.get("unit", "count/min")
        if unit == "count/s":
            bpm *= 60
        elif unit != "count/min":
            raise ValueError(f"Heart rate unit {unit!r} is not count/min.")
        return [HeartRate(t=t, bpm=_bpm(bpm))]
    if kind == HK_OXYGEN_SATURATION:
        if not _in(t, start, end):
            return []
        value = _number(elem, "value")  # HealthKit's "%" unit holds a fraction: 0.97 is 97 %
        if value > 1:
            raise ValueError(f"Oxygen saturation {value} is not a fraction of 1.")
        return [SpO2(t=t, pct=round(value * 100, 6))]
    # HRV SDNN: only its beat list is used. The records last about a minute, so any that
    # starts more than a day from the window cannot hold a beat inside it.
    if (start is not None and t < start - 86_400) or (end is not None and t >= end + 86_400):
        return []
    listed = [(_beat_time(begin, item.get("time")), _bpm(_number(item, "bpm")))
              for item in elem.iter("InstantaneousBeatsPerMinute")]
    if not listed:
        return []
    times = [t for t, _ in listed]
    for i in range(1, len(times)):  # a list that runs past midnight goes on into the next day
        while times[i] < times[i - 1] - 43_200:
            times[i] += 86_400
    # The list starts with the record. Apple writes the record's dates in the UTC offset of
    # the export, but the beats' clock times as read when they were recorded: a record from
    # before a clock change (or another zone) lists its beats an hour (or a day, past
    # midnight) off its start. Moved by whole quarter hours to the start they belong to.
    shift = round((begin.timestamp() - times[0]) / 900) * 900
    return [Beat(t=t + shift, rr_ms=60_000 / bpm) for t, (_, bpm) in zip(times, listed,
                                                                         strict=True)
            if _in(t + shift, start, end)]


def _beat_time(begin: datetime, text: str | None) -> float:
    """A beat's clock time on the day of the record's start, in the record's UTC offset
    (placed next to the record's start by the caller)."""
    m = _BEAT_TIME.match(text or "")
    if m is None:
        raise ValueError(f"Beat time {text!r} is not a clock time like 11:01:02.43 PM.")
    hour, minute, second = int(m[1]), int(m[2]), int(m[3])
    if m[5]:
        if not 1 <= hour <= 12:
            raise ValueError(f"Beat time {text!r} has an impossible hour.")
        hour = hour % 12 + (12 if m[5] in "Pp" else 0)
    micro = int((m[4] or "0").ljust(6, "0")[:6])
    try:
        when = begin.replace(hour=hour, minute=minute, second=second, microsecond=micro)
    except ValueError:
        raise ValueError(f"Beat time {text!r} is not a valid time.") from None
    return when.timestamp()


# -- FIT ------------------------------------------------------------------------------------------

FIT_EPOCH = 631_065_600  # 1989-12-31 00:00:00 UTC as Unix seconds
_FIT_SPO2_DATA = 269  # spo2_data in newer FIT profiles; fitparse 1.2 calls it unknown_269
_FIT_SPO2_FIELDS = ("saturated_hemoglobin_percent", "spo2", "SpO2")
_FIT_DECODE_ERRORS = (TypeError, ValueError, KeyError, IndexError, AttributeError,
                      ArithmeticError, struct.error)
_HRV_RESYNC_S = 5.0  # beat clock this far behind the record clock: a gap, restart from records
# Garmin's all-day monitoring files (GARMIN/Monitor/*.FIT, file type monitoring_b): heart rate
# every minute or two in `monitoring` messages, most timed by timestamp_16 alone.
_FIT_MONITORING = 55
_FIT_TIMESTAMP_16 = 26
_FIT_MONITORING_HR = 27


def read_fit(path) -> Readings:
    """Heart rate, beats and SpO2 from a Garmin/Fitbit FIT file, oldest first.

    `record` messages give HeartRate (and SpO2 from saturated_hemoglobin_percent or a
    spo2/SpO2 developer field), `monitoring` messages (a Garmin watch's all-day files)
    HeartRate, timed by timestamp_16 after the latest full timestamp where they have no
    timestamp of their own, `spo2_data` messages SpO2, and `hrv` messages Beats: their
    RR intervals are summed from the timestamp before the first of them, restarting from
    the latest timestamp after a gap in the beat stream.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return _fit_samples(_StreamedFit(fh), path)
    except fitparse.FitParseError as exc:
        raise SourceError(f"{path} is not a readable FIT file: "
                          f"{str(exc).rstrip('.')}.") from exc
    except _FIT_DECODE_ERRORS as exc:  # fitparse fails this way on fields it cannot decode
        raise SourceError(f"{path} is not a readable FIT file: fitparse cannot decode it "
                          f"({type(exc).__name__}).") from exc
    except OSError as exc:
        raise SourceError(f"{path} cannot be read: {exc.strerror or exc}.") from exc


class _StreamedFit(fitparse.FitFile):
    """fitparse keeps every message it parsed, for a second pass over the file, which is
    never made here: three days of a watch's 1-second records held 150 MB of them."""

    def _parse_message(self):
        message = super()._parse_message()
        self._messages.clear()
        return message


def _fit_time16(value, clock: float) -> float | None:
    """A monitoring message's timestamp_16 (the low 16 bits of FIT seconds) as Unix seconds:
    the first time at or after the latest full timestamp with those low bits (FIT SDK)."""
    if not isinstance(value, int) or not 0 <= value <= 0xFFFF:
        return None
    last = int(clock) - FIT_EPOCH
    return float(FIT_EPOCH + last + ((value - last) & 0xFFFF))


def _fit_time(value) -> float | None:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC).timestamp()
    if isinstance(value, int) and value >= 0x10000000:  # below: seconds since device power-on
        return float(FIT_EPOCH + value)
    return None


def _fit_samples(fit: fitparse.FitFile, path: Path) -> Readings:
    out: list[Sample] = []
    skipped = 0
    clock: float | None = None  # latest message timestamp
    beat_t: float | None = None
    kind, sport = None, None  # file_id's type ("activity": a workout), the session's sport
    for msg in fit.get_messages():
        if msg.name == "file_id":
            kind = kind or msg.get_value("type")
            continue
        if msg.name == "session":
            sport = sport or msg.get_value("sport")
        if msg.name == "hrv":
            times = msg.get_value("time")
            for rr_s in times if isinstance(times, tuple | list) else (times,):
                if rr_s is None:  # 0xFFFF pads the array
                    continue
                if clock is None or rr_s <= 0:
                    skipped += 1
                    continue
                if beat_t is None or clock - beat_t > _HRV_RESYNC_S:
                    beat_t = clock
                beat_t += rr_s
                out.append(Beat(t=beat_t, rr_ms=round(rr_s * 1000, 3)))  # FIT: 1 ms steps
            continue
        t = _fit_time(msg.get_value(253))  # timestamp, by number: unknown messages have it too
        if t is None and msg.def_mesg.mesg_num == _FIT_MONITORING and clock is not None:
            t = _fit_time16(msg.get_value(_FIT_TIMESTAMP_16), clock)
        if t is None:
            continue
        clock = t
        if msg.def_mesg.mesg_num == _FIT_MONITORING:
            hr = msg.get_value(_FIT_MONITORING_HR)
            if isinstance(hr, int | float) and 0 < hr < 255:  # 255: invalid
                out.append(HeartRate(t=t, bpm=float(hr)))
        elif msg.name == "record":
            hr = msg.get_value("heart_rate")
            if isinstance(hr, int | float) and hr > 0:
                out.append(HeartRate(t=t, bpm=float(hr)))
            for name in _FIT_SPO2_FIELDS:
                pct = msg.get_value(name)
                if isinstance(pct, int | float) and 0 < pct <= 100:
                    out.append(SpO2(t=t, pct=float(pct)))
                    break
        elif msg.def_mesg.mesg_num == _FIT_SPO2_DATA:
            pct = msg.get_value(0)  # reading_spo2
            if isinstance(pct, int | float) and 0 < pct <= 100:
                out.append(SpO2(t=t, pct=float(pct)))
            else:
                skipped += 1
    if skipped:
        _LOGGER.warning("Skipped %d unusable values in %s.", skipped, path)
    out.sort(key=attrgetter("t"))
    got = Readings(out, skipped=skipped)
    if sport not in (None, "generic") and kind in (None, "activity"):
        # a workout (a ride at 166 bpm): its heart would stage as a night of deep sleep.
        # Overnight HRV logged as a generic activity is a night, and stays one.
        got.activity = str(sport)
    return got
