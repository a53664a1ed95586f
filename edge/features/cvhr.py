"""Apnea minutes from the heart rhythm alone: cyclic variation of heart rate (CVHR).

Each apnea or hypopnea ends in an arousal: heart rate slows during the event and surges when
breathing resumes, so a run of events makes the heart rate swing with the event cycle, one
swing every 20-100 s (0.01-0.05 Hz). This module turns beat-to-beat RR intervals into
per-minute features of that swing, and a tiny logistic model (weights in
edge/models/breathing_rr.json, trained by tools/train/apnea_real.py on the PhysioNet
Apnea-ECG recordings) into a per-minute apnea probability, a smoothed apnea-minute mask and
a per-night apnea index (apnea minutes per hour). The method and its limits are in
docs/apnea-from-rr.md.

Two inputs, one model file:
- `beats`: RR intervals themselves (replay, imports, a live night still in memory); CVHR
  features from a 2 Hz heart-rate series and standard heart-rate-variability features from
  the RR series at 4 Hz (`minute_features`), each also relative to the night's own median.
- `epochs`: the per-30-s wearable columns the edge stores (mean/min/max heart rate, RMSSD,
  SDNN, and the cyclic-variation features the wearable reducer computes at each epoch close
  from the last 5 minutes of beats, `trailing_features`; `epoch_minute_features`). A 30-s grid
  cannot resolve the 20-60 s cycles; the stored CVHR columns carry them. Nights stored before
  those columns existed get the `epochs_summary` head (the summaries alone, markedly weaker;
  see the model card).

Every window is bounded (a few minutes either side of a minute) and every scaling is relative
to the person's own heart: the local heart rate, and for the beats head also the same
feature's median over the person's own night (the edge has the whole night when it
summarises it), so a night of someone never seen is treated the same way. A minute without enough clean beats has no
probability (NaN): it is missing, never "no apnea".
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

MODELS = Path(__file__).parent.parent / "models"
MODEL_FILE = "breathing_rr.json"
RR_MIN_MS = 300.0  # 200 bpm
RR_MAX_MS = 2000.0  # 30 bpm
FS = 2.0  # Hz: the regular heart-rate grid
WINDOW_S = 300.0  # spectral window centred on each minute
LOCAL_BEATS = 11  # the running median an interval is checked against
MAX_DEVIATION = 0.2  # an interval off its local median by more than 20 % is an artefact
MAX_GAP_S = 5.0  # grid points further than this from a clean beat are invalid
MIN_VALID = 0.5  # a minute needs half its own minute and half its window covered
CYCLE_RISE_PCT = 3.0  # a heart-rate rise of at least 3 % of the local rate counts as a cycle
CYCLE_MIN_S = 20.0  # the shortest cycle
CYCLE_SMOOTH_S = 10.0  # smoothing that removes the breath-by-breath (sinus arrhythmia) swing
CYCLE_LAGS_S = (20.0, 100.0)  # the lags whose autocorrelation measures cycle regularity
CONTEXT = (-4, -2, 0, 2, 4)  # minutes whose features join each minute's input (epoch heads)
CONTEXT_MEAN = 11  # and the mean of the features over +-5 minutes
RR_FS = 4.0  # Hz: the regular RR-interval grid of the spectral HRV features
NN50_MS = 50.0  # successive intervals differing by more than this count towards pNN50
SMOOTH = 3  # minutes: running mean of the probability before the threshold
SCREEN_INDEX = 15.0  # events or apnea minutes per hour
SCREEN_MESSAGE = "possible sleep apnea: suggest seeing a doctor"

BANDS = {"vlf": (0.003, 0.01), "cvhr": (0.01, 0.05), "lf": (0.05, 0.15), "hf": (0.15, 0.4)}
BEAT_FEATURES = ("cvhr_log_power", "cvhr_fraction", "vlf_fraction", "lf_fraction", "hf_fraction",
                 "swing_3min_pct", "swing_1min_pct", "sd_5min_pct", "cycles_5min", "log_hr",
                 "cycle_regularity")
RR_FEATURES = ("log_rr", "log_sdnn", "log_rmssd", "pnn50", "log_vlf_power", "log_lf_power",
               "log_hf_power", "log_lf_hf", "log_vlf_over_lf_hf", "hf_peak_hz", "log_sd_1min")
BEATS_HEAD_FEATURES = BEAT_FEATURES + RR_FEATURES
RR_BANDS = {"vlf": (0.01, 0.04), "lf": (0.04, 0.15), "hf": (0.15, 0.4)}
TRAILING_FEATURES = ("cv_fraction", "cv_swing_pct", "cv_cycles", "cv_regularity")
EPOCH_FEATURES = ("range_pct", "range_5min_pct", "range_9min_pct", "sd_5min_pct", "sd_9min_pct",
                  "step_5min_pct", "log_sdnn_5min", "rmssd_over_sdnn_5min", "log_hr")


def clean_beats(t_s: np.ndarray, rr_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The beats whose interval is physiological (300-2000 ms) and within 20 % of the median
    of the surrounding 11 intervals: an ectopic beat, a missed beat (a doubled interval) or
    a spurious one (a split interval) is dropped, never carried into the heart rate."""
    t_s, rr_ms = np.asarray(t_s, dtype=np.float64), np.asarray(rr_ms, dtype=np.float64)
    ok = np.isfinite(t_s) & np.isfinite(rr_ms) & (rr_ms >= RR_MIN_MS) & (rr_ms <= RR_MAX_MS)
    t_s, rr_ms = t_s[ok], rr_ms[ok]
    if rr_ms.size < LOCAL_BEATS:
        return t_s[:0], rr_ms[:0]
    k = LOCAL_BEATS // 2
    padded = np.pad(rr_ms, k, mode="edge")
    median = np.median(np.lib.stride_tricks.sliding_window_view(padded, LOCAL_BEATS), axis=1)
    good = np.abs(rr_ms - median) <= MAX_DEVIATION * median
    return t_s[good], rr_ms[good]


