# The 30-second UTC epoch grid every modality is reduced onto, and time helpers.
# Epoch index = Unix seconds // 30; it fits a small int on the board until the year 3000.

import time

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


EPOCH_S = const(30)
EPOCHS_PER_HOUR = const(120)
EPOCHS_PER_DAY = const(2880)
TIME_SET_S = 1704067200  # 2024-01-01: a clock earlier than this was never set (a power cut)
# Seconds from 1970-01-01 to the interpreter's own time origin (2000-01-01 on some boards).
_ORIGIN = 946684800 if time.gmtime(0)[0] == 2000 else 0


def unix_now():
    """Current Unix time in whole seconds, whatever the board's time origin."""
    return int(time.time()) + _ORIGIN


def epoch_index(unix_s):
    """Index of the epoch that holds Unix time unix_s (seconds, int or float)."""
    return int(unix_s // EPOCH_S)


def epoch_start(index):
    """Unix seconds at which epoch index starts."""
    return index * EPOCH_S


def epoch_offset(unix_s):
    """Seconds into its epoch that unix_s lies (0 <= offset < 30)."""
    return unix_s - epoch_index(unix_s) * EPOCH_S


def gmtime(unix_s):
    """(year, month, day, hour, minute, second) of Unix seconds, in UTC."""
    t = time.gmtime(int(unix_s) - _ORIGIN)
    return (t[0], t[1], t[2], t[3], t[4], t[5])


def iso(unix_s):
    """ISO 8601 UTC text such as 2026-01-15T22:30:00Z for Unix seconds."""
    return "%04d-%02d-%02dT%02d:%02d:%02dZ" % gmtime(unix_s)


def iso_epoch(index):
    """ISO 8601 UTC start time of an epoch."""
    return iso(epoch_start(index))


NOON_MIN = 720  # where one night ends and the next begins, for those who sleep at night
MAX_SLEEP_MIN = 16 * 60  # the longest sleep schedule a boundary can be put around


def night_of(unix_s, utc_offset_s=0, boundary_min=NOON_MIN):
    """The night a moment belongs to, as the local date of its evening ("2026-01-15").

    Nights run from local noon to the next local noon, so 23:00 and 03:00 share a night.
    `boundary_min` (minutes of the local day, `night_boundary`) moves that boundary for a
    person who sleeps by day; a night is always named by the local date it begins on.
    """
    t = gmtime(int(unix_s) + utc_offset_s - boundary_min * 60)
    return "%04d-%02d-%02d" % (t[0], t[1], t[2])


def night_boundary(bed_min, wake_min):
    """Where a person's nights begin and end (minutes of the local day) for a sleep schedule
    from `bed_min` to `wake_min`: noon, unless the schedule holds noon (a night-shift worker's
    08:00 to 16:00); then the middle of the waking hours, on the hour (00:00 there)."""
    sleep = (wake_min - bed_min) % 1440
    into = (NOON_MIN - bed_min) % 1440
    if into == 0 or into >= sleep:  # noon is not inside the sleep (going to bed at noon ok)
        return NOON_MIN
    return (wake_min + (1440 - sleep) // 2) % 1440 // 60 * 60


def zone_file(name):
    """Whether a name the time zone database opens is a file there rather than a zone:
    "localtime" is the machine's own (sent to the cloud it would be the server's),
    "posixrules" a default rule, "Factory" a placeholder, and the "right/" copies count leap
    seconds, which zoneinfo reads wrongly (right/Europe/Berlin gave +02:00 in November 2026
    on the machine this was written on)."""
    return name in ("localtime", "posixrules", "Factory") or name.startswith("right/")
