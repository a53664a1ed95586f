"""Streaming bedroom-audio features on the 30-second epoch grid.

Audio arrives in chunks of any size; every complete epoch is reduced to the audio
features of the registry and the samples are dropped. Memory stays at one epoch of
audio plus a few minutes of per-frame levels, whatever the night's length. Raw audio
is never written anywhere by this module.

Definitions: docs/audio-features.md (tests/edge/test_replay.py recomputes them with librosa);
frames are 512 samples (32 ms at 16 kHz), Hann-windowed, not overlapping, 937 per epoch.
Any input rate is resampled to the 16 kHz analysis rate first (`Resampler`). The snore
features (`sn_*`) look only at 60-3500 Hz, which every source down to 8 kHz carries, and are
ratios, shapes and levels relative to the epoch's own noise floor: a microphone's gain or
distance and the rest of the night do not change them.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from nightlink.shared import features
from nightlink.shared.epoch import EPOCH_S

SAMPLE_RATE = 16_000
N_FFT = 512
HOP = 512
N_MELS = 40
N_MFCC = 13
N_MFCC_STD = 4
EPOCH_SAMPLES = SAMPLE_RATE * EPOCH_S
FRAMES = EPOCH_SAMPLES // HOP  # 937 frames; the last 256 samples of an epoch are not framed
FRAME_S = HOP / SAMPLE_RATE
MIN_RATE, MAX_RATE = 8_000, 192_000  # input rates the resampler takes
SNORE_BAND = (60.0, 400.0)  # Hz: snore fundamental and first harmonics
TOTAL_BAND = (60.0, 4000.0)
ROLLOFF = 0.85
BREATH_PERIOD_S = (2.0, 10.0)  # 6 to 30 breaths per minute
SILENCE_MARGIN_DB = 4.0  # a frame within this of the noise floor counts as silence
FLOOR_WINDOW_EPOCHS = 10  # the noise floor is a low percentile of the last 5 minutes
FLOOR_PERCENTILE = 5.0
TRANSIENT_RISE_DB = 15.0  # an onset rises this much over the previous frame ...
TRANSIENT_OVER_MEDIAN_DB = 20.0  # ... and stands this far above the epoch's median
_EPS = 1e-12
# Snore features: a band every source from 8 kHz up carries, measured on the epoch's loud frames.
SN_BAND = (60.0, 3500.0)
SN_LOW = (60.0, 400.0)
SN_ACTIVE = 0.25  # the loudest quarter of the epoch's frames are its "active" frames
SN_FLOOR_PCT = 10.0  # the epoch's own noise floor: a low percentile of its frame levels
SN_ACTIVE_DB = 6.0  # a frame this far above that floor is active
SN_MELS = 20
SN_CEPS = 6  # cepstral coefficients 1..6 (c0, the level, left out)
SN_PITCH_HZ = (40.0, 400.0)
SN_PITCHED = 0.45  # a 64-ms frame with a normalised autocorrelation peak this high has a pitch
SN_WHITEN_BINS = 41  # envelope of a 64-ms frame's spectrum: a moving mean over 320 Hz
SN_WHITEN_FLOOR = 1e-3  # bins more than 30 dB under the envelope's peak are not lifted
SN_BURST_GAP = 2  # frames: a dip this short (64 ms) inside a burst does not end it
SN_MIN_LOUD = 10  # fewer loud frames than this over the floor: the loudest quarter stands in
SN_SYLLABLE_HZ = (2.5, 8.0)  # syllable rate: speech and song come and go this fast, snores slower
SN_MOD_HZ = (0.15, 10.0)  # the envelope modulation that share is taken of
SN_MOD_MIN_DB = 1.0  # a level steadier than this (standard deviation) has no modulation to share
SN_REL_FLOOR = 1e-7  # spectra are floored relative to the epoch's peak, not in absolute units
SNORE_FEATURES = (
    "sn_level_over_floor_db", "sn_active_frac", "sn_low_ratio", "sn_low_depth_db",
    "sn_harmonicity", "sn_pitch_hz", "sn_centroid_hz", "sn_flatness",
    *[f"sn_cep{k}" for k in range(1, SN_CEPS + 1)], "sn_env_periodicity",
    "sn_pitched_frac", "sn_flux_db", "sn_burst_s", "sn_syllable_mod",
)

# Features read over the whole 0-8 kHz band (by position in the audio row, shared/features.py):
# missing for a source under 16 kHz, whose top of that band is empty.
_FULL_BAND = frozenset(
    k for k, name in enumerate(features.names(features.AUDIO))
    if name in ("centroid_hz", "rolloff_hz", "flatness") or name.startswith("mfcc"))


def hz_to_mel(hz):
    """Slaney mel scale (linear below 1 kHz, logarithmic above), as librosa's default."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp = 200.0 / 3
    mel = hz / f_sp
    min_log_hz = 1000.0
    logstep = math.log(6.4) / 27.0
    return np.where(
        hz >= min_log_hz,
        min_log_hz / f_sp + np.log(np.maximum(hz, min_log_hz) / min_log_hz) / logstep,
        mel,
    )


