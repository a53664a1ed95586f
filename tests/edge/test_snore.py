"""The snore call: the same whatever the microphone's gain, the source's sample rate and the
night around the epoch; clipping does not make a quiet epoch snore; the resampler is exact
enough and streams."""

import numpy as np
import pytest

from nightlink.edge.features import classify
from nightlink.edge.features.audio import (
    EPOCH_SAMPLES,
    SAMPLE_RATE,
    SNORE_FEATURES,
    AudioFeatureExtractor,
    Resampler,
)
from nightlink.shared import features
from nightlink.tools.train.snore import snore_columns, stored, streams_of

RATES = (8_000, 16_000, 44_100, 48_000)
N_AUDIO = len(features.names(features.AUDIO))
SN = slice(N_AUDIO - len(SNORE_FEATURES), N_AUDIO)


def _band_noise(rng, n, rate, lo, hi):
    """Unit-RMS noise with a flat spectrum between lo and hi Hz (the same sound at any rate)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / rate)
    x = np.fft.irfft(spec * ((f >= lo) & (f < hi)), n)
    return x / np.sqrt(np.mean(x ** 2))


def epoch(rate: int, snoring: bool, seed: int = 1) -> np.ndarray:
    """One 30-s epoch at `rate`, float in [-1, 1], with nothing above 3.4 kHz: a snorer (95 Hz
    buzz with a 500 Hz resonance on every inspiration, 15 breaths a minute) or quiet breathing
    by a fan."""
    rng = np.random.default_rng(seed)
    n = rate * 30
    t = np.arange(n) / rate
    phase = (t / 4.0) % 1.0
    insp = np.where(phase < 0.4, np.sin(np.pi * phase / 0.4) ** 2, 0.0)
    fan = _band_noise(rng, n, rate, 60.0, 3400.0)
    if snoring:
        f0 = 95.0
        buzz = sum(h ** -0.8 * (1 + 2 / (1 + ((h * f0 - 500) / 200) ** 2))
                   * np.sin(2 * np.pi * h * f0 * t + rng.uniform(0, 2 * np.pi))
                   for h in range(1, int(3400 / f0) + 1))
        return 0.05 * insp * buzz / np.sqrt(np.mean(buzz ** 2)) + 0.002 * fan
    breath = _band_noise(rng, n, rate, 300.0, 3000.0)
    return 0.01 * insp * breath + 0.002 * fan


def rows(samples, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Stored (quantized) audio features of each complete epoch of `samples`."""
    ex = AudioFeatureExtractor(0, rate)
    return np.array([stored(v) for _, v in ex.feed(samples)])


@pytest.fixture(scope="module")
def clf():
    return classify.Classifiers()


def calls(clf, feature_rows: np.ndarray) -> list[int]:
    return clf.snoring(streams_of(snore_columns(feature_rows))).tolist()


@pytest.fixture(scope="module")
def reference(clf):
    """The two synthetic epochs at 16 kHz: their stored features and their calls."""
    out = {}
    for snoring in (True, False):
        r = rows(epoch(SAMPLE_RATE, snoring))
        out[snoring] = (r, calls(clf, r)[0])
    return out


def test_snore__synthetic_epochs_are_called_right(reference):
    assert reference[True][1] == 1
    assert reference[False][1] == 0


@pytest.mark.parametrize("gain", [0.1, 10.0])
def test_snore__gain_changes_no_call_and_no_snore_feature(clf, reference, gain):
    for snoring in (True, False):
        r = rows(epoch(SAMPLE_RATE, snoring) * gain)
        assert calls(clf, r)[0] == reference[snoring][1]
        np.testing.assert_allclose(r[0, SN], reference[snoring][0][0, SN], atol=0.51)
        for name in TIME_SHAPE:  # the model's inputs: at most one stored step apart
            step = features.features(features.AUDIO)[features.names(features.AUDIO).index(name)][
                features.F_SCALE]
            got, want = _named(r[0])[name], _named(reference[snoring][0][0])[name]
            assert abs(got - want) <= step * 1.01, (name, gain, snoring, got, want)


@pytest.mark.parametrize("rate", RATES)
def test_snore__any_sample_rate_gives_the_same_call(clf, reference, rate):
    for snoring in (True, False):
        r = rows(epoch(rate, snoring), rate)
        assert r.shape[0] == 1  # one epoch in, one epoch out, at any rate
        assert calls(clf, r)[0] == reference[snoring][1], (rate, snoring)


