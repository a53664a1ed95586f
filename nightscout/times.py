"""Times as Nightscout clients send them, read into milliseconds since the epoch (UTC).

Uploaders write every variant of ISO 8601 (`Z`, `+01:00`, `+0100` without a colon, a space
instead of `T`, a comma before the fraction, seven fractional digits, a bare date), RFC 2822
dates and JavaScript's and Java's Date.toString() (with `GMT+0100`), epoch milliseconds as
numbers, as text or with a fraction, and (API v3) epoch seconds. A date whose zone is only a
name email.utils does not know (Java's `CET`) is refused rather than read as UTC.
"""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from nightlink.shared.epoch import zone_file

# Every stored time lies in [1970-01-01, 9999-12-31]: what ISO 8601 text and every backend hold.
MIN_MS = 0
MAX_MS = 253_402_300_799_999
Y2000_MS = 946_684_800_000  # numbers below this are seconds to API v3
_NUMBER = re.compile(r"^[+-]?\d+(\.\d*)?([eE][+-]?\d+)?$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def zone_named(name: str) -> ZoneInfo:
    """The IANA zone a client names, matched without regard to case as Nightscout's
    moment-timezone matches it: Loop writes `ETC/GMT+8` in its profiles, which the zone
    database on Linux only holds as `Etc/GMT+8`. ZoneInfoNotFoundError for no such zone
    (also for a folder such as "Europe", a malformed name, and the database's files that are
    no zone to a client: shared/epoch.py zone_file)."""
    if not isinstance(name, str) or zone_file(name):
        raise ZoneInfoNotFoundError(f"No time zone {name!r}.")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder ("Europe")
        pass
    found = _zones_by_lower().get(name.lower())
    if found is None or zone_file(found):  # "LOCALTIME" is not the server's zone either
        raise ZoneInfoNotFoundError(f"No time zone {name!r}.")
    return ZoneInfo(found)


@cache
def _zones_by_lower() -> dict[str, str]:
    return {z.lower(): z for z in available_timezones()}


class TimeError(ValueError):
    """A value is not a time a client could have meant; the message is one sentence."""


def iso(ms: int) -> str:
    """UTC ISO 8601 with milliseconds and `Z`, as Nightscout writes `created_at` and `sysTime`."""
    dt = _EPOCH + timedelta(milliseconds=int(ms))
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(ms) % 1000:03d}Z"