def hr_grid(t_s: np.ndarray, rr_ms: np.ndarray, n_minutes: int,
            start_s: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Heart rate (bpm) on a 2 Hz grid from `start_s` for `n_minutes`, and where it is valid
    (a clean beat within 5 s). Input beats must already be cleaned."""
    grid = start_s + np.arange(int(n_minutes * 60 * FS)) / FS
    if t_s.size < 2:
        return np.full(grid.size, np.nan), np.zeros(grid.size, dtype=bool)
    hr = np.interp(grid, t_s, 60000.0 / rr_ms)
    at = np.searchsorted(t_s, grid)
    before = np.abs(grid - t_s[np.clip(at - 1, 0, t_s.size - 1)])
    after = np.abs(t_s[np.clip(at, 0, t_s.size - 1)] - grid)
    valid = np.minimum(before, after) <= MAX_GAP_S
    return hr, valid


def _band_masks(n: int) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    freqs = np.fft.rfftfreq(n, 1.0 / FS)
    masks = {name: (freqs >= lo) & (freqs < hi) for name, (lo, hi) in BANDS.items()}
    total = (freqs >= BANDS["vlf"][0]) & (freqs < BANDS["hf"][1])
    return freqs, masks, total


def _smoothed(pct: np.ndarray) -> np.ndarray:
    """Each row's 10-s running mean: the cycles without the breath-by-breath swing."""
    width = int(CYCLE_SMOOTH_S * FS)
    csum = np.cumsum(np.pad(pct, ((0, 0), (width // 2, width - width // 2)), mode="edge"), axis=1)
    return (csum[:, width:] - csum[:, :-width]) / width


def _cycles(smooth: np.ndarray) -> np.ndarray:
    """Per row of smoothed heart rate (% of its mean): rises by >= 3 % over the preceding
    30 s, a rise counting unless another came within the 20 s before it."""
    back = int(30 * FS)
    padded = np.concatenate([np.repeat(smooth[:, :1], back, axis=1), smooth], axis=1)
    low = np.lib.stride_tricks.sliding_window_view(padded, back + 1, axis=1).min(axis=2)
    peak = np.zeros_like(smooth, dtype=bool)
    peak[:, 1:-1] = (smooth[:, 1:-1] > smooth[:, :-2]) & (smooth[:, 1:-1] >= smooth[:, 2:])
    rise = peak & (smooth - low >= CYCLE_RISE_PCT)
    gap = int(CYCLE_MIN_S * FS)
    seen = np.cumsum(rise, axis=1)
    before = np.concatenate([np.zeros((rise.shape[0], gap + 1)), seen[:, :-gap - 1]], axis=1)
    recent = seen - rise - before  # rises in the 20 s before each sample
    return (rise & (recent == 0)).sum(axis=1).astype(np.float64)


def _regularity(pct: np.ndarray) -> np.ndarray:
    """Per row of smoothed heart rate: the highest autocorrelation at a lag of 20-100 s, near 1
    when the heart rate repeats one cycle whatever its amplitude (a small swing in a stiff
    heart counts too)."""
    x = pct - pct.mean(axis=1, keepdims=True)
    spec = np.fft.rfft(x, 2 * x.shape[1], axis=1)
    acf = np.fft.irfft(spec * np.conj(spec), axis=1)[:, :x.shape[1]]
    lo, hi = int(CYCLE_LAGS_S[0] * FS), int(CYCLE_LAGS_S[1] * FS)
    zero = np.maximum(acf[:, 0], 1e-12)
    return np.where(acf[:, 0] > 0, acf[:, lo:hi].max(axis=1) / zero, 0.0)


def minute_features(t_s, rr_ms, n_minutes: int, start_s: float = 0.0) -> np.ndarray:
    """[n_minutes, len(BEATS_HEAD_FEATURES)] features per minute (NaN rows: too few clean
    beats): the CVHR features (BEAT_FEATURES), then the HRV features (RR_FEATURES)."""
    t_s, rr_ms = clean_beats(t_s, rr_ms)
    out = np.concatenate([cvhr_features(t_s, rr_ms, n_minutes, start_s),
                          rr_features(t_s, rr_ms, n_minutes, start_s)], axis=1)
    out[np.isnan(out).any(axis=1)] = np.nan
    return out


def _centred_windows(n_minutes: int, fs: float, size: int) -> np.ndarray:
    """Start sample of each minute's window of `size` samples centred on the minute (shifted
    inside the recording at its ends)."""
    centres = (np.arange(n_minutes) * 60 + 30) * fs
    return np.clip(centres.astype(int) - size // 2, 0, max(int(n_minutes * 60 * fs) - size, 0))


def cvhr_features(t_s, rr_ms, n_minutes: int, start_s: float = 0.0) -> np.ndarray:
    """[n_minutes, len(BEAT_FEATURES)] CVHR features per minute from cleaned beats.

    Minute m covers [start_s + 60 m, start_s + 60 (m + 1)); its spectral window is the 5 minutes
    centred on it (shifted inside the recording at the ends), its swing windows the minute
    itself and the 3 minutes centred on it."""
    hr, valid = hr_grid(t_s, rr_ms, n_minutes, start_s)
    out = np.full((n_minutes, len(BEAT_FEATURES)), np.nan)
    width = int(WINDOW_S * FS)
    per_min = int(60 * FS)
    if hr.size < width:
        return out
    minutes = np.arange(n_minutes)
    starts = np.clip((minutes * 60 + 30) * int(FS) - width // 2, 0, hr.size - width)
    span = starts[:, None] + np.arange(width)
    own = minutes[:, None] * per_min + np.arange(per_min)
    three = np.clip((minutes[:, None] - 1) * per_min + np.arange(3 * per_min), 0, hr.size - 1)
    ok = (valid[span].mean(axis=1) >= MIN_VALID) & (valid[own].mean(axis=1) >= MIN_VALID)
    if not ok.any():
        return out
    w = _window_rows(hr[span[ok]])
    m = w["mean"]
    p3 = np.percentile(hr[three[ok]], (10, 90), axis=1)
    p1 = np.percentile(hr[own[ok]], (10, 90), axis=1)
    out[ok] = np.stack([np.log(w["cvhr_power"] + 1e-6), w["cvhr"],
                        np.log(w["vlf"] + 1e-6), np.log(w["lf"] + 1e-6),
                        np.log(w["hf"] + 1e-6), (p3[1] - p3[0]) / m * 100.0,
                        (p1[1] - p1[0]) / m * 100.0, w["sd_pct"], w["cycles"], np.log(m),
                        w["regularity"]], axis=1)
    return out


def rr_features(t_s, rr_ms, n_minutes: int, start_s: float = 0.0) -> np.ndarray:
    """[n_minutes, len(RR_FEATURES)] standard HRV features per minute from cleaned beats, over
    the 5 minutes centred on the minute: mean RR, SDNN, RMSSD and pNN50 of the beats, the power
    of the RR series (4 Hz, trend removed) in 0.01-0.04 Hz (where the 25-100 s apnea cycle
    lies), 0.04-0.15 Hz and 0.15-0.4 Hz (the breathing swing, weaker while breathing stops),
    their ratios, the breathing-band peak frequency, and the spread of the minute's own
    intervals. NaN rows where the window is not half covered by clean beats."""
    out = np.full((n_minutes, len(RR_FEATURES)), np.nan)
    size = int(WINDOW_S * RR_FS)
    if t_s.size < 2 or n_minutes * 60 * RR_FS < size:
        return out
    grid = start_s + np.arange(int(n_minutes * 60 * RR_FS)) / RR_FS
    series = np.interp(grid, t_s, rr_ms)
    at = np.searchsorted(t_s, grid)
    gap = np.minimum(np.abs(grid - t_s[np.clip(at - 1, 0, t_s.size - 1)]),
                     np.abs(t_s[np.clip(at, 0, t_s.size - 1)] - grid))
    starts = _centred_windows(n_minutes, RR_FS, size)
    span = starts[:, None] + np.arange(size)
    first = np.searchsorted(t_s, start_s + starts / RR_FS)
    last = np.searchsorted(t_s, start_s + (starts + size) / RR_FS)
    own_first = np.searchsorted(t_s, start_s + np.arange(n_minutes) * 60.0)
    own_last = np.searchsorted(t_s, start_s + (np.arange(n_minutes) + 1) * 60.0)
    ok = ((gap[span] <= MAX_GAP_S).mean(axis=1) >= MIN_VALID) & (last - first > 20) & \
        (own_last - own_first > 10)
    if not ok.any():
        return out
    x = series[span[ok]]
    mean = x.mean(axis=1)
    dev = x - mean[:, None]
    ramp = np.arange(size) - (size - 1) / 2.0
    dev -= np.outer(dev @ ramp / (ramp @ ramp), ramp)
    power = np.abs(np.fft.rfft(dev * np.hanning(size), axis=1)) ** 2 / size
    freqs = np.fft.rfftfreq(size, 1.0 / RR_FS)
    band = {name: power[:, (freqs >= lo) & (freqs < hi)].sum(axis=1) + 1e-3
            for name, (lo, hi) in RR_BANDS.items()}
    in_hf = (freqs >= RR_BANDS["hf"][0]) & (freqs < RR_BANDS["hf"][1])
    sdnn, rmssd, pnn50 = _beat_spreads(rr_ms, first[ok], last[ok])
    own_sd, _, _ = _beat_spreads(rr_ms, own_first[ok], own_last[ok])
    out[ok] = np.stack([np.log(mean), np.log(sdnn + 1e-3), np.log(rmssd + 1e-3), pnn50,
                        np.log(band["vlf"]), np.log(band["lf"]), np.log(band["hf"]),
                        np.log(band["lf"] / band["hf"]), np.log(band["vlf"] / (band["lf"] + band["hf"])),
                        freqs[in_hf][np.argmax(power[:, in_hf], axis=1)], np.log(own_sd + 1.0)], axis=1)
    return out


def _beat_spreads(rr_ms: np.ndarray, first: np.ndarray, last: np.ndarray):
    """SDNN, RMSSD and pNN50 of the intervals rr_ms[first:last] per row (running sums, no loop;
    each row needs at least 2 intervals)."""
    csum = np.concatenate([[0.0], np.cumsum(rr_ms)])
    csq = np.concatenate([[0.0], np.cumsum(rr_ms ** 2)])
    diff = np.diff(rr_ms)
    dsq = np.concatenate([[0.0], np.cumsum(diff ** 2)])
    big = np.concatenate([[0], np.cumsum(np.abs(diff) > NN50_MS)])
    n = np.maximum(last - first, 2).astype(np.float64)
    mean = (csum[last] - csum[first]) / n
    sdnn = np.sqrt(np.maximum((csq[last] - csq[first]) / n - mean ** 2, 0.0))
    pairs = np.maximum(last - 1 - first, 1).astype(np.float64)  # differences inside the rows
    rmssd = np.sqrt((dsq[last - 1] - dsq[first]) / pairs)
    pnn50 = (big[last - 1] - big[first]) / pairs
    return sdnn, rmssd, pnn50


def _window_rows(x: np.ndarray) -> dict[str, np.ndarray]:
    """Per row of 2 Hz heart rate (one 5-minute window each): its mean, band power in and
    shares of the CVHR and other bands, spread, cycle count and regularity, all relative to
    the window's own mean with its linear trend removed. Shared by the per-minute features
    and the trailing window the wearable reducer keeps (`trailing_features`)."""
    width = x.shape[1]
    mean = x.mean(axis=1, keepdims=True)
    pct = (x - mean) / mean * 100.0
    ramp = np.arange(width) - (width - 1) / 2.0
    pct -= np.outer(pct @ ramp / (ramp @ ramp), ramp)  # remove each window's linear trend
    _freqs, masks, total = _band_masks(width)
    power = np.abs(np.fft.rfft(pct * np.hanning(width), axis=1)) ** 2
    smooth = _smoothed(pct)
    all_power = power[:, total].sum(axis=1) + 1e-9
    out = {name: power[:, mask].sum(axis=1) / all_power for name, mask in masks.items()}
    out.update(mean=mean[:, 0], cvhr_power=power[:, masks["cvhr"]].sum(axis=1),
               sd_pct=pct.std(axis=1), cycles=_cycles(smooth), regularity=_regularity(smooth))
    return out


def trailing_features(t_s, rr_ms, end_s: float) -> tuple | None:
    """CVHR features of the 5 minutes of beats before `end_s`, as the wearable stream stores
    them at each epoch close (names in TRAILING_FEATURES): the 0.01-0.05 Hz share of heart-rate
    power, the 10th-90th percentile heart-rate swing over the last 3 minutes (% of the local
    rate), the cycle count and the cycle regularity. Same artefact filter and grid as
    `minute_features`; None when the window is not half covered by clean beats (or its last
    minute is not)."""
    t_s, rr_ms = clean_beats(t_s, rr_ms)
    width, per_min = int(WINDOW_S * FS), int(60 * FS)
    hr, valid = hr_grid(t_s, rr_ms, int(WINDOW_S // 60), end_s - WINDOW_S)
    if valid.mean() < MIN_VALID or valid[-per_min:].mean() < MIN_VALID:
        return None
    w = _window_rows(hr[None, :width])
    lo, hi = np.percentile(hr[-3 * per_min:], (10, 90))
    return (float(w["cvhr"][0]), float((hi - lo) / w["mean"][0] * 100.0), float(w["cycles"][0]),
            float(w["regularity"][0]))


def _rolling(x: np.ndarray, width: int, fn) -> np.ndarray:
    """Centred, NaN-aware rolling statistic over `width` (odd) samples."""
    k = width // 2
    padded = np.concatenate([np.full(k, np.nan), x, np.full(k, np.nan)])
    view = np.lib.stride_tricks.sliding_window_view(padded, width)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows stay NaN
        return fn(view, axis=1)


def has_cyclic(wearable: dict[str, np.ndarray]) -> bool:
    """Whether the stored night carries the trailing-window CVHR columns (records from before
    they were added decode with them missing)."""
    cols = [wearable.get(name) for name in TRAILING_FEATURES]
    return all(c is not None for c in cols) and bool(np.isfinite(np.asarray(cols[0], dtype=float)).any())


def epoch_minute_features(wearable: dict[str, np.ndarray], cyclic: bool = True) -> np.ndarray:
    """[n_epochs // 2, n] features per minute from the stored per-30-s wearable columns
    (epoch pairs 2m, 2m + 1): EPOCH_FEATURES from the summaries, then with `cyclic` the
    TRAILING_FEATURES the reducer stored (the mean of the pair). NaN rows where the epochs
    have no beats (or, with `cyclic`, no trailing-window features)."""
    hr = np.asarray(wearable["hr_mean_bpm"], dtype=np.float64)
    span = np.asarray(wearable["hr_max_bpm"], dtype=np.float64) - np.asarray(wearable["hr_min_bpm"])
    sdnn = np.asarray(wearable["sdnn_ms"], dtype=np.float64)
    rmssd = np.asarray(wearable["rmssd_ms"], dtype=np.float64)
    base = _rolling(hr, 21, np.nanmedian)  # +-5 minutes
    span_pct = span / base * 100.0
    dev = (hr - base) / base * 100.0
    step = np.abs(np.diff(hr, prepend=np.nan)) / base * 100.0
    log_sdnn = np.log1p(sdnn)
    cols = [span_pct, _rolling(span_pct, 11, np.nanmean), _rolling(span_pct, 19, np.nanmean),
            _rolling(dev, 11, np.nanstd), _rolling(dev, 19, np.nanstd), _rolling(step, 11, np.nanmean),
            _rolling(log_sdnn, 11, np.nanmean),
            _rolling(np.log1p(rmssd), 11, np.nanmean) - _rolling(log_sdnn, 11, np.nanmean),
            np.log(base)]
    if cyclic:
        cols += [np.asarray(wearable[name], dtype=np.float64) for name in TRAILING_FEATURES]
    f = np.stack(cols, axis=1)
    n = f.shape[0] // 2
    own = ~np.isnan(sdnn[:2 * n].reshape(n, 2)).all(axis=1)  # the minute itself had beats
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = np.nanmean(f[:2 * n].reshape(n, 2, -1), axis=1)
    out[~own] = np.nan
    if cyclic:
        out[np.isnan(out[:, len(EPOCH_FEATURES):]).any(axis=1)] = np.nan
    return out


def night_relative(feats: np.ndarray) -> np.ndarray:
    """The features next to their difference from the night's median of the same feature: how
    a minute stands against the same person's night, which a stiff heart (small swings all
    night) and a lively one (large swings all night) share."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a night without a valid minute
        median = np.nanmedian(feats, axis=0)
    return np.concatenate([feats, feats - median], axis=1)


def context_inputs(feats: np.ndarray, offsets=CONTEXT, mean_width: int = CONTEXT_MEAN) -> np.ndarray:
    """Each minute's features next to its neighbours' (`offsets`) and their running mean over
    `mean_width` minutes. Missing neighbours stay NaN here; the model puts them at its training
    mean."""
    n, width = feats.shape
    k = max(abs(o) for o in offsets)
    padded = np.concatenate([np.full((k, width), np.nan), feats, np.full((k, width), np.nan)])
    shifted = [padded[k + o:k + o + n] for o in offsets]
    mean = np.stack([_rolling(feats[:, j], mean_width, np.nanmean) for j in range(width)], axis=1)
    return np.concatenate(shifted + [mean], axis=1)


def head_inputs(feats: np.ndarray, meta: dict) -> np.ndarray:
    """A head's model inputs from its per-minute features, as its meta describes them
    (`night_relative`, `context_minutes`, `context_mean_minutes`; absent: the epoch heads'
    defaults; `columns`: the beats head's subset of BEATS_HEAD_FEATURES, by name)."""
    cols = meta.get("columns")
    if cols is not None:
        feats = feats[:, [BEATS_HEAD_FEATURES.index(c) for c in cols]]
    if meta.get("night_relative"):
        feats = night_relative(feats)
    return context_inputs(feats, tuple(meta.get("context_minutes", CONTEXT)),
                          int(meta.get("context_mean_minutes", CONTEXT_MEAN)))


class LogisticHead:
    """Standardize with the training mean and spread, then a logistic unit."""

    def __init__(self, meta: dict):
        self.mean = np.asarray(meta["mean"], dtype=np.float64)
        self.scale = np.asarray(meta["scale"], dtype=np.float64)
        self.weights = np.asarray(meta["weights"], dtype=np.float64)
        self.bias = float(meta["bias"])
        self.threshold = float(meta.get("threshold", 0.5))
        self.meta = meta

    def probability(self, feats: np.ndarray) -> np.ndarray:
        """Per-minute apnea probability; NaN for minutes whose own features are missing."""
        x = (head_inputs(feats, self.meta) - self.mean) / self.scale
        own = ~np.isnan(feats).any(axis=1)
        z = np.clip(np.nan_to_num(x) @ self.weights + self.bias, -30, 30)
        p = 1.0 / (1.0 + np.exp(-z))
        p[~own] = np.nan
        return p


def smooth_minutes(prob: np.ndarray, threshold: float) -> np.ndarray:
    """Apnea minutes: the running mean of the probability over 3 minutes at or above the
    threshold (isolated single-minute flips are mostly noise). NaN stays missing (False)."""
    mean = _rolling(prob, SMOOTH, np.nanmean)
    return np.nan_to_num(mean, nan=-1.0) >= threshold


def apnea_index(flags: np.ndarray, prob: np.ndarray) -> float | None:
    """Apnea minutes per hour of minutes that had a probability (None under an hour)."""
    valid = ~np.isnan(prob)
    if valid.sum() < 60:
        return None
    return float(flags[valid].sum()) * 60.0 / float(valid.sum())


def screen(index: float | None) -> str | None:
    """The screening message at an index of 15 or more: a suggestion, never a diagnosis."""
    return SCREEN_MESSAGE if index is not None and index >= SCREEN_INDEX else None


HEADS = ("beats", "epochs", "epochs_summary")


class RrApneaModel:
    """The heads of edge/models/breathing_rr.json: `beats`, `epochs` (stored summaries and
    the stored trailing-window CVHR features) and `epochs_summary` (the summaries alone, for
    nights stored before the CVHR features were on the wire)."""

    def __init__(self, meta: dict):
        self.meta = meta
        self.heads = {kind: LogisticHead(meta[kind]) for kind in HEADS if kind in meta}

    @classmethod
    def load(cls, models: Path = MODELS) -> RrApneaModel | None:
        path = Path(models) / MODEL_FILE
        return cls(json.loads(path.read_text())) if path.exists() else None

    def night(self, kind: str, feats: np.ndarray, partner_feats: np.ndarray | None = None) -> dict:
        """Per-minute probability, apnea minutes and the night's index from features of `kind`.
        A head whose meta names a partner (`average_with`) takes the mean of its own and the
        partner's probability, from `partner_feats` (the partner's features of the same
        minutes); a minute the partner has none for keeps the head's own (the first minutes
        of a night, a pulse sensor whose 5-minute windows seldom fill), and a minute the head
        has none for stays without. Without them, its own alone. `with` names the partner
        when it took part in at least one minute, else None."""
        head = self.heads[kind]
        prob = head.probability(feats)
        partner = head.meta.get("average_with")
        if partner_feats is not None and partner in self.heads:
            other = np.full(prob.size, np.nan)
            got = self.heads[partner].probability(partner_feats)[:prob.size]
            other[:got.size] = got
            averaged = bool((~np.isnan(other) & ~np.isnan(prob)).any())
            prob = np.where(np.isnan(other), prob, (prob + other) / 2.0)
        else:
            averaged = False
        flags = smooth_minutes(prob, head.threshold)
        return {"probability": prob, "apnea_minutes": flags, "index": apnea_index(flags, prob),
                "valid_minutes": int((~np.isnan(prob)).sum()),
                "with": partner if averaged else None}

    def from_beats(self, t_s, rr_ms, n_minutes: int, start_s: float = 0.0,
                   wearable: dict[str, np.ndarray] | None = None) -> dict:
        """The beats head on the night's beats, with its partner head on the stored epochs of
        the same night (`wearable`, epochs from `start_s`) when they carry its columns."""
        partner = None
        if wearable is not None and has_cyclic(wearable):
            partner = epoch_minute_features(wearable, cyclic=True)[:n_minutes]
        return self.night("beats", minute_features(t_s, rr_ms, n_minutes, start_s), partner)

    def epoch_head(self, wearable: dict[str, np.ndarray]) -> str | None:
        """The head for a stored night: `epochs` when it carries the CVHR columns, else
        `epochs_summary` (None when the model file has neither fitting head)."""
        if has_cyclic(wearable) and "epochs" in self.heads:
            return "epochs"
        return "epochs_summary" if "epochs_summary" in self.heads else None

    def from_epochs(self, wearable: dict[str, np.ndarray], kind: str | None = None) -> dict:
        kind = kind or self.epoch_head(wearable)
        return self.night(kind, epoch_minute_features(wearable, cyclic=kind == "epochs"))
