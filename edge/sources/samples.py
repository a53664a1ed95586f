"""Timestamped samples every edge source yields, whatever it reads from (live, replay, import).

Times are Unix seconds (float, UTC). Values are in the units of the feature registry;
None means the source did not measure that quantity in this sample.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Glucose:
    """One CGM reading. sgv is mg/dL, or None when the sensor reported an error code."""

    t: float
    sgv: int | None
    error_code: int | None = None  # Nightscout sgv < 39: kept as an error, never as glucose
    direction: str | None = None  # Nightscout direction name as the sender gave it
    source: str = ""


@dataclass(frozen=True, slots=True)
class Beat:
    """One heart beat: t is when the beat happened, rr_ms the interval that ended with it."""

    t: float
    rr_ms: float


@dataclass(frozen=True, slots=True)
class HeartRate:
    """A heart-rate value from a device that does not give beat intervals."""

    t: float
    bpm: float


@dataclass(frozen=True, slots=True)
class SpO2:
    """Oxygen saturation in percent."""

    t: float
    pct: float


@dataclass(frozen=True, slots=True)
class Motion:
    """Activity counts over the last second, per axis."""

    t: float
    ax: float
    ay: float
    az: float


@dataclass(frozen=True, slots=True)
class Room:
    """Room sensor readings (any may be None)."""

    t: float
    temp_c: float | None = None
    humidity_pct: float | None = None
    light_lux: float | None = None
    co2_ppm: float | None = None
    noise_dba: float | None = None


class SourceError(Exception):
    """A source cannot be read: the message is one sentence naming the file or device;
    `retry_after_s` when the peer said how long to wait (HTTP Retry-After); `transient`
    when asking again later may succeed (a timeout, a peer unreachable or overloaded), not
    when it refused or is not what it should be."""

    def __init__(self, *args, retry_after_s: float | None = None, transient: bool = False):
        super().__init__(*args)
        self.retry_after_s = retry_after_s
        self.transient = transient or retry_after_s is not None


class Readings(list):
    """The samples an importer found, oldest first; `skipped` counts corrupt rows."""

    def __init__(self, items=(), *, skipped: int = 0, skipped_lines: list[int] | None = None):
        super().__init__(items)
        self.skipped = skipped
        self.skipped_lines = skipped_lines or []  # the first few, 1-based file line numbers
        self.activity: str | None = None  # a workout recording (its sport): not a night's
        self.first_t: float | None = None  # the file's first sample, when a reader dropped it
