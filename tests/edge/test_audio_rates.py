"""The full-band audio features (flatness, centroid, roll-off, MFCCs) of the same sound at
22.05, 44.1 and 48 kHz agree with 16 kHz: the resampler keeps the band up to 7.68 kHz, where
a pass band ending at 6.4 kHz halved the flatness the sleep model reads."""

import numpy as np
import pytest

from nightlink.edge.features.audio import SAMPLE_RATE, AudioFeatureExtractor
from nightlink.shared import features

NAMES = features.names(features.AUDIO)


def _room(rate: int, seed: int = 3) -> np.ndarray:
    """Two epochs of the same sound at `rate`, int16: one set of random Fourier coefficients
    on the 1/60-Hz grid every rate shares (the same band-limited signal whatever it is sampled
    at), with a bedroom's tilt (falling 6 dB an octave above 500 Hz) over a white floor 30 dB
    down, 60 Hz to 8 kHz, nothing above; breathing-like swells every 4 s."""
    n = 2 * 30 * rate
    rng = np.random.default_rng(seed)
    f = np.arange(8000 * 60 + 1) / 60.0
    coef = rng.standard_normal(f.size) + 1j * rng.standard_normal(f.size)
    coef *= (np.minimum(1.0, 500.0 / np.maximum(f, 1.0)) + 10 ** (-30 / 20)) * (f >= 60)
    spec = np.zeros(n // 2 + 1, dtype=complex)
    keep = min(f.size, spec.size)  # under 16 kHz: the band the rate can carry
    spec[:keep] = coef[:keep]
    x = np.fft.irfft(spec, n) * n
    t = np.arange(n) / rate
    x *= 1.0 + 0.8 * np.sin(np.pi * t / 4.0) ** 2
    return np.round(x / np.sqrt(np.mean(x ** 2)) * 1000.0).astype(np.int16)


def _features(rate: int) -> dict[str, float]:
    """The second epoch's features (the first carries the filter's start)."""
    _e, row = AudioFeatureExtractor(0, rate).feed(_room(rate))[1]
    return dict(zip(NAMES, row, strict=True))


@pytest.fixture(scope="module")
def at_16k():
    return _features(SAMPLE_RATE)


@pytest.mark.parametrize("rate", [22_050, 44_100, 48_000])
def test_full_band_features_do_not_depend_on_the_input_rate(at_16k, rate):
    got = _features(rate)
    assert got["flatness"] == pytest.approx(at_16k["flatness"], rel=0.06), rate
    assert got["centroid_hz"] == pytest.approx(at_16k["centroid_hz"], abs=25.0), rate
    assert got["rolloff_hz"] == pytest.approx(at_16k["rolloff_hz"], abs=64.0), rate
    assert got["loud_mean_dbfs"] == pytest.approx(at_16k["loud_mean_dbfs"], abs=0.1), rate
    for k in range(13):  # the cepstrum's shape, the top mel bands included
        assert got[f"mfcc{k}_mean"] == pytest.approx(at_16k[f"mfcc{k}_mean"], abs=1.0), (rate, k)
    assert got["mfcc0_std"] == pytest.approx(at_16k["mfcc0_std"], abs=0.2), rate


@pytest.mark.parametrize("rate", [8_000, 11_025])
def test_a_source_under_16k_has_no_full_band_features(at_16k, rate):
    """An 8 kHz source (a Bluetooth headset's voice channel) is empty above 3.84 kHz: its
    flatness, centroid, roll-off and MFCCs would read a tonal, quiet room (a simulated night
    staged from audio and room came out 83 % Deep with no REM, against 75/19/5 % Light/Deep/REM
    at 16 kHz), so they are missing; the level, silence and 60-3500 Hz snore features stay."""
    got = _features(rate)
    for name in ("flatness", "centroid_hz", "rolloff_hz", "mfcc0_mean", "mfcc0_std"):
        assert got[name] is None, (rate, name)
    assert got["loud_mean_dbfs"] == pytest.approx(at_16k["loud_mean_dbfs"], abs=0.5), rate
    assert got["sn_low_ratio"] is not None and got["snore_ratio"] is not None
    assert at_16k["flatness"] is not None  # 16 kHz and up keep them (the test above)