def test_snore__the_night_around_an_epoch_changes_nothing(clf, reference):
    """The same epoch after two different epochs (loud snoring, near silence), and its row
    inside two different nights of rows: the same features, the same call."""
    target = epoch(SAMPLE_RATE, False, seed=5)
    before = [epoch(SAMPLE_RATE, True, seed=6), 0.0001 * epoch(SAMPLE_RATE, False, seed=7)]
    got = [rows(np.concatenate([b, b, target]))[-1] for b in before]
    np.testing.assert_array_equal(got[0][SN], got[1][SN])
    nights = [np.repeat(reference[True][0], 9, axis=0), np.repeat(reference[False][0], 9, axis=0)]
    for night in nights:
        night[4] = got[0]
    assert calls(clf, nights[0])[4] == calls(clf, nights[1])[4] == calls(clf, got[0][None])[0]


def test_snore__clipping_does_not_make_a_quiet_epoch_snore(clf, reference):
    quiet = epoch(SAMPLE_RATE, False, seed=3)
    for gain in (30.0, 100.0, 1000.0):
        clipped = np.clip(np.round(quiet * gain * 32768), -32768, 32767).astype(np.int16)
        assert calls(clf, rows(clipped))[0] == 0, gain


def test_resampler__streams_and_keeps_the_pass_band():
    rate = 44_100
    t = np.arange(rate * 2) / rate
    x = (0.5 * np.sin(2 * np.pi * 440 * t) + 0.3 * np.sin(2 * np.pi * 3000 * t)).astype(np.float32)
    whole = Resampler(rate).process(x)
    parts = Resampler(rate)
    chunked = np.concatenate([parts.process(c) for c in np.array_split(x, 13)])
    np.testing.assert_array_equal(whole, chunked)
    assert whole.size == 2 * SAMPLE_RATE
    spec = np.abs(np.fft.rfft(whole[SAMPLE_RATE // 2:SAMPLE_RATE // 2 + SAMPLE_RATE]))
    f = np.fft.rfftfreq(SAMPLE_RATE, 1.0 / SAMPLE_RATE)
    assert spec[f == 440][0] / spec[f == 3000][0] == pytest.approx(0.5 / 0.3, rel=0.01)


def test_resampler__8_khz_has_nothing_above_its_band():
    x = np.random.default_rng(2).standard_normal(8_000 * 4).astype(np.float32)
    y = Resampler(8_000).process(x)[4000:]
    spec = np.abs(np.fft.rfft(y * np.hanning(y.size)))
    f = np.fft.rfftfreq(y.size, 1.0 / SAMPLE_RATE)
    assert spec[f > 4400].max() < 1e-3 * spec[f < 3000].mean()  # 60 dB down


def test_extractor__refuses_what_it_cannot_resample():
    for bad in (4_000, 11_025.5):
        with pytest.raises(ValueError, match="Hz"):
            AudioFeatureExtractor(0, bad)


def test_extractor__epochs_stay_on_the_grid_at_44_1_khz():
    ex = AudioFeatureExtractor(100, 44_100)
    done = ex.feed(np.zeros(44_100 * 30 - 10, dtype=np.int16))
    assert done == []  # (the resampler's output runs a sample or two ahead of its input)
    done = ex.feed(np.zeros(10 + 44_100 * 30, dtype=np.int16))
    assert [e for e, _ in done] == [100, 101]
    assert EPOCH_SAMPLES == SAMPLE_RATE * 30


def test_snore__no_audio_or_digital_silence_is_no_snoring(clf):
    assert clf.snoring(streams_of(np.full((3, len(SNORE_FEATURES)), np.nan))).tolist() == [0, 0, 0]
    assert calls(clf, rows(np.zeros(EPOCH_SAMPLES, dtype=np.int16))) == [0]


TIME_SHAPE = ("sn_pitched_frac", "sn_flux_db", "sn_burst_s", "sn_syllable_mod")


def _named(row) -> dict:
    return dict(zip(SNORE_FEATURES, row[SN], strict=True))


def _tilted(x: np.ndarray, db_per_octave: float, corner_hz: float = 300.0) -> np.ndarray:
    """x through a microphone that falls (or rises) by `db_per_octave` above `corner_hz`."""
    f = np.fft.rfftfreq(x.size, 1.0 / SAMPLE_RATE)
    g = np.where(f > corner_hz, (np.maximum(f, 1.0) / corner_hz) ** (db_per_octave / 6.02), 1.0)
    return np.fft.irfft(np.fft.rfft(x) * g, x.size)


def test_time_shape__a_microphone_s_tilt_moves_the_spectrum_not_the_time_features():
    """-9 dB an octave above 300 Hz darkens the epoch (its centroid falls by hundreds of Hz);
    the four features the snore model reads stay where they were."""
    for snoring in (True, False):
        x = epoch(SAMPLE_RATE, snoring)
        flat, dark = _named(rows(x)[0]), _named(rows(_tilted(x, -9.0))[0])
        assert flat["sn_centroid_hz"] - dark["sn_centroid_hz"] > 150, (flat, dark)
        assert abs(flat["sn_pitched_frac"] - dark["sn_pitched_frac"]) <= 0.05
        assert abs(flat["sn_flux_db"] - dark["sn_flux_db"]) <= 0.2
        assert abs(flat["sn_burst_s"] - dark["sn_burst_s"]) <= 0.25
        assert abs(flat["sn_syllable_mod"] - dark["sn_syllable_mod"]) <= 0.03


def _talk(seed: int = 2) -> np.ndarray:
    """30 s of syllables: 4-6 a second, each a voiced sound whose pitch glides (110-220 Hz)."""
    rng = np.random.default_rng(seed)
    n = SAMPLE_RATE * 30
    t = np.arange(n) / SAMPLE_RATE
    f0 = 150.0 * 2 ** (0.6 * np.sin(2 * np.pi * 0.7 * t) + 0.3 * np.sin(2 * np.pi * 2.3 * t))
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    voice = sum(h ** -1.0 * np.sin(h * phase) for h in range(1, 20))
    env = np.zeros(n)
    s = 0.0
    while s < 30.0:
        d = rng.uniform(0.1, 0.2)
        a, b = int(s * SAMPLE_RATE), min(int((s + d) * SAMPLE_RATE), n)
        env[a:b] = np.sin(np.linspace(0, np.pi, b - a)) ** 2
        s += d + rng.uniform(0.05, 0.12) + (rng.uniform(0.3, 0.8) if rng.random() < 0.15 else 0.0)
    return 0.05 * env * voice / np.sqrt(np.mean(voice ** 2)) + 0.0005 * _band_noise(rng, n, SAMPLE_RATE, 60, 3400)


def test_time_shape__a_snore_holds_still_speech_comes_and_goes():
    snore, talk, breath = (_named(rows(x)[0]) for x in (epoch(SAMPLE_RATE, True), _talk(),
                                                        epoch(SAMPLE_RATE, False)))
    assert snore["sn_pitched_frac"] > 0.8 and breath["sn_pitched_frac"] < 0.2
    assert talk["sn_syllable_mod"] > snore["sn_syllable_mod"] + 0.2, (talk, snore)
    assert talk["sn_burst_s"] < 0.6 < 1.0 < snore["sn_burst_s"], (talk, snore)
    assert talk["sn_flux_db"] > snore["sn_flux_db"], (talk, snore)


def test_time_shape__digital_silence_and_a_steady_hum():
    silent = _named(rows(np.zeros(EPOCH_SAMPLES, dtype=np.int16))[0])
    assert silent["sn_pitched_frac"] == 0.0 and silent["sn_burst_s"] == 0.0
    assert np.isnan(silent["sn_flux_db"])
    t = np.arange(EPOCH_SAMPLES) / SAMPLE_RATE
    hum = sum(np.sin(2 * np.pi * 100.0 * h * t) / h for h in range(1, 8))
    steady = _named(rows(0.1 * hum / np.abs(hum).max())[0])
    assert steady["sn_pitched_frac"] > 0.9 and steady["sn_flux_db"] < 0.5
    assert steady["sn_syllable_mod"] < 0.2


@pytest.mark.parametrize("db_per_octave", [-9.0, -6.0, 6.0])
def test_snore__a_microphone_s_tilt_changes_no_call(clf, reference, db_per_octave):
    """A darker or brighter microphone (or room) than any the model was trained with: the
    same calls, since the model reads how the sound comes and goes, not its spectral balance."""
    for snoring in (True, False):
        r = rows(_tilted(epoch(SAMPLE_RATE, snoring), db_per_octave))
        assert calls(clf, r)[0] == reference[snoring][1], (db_per_octave, snoring)


def test_snore__a_steady_hum_is_not_snoring(clf):
    """A fridge's or a pump's hum the whole epoch, alone or over a fan: pitched and unchanging
    like a snore, but nothing rises over its floor, so no breath and no snore."""
    rng = np.random.default_rng(4)
    t = np.arange(EPOCH_SAMPLES) / SAMPLE_RATE
    for f0 in (100.0, 170.0):
        hum = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 8))
        hum = 0.1 * hum / np.abs(hum).max()
        for x in (hum, hum + 0.03 * _band_noise(rng, EPOCH_SAMPLES, SAMPLE_RATE, 60, 3400)):
            r = rows(x)
            assert _named(r[0])["sn_burst_s"] == 0.0
            assert calls(clf, r)[0] == 0, f0


def test_snore__a_record_without_the_model_s_inputs_gets_no_call(clf, reference):
    """An epoch stored before the model's inputs were on the wire (the 42-feature audio layout
    still decodes, the newer features missing) is not called snoring: missing inputs would sit
    at the training centre and score a coin toss."""
    old = reference[True][0].copy()
    old[:, N_AUDIO - 4:] = np.nan
    assert calls(clf, old) == [0]
    assert calls(clf, reference[True][0]) == [1]
