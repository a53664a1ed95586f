"""The edge's desaturation counter (ODI 3 % and 4 %) on traces with a known answer."""

from __future__ import annotations

import numpy as np

from nightlink.edge.features.apnea_screen import spo2_estimate
from nightlink.edge.features.reducers import WearableReducer, _Desaturations
from nightlink.edge.sources.samples import SpO2
from nightlink.shared.epoch import EPOCH_S, epoch_start

_D3 = 7  # desat3_count in WearableReducer.close's row (hr x3, rmssd, sdnn, spo2 mean, min)


def count(trace, drop: float, *, step_s: float = 1.0) -> int:
    d = _Desaturations(drop)
    return sum(d.add(i * step_s, float(p)) for i, p in enumerate(trace))


def fall(depth: float, down_s: int, hold_s: int, up_s: int, to: float) -> list[float]:
    """From 0 down to -depth over down_s, held, then up to `to` (relative to the baseline)."""
    return ([-depth * (k + 1) / down_s for k in range(down_s)] + [-depth] * hold_s
            + [-depth + (to + depth) * (k + 1) / up_s for k in range(up_s)])


def test_cyclic_desaturations_that_never_regain_the_baseline_are_each_counted():
    # Obstructive apnea's pattern: 96 % awake, then 20 cycles of 60 s falling to 88-89 %
    # and recovering only to 94 % before the next apnea.
    trace = [96.0] * 300
    for k in range(20):
        depth = 7.0 + (k % 2)
        cycle = fall(depth, 20, 10, 10, -2.0)
        trace += [96.0 + v for v in cycle] + [94.0] * (60 - len(cycle))
    trace += [96.0] * 300
    assert count(trace, 3) == 20
    assert count(trace, 4) == 20


def test_depth_and_length_decide():
    base = [95.0] * 180
    shallow = fall(3.5, 12, 8, 12, 0.0)  # 3.5 % below: a 3 % desaturation, not a 4 % one
    assert count(base + [95 + v for v in shallow] + base, 3) == 1
    assert count(base + [95 + v for v in shallow] + base, 4) == 0
    assert count(base + [95 + v for v in fall(2.5, 10, 10, 10, 0.0)] + base, 3) == 0
    brief = fall(5.0, 2, 2, 2, 0.0)  # 6 s from leaving the baseline to regaining it
    assert count(base + [95 + v for v in brief] + base, 3) == 0


