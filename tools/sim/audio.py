"""Bedroom audio, 16 kHz mono int16: breathing, snoring, apnea pauses, fan, traffic, talk.

Rendered in fixed one-epoch chunks from short circular noise banks read at the global sample
index, so the night never sits in memory and the stream equals the file sample for sample.

`make_scene(plan, varied=True)` randomises the recording conditions per night (the snorer's
voice, the room's reverberation, fans with tonal hum, traffic, a partner breathing and
moving, the phone's placement as gain and frequency response, its noise, clipping), so a model
trained on it cannot learn one simulated bedroom; `household=True` adds household sounds and
snoring off the breathing rhythm; `at_rate` delivers any sample rate. `snore_clip` and
`household_sound` give the short clips an outside tester would put end to end. The default
scene is the one the night simulator has always rendered.
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
class _Loop:
    """A longer household sound (music, television, rain...) from `start` for `n` samples:
    a short bank (already scaled) read circularly, faded in and out over a second."""

    kind: str
    start: int
    n: int
    bank: np.ndarray  # float32

    def add_to(self, out: np.ndarray, n0: int) -> None:
        """Add the part of the sound that falls in out = samples [n0, n0 + out.size)."""
        a, z = max(self.start, n0), min(self.start + self.n, n0 + out.size)
        if z <= a:
            return
        idx = np.arange(a - self.start, z - self.start)
        fade = np.minimum(np.minimum(idx, self.n - idx) / SAMPLE_RATE, 1.0).astype(np.float32)
        out[a - n0:z - n0] += np.float32(32767.0) * fade * self.bank[idx % self.bank.size]


@dataclass
class Variation:
    """One night's randomised recording conditions (see make_scene)."""

    gain_db: float  # phone placement and distance: everything scales together
    ir: np.ndarray  # room impulse response with the microphone's frequency response
    self_noise: float  # microphone and converter noise, full scale = 1
    clip_at: float  # the level where the input stage saturates, full scale = 1
    partner_amp: float
    partner_env: np.ndarray  # float32 at ENV_RATE: the partner's breathing, 0 without one
    description: dict = field(default_factory=dict)  # the drawn values, for a manifest


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
    varied: Variation | None = None  # randomised recording conditions, None: the plain scene
    loops: list[_Loop] = field(default_factory=list)  # household sounds (make_scene household=True)

    def background_log(self) -> list[dict]:
        """Traffic and talk bursts as plain records, for the manifest."""
        return [
            {"type": b.kind, "start_s": round(b.start / SAMPLE_RATE, 3),
             "end_s": round((b.start + b.samples.size) / SAMPLE_RATE, 3),
             "level_dbfs": round(20 * np.log10(float(np.sqrt(np.mean(b.samples ** 2))) + 1e-12), 1)}
            for b in self.bursts
        ] + [
            {"type": lp.kind, "start_s": round(lp.start / SAMPLE_RATE, 3),
             "end_s": round((lp.start + lp.n) / SAMPLE_RATE, 3),
             "level_dbfs": round(20 * np.log10(float(np.sqrt(np.mean(lp.bank ** 2))) + 1e-12), 1)}
            for lp in self.loops
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


def _smooth_noise(rng: np.random.Generator, n: int, knots_per_s: float) -> np.ndarray:
    """Unit-scale noise interpolated from knots: a slow random wander."""
    k = int(n / SAMPLE_RATE * knots_per_s) + 2
    return np.interp(np.arange(n) / SAMPLE_RATE * knots_per_s, np.arange(k), rng.standard_normal(k))


def _voice_bank(rng: np.random.Generator, length: int, f0: float) -> tuple[np.ndarray, dict]:
    """A randomised snorer: wandering fundamental, harmonic tilt, 1-3 resonances of the upper
    airway, and turbulence from nearly none to mostly noise (tongue-base snores)."""
    tilt = float(rng.uniform(0.3, 1.5))
    jitter = float(rng.uniform(0.0, 0.08))
    inst = f0 * (1.0 + jitter * _smooth_noise(rng, length, 4.0))
    phase = 2 * np.pi * np.cumsum(inst) / SAMPLE_RATE
    tone = np.zeros(length)
    for h in range(1, min(int(4500.0 / (f0 * (1 + 3 * jitter))), 60) + 1):
        tone += h ** -tilt * np.sin(h * phase + 2 * np.pi * rng.random())
    formants = [(float(rng.uniform(150.0, 1500.0)), float(rng.uniform(60.0, 500.0)),
                 float(rng.uniform(0.5, 4.0))) for _ in range(int(rng.integers(1, 4)))]

    def shape(f):
        g = np.ones_like(f)
        for fc, bw, gain in formants:
            g += gain / (1.0 + ((f - fc) / bw) ** 2)
        return g

    freqs = np.fft.rfftfreq(length, 1.0 / SAMPLE_RATE)
    tone = np.fft.irfft(np.fft.rfft(tone) * shape(freqs), n=length)
    tone /= np.sqrt(np.mean(tone ** 2))
    roughness = float(rng.choice([rng.uniform(0.05, 0.5), rng.uniform(0.5, 2.0)], p=[0.7, 0.3]))
    rough = _colored_bank(rng, length, lambda f: shape(f) * _band(60.0, 2500.0)(f))
    x = tone + roughness * rough
    info = {"snore_f0_hz": round(f0, 1), "snore_tilt": round(tilt, 2),
            "snore_jitter": round(jitter, 3), "snore_roughness": round(roughness, 2),
            "snore_formants_hz": [round(fc) for fc, _, _ in formants]}
    return (x / np.sqrt(np.mean(x ** 2))).astype(np.float32), info


def _fan_bank(rng: np.random.Generator, length: int) -> tuple[np.ndarray, dict]:
    """Broadband fan or air conditioner, often with a tonal hum (motor, blade pass, mains)."""
    lo, hi = float(rng.uniform(30.0, 300.0)), float(rng.uniform(800.0, 6000.0))
    x = _colored_bank(rng, length, _band(lo, hi, float(rng.uniform(0.0, 1.2))))
    info = {"fan_band_hz": [round(lo), round(hi)], "fan_hum_hz": None}
    if rng.random() < 0.5:
        f0 = float(rng.uniform(45.0, 180.0))
        t = np.arange(length) / SAMPLE_RATE
        hum = sum(h ** -float(rng.uniform(0.5, 2.0)) * np.sin(2 * np.pi * h * f0 * t + rng.random() * 6.3)
                  for h in range(1, int(rng.integers(1, 9)) + 1))
        hum /= np.sqrt(np.mean(hum ** 2))
        x = x + 10 ** (rng.uniform(-15.0, 10.0) / 20) * hum
        info["fan_hum_hz"] = round(f0, 1)
    return (x / np.sqrt(np.mean(x ** 2))).astype(np.float32), info


def _room_response(rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Impulse response: direct sound, exponentially decaying diffuse tail (RT60 0.15-0.9 s,
    more of it the farther the phone), through a phone microphone's high- and low-pass."""
    rt60 = float(rng.uniform(0.15, 0.9))
    n = int(rt60 * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    tail = rng.standard_normal(n) * 10 ** (-3.0 * t / rt60)
    tail *= 10 ** (rng.uniform(-12.0, 6.0) / 20) / np.sqrt(np.sum(tail ** 2))  # direct-to-reverberant
    ir = tail
    ir[0] = 1.0
    hp, lp = float(rng.uniform(20.0, 300.0)), float(rng.uniform(3500.0, 8000.0))
    size = 1 << int(np.ceil(np.log2(n + 4096)))
    freqs = np.fft.rfftfreq(size, 1.0 / SAMPLE_RATE)
    mic = 1.0 / np.sqrt(1.0 + (hp / np.maximum(freqs, 1.0)) ** 4) / np.sqrt(1.0 + (freqs / lp) ** 8)
    ir = np.fft.irfft(np.fft.rfft(ir, size) * mic, size)
    ir = np.roll(ir, 256)[: n + 256]  # the zero-phase filter's lead, made causal
    info = {"rt60_s": round(rt60, 2), "mic_highpass_hz": round(hp), "mic_lowpass_hz": round(lp)}
    return ir.astype(np.float32), info


def _variation(rng: np.random.Generator, plan: NightPlan, airflow: Airflow) -> Variation:
    """Draw one night's recording conditions."""
    ir, info = _room_response(rng)
    gain_db = float(rng.uniform(-25.0, 20.0))
    clip_at = float(rng.uniform(0.1, 0.7)) if rng.random() < 0.15 else 1.0
    n_env = airflow.breath.size
    partner_amp, partner_env = 0.0, np.zeros(n_env, dtype=np.float32)
    if rng.random() < 0.4:  # a partner breathing at their own rate (10-20 /min)
        rate = float(rng.uniform(10.0, 20.0)) / 60.0
        ph = rate * np.arange(n_env) / ENV_RATE * (1.0 + 0.03 * np.sin(np.arange(n_env) / 3000.0))
        frac = ph % 1.0
        partner_env = np.where(frac < 0.4, np.sin(np.pi * frac / 0.4) ** 2, 0.0).astype(np.float32)
        partner_amp = 10 ** (rng.uniform(-55.0, -35.0) / 20)
    info.update({"gain_db": round(gain_db, 1), "clip_at": round(clip_at, 2),
                 "partner": partner_amp > 0})
    return Variation(gain_db, ir, 10 ** (rng.uniform(-95.0, -70.0) / 20), clip_at, partner_amp,
                     partner_env, info)


# Vowel formants (F1, F2, F3 in Hz), adult averages after Peterson & Barney 1952.
_VOWELS = ((730, 1090, 2440), (530, 1840, 2480), (270, 2290, 3010), (570, 840, 2410),
           (300, 870, 2240), (660, 1720, 2410))


def _talk(rng: np.random.Generator, seconds: float, base: float | None = None) -> np.ndarray:
    """Voiced speech-like burst: pitch contour, syllables, formant-weighted harmonics.
    base: the speaker's pitch in Hz (default: drawn at 100-220 Hz)."""
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    base = rng.uniform(100.0, 220.0) if base is None else base
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


def make_scene(plan: NightPlan, varied: bool = False, household: bool = False) -> AudioScene:
    """Decide levels and background sounds and precompute the noise banks for a night.

    varied: randomise the recording conditions (a separate random stream, so the plain
    scene of a seed never changes).
    household: on top of the varied scene, household sounds (music, television, speech, a
    baby, a dog, rain, a siren, a clock, water, doors, a vacuum cleaner; each optional per
    night, at its own level) and snoring that may not follow the breathing rhythm (from a
    third random stream: the varied scene's own sounds stay the same).
    """
    if household:
        return _household(_varied_scene(plan), plan)
    if varied:
        return _varied_scene(plan)
    rng = np.random.default_rng([plan.seed, _STREAM, patient_key(plan.patient)])
    airflow = make_airflow(plan)
    db = lambda lo, hi: 10 ** (rng.uniform(lo, hi) / 20)  # noqa: E731
    breath_amp, snore_amp, fan_amp = db(-40.0, -32.0), db(-22.0, -12.0), db(-62.0, -50.0)

    snore_env = _snore_envelope(rng, plan, airflow)

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


def _snore_envelope(rng: np.random.Generator, plan: NightPlan, airflow: Airflow) -> np.ndarray:
    """Snoring loudness at ENV_RATE: episodes with 5-s ramps, louder and softer breaths."""
    n_env = airflow.breath.size
    snoring = np.zeros(n_env)
    for e in plan.of_type("snore"):
        a, b = int(e.start_s * ENV_RATE), min(int(e.end_s * ENV_RATE), n_env)
        ramp = np.clip(np.minimum(np.arange(b - a), np.arange(b - a)[::-1]) / (5 * ENV_RATE), 0, 1)
        snoring[a:b] = ramp * rng.uniform(0.6, 1.0)  # loudness wanders within an episode
    wobble = 0.75 + 0.25 * np.sin(2 * np.pi * airflow.phase / 7.3)
    return (snoring * wobble * airflow.inspiration).astype(np.float32)


_VARIED_STREAM = 41  # the random stream of the varied scene, apart from the plain one's


def _varied_scene(plan: NightPlan) -> AudioScene:
    """The scene with randomised snorer, room, noises, partner and phone (make_scene)."""
    rng = np.random.default_rng([plan.seed, _VARIED_STREAM, patient_key(plan.patient)])
    airflow = make_airflow(plan)
    db = lambda lo, hi: 10 ** (rng.uniform(lo, hi) / 20)  # noqa: E731
    breath_amp = db(-48.0, -30.0)
    snore_amp = breath_amp * db(3.0, 30.0)  # from a soft snore to a loud one
    fan_amp = db(-80.0, -40.0) if rng.random() < 0.7 else db(-95.0, -85.0)
    snore_env = _snore_envelope(rng, plan, airflow)
    f0 = float(rng.uniform(35.0, 220.0))
    snore, voice = _voice_bank(rng, 1 << 19, f0)
    fan, fan_info = _fan_bank(rng, 15 << 16)
    lo, hi = float(rng.uniform(150.0, 400.0)), float(rng.uniform(1500.0, 5000.0))
    banks = {"breath": _colored_bank(rng, 1 << 20, _band(lo, hi, float(rng.uniform(0.0, 0.6)))),
             "fan": fan, "snore": snore}
    offsets = {name: int(rng.integers(0, bank.size)) for name, bank in banks.items()}
    variation = _variation(rng, plan, airflow)
    variation.description.update(voice)
    variation.description.update(fan_info)
    n_samples = plan.duration_s * SAMPLE_RATE
    hours = plan.duration_s / 3600
    rumble = _colored_bank(rng, 1 << 19, _band(25.0, 160.0, 0.5))
    rustle = _colored_bank(rng, 1 << 17, _band(200.0, 7000.0, 0.2))
    bursts = []
    kinds = (("traffic", rumble, rng.uniform(0.0, 8.0), (3.0, 20.0), (-60.0, -25.0)),
             ("movement", rustle, rng.uniform(1.0, 10.0), (0.3, 3.0), (-60.0, -30.0)))
    for kind, bank, per_hour, (s0, s1), (l0, l1) in kinds:
        for _ in range(int(rng.poisson(per_hour * hours))):
            m = int(rng.uniform(s0, s1) * SAMPLE_RATE)
            if m >= n_samples:
                continue
            o = int(rng.integers(0, bank.size - m))
            win = np.sin(np.pi * np.arange(m) / m) ** 2
            bursts.append(_Burst(kind, int(rng.integers(0, n_samples - m)),
                                 (db(l0, l1) * win * bank[o:o + m]).astype(np.float32)))
    for _ in range(int(rng.poisson(rng.uniform(0.0, 2.0) * hours))):
        secs = rng.uniform(1.5, 8.0)
        m = int(secs * SAMPLE_RATE)
        if m < n_samples:
            bursts.append(_Burst("talk", int(rng.integers(0, n_samples - m)),
                                 (db(-55.0, -25.0) * _talk(rng, secs)).astype(np.float32)))
    bursts.sort(key=lambda b: b.start)
    return AudioScene(airflow, breath_amp, snore_amp, fan_amp, snore_env,
                      {k: (banks[k], offsets[k]) for k in banks}, bursts, n_samples, variation)


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


def render(scene: AudioScene, first_chunk: int = 0, n_chunks: int | None = None
           ) -> Iterator[np.ndarray]:
    """Yield the night as int16 chunks of CHUNK samples (the last may be shorter), from chunk
    `first_chunk` on (`n_chunks` of them, or to the end)."""
    breath_env = scene.airflow.breath * np.float32(scene.breath_amp)
    snore_env = scene.snore_env * np.float32(scene.snore_amp)
    (breath, ob), (fan, of), (snore, osn) = (scene.banks[k] for k in ("breath", "fan", "snore"))
    fan_amp = np.float32(scene.fan_amp * 32767.0)
    bursts = scene.bursts
    var = scene.varied
    tail = np.zeros(0, dtype=np.float32)
    stop = scene.n_samples if n_chunks is None else min(scene.n_samples,
                                                        (first_chunk + n_chunks) * CHUNK)
    for n0 in range(first_chunk * CHUNK, stop, CHUNK):
        n = min(CHUNK, scene.n_samples - n0)
        f0 = n0 // _UP
        out = _upsample(breath_env, f0, n // _UP)
        out *= _circular(breath, n0 + ob, n)
        s = _upsample(snore_env, f0, n // _UP)
        s *= _circular(snore, n0 + osn, n)
        out += s
        if var is not None and var.partner_amp > 0:
            p = _upsample(var.partner_env * np.float32(var.partner_amp), f0, n // _UP)
            out += p * _circular(breath, n0 + ob + 7919 * 97, n)
        out *= np.float32(32767.0)
        out += fan_amp * _circular(fan, n0 + of, n)
        for b in bursts:
            if b.start >= n0 + n or b.start + b.samples.size <= n0:
                continue
            a = max(b.start, n0)
            z = min(b.start + b.samples.size, n0 + n)
            out[a - n0:z - n0] += np.float32(32767.0) * b.samples[a - b.start:z - b.start]
        for loop in scene.loops:
            loop.add_to(out, n0)
        if var is not None:
            out, tail = _through_phone(out, tail, var, n0)
        np.clip(out, -32768.0, 32767.0, out=out)
        yield out.astype(np.int16)


def _through_phone(x: np.ndarray, tail: np.ndarray, var: Variation, n0: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Room and microphone (impulse response, carried across chunks), gain, noise, clipping."""
    size = 1 << int(np.ceil(np.log2(x.size + var.ir.size)))
    y = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(var.ir, size), size)[: x.size + var.ir.size - 1]
    y[: tail.size] += tail
    out, tail = y[: x.size], y[x.size:].astype(np.float32)
    out = out * 10 ** (var.gain_db / 20)
    rng = np.random.default_rng([n0, var.ir.size])
    out += rng.standard_normal(x.size) * (var.self_noise * 32767.0)
    limit = var.clip_at * 32767.0
    return np.clip(out, -limit, limit).astype(np.float32), tail


def at_rate(chunks: Iterator[np.ndarray], rate: int) -> Iterator[np.ndarray]:
    """The same sound at another sample rate (int16), resampled as the edge would."""
    if rate == SAMPLE_RATE:
        yield from chunks
        return
    from nightlink.edge.features.audio import Resampler

    res = Resampler(SAMPLE_RATE, rate)
    for c in chunks:
        y = res.process(c.astype(np.float32))
        yield np.clip(np.round(y), -32768, 32767).astype(np.int16)


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


# -- household sounds and irregular snoring (make_scene(plan, varied=True, household=True)) ----
#
# Sounds a snore detector can confuse with snoring: harmonic or low-frequency ones (music with
# a bass line, speech and television, a crying baby, a barking dog, a siren, a vacuum cleaner's
# motor, a door's thump) and broadband or impulsive ones (rain, running water, a clock). Each is
# a small generator of `n` samples at 16 kHz, of unit RMS, deterministic for its random stream.

HOUSEHOLD = ("speech", "tv", "music", "baby", "dog", "rain", "siren", "clock", "flush", "door",
             "vacuum")
SNORE_PATTERNS = ("breathing", "irregular", "back_to_back", "bursts", "sparse")


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / (np.sqrt(np.mean(x ** 2)) + 1e-12)).astype(np.float32)


def _harmonics(phase: np.ndarray, count: int, tilt: float, rng: np.random.Generator) -> np.ndarray:
    """Sum of `count` harmonics of an instantaneous phase with a 1/h^tilt roll-off."""
    return sum(h ** -tilt * np.sin(h * phase + 2 * np.pi * rng.random()) for h in range(1, count + 1))


def _decay(n: int, tau_s: float, attack_s: float = 0.005) -> np.ndarray:
    t = np.arange(n) / SAMPLE_RATE
    return np.minimum(t / attack_s, 1.0) * np.exp(-t / tau_s)


def _music(rng: np.random.Generator, n: int) -> np.ndarray:
    """Chords over a bass line (40-130 Hz), a melody, sometimes a kick drum on the beat."""
    beat = 60.0 / rng.uniform(60.0, 140.0)
    root = rng.uniform(40.0, 75.0)
    scale = np.array([0, 2, 4, 5, 7, 9, 11])
    pluck = rng.random() < 0.5  # piano or guitar-like notes decay; pads and strings hold
    kick = rng.random() < 0.5
    out = np.zeros(n)
    a = -int(rng.uniform(0.0, 2.0) * beat * SAMPLE_RATE)  # the clip starts mid-bar
    while a < n:
        m = int(beat * SAMPLE_RATE * rng.choice([1, 2, 4]))
        lo, hi = max(a, 0), min(a + m, n)
        if hi > lo:
            t = np.arange(hi - lo) / SAMPLE_RATE
            env = _decay(m, rng.uniform(0.3, 1.2))[lo - a:hi - a] if pluck else np.ones(hi - lo)
            degree = int(rng.choice([0, 3, 4, 5]))
            bass = root * 2 ** (scale[degree] / 12)
            seg = 1.2 * env * _harmonics(2 * np.pi * bass * t, 5, 1.0, rng)
            for step in (0, 2, 4):  # a triad two octaves up
                note = root * 4 * 2 ** (scale[(degree + step) % 7] / 12 + (degree + step) // 7)
                seg += 0.5 * env * _harmonics(2 * np.pi * note * t, 3, 1.5, rng)
            for k in range(0, hi - lo, int(beat * SAMPLE_RATE / 2)):  # melody in eighth notes
                note = root * 8 * 2 ** (scale[int(rng.integers(7))] / 12 + int(rng.integers(2)))
                mm = min(int(beat * SAMPLE_RATE / 2), hi - lo - k)
                tt = np.arange(mm) / SAMPLE_RATE
                seg[k:k + mm] += 0.4 * _decay(mm, 0.25) * _harmonics(2 * np.pi * note * tt, 4, 1.2, rng)
            if kick:
                for k in range(0, hi - lo, int(beat * SAMPLE_RATE)):
                    mm = min(int(0.25 * SAMPLE_RATE), hi - lo - k)
                    tt = np.arange(mm) / SAMPLE_RATE
                    seg[k:k + mm] += 2.0 * _decay(mm, 0.06) * np.sin(2 * np.pi * (55.0 * tt + 40.0 * (1 - np.exp(-tt / 0.03)) * 0.03))
            out[lo:hi] = seg
        a += m
    return _unit(out)


def _speech(rng: np.random.Generator, n: int) -> np.ndarray:
    """Speakers taking turns (men at 80-140 Hz, women 160-260, children 250-400), with pauses."""
    out = np.zeros(n)
    a = int(rng.uniform(-0.5, 0.3) * SAMPLE_RATE)
    bases = [float(rng.choice([rng.uniform(80.0, 140.0), rng.uniform(160.0, 260.0),
                               rng.uniform(250.0, 400.0)], p=[0.45, 0.45, 0.1]))
             for _ in range(int(rng.integers(1, 4)))]
    while a < n:
        secs = rng.uniform(0.8, 5.0)
        x = _talk(rng, secs, bases[int(rng.integers(len(bases)))])
        lo, hi = max(a, 0), min(a + x.size, n)
        if hi > lo:
            out[lo:hi] += x[lo - a:hi - a] * rng.uniform(0.5, 1.0)
        a += x.size + int(rng.uniform(0.05, 1.2) * SAMPLE_RATE)
    return _unit(out)


def _tv(rng: np.random.Generator, n: int) -> np.ndarray:
    """Television: speech over a music bed, through a small speaker (no deep bass)."""
    x = _speech(rng, n) + rng.uniform(0.0, 0.7) * _music(rng, n)
    hp = rng.uniform(80.0, 250.0)
    f = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    return _unit(np.fft.irfft(np.fft.rfft(x) / np.sqrt(1.0 + (hp / np.maximum(f, 1.0)) ** 4), n))


def _baby(rng: np.random.Generator, n: int) -> np.ndarray:
    """Crying: cry units of 0.4-1.5 s at 300-600 Hz with a rise-fall melody, vibrato and
    hoarseness, separated by gasps."""
    out = np.zeros(n)
    a = int(rng.uniform(-0.5, 0.2) * SAMPLE_RATE)
    f_mid = rng.uniform(300.0, 600.0)
    freqs = np.fft.rfftfreq(1 << 15, 1.0 / SAMPLE_RATE)
    while a < n:
        m = int(rng.uniform(0.4, 1.5) * SAMPLE_RATE)
        t = np.arange(m) / SAMPLE_RATE
        x = t / t[-1]
        f0 = f_mid * (0.85 + 0.3 * np.sin(np.pi * x)) * (1 + 0.03 * np.sin(2 * np.pi * rng.uniform(5, 9) * t))
        tone = _harmonics(2 * np.pi * np.cumsum(f0) / SAMPLE_RATE, int(3800 // f_mid), 0.8, rng)
        tone = tone + rng.uniform(0.0, 0.8) * np.interp(np.arange(m) % freqs.size, np.arange(freqs.size),
                                                         _colored_bank(rng, freqs.size, _band(500.0, 4000.0)))
        seg = np.sin(np.pi * x) ** 0.5 * tone
        lo, hi = max(a, 0), min(a + m, n)
        if hi > lo:
            out[lo:hi] += seg[lo - a:hi - a]
        a += m + int(rng.uniform(0.15, 0.7) * SAMPLE_RATE)
    return _unit(out)


def _bark(rng: np.random.Generator) -> np.ndarray:
    """One to five barks: 0.08-0.3 s, a falling harmonic cry at 150-900 Hz (the dog's size)
    with noise."""
    f_start = rng.uniform(150.0, 900.0)
    parts = []
    for _ in range(int(rng.integers(1, 6))):
        m = int(rng.uniform(0.08, 0.3) * SAMPLE_RATE)
        t = np.arange(m) / SAMPLE_RATE
        f0 = f_start * (1.0 - 0.35 * t / t[-1]) * rng.uniform(0.9, 1.1)
        tone = _harmonics(2 * np.pi * np.cumsum(f0) / SAMPLE_RATE, int(4000 // f_start), 0.7, rng)
        noise = _colored_bank(rng, m, _band(300.0, 3500.0))
        parts.append(_decay(m, rng.uniform(0.04, 0.15), 0.01) * (tone / np.sqrt(np.mean(tone ** 2))
                                                                  + rng.uniform(0.2, 1.5) * noise))
        parts.append(np.zeros(int(rng.uniform(0.1, 0.6) * SAMPLE_RATE)))
    return _unit(np.concatenate(parts))


def _rain(rng: np.random.Generator, n: int) -> np.ndarray:
    """Broadband hiss (rain on a roof or window) with single drops."""
    lo, hi = rng.uniform(80.0, 800.0), rng.uniform(2500.0, 8000.0)
    x = _colored_bank(rng, n, _band(lo, hi, rng.uniform(-0.3, 0.8))).astype(np.float64)
    drops = np.zeros(n)
    k = int(rng.uniform(20, 300) * n / SAMPLE_RATE)
    drops[rng.integers(0, n, size=k)] = rng.uniform(-1.0, 1.0, size=k)
    ring = _decay(int(0.01 * SAMPLE_RATE), 0.002, 0.0005) * np.sin(2 * np.pi * rng.uniform(1000.0, 5000.0)
                                                                  * np.arange(int(0.01 * SAMPLE_RATE)) / SAMPLE_RATE)
    drops = np.convolve(drops, ring)[:n]
    return _unit(x + rng.uniform(0.0, 3.0) * _unit(drops))


def _siren(rng: np.random.Generator, n: int) -> np.ndarray:
    """A wail (slow sweep), yelp (fast sweep) or two-tone siren at 400-1500 Hz, harmonics."""
    t = np.arange(n) / SAMPLE_RATE
    kind = int(rng.integers(3))
    lo, hi = rng.uniform(400.0, 700.0), rng.uniform(900.0, 1500.0)
    if kind == 2:
        f = np.where((t / rng.uniform(0.4, 0.8)) % 2 < 1, lo, hi * 0.75)
    else:
        period = rng.uniform(2.0, 6.0) if kind == 0 else rng.uniform(0.15, 0.4)
        f = lo + (hi - lo) * np.abs(2 * ((t / period + rng.random()) % 1.0) - 1)
    return _unit(_harmonics(2 * np.pi * np.cumsum(f) / SAMPLE_RATE, 4, 1.0, rng))


def _clock(rng: np.random.Generator, n: int) -> np.ndarray:
    """A ticking clock: a click of 3-15 ms ringing at 1.5-6 kHz once or twice a second,
    tick and tock a little apart in pitch and level."""
    period = int(SAMPLE_RATE * (1.0 if rng.random() < 0.7 else 0.5))
    ticks = []
    for level in (1.0, rng.uniform(0.5, 1.0)):
        m = int(rng.uniform(0.003, 0.015) * SAMPLE_RATE) * 4
        ring = np.sin(2 * np.pi * rng.uniform(1500.0, 6000.0) * np.arange(m) / SAMPLE_RATE)
        ticks.append(level * _decay(m, m / 4 / SAMPLE_RATE, 0.0003) * ring)
    out = 1e-4 * rng.standard_normal(n)
    for j, start in enumerate(range(int(rng.integers(period)), n, period)):
        tick = ticks[j % 2][: n - start]
        out[start:start + tick.size] += tick
    return _unit(out)


def _flush(rng: np.random.Generator, n: int) -> np.ndarray:
    """A toilet flush or running water: band-limited noise swelling and gurgling, a pipe's
    low rumble, then the quieter refill hiss."""
    x = _colored_bank(rng, n, _band(rng.uniform(100.0, 400.0), rng.uniform(2500.0, 6000.0), 0.3))
    gurgle = np.clip(1.0 + 0.5 * _smooth_noise(rng, n, 8.0), 0.1, None)
    rumble = _colored_bank(rng, n, _band(50.0, 200.0, 0.5))
    t = np.arange(n) / n
    env = np.minimum(t / 0.05, 1.0) * np.where(t < 0.6, 1.0, 0.35)
    return _unit(env * (gurgle * x + rng.uniform(0.0, 1.0) * rumble))


def _door(rng: np.random.Generator) -> np.ndarray:
    """A door shutting: a low thump ringing at 40-120 Hz, a click, a short rattle."""
    m = int(rng.uniform(0.4, 0.9) * SAMPLE_RATE)
    t = np.arange(m) / SAMPLE_RATE
    thump = _decay(m, rng.uniform(0.04, 0.2), 0.002) * np.sin(2 * np.pi * rng.uniform(40.0, 120.0) * t)
    click = _decay(m, rng.uniform(0.01, 0.04), 0.0005) * _colored_bank(rng, m, _band(200.0, 6000.0))
    return _unit(thump + rng.uniform(0.3, 1.5) * click)


def _vacuum(rng: np.random.Generator, n: int) -> np.ndarray:
    """A vacuum cleaner or hair dryer: a motor hum at 100-400 Hz with harmonics in strong
    broadband airflow noise."""
    f0 = rng.uniform(100.0, 400.0) * (1 + 0.01 * _smooth_noise(rng, n, 1.0))
    hum = _unit(_harmonics(2 * np.pi * np.cumsum(f0) / SAMPLE_RATE, int(rng.integers(2, 10)),
                           rng.uniform(0.5, 1.5), rng))
    air = _colored_bank(rng, n, _band(rng.uniform(100.0, 400.0), rng.uniform(3000.0, 8000.0), 0.2))
    return _unit(rng.uniform(0.2, 1.5) * hum + air)


_LONG = {"speech": _speech, "tv": _tv, "music": _music, "baby": _baby, "rain": _rain,
         "siren": _siren, "clock": _clock, "flush": _flush, "vacuum": _vacuum}
_SHORT = {"dog": _bark, "door": _door}


def household_sound(rng: np.random.Generator, kind: str, n: int) -> np.ndarray:
    """`n` samples (16 kHz, unit RMS over the sound) of one household sound; a bark or a door
    lands at a random place in them."""
    if kind in _LONG:
        return _LONG[kind](rng, n)
    x = _SHORT[kind](rng)[:n]
    out = np.zeros(n, dtype=np.float32)
    a = int(rng.integers(0, n - x.size + 1))
    out[a:a + x.size] = x
    return out


def snore_clip(rng: np.random.Generator, n: int = SAMPLE_RATE) -> np.ndarray:
    """A 1-s snore clip as snoring datasets cut them: one snore of 0.3-1 s from a new snorer
    (fundamental 35-220 Hz, resonances, turbulence), some breath and room noise around it."""
    voice, _ = _voice_bank(rng, 1 << 14, float(rng.uniform(35.0, 220.0)))
    d = int(rng.uniform(0.3, 1.0) * n)
    a = int(rng.integers(0, n - d + 1))
    env = np.zeros(n)
    x = np.arange(d) / d
    env[a:a + d] = np.clip(np.minimum(x / 0.15, (1 - x) / 0.25), 0.0, 1.0)
    noise = _colored_bank(rng, n, _band(rng.uniform(100.0, 400.0), rng.uniform(1500.0, 6000.0)))
    return (env * voice[:n] + 10 ** (-rng.uniform(10.0, 35.0) / 20) * noise).astype(np.float32)


def _montage(rng: np.random.Generator, n: int) -> np.ndarray:
    """Household sounds cut together: pieces of 0.3-3 s of any kind, each at its own level
    (15 dB either way), some with silence between (a television zapping, a radio, someone
    busy in the next room)."""
    out = np.zeros(n, dtype=np.float32)
    a = 0
    while a < n:
        m = min(int(rng.uniform(0.3, 3.0) * SAMPLE_RATE), n - a)
        if rng.random() < 0.8:
            x = household_sound(rng, str(rng.choice(HOUSEHOLD)), m)
            out[a:a + m] = x * np.float32(10 ** (rng.uniform(-15.0, 15.0) / 20))
        a += m
    return _unit(out)


def _loop(kind: str, rng: np.random.Generator, start: int, n: int, level: float) -> _Loop:
    size = int(min(n, 32 * SAMPLE_RATE)) if kind != "clock" else 16 * SAMPLE_RATE
    make = _montage if kind == "montage" else lambda r, m: household_sound(r, kind, m)
    bank = make(rng, size) * np.float32(level)
    return _Loop(kind, start, n, bank)


# kind: (share of nights with it, occurrences an hour, seconds each, level dBFS)
_HOUSEHOLD_PLAN = {
    "music": (0.35, (0.2, 1.0), (30.0, 600.0), (-60.0, -20.0)),
    "tv": (0.3, (0.2, 1.0), (60.0, 900.0), (-60.0, -20.0)),
    "speech": (0.25, (0.5, 3.0), (3.0, 40.0), (-60.0, -20.0)),
    "baby": (0.25, (0.3, 2.0), (10.0, 180.0), (-55.0, -15.0)),
    "rain": (0.2, (0.1, 0.5), (300.0, 3600.0), (-70.0, -30.0)),
    "siren": (0.25, (0.2, 2.0), (8.0, 60.0), (-65.0, -25.0)),
    "clock": (0.25, (0.0, 0.0), (0.0, 0.0), (-75.0, -40.0)),
    "flush": (0.25, (0.2, 2.0), (4.0, 15.0), (-60.0, -25.0)),
    "vacuum": (0.2, (0.2, 1.0), (20.0, 300.0), (-50.0, -15.0)),
    "dog": (0.25, (0.5, 10.0), (0.0, 0.0), (-55.0, -15.0)),
    "door": (0.3, (0.5, 4.0), (0.0, 0.0), (-45.0, -10.0)),
    "montage": (0.3, (0.5, 3.0), (10.0, 120.0), (-55.0, -15.0)),
}
_HOUSEHOLD_STREAM = 43  # apart from the varied scene's stream: its sounds stay as they were


def _household(scene: AudioScene, plan: NightPlan) -> AudioScene:
    """Add household sounds and redraw the snoring's timing, each optional per night."""
    rng = np.random.default_rng([plan.seed, _HOUSEHOLD_STREAM, patient_key(plan.patient)])
    n_samples, hours = scene.n_samples, scene.n_samples / SAMPLE_RATE / 3600
    db = lambda lo, hi: 10 ** (rng.uniform(lo, hi) / 20)  # noqa: E731
    pattern = str(rng.choice(SNORE_PATTERNS, p=[0.3, 0.2, 0.15, 0.2, 0.15]))
    if pattern != "breathing":
        scene.snore_env = _snore_timing(rng, plan, scene.airflow, pattern)
    kinds = []
    for kind, (share, (r0, r1), (s0, s1), (l0, l1)) in _HOUSEHOLD_PLAN.items():
        if rng.random() >= share:
            continue
        kinds.append(kind)
        if kind == "clock":  # all night
            scene.loops.append(_loop(kind, rng, 0, n_samples, db(l0, l1)))
            continue
        for _ in range(max(1, int(rng.poisson(rng.uniform(r0, r1) * hours)))):
            if kind in _SHORT:
                x = _SHORT[kind](rng) * np.float32(db(l0, l1))
                if x.size < n_samples:
                    scene.bursts.append(_Burst(kind, int(rng.integers(0, n_samples - x.size)), x))
                continue
            m = min(int(rng.uniform(s0, s1) * SAMPLE_RATE), n_samples)
            scene.loops.append(_loop(kind, rng, int(rng.integers(0, n_samples - m + 1)), m, db(l0, l1)))
    scene.bursts.sort(key=lambda b: b.start)
    scene.varied.description.update({"snore_pattern": pattern, "household": kinds})
    return scene


def _snore_timing(rng: np.random.Generator, plan: NightPlan, airflow: Airflow, pattern: str
                  ) -> np.ndarray:
    """Snoring loudness at ENV_RATE inside the plan's episodes, not at the breathing rhythm:
    irregular intervals, back to back (as 1-s clips put end to end), bursts with silence
    between, or sparse single snores every 3-8 s."""
    n_env = airflow.breath.size
    episodes = np.zeros(n_env)
    for e in plan.of_type("snore"):
        a, b = int(e.start_s * ENV_RATE), min(int(e.end_s * ENV_RATE), n_env)
        episodes[a:b] = 1.0
    timing = np.zeros(n_env)
    t, end, left = rng.uniform(0.0, 2.0), n_env / ENV_RATE, 0
    while t < end:
        if pattern == "irregular":
            d, gap = rng.uniform(0.4, 1.6), rng.uniform(0.5, 8.0)
        elif pattern == "back_to_back":
            d, gap = rng.uniform(0.6, 1.2), rng.uniform(0.0, 0.12)
        elif pattern == "sparse":
            d, gap = rng.uniform(0.5, 1.5), rng.uniform(3.0, 8.0)
        else:  # bursts of 2-6 snores, then 2-10 s of quiet
            left = int(rng.integers(2, 7)) if left <= 0 else left
            left -= 1
            d, gap = rng.uniform(0.4, 1.0), rng.uniform(0.05, 0.5) if left else rng.uniform(2.0, 10.0)
        a, m = int(t * ENV_RATE), max(int(d * ENV_RATE), 2)
        x = np.arange(m) / m
        shape = np.clip(np.minimum(x / 0.15, (1 - x) / 0.25), 0.0, 1.0) * rng.uniform(0.15, 1.0)
        timing[a:a + m] = shape[: max(0, min(m, n_env - a))]
        t += d + gap
    return (episodes * timing).astype(np.float32)
