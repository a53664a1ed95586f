"""The person's time zone at the edge: which night a moment belongs to.

Epochs are UTC; a night is named by the local date of its evening (noon to noon, local
time), so the label depends on where the person sleeps. The zone comes from the edge
configuration's `timezone` or a recorded night's manifest, else the machine's own zone.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from nightlink.shared.epoch import night_of


def check_zone(name: str) -> str:
    """The IANA zone name unchanged, or ValueError saying what is wrong ("" = the machine's)."""
    if name == "":
        return name
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not a time zone name such as \"Europe/Berlin\" or "
                         "\"America/New_York\"") from None
    return name


def utc_offset_s(unix_s: float, name: str = "") -> int:
    """The zone's offset from UTC at that moment, in seconds (summer time included)."""
    moment = datetime.fromtimestamp(unix_s, tz=UTC)
    local = moment.astimezone(ZoneInfo(name)) if name else moment.astimezone()
    offset = local.utcoffset()
    return int(offset.total_seconds()) if offset is not None else 0


def night_label(unix_s: float, name: str = "") -> str:
    """The night `unix_s` belongs to in that zone, as the date of its evening."""
    return night_of(unix_s, utc_offset_s(unix_s, name))
