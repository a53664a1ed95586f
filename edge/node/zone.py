"""The person's time zone at the edge: which night a moment belongs to.

Epochs are UTC; a night is named by the local date of its evening (noon to noon, local
time, or from a day sleeper's boundary: shared.epoch.night_boundary), so the label depends
on where the person sleeps. The zone comes from the edge configuration's `timezone` or a
recorded night's manifest, else the machine's own zone.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from nightlink.nights import sleep_span
from nightlink.shared.epoch import EPOCH_S, NOON_MIN, night_boundary, night_of, zone_file

MIN_NIGHT_MIN = 60  # a sleep schedule, or a night's recording, shorter than this is no night
ZONE_META = "timezone"  # the store's record of the node's zone, sent in its status report


def check_zone(name: str, *, machine: bool = True) -> str:
    """The IANA zone name unchanged, or ValueError saying what is wrong. "" is the machine's
    own zone where `machine` allows it (a configuration), else no zone (a --tz option)."""
    if name == "" and machine:
        return name
    if zone_file(name):
        raise ValueError(f"{name!r} is a file of the time zone database, not a zone: name "
                         "the zone, such as \"Europe/Berlin\"" + (
                             ", or leave it empty for the machine's own" if machine else ""))
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder ("Europe")
        raise ValueError(f"{name!r} is not a time zone name such as \"Europe/Berlin\" or "
                         "\"America/New_York\"") from None
    return name


def zone_name(name: str = "") -> str | None:
    """The IANA name of a zone: `name` itself, or for the machine's own zone ("") the name
    its /etc/localtime link or TZ gives (None when the machine does not say)."""
    import os
    from pathlib import Path

    if name:
        return name
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    try:
        candidates.append(str(Path("/etc/localtime").resolve()).partition("zoneinfo/")[2])
    except OSError:
        pass
    for found in candidates:
        for prefix in ("posix/", "right/"):  # the same zones under other folders of tzdata
            found = found[len(prefix):] if found.startswith(prefix) else found
        if found and found != "localtime":
            try:
                return check_zone(found, machine=False)
            except ValueError:
                continue
    return None


def utc_offset_s(unix_s: float, name: str = "") -> int:
    """The zone's offset from UTC at that moment, in seconds (summer time included)."""
    offset = datetime.fromtimestamp(unix_s, tz=UTC).astimezone(
        ZoneInfo(name) if name else None).utcoffset()
    return int(offset.total_seconds()) if offset is not None else 0


def zone_offsets_min(unix_min, name: str = ""):
    """The zone's offset from UTC in minutes at each of these Unix minutes (an array; "" the
    machine's zone), looked up once per quarter hour they fall in (clocks change on a
    quarter hour at the finest: Chatham's 02:45)."""
    import numpy as np

    quarters, where = np.unique(np.asarray(unix_min, dtype=np.int64) // 15,
                                return_inverse=True)
    return np.array([utc_offset_s(float(q) * 900, name) // 60 for q in quarters],
                    dtype=np.int64)[where]


def night_label(unix_s: float, name: str = "", boundary_min: int = NOON_MIN) -> str:
    """The night `unix_s` belongs to in that zone, as the date it begins on (its evening,
    unless `boundary_min` is a day sleeper's: shared.epoch.night_boundary)."""
    return night_of(unix_s, utc_offset_s(unix_s, name), boundary_min)


def check_clock_time(text: str) -> tuple[int, int]:
    """(hour, minute) of an "HH:MM" time of day, or ValueError saying what is wrong."""
    parts = text.split(":") if isinstance(text, str) else []
    if len(parts) != 2 or not all(p.isdecimal() and len(p) == 2 for p in parts) \
            or int(parts[0]) > 23 or int(parts[1]) > 59:
        raise ValueError(f"{text!r} is not a time of day written HH:MM, such as \"22:30\"")
    return int(parts[0]), int(parts[1])


def schedule_boundary(bedtime: str, wake: str) -> int:
    """Where this sleep schedule's nights begin and end, minutes of the local day (noon
    unless the schedule holds noon: shared.epoch.night_boundary)."""
    (bh, bm), (wh, wm) = check_clock_time(bedtime), check_clock_time(wake)
    return night_boundary(bh * 60 + bm, wh * 60 + wm)


def schedule_window(label: str, bedtime: str, wake: str, name: str = "") -> tuple[int, int]:
    """[first, end) epochs of night `label`'s sleep schedule (nightlink.nights.sleep_span)
    in the zone (summer time included)."""
    # Without a zone name, naive local times: timestamp() then asks the machine's own zone
    # for the offset at that date (a fixed offset taken now would be wrong across a change).
    (bh, bm), (wh, wm) = check_clock_time(bedtime), check_clock_time(wake)
    start, end = sleep_span(label, (bh * 60 + bm, wh * 60 + wm), ZoneInfo(name) if name else None)
    return int(start // EPOCH_S), int(end // EPOCH_S)
