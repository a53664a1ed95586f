"""The calibrations' NumPy run of the clock's predicted-low network (cloud/lowrisk_batch.py)
gives what `LowRisk.predict` gives, bit for bit, on every hour these tests make and on real
CGM, and the calibration decides the same with it as with the clock's own arithmetic."""

import random

import numpy as np
import pytest

from nightlink.cloud import alert_calibration as cal
from nightlink.cloud import lowrisk_batch
from nightlink.shared import lowrisk
from tests.cloud.test_alert_calibration import NEAR_MISSES, T0, UTC, nights
from tests.support.shared_data import BRIS, bris_readings

DAY = 86_400_000


def _one_by_one(histories):
    model = lowrisk.LowRisk()
    return [(model.predict(list(h)), model.forecast) for h in histories]


def _made_hours(n, seed=7):
    """Hours of every kind: falls, rises, sensor extremes (39, past 400), gaps, too few."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        g = rng.uniform(40, 420)
        slope = rng.uniform(-6, 6)
        h = []
        for _i in range(lowrisk.HISTORY):
            g = max(39.0, min(480.0, g + slope + rng.gauss(0, 4)))
            h.append(int(g))
        for i in rng.sample(range(lowrisk.HISTORY), rng.choice((0, 0, 1, 3, 6))):
            h[i] = 0  # missing readings, some leaving too few recent ones
        out.append(tuple(h))
    return out


def test_predict_many__equals_the_clocks_arithmetic_on_made_hours():
    hours = _made_hours(4000)
    got = lowrisk_batch.predict_many(hours)
    assert got == _one_by_one(hours)
    assert sum(1 for r, _f in got if r < 0) > 100  # hours with too few readings were made
    assert len({r for r, _f in got}) > 50  # and the risks spread over the scale


def test_requant__equals_the_clocks_on_every_layers_multipliers():
    model = lowrisk.LowRisk()
    rng = np.random.default_rng(3)
    for layer in model.layers + model.delta:
        _n_in, n_out, *_rest, m0, m1, m2, sh, _out = layer
        acc = rng.integers(-(1 << 22), 1 << 22, size=(500, n_out))
        acc[:3] = [[0] * n_out, [-1] * n_out, [1] * n_out]
        mult = np.array([m0[o] + (m1[o] << 15) + (m2[o] << 30) for o in range(n_out)])
        got = lowrisk_batch._requant(acc, mult, np.array(list(sh)))
        want = [[lowrisk._requant(int(a), m0[o], m1[o], m2[o], sh[o]) for o, a in enumerate(row)]
                for row in acc]
        assert got.tolist() == want


def test_predict_many__beyond_32_bits_falls_back_to_the_clocks_arithmetic(monkeypatch):
    monkeypatch.setattr(lowrisk_batch, "_ACC_LIMIT", 1)  # every accumulator "overflows"
    hours = _made_hours(200, seed=11)
    assert lowrisk_batch.predict_many(hours) == _one_by_one(hours)


def test_sounding__decides_the_same_with_the_batch_as_with_the_clocks_model():
    readings = nights(6, NEAR_MISSES + (600, 900), nadir=60)
    carbs = [T0 + d * DAY + 610 * 60_000 for d in range(6)]
    for policy in (lowrisk.DEFAULT_POLICY, (850, 3, 60, 0.5, 110, 30, 54)):
        batch = cal.sounding(readings, carbs, policy)
        assert batch and batch == cal.sounding(readings, carbs, policy, lowrisk.LowRisk())
    fast = nights(3, NEAR_MISSES, step_min=1)  # a 1-minute sensor
    assert cal.sounding(fast, []) == cal.sounding(fast, [], model=lowrisk.LowRisk())
    assert cal.calibrate(readings, carbs, UTC, T0 + 6 * DAY)["calibrated"]


@pytest.mark.skipif(not BRIS.is_dir(),
                    reason="needs ../shared/data/cgm-bris-t1d-open (real CGM)")
@pytest.mark.parametrize("person", ["P03", "P01"])  # a 5-minute sensor, a 15-minute Libre 2
def test_sounding__real_cgm_decides_the_same_with_the_batch(person):
    readings = bris_readings(person)
    readings = [r for r in readings if r[0] < readings[0][0] + 10 * DAY]
    batch = cal.sounding(readings, [])
    assert batch == cal.sounding(readings, [], model=lowrisk.LowRisk())
    asked = lowrisk_batch.Recorder()
    cal._sounding(readings, [], lowrisk.DEFAULT_POLICY, asked)
    hours = list(asked.seen)
    assert len(hours) > 500 and lowrisk_batch.predict_many(hours) == _one_by_one(hours)
