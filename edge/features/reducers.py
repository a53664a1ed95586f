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
DESAT_SMOOTH_S = 5.0  # saturation is read as the median of the last 5 s
DESAT_MAX_S = 180.0  # a fall lasting longer is a new baseline level, not an event
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
    from where saturation left the baseline.

    The baseline is the mean of the preceding two minutes of saturation outside any fall. A
    fall starts when saturation goes 1 % under it; it is counted in the epoch where it is
    confirmed (deep enough and 10 s old), and it ends when saturation is back within 1 % of
    the baseline or has recovered at least two thirds of the fall (2 % at least) from its
    lowest value: in cyclic desaturations, the pattern of obstructive apnea, saturation
    rarely regains the baseline between events, and a rule waiting for it read a run of them
    as one. A fall lasting over `DESAT_MAX_S` is a new level, not an event: the baseline
    starts again from there.
    """

    def __init__(self, drop: float):
        self.drop = drop
        self._window: deque[tuple[float, float]] = deque()
        self._recent: deque[tuple[float, float]] = deque()
        self._sum = 0.0
        self._since: float | None = None  # when the current fall left the baseline
        self._baseline = 0.0  # the baseline it fell from
        self._nadir = 0.0
        self._counted = False

    def add(self, t: float, pct: float) -> int:
        # The median of the last few seconds: a single reading off by a point or two (a
        # probe's noise, a movement) neither starts nor deepens a fall.
        recent = self._recent
        recent.append((t, pct))
        while recent[0][0] <= t - DESAT_SMOOTH_S:
            recent.popleft()
        if len(recent) > 1:
            values = sorted(p for _, p in recent)
            pct = (values[(len(values) - 1) // 2] + values[len(values) // 2]) / 2.0
        counted = 0
        if self._since is not None:
            self._nadir = min(self._nadir, pct)
            fall = self._baseline - self._nadir
            if pct >= self._baseline - 1.0 or pct >= self._nadir + max(2.0, fall * 2.0 / 3.0):
                self._since = None
            elif t - self._since > DESAT_MAX_S:
                self._since = None
                self._window.clear()
                self._sum = 0.0
            elif (not self._counted and fall >= self.drop
                  and t - self._since >= DESAT_MIN_S):
                self._counted = True
                counted = 1
        if self._since is None and self._window:
            baseline = self._sum / len(self._window)
            if pct <= baseline - 1.0:
                self._since, self._baseline, self._nadir = t, baseline, pct
                self._counted = False
        if self._since is None:
            # Only saturation outside falls forms the baseline.
            self._window.append((t, pct))
            self._sum += pct
        while self._window and self._window[0][0] < t - DESAT_BASELINE_S:
            self._sum -= self._window.popleft()[1]
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
