"""Wearable, CGM and room samples reduced to per-epoch features, one epoch at a time.

Each reducer takes samples in time order (`add`) and gives the feature values of an
epoch when asked (`close(epoch)`), keeping only the state the next epochs need. An
epoch without samples gives None for its features: missing, never zero.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from nightlink.edge.features import cvhr
from nightlink.edge.features.cvhr import RR_MAX_MS, RR_MIN_MS
from nightlink.edge.sources.samples import Beat, Glucose, HeartRate, Motion, Room, SpO2
from nightlink.shared import codec, features, units
from nightlink.shared.epoch import EPOCH_S, epoch_start

RR_MAX_STEP = 0.2  # successive intervals differing by more than 20 % are artefacts (ectopy)
MIN_BEATS_HRV = 5
DESAT_BASELINE_S = 120.0  # baseline SpO2: mean of the preceding two minutes
DESAT_MIN_S = 10.0  # a desaturation lasts at least 10 s (ODI convention)
DESAT_SMOOTH_S = 5.0  # saturation is read as the median of the last 5 s...
DESAT_SMOOTH_MAX_S = 15.0  # ...or of the last 3 readings when they lie within 15 s
DESAT_BASELINE_MIN_S = 30.0  # a fall starts only from at least 30 s of baseline
DESAT_RESAT = 2.0  # % risen from the lowest point (at least) that ends a fall
DESAT_MAX_S = 180.0  # a fall (or recovery) lasting longer is a new level, not an event
DESAT_MIN_READINGS = 6  # an epoch's desaturations are counted from one reading per 5 s up
DESAT_UP_READINGS = 2  # readings in a row that have risen enough end a fall
DESAT_GAP_S = 90.0  # readings further apart: the probe was off, the baseline starts again
_BASELINE, _FALLING, _RECOVERING = 0, 1, 2
MOVEMENT_COUNTS = 100.0  # activity counts per epoch above which the epoch is "movement"
CGM_MAX_AGE_MIN = 120.0  # older readings are not carried into an epoch
CGM_ROC_WINDOW_MIN = 15.0


def to_raw(stream: int, values) -> tuple[int, ...]:
    """Quantize a row, saturating values outside the valid range at its ends (NaN is missing)."""
    clipped = []
    for f, v in zip(features.features(stream), values, strict=True):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            clipped.append(None)
        else:
            clipped.append(min(max(float(v), f[features.F_LO]), f[features.F_HI]))
    return codec.quantize_row(stream, clipped)


# Beats kept for the cyclic-variation features: their 5-minute window plus the few beats
# before it that the artefact filter's running median looks at.
BEAT_BUFFER_S = cvhr.WINDOW_S + 15.0


class WearableReducer:
    """Heart rate, HRV, SpO2 with desaturation events, and activity per epoch, and the
    cyclic variation of heart rate over the 5 minutes of beats before each epoch's end
    (edge/features/cvhr.py `trailing_features`; docs/apnea-from-rr.md)."""

    def __init__(self):
        self._beats: deque[tuple[float, float]] = deque()
        self._rr: list[float] = []
        self._hr: list[float] = []
        self._spo2: list[float] = []
        self._motion: list[float] = []
        self._last_rr: float | None = None
        self._desat = {3: _Desaturations(3.0), 4: _Desaturations(4.0)}
        self._desat_counts = {3: 0, 4: 0}

    def add(self, s) -> None:
        if isinstance(s, Beat):
            if RR_MIN_MS <= s.rr_ms <= RR_MAX_MS:
                self._rr.append(s.rr_ms)
                self._beats.append((s.t, s.rr_ms))
        elif isinstance(s, HeartRate):
            if 60000.0 / RR_MAX_MS <= s.bpm <= 60000.0 / RR_MIN_MS:
                self._hr.append(s.bpm)
        elif isinstance(s, SpO2):
            if 50.0 <= s.pct <= 100.0:
                self._spo2.append(s.pct)
                for k, d in self._desat.items():
                    self._desat_counts[k] += d.add(s.t, s.pct)
        elif isinstance(s, Motion):
            self._motion.append(math.sqrt(s.ax * s.ax + s.ay * s.ay + s.az * s.az))

    def close(self, epoch: int) -> tuple:
        cyclic = self._cyclic(epoch_start(epoch) + EPOCH_S)
        hr_mean = hr_min = hr_max = rmssd = sdnn = None
        if self._rr:
            rr = np.asarray(self._rr)
            inst = 60000.0 / rr
            hr_mean, hr_min, hr_max = float(inst.mean()), float(inst.min()), float(inst.max())
            if rr.size >= MIN_BEATS_HRV:
                prev = np.concatenate(([self._last_rr or rr[0]], rr[:-1]))
                diffs = rr - prev
                ok = np.abs(diffs) <= RR_MAX_STEP * prev
                ok[0] = ok[0] and self._last_rr is not None
                if ok.sum() >= MIN_BEATS_HRV - 1:
                    rmssd = float(np.sqrt(np.mean(diffs[ok] ** 2)))
                sdnn = float(rr.std(ddof=1))
            self._last_rr = float(rr[-1])
        elif self._hr:
            hr = np.asarray(self._hr)
            hr_mean, hr_min, hr_max = float(hr.mean()), float(hr.min()), float(hr.max())
        spo2_mean = spo2_min = d3 = d4 = None
        if self._spo2:
            spo2_mean, spo2_min = float(np.mean(self._spo2)), float(np.min(self._spo2))
            if len(self._spo2) >= DESAT_MIN_READINGS:  # sparser, desaturations go unseen
                d3, d4 = self._desat_counts[3], self._desat_counts[4]
        activity = movement = None
        if self._motion:
            activity = float(np.sum(self._motion))
            movement = 1.0 if activity >= MOVEMENT_COUNTS else 0.0
        self._rr, self._hr, self._spo2, self._motion = [], [], [], []
        self._desat_counts = {3: 0, 4: 0}
        return (hr_mean, hr_min, hr_max, rmssd, sdnn, spo2_mean, spo2_min, d3, d4, activity,
                movement, *cyclic)

    def _cyclic(self, end: float) -> tuple:
        """The trailing-window CVHR features at `end` (None each without enough clean beats);
        beats older than the window are dropped, so the buffer stays a few hundred beats."""
        while self._beats and self._beats[0][0] < end - BEAT_BUFFER_S:
            self._beats.popleft()
        got = None
        if len(self._beats) >= cvhr.LOCAL_BEATS:
            beats = np.asarray(self._beats)
            beats = beats[np.argsort(beats[:, 0], kind="stable")]  # a source may send late
            got = cvhr.trailing_features(beats[:, 0], beats[:, 1], end)
        return got if got is not None else (None,) * len(cvhr.TRAILING_FEATURES)


class _Desaturations:
    """Counts desaturations: a fall of at least `drop` % below the baseline, lasting >= 10 s
    from where saturation left the baseline (docs/apnea-from-rr.md).

    - Saturation is read as the median of the last 5 s (at least the last 3 readings within
      15 s), so a single reading off by a point or two starts nothing.
    - The baseline is the mean of the last 2 minutes spent outside any desaturation, never
      less than 30 s of it (through a run of cyclic falls, or after a long one, it stays what
      it was before); dips that were not desaturations join it again. A fall can start only
      from at least 30 s of it: not from the first readings, nor after a gap of over 90 s
      between readings, which starts the baseline again.
    - A fall starts 1 % under the baseline and is counted once it is 10 s old with two
      readings at depth. It ends back within 1 % of the baseline, or when two readings in a
      row have recovered a third of the fall (2 % at least) from its lowest point. In the cyclic
      desaturations of obstructive apnea saturation rarely regains the baseline between
      events: each new fall from a recovery is counted when it also goes `drop` % under the
      recovery's peak (the pre-event peak of the usual ODI rule), so neither a slow,
      wavering recovery nor noise on a long, level desaturation is a second event.
    - A fall or a recovery lasting over `DESAT_MAX_S` is a new level, not an event: the
      baseline starts again there and, for its first 2 minutes, follows a rise at once.
    """

    def __init__(self, drop: float):
        self.drop = drop
        self._window: deque[tuple[float, float]] = deque()  # (t, level) outside falls
        self._sum = 0.0
        self._recent: deque[tuple[float, float]] = deque()  # raw readings for the median
        self._state = _BASELINE
        self._since = 0.0  # when the current fall or recovery began
        self._base = 0.0  # the baseline it fell from
        self._ref = 0.0  # the level this fall started from: the baseline or a recovery's peak
        self._nadir = 0.0
        self._deep = 0  # readings of this fall at depth
        self._counted = False
        self._up = 0  # readings in a row risen enough from the lowest to end the fall
        self._held: list[tuple[float, float]] = []  # readings since the baseline was left
        self._chain_counted = False  # whether they held a desaturation
        self._last_t = float("-inf")
        self._fresh_until = -1.0  # a new level's baseline follows a rise until then

    def _level(self, t: float, pct: float) -> float:
        recent = self._recent
        recent.append((t, pct))
        while len(recent) > 3 and recent[0][0] <= t - DESAT_SMOOTH_S:
            recent.popleft()
        while recent[0][0] < t - DESAT_SMOOTH_MAX_S:
            recent.popleft()
        values = sorted(p for _, p in recent)
        return (values[(len(values) - 1) // 2] + values[len(values) // 2]) / 2.0

    def _fall(self, t: float, level: float, base: float, ref: float) -> None:
        self._state, self._since, self._base, self._ref = _FALLING, t, base, ref
        self._nadir, self._deep, self._counted, self._up = level, 0, False, 0

    def _restart_baseline(self, t: float) -> None:
        self._state = _BASELINE
        self._window.clear()
        self._sum = 0.0
        self._held.clear()
        self._fresh_until = t + DESAT_BASELINE_S

    def _back(self) -> None:
        """Back at the baseline: the readings since it was left join it unless they were a
        desaturation (else the low side of the noise would never count, and the baseline
        would creep up until noise made desaturations)."""
        self._state = _BASELINE
        if not self._chain_counted:
            for t, level in self._held:
                self._window.append((t, level))
                self._sum += level
        self._held.clear()

    def add(self, t: float, pct: float) -> int:
        if self._recent and t - self._recent[-1][0] > DESAT_GAP_S:
            self._recent.clear()  # the probe was off: what it reads now starts afresh
            self._restart_baseline(-1.0)
        level = self._level(t, pct)
        new_time = t > self._last_t  # readings stamped alike (a burst) count once below
        self._last_t = max(self._last_t, t)
        window = self._window
        counted = 0
        if self._state != _BASELINE:
            self._held.append((t, level))
        if self._state == _FALLING:
            self._nadir = min(self._nadir, level)
            if new_time and level <= min(self._base, self._ref) - self.drop:
                self._deep += 1
            if not self._counted and self._deep >= 2 and t - self._since >= DESAT_MIN_S:
                self._counted = self._chain_counted = True
                counted = 1
            risen = level >= self._nadir + max(DESAT_RESAT, (self._base - self._nadir) / 3.0)
            self._up = (self._up + (1 if new_time else 0)) if risen else 0
            if level >= self._base - 1.0:
                self._back()
            elif self._up >= DESAT_UP_READINGS:  # up from the lowest: a recovery, not noise
                self._state, self._since, self._ref = _RECOVERING, t, level
            elif t - self._since > DESAT_MAX_S:
                self._restart_baseline(t)
        elif self._state == _RECOVERING:
            if level >= self._base - 1.0:
                self._back()
            elif level <= self._ref - 1.0:
                self._fall(t, level, self._base, self._ref)
            elif t - self._since > DESAT_MAX_S:
                self._restart_baseline(t)
            else:
                self._ref = max(self._ref, level)
        if self._state == _BASELINE:
            mean = self._sum / len(window) if window else level
            if window and t - window[0][0] >= DESAT_BASELINE_MIN_S and level <= mean - 1.0:
                self._fall(t, level, mean, mean)
                self._chain_counted = False
                self._held.append((t, level))
            else:
                if t < self._fresh_until and level > mean + 1.0:
                    window.clear()  # a new level's baseline: saturation rising back
                    self._sum = 0.0
                window.append((t, level))
                self._sum += level
            # The last 2 minutes, but never less than 30 s of it: after a long fall the
            # baseline is still the one before it.
            while (len(window) > 1 and window[0][0] < t - DESAT_BASELINE_S
                   and window[1][0] <= t - DESAT_BASELINE_MIN_S):
                self._sum -= window.popleft()[1]
        return counted


class CgmReducer:
    """Latest reading, its age, 5-minute delta, rate of change, direction and error per epoch."""

    def __init__(self):
        self._readings: deque[Glucose] = deque()

    def add(self, g: Glucose) -> None:
        if self._readings and g.t <= self._readings[-1].t:
            if g.t == self._readings[-1].t:
                return  # the same reading again
            # Out of order: keep the list sorted.
            items = sorted([*self._readings, g], key=lambda r: r.t)
            self._readings = deque(items)
        else:
            self._readings.append(g)

    def close(self, epoch: int) -> tuple:
        end = epoch_start(epoch) + EPOCH_S
        while self._readings and self._readings[0].t < end - 60 * CGM_MAX_AGE_MIN - 900:
            self._readings.popleft()
        return self.row(epoch)

    def times(self) -> list[float]:
        """When each reading held was taken, oldest first."""
        return [r.t for r in self._readings]

    def row(self, epoch: int) -> tuple:
        """The values of `epoch` from the readings held, without letting any go: also for an
        epoch already closed, when a reading for it arrives late."""
        end = epoch_start(epoch) + EPOCH_S
        now = [r for r in self._readings if r.t < end]
        if not now:
            return (None,) * 6
        latest = now[-1]
        age_min = (end - latest.t) / 60.0
        if age_min > CGM_MAX_AGE_MIN:
            return (None,) * 6
        if latest.sgv is None:
            return (None, age_min, None, None, None, latest.error_code)
        valid = [r for r in now if r.sgv is not None]
        delta5 = None
        for r in reversed(valid[:-1]):
            dt = latest.t - r.t
            if 240 <= dt <= 360:
                delta5 = float(latest.sgv - r.sgv)
                break
            if dt > 360:
                break
        recent = [r for r in valid if latest.t - r.t <= 60 * CGM_ROC_WINDOW_MIN]
        roc = None
        if len(recent) >= 2 and recent[-1].t - recent[0].t >= 240:
            t = np.array([r.t for r in recent]) / 60.0
            g = np.array([r.sgv for r in recent], dtype=float)
            roc = float(np.polyfit(t - t[-1], g, 1)[0])
        if latest.direction and units.trend_of(latest.direction) != 0:
            trend = units.trend_of(latest.direction)
        else:
            trend = units.trend(roc)
        return (float(latest.sgv), age_min, delta5, roc, float(trend), None)


class RoomReducer:
    """Mean of each room quantity over the epoch."""

    _FIELDS = ("temp_c", "humidity_pct", "light_lux", "co2_ppm", "noise_dba")

    def __init__(self):
        self._acc: list[list[float]] = [[] for _ in self._FIELDS]

    def add(self, r: Room) -> None:
        for i, name in enumerate(self._FIELDS):
            v = getattr(r, name)
            if v is not None:
                self._acc[i].append(v)

    def close(self, epoch: int) -> tuple:
        del epoch
        out = tuple(float(np.mean(a)) if a else None for a in self._acc)
        self._acc = [[] for _ in self._FIELDS]
        return out
