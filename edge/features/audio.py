"""Streaming bedroom-audio features on the 30-second epoch grid.

Audio arrives in chunks of any size; every complete epoch is reduced to the audio
features of the registry and the samples are dropped. Memory stays at one epoch of
audio plus a few minutes of per-frame levels, whatever the night's length. Raw audio
is never written anywhere by this module.

Definitions: docs/audio-features.md (tests/edge/test_replay.py recomputes them with librosa);
frames are 512 samples (32 ms at 16 kHz), Hann-windowed, not overlapping, 937 per epoch.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

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


class AudioFeatureExtractor:
    """Feed 16 kHz mono audio; collect one feature tuple per complete 30-s epoch.

    `first_epoch` is the epoch index of the first sample fed (the source starts on an
    epoch boundary; a live source drops samples up to the next one before feeding).
    """

    def __init__(self, first_epoch: int, sample_rate: int = SAMPLE_RATE):
        if sample_rate != SAMPLE_RATE:
            raise ValueError(
                f"Audio must be {SAMPLE_RATE} Hz mono; this source gives {sample_rate} Hz."
            )
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

    def feed(self, samples: np.ndarray) -> list[tuple[int, tuple]]:
        """Add samples (int16, or float in [-1, 1]); return (epoch, features) for each epoch done."""
        x = np.asarray(samples)
        if x.ndim != 1:
            raise ValueError("Audio must be mono: one channel of samples.")
        if x.dtype == np.int16:
            x = x.astype(np.float32) * (1.0 / 32768.0)
        else:
            x = x.astype(np.float32, copy=False)
        done = []
        pos = 0
        while pos < x.size:
            take = min(EPOCH_SAMPLES - self._fill, x.size - pos)
            self._buf[self._fill : self._fill + take] = x[pos : pos + take]
            self._fill += take
            pos += take
            if self._fill == EPOCH_SAMPLES:
                done.append((self.epoch, self._epoch_features(self._buf)))
                self.epoch += 1
                self._fill = 0
        return done

    def skip_epoch(self) -> None:
        """The source had no audio for the current epoch: drop what was buffered, move on."""
        self._fill = 0
        self.epoch += 1
        self._silence_run = 0

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
        # Run lengths from the boundaries of the silent stretches.
        padded = np.concatenate(([False], silent, [False]))
        edges = np.flatnonzero(padded[1:] != padded[:-1])
        starts, ends = edges[0::2], edges[1::2]
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
