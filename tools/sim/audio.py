"""Bedroom audio, 16 kHz mono int16: breathing, snoring, apnea pauses, fan, traffic, talk.

Rendered in fixed one-epoch chunks from short circular noise banks read at the global sample
index, so the night never sits in memory and the stream equals the file sample for sample.
"""

import hashlib
import logging
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile

from nightlink.tools.sim.breathing import ENV_RATE, Airflow, make_airflow
from nightlink.tools.sim.events import NightPlan, patient_key, plan_night
from nightlink.tools.sim.glucose import check_patient
from nightlink.tools.sim.hypnogram import EPOCH_S, epochs_for_hours

_LOGGER = logging.getLogger(__name__)
SAMPLE_RATE = 16_000
CHUNK = EPOCH_S * SAMPLE_RATE  # samples per chunk: one epoch
_UP = SAMPLE_RATE // ENV_RATE  # audio samples per envelope sample
_STREAM = 4
# Calibration of the virtual microphone: sound pressure level = dBFS + this.
SPL_AT_0_DBFS = 85.0


@dataclass
class _Burst:
    """A short background sound added at an absolute sample offset."""

    kind: str
    start: int
    samples: np.ndarray  # float32, already scaled


@dataclass
class AudioScene:
    """Levels, noise banks and background bursts for one night."""

    airflow: Airflow
    breath_amp: float
    snore_amp: float
    fan_amp: float
    snore_env: np.ndarray  # float32 at ENV_RATE
    banks: dict[str, tuple[np.ndarray, int]]  # name -> (circular bank, start offset)
    bursts: list[_Burst] = field(default_factory=list)
    n_samples: int = 0

    def background_log(self) -> list[dict]:
        """Traffic and talk bursts as plain records, for the manifest."""
        return [
            {"type": b.kind, "start_s": round(b.start / SAMPLE_RATE, 3),
             "end_s": round((b.start + b.samples.size) / SAMPLE_RATE, 3),
             "level_dbfs": round(20 * np.log10(float(np.sqrt(np.mean(b.samples ** 2))) + 1e-12), 1)}
            for b in self.bursts
        ]

    def epoch_level_dbfs(self) -> np.ndarray:
        """Mean sound level of every epoch in dBFS, from component energies (no audio needed)."""
        per = EPOCH_S * ENV_RATE
        n_ep = (self.airflow.breath.size - 1) // per
        energy = (self.breath_amp * self.airflow.breath[:-1].astype(np.float64)) ** 2
        energy += (self.snore_amp * self.snore_env[:-1].astype(np.float64)) ** 2
        energy = energy.reshape(n_ep, per).mean(axis=1) + self.fan_amp ** 2
        for b in self.bursts:
            e0 = b.start // CHUNK
            energy[e0] += float(np.sum(b.samples.astype(np.float64) ** 2)) / CHUNK
        return 10 * np.log10(energy)


def _colored_bank(rng: np.random.Generator, length: int, shape) -> np.ndarray:
    """Circular noise of unit RMS whose amplitude spectrum is shape(freq_hz)."""
    spec = np.fft.rfft(rng.standard_normal(length))
    freqs = np.fft.rfftfreq(length, 1.0 / SAMPLE_RATE)
    x = np.fft.irfft(spec * shape(freqs), n=length)
    return (x / np.sqrt(np.mean(x ** 2))).astype(np.float32)


def _band(lo: float, hi: float, tilt: float = 0.0):
    def shape(f):
        f = np.maximum(f, 1.0)
        g = 1.0 / np.sqrt(1.0 + (lo / f) ** 4) / np.sqrt(1.0 + (f / hi) ** 4)
        return g * (f / lo) ** (-tilt)
    return shape