def test_single_readings_off_and_probe_noise_are_not_desaturations():
    base = [96.0] * 600
    spikes = list(base)
    for k in range(30, 600, 40):
        spikes[k] = 84.0  # a movement: one reading far off
        spikes[k + 1] = 86.0
    assert count(spikes, 3) == 0
    rng = np.random.default_rng(7)
    n = 2 * 3600  # two hours at 1 Hz, whole percent, drifting a little, noise 1 point
    drift = np.interp(np.arange(n) / 300, np.arange(n // 300 + 2), rng.normal(0, 0.6, n // 300 + 2))
    noisy = np.round(96 + drift + rng.normal(0, 1.0, n))
    assert count(noisy, 4) == 0
    assert count(noisy, 3) <= 2  # under 1 an hour


def test_a_new_lower_level_is_not_one_endless_event():
    # Saturation settles 3.5 % lower for half an hour (a baseline shift, e.g. lying on the back
    # or REM); the desaturations on that lower level are still counted.
    trace = [96.0] * 300 + [92.5] * 1800
    trace += [92.5 + v for v in fall(5.0, 15, 10, 15, 0.0)] + [92.5] * 120
    trace += [92.5 + v for v in fall(5.0, 15, 10, 15, 0.0)] + [92.5] * 120
    assert count(trace, 3) == 3  # the shift once, then both falls from the new level


def test_sparse_readings_still_count_a_long_fall():
    # A ring sending one reading every 4 s.
    trace = [96.0] * 60 + [96 + v for v in fall(6.0, 4, 3, 4, 0.0)] + [96.0] * 60
    assert count(trace, 3, step_s=4.0) == 1


def test_a_slow_recovery_is_one_desaturation():
    base = [96.0] * 180
    one = fall(12.0, 15, 10, 60, 0.0)  # 96 -> 84, then a steady climb back over a minute
    assert count(base + [96 + v for v in one] + base, 3) == 1
    assert count(base + [96 + v for v in one] + base, 4) == 1


def test_cycles_that_recover_less_than_two_thirds_are_each_counted():
    # From 96 down to 88, then 10 cycles between 93 and 88 (each recovers 5 of 8 points),
    # longer together than a new level takes.
    trace = [96.0] * 300 + [96 + v for v in fall(8.0, 20, 8, 10, -3.0)]
    for _ in range(9):
        trace += [93.0] * 22 + [93 + v for v in fall(5.0, 20, 8, 10, 0.0)]
    trace += [93.0] * 22 + [96.0] * 300
    assert count(trace, 3) == 10
    assert count(trace, 4) == 10


def test_a_gap_and_the_first_readings_start_no_desaturation():
    # The ring is off for 10 minutes and comes back reading 4 points lower.
    d = _Desaturations(3.0)
    before = sum(d.add(float(t), 96.0) for t in range(300))
    after = sum(d.add(float(t), 92.0) for t in range(900, 1500))
    assert before == after == 0
    # A probe settling: 3 s at 99, then a steady 95.
    assert count([99.0] * 3 + [95.0] * 600, 3) == 0


def test_a_long_desaturation_does_not_hide_the_next():
    # Four minutes down at 88 (longer than a fall), back to 96, and a minute later a 5-point
    # desaturation: two events.
    trace = [96.0] * 180 + [96 + v for v in fall(8.0, 30, 200, 20, 0.0)] + [96.0] * 60
    trace += [96 + v for v in fall(5.0, 10, 8, 10, 0.0)] + [96.0] * 200
    assert count(trace, 3) == 2
    assert count(trace, 4) == 2


def test_noise_with_readings_seconds_apart_is_not_desaturation():
    # Whole-percent readings every 5 and 6 s (rings, some oximeters), noise 1 point, 4 hours.
    rng = np.random.default_rng(11)
    for step in (5.0, 6.0):
        n = int(4 * 3600 / step)
        noisy = np.minimum(np.round(96 + rng.normal(0, 1.0, n)), 100)
        assert count(noisy, 3, step_s=step) <= 2  # under 0.5 an hour
        assert count(noisy, 4, step_s=step) == 0


def _epoch_rows(step_s: float, epochs: int = 240) -> list[tuple]:
    """A wearable's rows for 2 hours of 96 % read every step_s, with a 6-point desaturation
    every 2 minutes."""
    red = WearableReducer()
    first = 1_768_510_800 // EPOCH_S
    rows = []
    t = float(epoch_start(first))
    for epoch in range(first, first + epochs):
        end = epoch_start(epoch) + EPOCH_S
        while t < end:
            phase = (t - epoch_start(first)) % 120
            red.add(SpO2(t=t, pct=90.0 if 40 <= phase < 70 else 96.0))
            t += step_s
        rows.append(red.close(epoch))
    return rows


def test_oximetry_too_sparse_for_desaturations_gives_no_count_rather_than_zero():
    dense = _epoch_rows(1.0)
    assert dense[100][5] is not None and dense[100][_D3] is not None
    assert 55 <= sum(r[_D3] for r in dense) <= 60  # one every 2 minutes, after the baseline
    sparse = _epoch_rows(60.0)  # a watch's reading a minute: it sees the level, not the falls
    assert all(r[5] is not None for r in sparse[::2])  # the saturation is there...
    assert all(r[_D3] is None for r in sparse)  # ...the desaturation count is not measured
    # and the night's ODI is not measured either, rather than a normal 0
    wearable = {"spo2_mean_pct": np.array([np.nan if r[5] is None else r[5] for r in sparse]),
                "desat3_count": np.array([np.nan if r[_D3] is None else r[_D3] for r in sparse]),
                "desat4_count": np.full(len(sparse), np.nan)}
    assert spo2_estimate(wearable) is None
    wearable = {"spo2_mean_pct": np.array([r[5] for r in dense], dtype=float),
                "desat3_count": np.array([r[_D3] for r in dense], dtype=float),
                "desat4_count": np.array([r[_D3 + 1] for r in dense], dtype=float)}
    assert 27 <= spo2_estimate(wearable)["odi3"] <= 30


def test_the_night_summary_odi_is_per_hour_of_epochs_with_counts(tmp_path):
    """A ring that loses readings: half the night's epochs have no count; the summary's ODI
    is over the other half, not diluted by the whole night."""
    from nightlink.edge.features.night_summary import night_columns, summarize_night
    from nightlink.edge.store import EdgeStore

    store = EdgeStore(tmp_path / "edge.db")
    first = 1_768_510_800 // EPOCH_S
    cols = night_columns(store, first, 240)  # 2 hours, nothing recorded
    w = cols["wearable"]
    w["spo2_mean_pct"][:] = 95.0
    w["desat3_count"][::2] = 0.0  # every other epoch counted: 1 hour
    w["desat3_count"][::20] = 1.0  # 12 desaturations in it
    w["desat4_count"][::2] = 0.0
    s = summarize_night(store, first, 240, cols)
    assert s["wearable"]["odi3"] == 12.0 and s["wearable"]["odi4"] == 0.0
    store.close()


def test_a_noisy_oximeter_s_baseline_does_not_creep_up():
    # Dips that were not desaturations stay in the baseline: leaving them out made it creep
    # up to 97-97.5 on a flat 96 %, and 2-point noise dips then counted (23 an hour at sd 2).
    rng = np.random.default_rng(3)
    n = 4 * 3600
    noisy = np.minimum(np.round(96 + rng.normal(0, 2.0, n)), 100)
    d = _Desaturations(3.0)
    counted = sum(d.add(float(t), float(p)) for t, p in enumerate(noisy))
    assert counted <= 4 * 2  # under 2 an hour
    assert 95.5 <= d._sum / len(d._window) <= 96.5



def test_noise_on_a_long_level_desaturation_is_not_a_second_one():
    # A fall held level for 1-2 minutes under whole-percent noise: the noise's highs looked
    # like a recovery and its lows like a new fall when a new fall had only to go 2 % under
    # the recovery's peak (4 points held 60 s counted 1.67 times on average, 5 held 120 s
    # 1.96 times). A new fall must go the full `drop` under that peak.
    rng = np.random.default_rng(5)
    for depth, hold_s in ((4.0, 60), (5.0, 120)):
        counts = []
        for _ in range(40):
            trace = [0.0] * 180 + fall(depth, 15, hold_s, 15, 0.0) + [0.0] * 120
            noisy = np.round(96 + np.array(trace) + rng.normal(0, 1.0, len(trace)))
            counts.append(count(noisy, 3))
        assert min(counts) >= 1
        assert np.mean(counts) <= 1.15, (depth, hold_s, np.mean(counts))