def http_date(ms: float) -> str:
    """RFC 1123 date of a time in ms (whole seconds), for Last-Modified."""
    return format_datetime(datetime.fromtimestamp(int(ms // 1000), tz=UTC), usegmt=True)


def last_modified_header(changed_ms: int) -> str:
    """Last-Modified for a collection whose newest change is changed_ms.

    The header has whole seconds, so a client holding it cannot tell a change later in that
    same second from none: while that second is not over (or lies ahead: stamps run ahead of
    the clock in a burst of writes), the second before is sent, and the client's next
    If-Modified-Since gets the whole reply again instead of a 304 that would hide the change."""
    second = int(changed_ms // 1000) * 1000
    if time.time() * 1000 < second + 1000:
        second -= 1000
    return http_date(second)


def parse_http_date(value: str | None) -> int | None:
    """ms of an HTTP date header (If-Modified-Since, Last-Modified), None when unreadable."""
    if not value:
        return None
    try:
        dt = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    ms = round(dt.timestamp() * 1000)
    return ms if MIN_MS <= ms <= MAX_MS else None


# JavaScript's Date.toString() ("Thu Dec 03 2026 09:00:00 GMT+0100 (CET)") and Java's
# ("Thu Dec 03 09:00:00 GMT+01:00 2026"): the offset after GMT counts, the name in brackets not.
_GMT_OFFSET = re.compile(r"\b(?:GMT|UTC)([+-])(\d{1,2})(?::?(\d{2}))?\b")
_MERIDIEM = re.compile(r"\b([AaPp])\.?[Mm]\b\.?")  # 9:00:00 PM (email.utils ignores it)
_BRACKETED = re.compile(r"\s*\([^()]*\)\s*$")
_ZONE_WORD = re.compile(r"\b[A-Z]{2,5}\b")  # CET, IST, AEST: a zone's abbreviation
# The words an RFC 2822 date may hold that email.utils reads (days, months, and the zones it
# knows); another capital abbreviation is a zone it would silently take for UTC (Java's CET).
_DATE_WORDS = {"mon", "tue", "wed", "thu", "fri", "sat", "sun", "jan", "feb", "mar", "apr",
               "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec", "ut", "utc", "gmt", "z",
               "est", "edt", "cst", "cdt", "mst", "mdt", "pst", "pdt", "am", "pm"}


def _written_date(text: str) -> datetime:
    """A date written out (RFC 2822, JavaScript's and Java's Date.toString()), with the
    offset it states; one whose zone is only a name that could mean several is refused
    rather than read as UTC."""
    plain = _GMT_OFFSET.sub(lambda m: f"{m[1]}{int(m[2]):02d}{m[3] or '00'}",
                            _BRACKETED.sub("", text))
    meridiem = _MERIDIEM.search(plain)
    if meridiem:
        plain = plain[:meridiem.start()] + plain[meridiem.end():]
    try:
        dt = parsedate_to_datetime(plain)
    except (TypeError, ValueError, IndexError, OverflowError):
        raise TimeError(f"{text!r} is not an ISO 8601 time.") from None
    if meridiem:  # 12 AM is midnight, 12 PM noon
        if not 1 <= dt.hour <= 12:
            raise TimeError(f"{text!r} has an hour of {dt.hour} with {meridiem[0].strip()}.")
        dt = dt.replace(hour=dt.hour % 12 + (12 if meridiem[1] in "Pp" else 0))
    if dt.tzinfo is None:  # no offset read: was a zone named that email.utils does not know?
        named = [w for w in _ZONE_WORD.findall(plain) if w.lower() not in _DATE_WORDS]
        if named:
            raise TimeError(f"{text!r} names its zone {named[0]!r}, which could be one of "
                            "several; send the time in ISO 8601 with an offset "
                            "(2026-12-03T09:00:00+01:00).")
    return dt


def _from_number(value: float, seconds_ok: bool) -> int:
    if not math.isfinite(value):
        raise TimeError(f"{value!r} is not a time.")
    if seconds_ok and abs(value) < Y2000_MS:
        value *= 1000  # API v3 reads small numbers as seconds
    return _bounded(round(value))


def _bounded(ms: int) -> int:
    if not MIN_MS <= ms <= MAX_MS:
        raise TimeError(f"{ms} ms lies outside 1970-01-01 to 9999-12-31.")
    return ms


def parse(value: object, *, seconds_ok: bool = False) -> tuple[int, int | None]:
    """(ms since the epoch, UTC offset in minutes or None) of a time in any client's form.

    Text without an offset is UTC. Raises TimeError with one sentence when it is not a time.
    """
    if isinstance(value, bool) or value is None:
        raise TimeError(f"{value!r} is not a time.")
    if isinstance(value, int | float):
        return _from_number(float(value), seconds_ok), None
    if not isinstance(value, str):
        raise TimeError(f"A {type(value).__name__} is not a time.")
    text = value.strip()
    if len(text) > 100:
        raise TimeError("A time is at most 100 characters long.")
    if _NUMBER.match(text):
        return _from_number(float(text), seconds_ok), None
    try:
        dt = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        dt = _written_date(text)
    offset = dt.utcoffset()
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    minutes = None if offset is None else int(offset.total_seconds() // 60)
    try:
        ms = round((dt - _EPOCH).total_seconds() * 1000)
    except OverflowError:
        raise TimeError(f"{text!r} lies outside 1970-01-01 to 9999-12-31.") from None
    return _bounded(ms), minutes


def parse_ms(value: object, *, seconds_ok: bool = False) -> int:
    """parse() without the offset."""
    return parse(value, seconds_ok=seconds_ok)[0]


def try_ms(value: object) -> int | None:
    """ms of a stored time field, None when it is missing or not a time (old rows)."""
    try:
        return parse(value)[0]
    except TimeError:
        return None