def _snore_bank(rng: np.random.Generator, length: int, f0: float) -> np.ndarray:
    """Periodic harmonic buzz at ~f0 with a soft-palate resonance and a little roughness."""
    k0 = max(int(round(f0 * length / SAMPLE_RATE)), 1)
    spec = np.zeros(length // 2 + 1, dtype=np.complex128)
    for h in range(1, 40):
        k = h * k0
        if k >= spec.size or k * SAMPLE_RATE / length > 4000:
            break
        f = k * SAMPLE_RATE / length
        amp = h ** -0.7 * (1.0 + 1.5 / (1.0 + ((f - 500.0) / 250.0) ** 2))
        spec[k] = amp * np.exp(2j * np.pi * rng.random())
    tone = np.fft.irfft(spec, n=length)
    tone /= np.sqrt(np.mean(tone ** 2))
    rough = _colored_bank(rng, length, _band(80.0, 1500.0))
    x = tone + 0.25 * rough
    return (x / np.sqrt(np.mean(x ** 2))).astype(np.float32)


# Vowel formants (F1, F2, F3 in Hz), adult averages after Peterson & Barney 1952.
_VOWELS = ((730, 1090, 2440), (530, 1840, 2480), (270, 2290, 3010), (570, 840, 2410),
           (300, 870, 2240), (660, 1720, 2410))


def _talk(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """Voiced speech-like burst: pitch contour, syllables, formant-weighted harmonics."""
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    base = rng.uniform(100.0, 220.0)
    f0 = base * (1.0 - 0.12 * t / seconds) * (1.0 + 0.06 * np.sin(2 * np.pi * rng.uniform(1.5, 3.0) * t))
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    # Syllables of 120-260 ms, each with a vowel and a raised-cosine envelope.
    bounds = [0]
    while bounds[-1] < n:
        bounds.append(bounds[-1] + int(rng.uniform(0.12, 0.26) * SAMPLE_RATE))
    bounds[-1] = n
    syll = np.zeros(n, dtype=np.int32)
    env = np.zeros(n)
    for i in range(len(bounds) - 1):
        a, b = bounds[i], bounds[i + 1]
        syll[a:b] = i
        if rng.random() < 0.85:  # the rest are pauses
            env[a:b] = np.sin(np.pi * np.arange(b - a) / (b - a)) ** 2 * rng.uniform(0.5, 1.0)
    vowels = rng.integers(0, len(_VOWELS), size=len(bounds))
    out = np.zeros(n)
    for h in range(1, int(3800 // base) + 1):
        fh = h * base
        gains = np.array([
            sum(a / (1.0 + ((fh - fm) / 90.0) ** 2) for a, fm in zip((1.0, 0.6, 0.3), _VOWELS[v], strict=True))
            for v in vowels
        ]) / h ** 0.5
        out += gains[syll] * np.sin(h * phase)
    out *= env
    return out / (np.sqrt(np.mean(out ** 2)) + 1e-12)


def make_scene(plan: NightPlan) -> AudioScene:
    """Decide levels and background sounds and precompute the noise banks for a night."""
    rng = np.random.default_rng([plan.seed, _STREAM, patient_key(plan.patient)])
    airflow = make_airflow(plan)
    db = lambda lo, hi: 10 ** (rng.uniform(lo, hi) / 20)  # noqa: E731
    breath_amp, snore_amp, fan_amp = db(-40.0, -32.0), db(-22.0, -12.0), db(-62.0, -50.0)

    n_env = airflow.breath.size
    snoring = np.zeros(n_env)
    for e in plan.of_type("snore"):
        a, b = int(e.start_s * ENV_RATE), min(int(e.end_s * ENV_RATE), n_env)
        ramp = np.clip(np.minimum(np.arange(b - a), np.arange(b - a)[::-1]) / (5 * ENV_RATE), 0, 1)
        # Loudness wanders breath to breath within an episode.
        snoring[a:b] = ramp * rng.uniform(0.6, 1.0)
    wobble = 0.75 + 0.25 * np.sin(2 * np.pi * airflow.phase / 7.3)
    snore_env = (snoring * wobble * airflow.inspiration).astype(np.float32)

    banks = {
        "breath": _colored_bank(rng, 1 << 20, _band(250.0, 3000.0, 0.3)),
        "fan": _colored_bank(rng, 15 << 16, _band(40.0, 2500.0, 0.5)),
        "snore": _snore_bank(rng, 3 << 18, plan.snore_f0_hz),
    }
    offsets = {name: int(rng.integers(0, bank.size)) for name, bank in banks.items()}
    rumble = _colored_bank(rng, 1 << 18, _band(25.0, 160.0, 0.5))

    n_samples = plan.duration_s * SAMPLE_RATE
    hours = plan.duration_s / 3600
    bursts = []
    for _ in range(int(rng.poisson(3.0 * hours))):
        secs = rng.uniform(3.0, 12.0)
        m = int(secs * SAMPLE_RATE)
        if m >= n_samples:
            continue
        o = int(rng.integers(0, rumble.size - m))
        win = np.sin(np.pi * np.arange(m) / m) ** 2
        bursts.append(_Burst("traffic", int(rng.integers(0, n_samples - m)),
                             (db(-50.0, -32.0) * win * rumble[o:o + m]).astype(np.float32)))
    for _ in range(int(rng.poisson(0.6 * hours))):
        secs = rng.uniform(2.0, 6.0)
        m = int(secs * SAMPLE_RATE)
        if m >= n_samples:
            continue
        bursts.append(_Burst("talk", int(rng.integers(0, n_samples - m)),
                             (db(-45.0, -30.0) * _talk(rng, secs)).astype(np.float32)))
    bursts.sort(key=lambda b: b.start)
    return AudioScene(airflow, breath_amp, snore_amp, fan_amp, snore_env,
                      {k: (banks[k], offsets[k]) for k in banks}, bursts, n_samples)


def _circular(bank: np.ndarray, start: int, n: int) -> np.ndarray:
    a = start % bank.size
    if a + n <= bank.size:
        return bank[a:a + n]
    return np.concatenate((bank[a:], bank[: n - (bank.size - a)]))


def _upsample(env: np.ndarray, frame0: int, frames: int) -> np.ndarray:
    """Linear interpolation of ENV_RATE frames [frame0, frame0+frames] to audio rate."""
    e = env[frame0:frame0 + frames + 1]
    ramp = np.arange(_UP, dtype=np.float32) / _UP
    return (e[:-1, None] + (e[1:] - e[:-1])[:, None] * ramp[None, :]).reshape(-1)


def render(scene: AudioScene) -> Iterator[np.ndarray]:
    """Yield the night as int16 chunks of CHUNK samples (the last may be shorter)."""
    breath_env = scene.airflow.breath * np.float32(scene.breath_amp)
    snore_env = scene.snore_env * np.float32(scene.snore_amp)
    (breath, ob), (fan, of), (snore, osn) = (scene.banks[k] for k in ("breath", "fan", "snore"))
    fan_amp = np.float32(scene.fan_amp * 32767.0)
    bursts = scene.bursts
    for n0 in range(0, scene.n_samples, CHUNK):
        n = min(CHUNK, scene.n_samples - n0)
        f0 = n0 // _UP
        out = _upsample(breath_env, f0, n // _UP)
        out *= _circular(breath, n0 + ob, n)
        s = _upsample(snore_env, f0, n // _UP)
        s *= _circular(snore, n0 + osn, n)
        out += s
        out *= np.float32(32767.0)
        out += fan_amp * _circular(fan, n0 + of, n)
        for b in bursts:
            if b.start >= n0 + n or b.start + b.samples.size <= n0:
                continue
            a = max(b.start, n0)
            z = min(b.start + b.samples.size, n0 + n)
            out[a - n0:z - n0] += np.float32(32767.0) * b.samples[a - b.start:z - b.start]
        np.clip(out, -32768.0, 32767.0, out=out)
        yield out.astype(np.int16)


def audio_chunks(seed: int, patient: str = "adult#001", hours: float = 8.0) -> Iterator[np.ndarray]:
    """The night's audio as int16 chunks: exactly the samples simulate_night writes."""
    check_patient(patient)
    return render(make_scene(plan_night(seed, patient, epochs_for_hours(hours))))


def _wav_header(n_samples: int) -> bytes:
    data = n_samples * 2
    return (b"RIFF" + struct.pack("<I", 36 + data) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, 1, SAMPLE_RATE, SAMPLE_RATE * 2, 2, 16)
            + b"data" + struct.pack("<I", data))


def write_audio(path: Path, scene: AudioScene, audio_format: str = "wav") -> str:
    """Stream the night to a WAV or FLAC file; return the file's sha256 hex digest."""
    if audio_format == "wav":
        digest = hashlib.sha256()
        with path.open("wb") as fh:
            header = _wav_header(scene.n_samples)
            fh.write(header)
            digest.update(header)
            for chunk in render(scene):
                raw = chunk.astype("<i2", copy=False).tobytes()
                fh.write(raw)
                digest.update(raw)
        return digest.hexdigest()
    _LOGGER.debug("encoding FLAC into %s", path)
    with soundfile.SoundFile(path, "w", SAMPLE_RATE, 1, subtype="PCM_16", format="FLAC") as sf:
        for chunk in render(scene):
            sf.write(chunk)
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()