def mel_to_hz(mel):
    mel = np.asarray(mel, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_mel = 1000.0 / f_sp
    logstep = math.log(6.4) / 27.0
    return np.where(
        mel >= min_log_mel, 1000.0 * np.exp(logstep * (mel - min_log_mel)), f_sp * mel
    )


def mel_filterbank(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=0.0, fmax=None):
    """Triangular Slaney-normalised mel filters, shape (n_mels, n_fft // 2 + 1)."""
    fmax = sr / 2 if fmax is None else fmax
    fft_hz = np.linspace(0, sr / 2, n_fft // 2 + 1)
    mel_hz = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_hz)
    ramps = mel_hz[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_hz[2 : n_mels + 2] - mel_hz[:n_mels]))[:, None]
    return weights


def dct_matrix(n_in=N_MELS, n_out=N_MFCC):
    """Orthonormal DCT-II as a matrix (n_in, n_out), as scipy.fft.dct(norm='ortho')."""
    n = np.arange(n_in)[:, None]
    k = np.arange(n_out)[None, :]
    m = np.cos(np.pi * k * (2 * n + 1) / (2 * n_in)) * math.sqrt(2.0 / n_in)
    m[:, 0] /= math.sqrt(2.0)
    return m


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) of the runs of True in `mask`, ends exclusive."""
    padded = np.concatenate(([False], mask, [False]))
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return edges[0::2], edges[1::2]


def _burst_s(over: np.ndarray) -> float:
    """Typical length of the bursts over the floor, in seconds: runs of frames over it, gaps of
    up to SN_BURST_GAP frames closed, and of those runs the one holding their median frame (a
    length-weighted median: flicker at the floor's edge adds short runs, little weight)."""
    starts, ends = _runs(over)
    if not starts.size:
        return 0.0
    keep = np.concatenate(([True], starts[1:] - ends[:-1] > SN_BURST_GAP))
    starts, ends = starts[keep], np.concatenate((ends[np.flatnonzero(keep)[1:] - 1], ends[-1:]))
    runs = np.sort(ends - starts)
    weight = np.cumsum(runs)
    return float(runs[int(np.searchsorted(weight, weight[-1] / 2.0))]) * FRAME_S


class Resampler:
    """Streaming rational-ratio resampler (polyphase windowed sinc), numpy only.

    A causal FIR at rate_in x up: after n input samples exactly ceil(n x up / down) outputs
    exist, so an epoch of input is an epoch of output the moment it ends (delayed by half
    the filter, under 20 ms). The pass band ends at 0.48 of the lower rate (7.68 kHz for a
    44.1 or 48 kHz source, 3.84 kHz for an 8 kHz one) and the stop band (80 dB) starts at
    0.52 of it: the top 4 % of the band may take a little of what lies just above it. The
    full-band features (flatness above all: a geometric mean over every bin up to 8 kHz)
    read the band's top edge, and a pass band ending at 0.45 emptied 6.4-8 kHz, halved the
    flatness of a 44.1 kHz source and moved its sleep stages; with this one a 16 kHz
    recording's features are what the same sound at 22.05-48 kHz gives, to a few percent.
    """

    BLOCK = 2_048  # outputs per vectorised gather (keeps it in cache)
    FEW_PHASES = 4  # up to this many phases, one convolution per phase is faster

    def __init__(self, rate_in: int, rate_out: int = SAMPLE_RATE, stop_db: float = 80.0):
        g = math.gcd(int(rate_in), int(rate_out))
        self.up, self.down = int(rate_out) // g, int(rate_in) // g
        low = min(rate_in, rate_out)
        cutoff, transition = 0.5 * low, 0.04 * low  # Hz: pass to 0.48 x low, stop from 0.52
        taps = int(math.ceil((stop_db - 8.0) / (2.285 * 2 * math.pi * transition / rate_in)))
        self.k = max(taps, 8)  # taps per output, at the input rate
        n = self.k * self.up
        fast = float(rate_in) * self.up
        t = (np.arange(n) - (n - 1) / 2.0) / fast
        beta = 0.1102 * (stop_db - 8.7)
        h = 2.0 * cutoff / fast * np.sinc(2.0 * cutoff * t) * np.kaiser(n, beta) * self.up
        # phases[p, k] = h[p + k * up]: the taps that meet input j - k for output phase p.
        self.phases = h.reshape(self.k, self.up).T.astype(np.float32).copy()
        self.hist = np.zeros(self.k - 1, dtype=np.float32)
        self.n_in = 0
        self.n_out = 0

    def process(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        buf = np.concatenate((self.hist, x))
        base = self.n_in - (self.k - 1)  # absolute input index of buf[0]
        self.n_in += x.size
        end = -(-self.n_in * self.up // self.down)  # ceil
        n = np.arange(self.n_out, end, dtype=np.int64)
        m = n * self.down
        j = m // self.up - base  # the newest input each output uses, in buf
        phase = m % self.up
        out = np.empty(n.size, dtype=np.float32)
        if self.up <= self.FEW_PHASES:
            for p in range(self.up):
                sel = phase == p
                if sel.any():  # conv[i] sums buf[i .. i + k - 1] against the reversed taps
                    conv = np.convolve(buf, self.phases[p], mode="valid")
                    out[sel] = conv[j[sel] - (self.k - 1)]
        else:
            back = np.arange(self.k)
            for a in range(0, n.size, self.BLOCK):
                b = min(a + self.BLOCK, n.size)
                taps = buf[j[a:b, None] - back[None, :]]
                out[a:b] = np.einsum("ij,ij->i", taps, self.phases[phase[a:b]])
        self.n_out = end
        self.hist = buf[buf.size - (self.k - 1):] if self.k > 1 else buf[:0]
        return out


class AudioFeatureExtractor:
    """Feed mono audio at any rate; collect one feature tuple per complete 30-s epoch.

    `first_epoch` is the epoch index of the first sample fed (the source starts on an
    epoch boundary; a live source drops samples up to the next one before feeding).
    A rate other than 16 kHz is resampled to it as the samples arrive.
    """

    def __init__(self, first_epoch: int, sample_rate: int = SAMPLE_RATE):
        if int(sample_rate) != sample_rate or not MIN_RATE <= sample_rate <= MAX_RATE:
            raise ValueError(
                f"Audio must be mono at {MIN_RATE}-{MAX_RATE} Hz; this source gives {sample_rate} Hz."
            )
        self.sample_rate = int(sample_rate)
        self._resampler = Resampler(self.sample_rate) if self.sample_rate != SAMPLE_RATE else None
        self.epoch = first_epoch
        self._buf = np.zeros(EPOCH_SAMPLES, dtype=np.float32)
        self._fill = 0
        self._window = np.hanning(N_FFT + 1)[:-1].astype(np.float32)  # periodic Hann
        freqs = np.fft.rfftfreq(N_FFT, 1.0 / SAMPLE_RATE)
        self._freqs = freqs.astype(np.float32)
        self._mel = mel_filterbank().T.astype(np.float32)  # (257, 40)
        self._dct = dct_matrix().astype(np.float32)  # (40, 13)
        self._snore = (freqs >= SNORE_BAND[0]) & (freqs < SNORE_BAND[1])
        self._total = (freqs >= TOTAL_BAND[0]) & (freqs < TOTAL_BAND[1])
        lo = int(BREATH_PERIOD_S[0] / FRAME_S)
        hi = int(BREATH_PERIOD_S[1] / FRAME_S)
        self._lags = np.arange(lo, hi + 1)
        self._history: deque[np.ndarray] = deque(maxlen=FLOOR_WINDOW_EPOCHS)
        self._silence_run = 0  # silent frames carried over from the previous epoch
        self._sn_band = (freqs >= SN_BAND[0]) & (freqs < SN_BAND[1])
        self._sn_low = ((freqs >= SN_LOW[0]) & (freqs < SN_LOW[1]))[self._sn_band]
        self._sn_freqs = freqs[self._sn_band].astype(np.float32)
        sn_mel = mel_filterbank(n_mels=SN_MELS, fmin=SN_BAND[0], fmax=SN_BAND[1])
        self._sn_mel = sn_mel[:, self._sn_band].T.astype(np.float32)  # (band bins, 20)
        self._sn_dct = dct_matrix(SN_MELS, SN_CEPS + 1)[:, 1:].astype(np.float32)
        # Pitch frames: two analysis frames (64 ms) so a 40 Hz period fits more than twice.
        self._p_window = np.hanning(2 * N_FFT + 1)[:-1].astype(np.float32)
        p_freqs = np.fft.rfftfreq(4 * N_FFT, 1.0 / SAMPLE_RATE)
        self._p_band = ((p_freqs >= SN_BAND[0]) & (p_freqs < SN_BAND[1])).astype(np.float32)
        w_ac = np.correlate(self._p_window, self._p_window, "full")[2 * N_FFT - 1:]
        self._p_lags = np.arange(int(SAMPLE_RATE / SN_PITCH_HZ[1]), int(SAMPLE_RATE / SN_PITCH_HZ[0]) + 1)
        self._p_norm = (w_ac[0] / w_ac[self._p_lags]).astype(np.float32)

    def feed(self, samples: np.ndarray) -> list[tuple[int, tuple]]:
        """Add samples (int16, or float in [-1, 1]); return (epoch, features) for each epoch done."""
        x = np.asarray(samples)
        if x.ndim != 1:
            raise ValueError("Audio must be mono: one channel of samples.")
        if x.dtype == np.int16:
            x = x.astype(np.float32) * (1.0 / 32768.0)
        else:
            x = x.astype(np.float32, copy=False)
        if self._resampler is not None:
            x = self._resampler.process(x)
        done = []
        pos = 0
        while pos < x.size:
            take = min(EPOCH_SAMPLES - self._fill, x.size - pos)
            self._buf[self._fill : self._fill + take] = x[pos : pos + take]
            self._fill += take
            pos += take
            if self._fill == EPOCH_SAMPLES:
                done.append((self.epoch, self._band_limited(self._epoch_features(self._buf))))
                self.epoch += 1
                self._fill = 0
        return done

    def _band_limited(self, row: tuple) -> tuple:
        """The epoch's features, with those that read the whole 0-8 kHz band missing when the
        source cannot fill it (under 16 kHz: an 8 kHz source is empty above 3.84 kHz), so no
        model takes an empty top octave for a quiet, tonal room."""
        if self.sample_rate >= SAMPLE_RATE:
            return row
        return tuple(None if k in _FULL_BAND else v for k, v in enumerate(row))

    def skip_epoch(self) -> None:
        """The source had no audio for the current epoch: drop what was buffered, move on."""
        self._fill = 0
        self.epoch += 1
        self._silence_run = 0
        if self._resampler is not None:  # what follows does not continue what came before
            self._resampler = Resampler(self.sample_rate)

    def _epoch_features(self, x: np.ndarray) -> tuple:
        frames = x[: FRAMES * HOP].reshape(FRAMES, HOP)
        spec = np.fft.rfft(frames * self._window, axis=1)
        power = (spec.real * spec.real + spec.imag * spec.imag).astype(np.float32)  # (937, 257)

        # Loudness from the raw samples: frame RMS in dBFS.
        frame_ms = np.einsum("ij,ij->i", frames, frames) / HOP
        frame_db = 10.0 * np.log10(frame_ms + _EPS)
        loud_mean = 10.0 * math.log10(float(frame_ms.mean()) + _EPS)
        loud_max = float(frame_db.max())

        # Centroid and roll-off weight frequencies by magnitude, as librosa does.
        mean_mag = np.sqrt(power).mean(axis=0)
        centroid = float((self._freqs * mean_mag).sum()) / (float(mean_mag.sum()) + _EPS)
        cum = np.cumsum(mean_mag)
        rolloff = float(self._freqs[int(np.searchsorted(cum, ROLLOFF * cum[-1]))])
        mean_spec = power.mean(axis=0)
        logp = np.log(power + 1e-10)
        flat = np.exp(logp.mean(axis=1)) / (power.mean(axis=1) + 1e-10)
        flatness = float(flat.mean())

        mel_db = 10.0 * np.log10(np.maximum(power @ self._mel, 1e-10))
        mfcc = mel_db @ self._dct  # (937, 13)
        mfcc_mean = mfcc.mean(axis=0)
        mfcc_std = mfcc[:, :N_MFCC_STD].std(axis=0)

        band_total = float(mean_spec[self._total].sum()) + _EPS
        snore_ratio = float(mean_spec[self._snore].sum()) / band_total

        periodicity, rate = self._breathing(frame_ms)
        silence = self._longest_silence(frame_db)
        transients = self._transients(frame_db)

        return (
            loud_mean,
            loud_max,
            centroid,
            rolloff,
            flatness,
            *[float(v) for v in mfcc_mean],
            *[float(v) for v in mfcc_std],
            snore_ratio,
            periodicity,
            rate,
            silence,
            transients,
            *self._snore_features(frames, power),
        )

    def _breathing(self, frame_ms: np.ndarray) -> tuple[float, float | None]:
        """Strength and rate of the breathing cycle from the autocorrelation of the envelope."""
        env = np.sqrt(frame_ms)
        env = env - env.mean()
        denom = float(np.dot(env, env))
        if denom <= _EPS:
            return 0.0, None
        n = env.size
        spec = np.fft.rfft(env, 2 * n)
        ac = np.fft.irfft(spec * np.conj(spec))[: n]
        # Unbiased estimate, normalised to 1 at lag 0.
        ac = ac / denom * (n / (n - np.arange(n)))
        seg = ac[self._lags]
        # The first peak close to the highest: a lag of two breaths correlates as well as one.
        peaks = np.flatnonzero((seg[1:-1] >= seg[:-2]) & (seg[1:-1] >= seg[2:])) + 1
        best = float(seg.max())
        near = peaks[seg[peaks] >= 0.85 * best] if peaks.size else peaks
        i = int(near[0]) if near.size else int(np.argmax(seg))
        strength = float(np.clip(seg[i], 0.0, 1.0))
        if strength < 0.2:
            return strength, None
        return strength, 60.0 / (self._lags[i] * FRAME_S)

    def _longest_silence(self, frame_db: np.ndarray) -> float:
        """Longest run of frames near the noise floor, in seconds, runs from earlier epochs included."""
        self._history.append(frame_db)
        floor = float(np.percentile(np.concatenate(self._history), FLOOR_PERCENTILE))
        silent = frame_db < floor + SILENCE_MARGIN_DB
        best = 0
        run = self._silence_run
        starts, ends = _runs(silent)
        lengths = ends - starts
        if lengths.size:
            if starts[0] == 0:
                lengths[0] += run  # a run that began in an earlier epoch
            best = int(lengths.max())
            run = int(lengths[-1]) if ends[-1] == silent.size else 0
        else:
            run = 0
        self._silence_run = run
        return best * FRAME_S

    def _transients(self, frame_db: np.ndarray) -> int:
        """Frames that jump well above the previous frame and the epoch's median level."""
        rise = np.diff(frame_db, prepend=frame_db[0])
        median = float(np.median(frame_db))
        onsets = (rise > TRANSIENT_RISE_DB) & (frame_db > median + TRANSIENT_OVER_MEDIAN_DB)
        return int(onsets.sum())

    def _snore_features(self, frames: np.ndarray, power: np.ndarray) -> tuple:
        """The `sn_*` features: 60-3500 Hz only, the loud frames against the epoch's own floor.

        Every level is relative (to the epoch's floor or its peak), so a gain, a distance or a
        louder night elsewhere changes none of them; nothing outside the epoch is used.
        """
        band = power[:, self._sn_band]  # (937, bins in 60-3500 Hz)
        total = band.sum(axis=1)
        peak = float(total.max())
        if peak <= 0.0:  # digital silence
            return (0.0, 0.0, None, 0.0, 0.0, None, None, None, *([None] * SN_CEPS), 0.0,
                    0.0, None, 0.0, 0.0)
        floor_abs = peak * SN_REL_FLOOR
        level = 10.0 * np.log10(np.maximum(total, floor_abs))
        floor = float(np.percentile(level, SN_FLOOR_PCT))
        order = np.argsort(level)
        active = order[-max(int(SN_ACTIVE * level.size), 1):]
        over = float(level[active].mean()) - floor
        risen = level > floor + SN_ACTIVE_DB  # frames standing out of the epoch's floor
        active_frac = float(risen.mean())

        spec = band[active].mean(axis=0)
        spec_sum = float(spec.sum()) + _EPS
        low_ratio = float(spec[self._sn_low].sum()) / spec_sum
        centroid = float((self._sn_freqs * spec).sum()) / spec_sum
        spec_f = np.maximum(spec, spec.max() * SN_REL_FLOOR)
        flatness = float(np.exp(np.log(spec_f).mean()) / spec_f.mean())
        mel = band[active] @ self._sn_mel
        mel_db = 10.0 * np.log10(np.maximum(mel, float(mel.max()) * SN_REL_FLOOR))
        ceps = mel_db.mean(axis=0) @ self._sn_dct

        low = band[:, self._sn_low].sum(axis=1)
        low_db = 10.0 * np.log10(np.maximum(low, floor_abs))
        depth = float(np.percentile(low_db, 90) - np.percentile(low_db, 10))
        env_periodicity, _ = self._breathing(low)
        harmonicity, pitch, pitched = self._pitch(frames)
        return (min(over, 60.0), active_frac, low_ratio, min(depth, 60.0), harmonicity, pitch,
                centroid, flatness, *[float(v) for v in ceps], env_periodicity,
                pitched, *self._time_shape(band, level, floor, active, risen))

    def _time_shape(self, band: np.ndarray, level: np.ndarray, floor: float,
                    active: np.ndarray, risen: np.ndarray) -> tuple[float | None, float, float]:
        """How the sound comes and goes within the epoch, whatever its spectral balance:
        the spectral flux between neighbouring loud frames (dB, rises only: a snore's
        spectrum holds still, speech and music change from frame to frame), the typical length
        of the bursts over the floor (s, `_burst_s`), and the share of the level's modulation at syllable
        rate (2.5-8 Hz of 0.15-10 Hz). All are differences of levels within the epoch: a gain
        changes none of them, a microphone's frequency response far less than the spectral
        shape (docs/audio-features.md says where it still does)."""
        loud = np.zeros(level.size, dtype=bool)
        loud[active] = True
        if int((loud & risen).sum()) >= SN_MIN_LOUD:
            loud &= risen
        bins_db = 10.0 * np.log10(np.maximum(band, float(band.max()) * SN_REL_FLOOR))
        rise = np.maximum(np.diff(bins_db, axis=0), 0.0).mean(axis=1)
        pairs = loud[1:] & loud[:-1]
        flux = float(np.median(rise[pairs])) if pairs.any() else None
        burst = _burst_s(risen)
        env = np.maximum(level, floor)
        if float(env.std()) < SN_MOD_MIN_DB:  # a steady sound: nothing comes and goes
            return flux, burst, 0.0
        env = (env - env.mean()) * np.hanning(env.size)
        mod = np.abs(np.fft.rfft(env)) ** 2
        freqs = np.fft.rfftfreq(env.size, FRAME_S)
        total = float(mod[(freqs >= SN_MOD_HZ[0]) & (freqs <= SN_MOD_HZ[1])].sum())
        syllable = float(mod[(freqs >= SN_SYLLABLE_HZ[0]) & (freqs <= SN_SYLLABLE_HZ[1])].sum())
        return flux, burst, (syllable / total if total > _EPS else 0.0)

    def _pitch(self, frames: np.ndarray) -> tuple[float, float | None, float]:
        """Median voicing (normalised autocorrelation peak at 40-400 Hz) of the loud 64-ms frames,
        the median pitch of those frames, and the share of them with a pitch (voicing >= 0.45)."""
        pairs = frames[: frames.shape[0] // 2 * 2].reshape(-1, 2 * N_FFT)
        energy = np.einsum("ij,ij->i", pairs, pairs)
        active = np.argsort(energy)[-max(int(SN_ACTIVE * energy.size), 1):]
        spec = np.fft.rfft(pairs[active] * self._p_window, n=4 * N_FFT, axis=1)
        power = (spec.real * spec.real + spec.imag * spec.imag) * self._p_band
        power = power[power.sum(axis=1) > 0]
        if not power.shape[0]:
            return 0.0, None, 0.0
        voicing, best = self._voicing(power)
        pitch = SAMPLE_RATE / float(np.median(self._p_lags[best]))
        # Whether a frame has a pitch is read from its whitened spectrum (divided by its own
        # envelope, up to 30 dB below the envelope's peak): a harmonic sound keeps its comb, while
        # noise in a narrow low band, which a dark microphone makes of a fan, no longer looks
        # periodic.
        env = self._smooth(power)
        white = power / np.maximum(env, env.max(axis=1, keepdims=True) * SN_WHITEN_FLOOR)
        white_voicing, _ = self._voicing(white * self._p_band)
        pitched = float(np.count_nonzero(white_voicing >= SN_PITCHED)) / active.size
        return float(np.median(voicing)), pitch, pitched

    def _voicing(self, power: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per frame of `power` (2048-point spectra, none all zero): the highest normalised
        autocorrelation at 40-400 Hz (window-corrected, 0-1) and its index in the pitch lags."""
        ac = np.fft.irfft(power, axis=1)
        norm = ac[:, self._p_lags] / ac[:, :1] * self._p_norm
        best = norm.argmax(axis=1)
        return np.clip(norm[np.arange(best.size), best], 0.0, 1.0), best

    @staticmethod
    def _smooth(power: np.ndarray) -> np.ndarray:
        """Each spectrum's envelope: its moving mean over SN_WHITEN_BINS bins."""
        k = SN_WHITEN_BINS
        c = np.cumsum(np.pad(power, ((0, 0), (k // 2 + 1, k // 2)), mode="edge"), axis=1)
        return (c[:, k:] - c[:, :-k]) / k
