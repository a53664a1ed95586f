"""The edge's predicted-low alarm policy: persistence, refractory period, forecast floor,
no alarm while rising nor just after carbs, and the per-person threshold calibrated to a
false-alarm budget; the clock's copy of it, and the carbs that reach the clock from the edge
store's Nightscout treatments."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from nightlink.edge.features.glucose_risk import (
    AlarmPolicy,
    GlucoseRisk,
    LiteRtGlucose,
    bridge_gaps,
    calibrate_threshold,
    carb_hold,
    cgm_grid,
    clock_policy,
    filled_rows,
    history_rows,
    policy_alarms,
    policy_from_meta,
    slope_mgdl_per_min,
)

MODELS = Path(__file__).resolve().parents[2] / "edge" / "models"
POLICY = AlarmPolicy(700, persist=1, refractory_min=60, forecast_floor_mgdl=100,
                     rising_mgdl_per_min=0.5)


def _alarms(permille, forecast=None, slope=None, policy=POLICY):
    n = len(permille)
    slots = np.arange(n)
    fc = np.full(n, 80.0) if forecast is None else np.asarray(forecast, float)
    sl = np.zeros(n) if slope is None else np.asarray(slope, float)
    return policy_alarms(slots, np.asarray(permille), fc, sl, policy)


def test_persistence_needs_k_risky_predictions_in_a_row():
    risk = [900, 0, 900, 900, 0, 900, 900, 900]
    assert _alarms(risk, policy=replace(POLICY, persist=1)) == [0]
    assert _alarms(risk, policy=replace(POLICY, persist=2)) == [3]
    assert _alarms(risk, policy=replace(POLICY, persist=3)) == [7]


def test_refractory_period_between_alarms():
    risk = [900] * 30
    assert _alarms(risk) == [0, 12, 24]  # 60 minutes of 5-minute slots
    assert _alarms(risk, policy=replace(POLICY, refractory_min=30)) == [0, 6, 12, 18, 24]


def test_forecast_floor_and_rising_glucose_hold_the_alarm():
    risk = [900] * 4
    assert _alarms(risk, forecast=[120, 110, 99, 80]) == [2]
    assert _alarms(risk, slope=[2.0, 1.0, 0.4, -1.0]) == [2]


def test_carbs_hold_the_alarm_unless_glucose_is_low_or_the_forecast_urgent():
    risk = [900] * 20
    hold = replace(POLICY, carb_hold_min=45, refractory_min=5)
    # carbs at slot 2: slots 1 (entered while slot 1 was newest) to 10 held, 11 sounds
    assert _alarms(risk, policy=hold)[:3] == [0, 1, 2]
    got = policy_alarms(np.arange(20), np.array(risk), np.full(20, 80.0), np.zeros(20), hold,
                        carbs=[2], glucose=np.full(20, 100.0))
    assert got[:2] == [0, 11]
    # glucose already < 70, or a forecast below the urgent level: never held
    low_now = np.where(np.arange(20) == 5, 65.0, 100.0)
    urgent = np.where(np.arange(20) == 7, 50.0, 80.0)
    mask = carb_hold(np.arange(20), [2], low_now, urgent, hold)
    assert mask.tolist() == ([False] + [True] * 4 + [False] + [True] + [False] + [True] * 3
                             + [False] * 9)
    # a zero hold switches it off
    assert not carb_hold(np.arange(20), [2], np.full(20, 100.0), np.full(20, 80.0),
                         replace(hold, carb_hold_min=0)).any()


def test_slope_of_the_last_15_minutes():
    x = np.array([100, 102, 104, 106, 108, 0, 110], dtype=float)
    s = slope_mgdl_per_min(x)
    assert s[3] == pytest.approx(0.4) and s[4] == pytest.approx(0.4)
    assert s[6] == 0.0  # a missing reading in the window: no slope, nothing suppressed


def test_calibration_keeps_the_budget_within_bounds():
    cands = np.array([500, 600, 700, 800, 900, 975])
    policy = replace(POLICY, budget_per_week=1.0, lowest_permille=600, highest_permille=975)
    # false alarms per night at each candidate over 7 recent nights
    nights = {n: np.array([3, 2, 1, 0, 0, 0]) if n < 2 else np.array([1, 1, 0, 0, 0, 0])
              for n in range(7)}
    # lows caught per night at each candidate: the 2 lows are caught up to 800, 1 above
    caught = {n: np.array([1, 1, 1, 1, 0, 0]) if n < 2 else np.zeros(6) for n in range(7)}
    # false totals 11, 9, 2, 0: 1 a week allows at most 1 false alarm in 7 nights, so 800,
    # 900 and 975 fit; 800 caught both lows
    assert calibrate_threshold(nights, caught, policy, cands) == 800
    # a looser budget lets 600 and 700 in too, but they catch no more than 800: the least
    # sensitive of equals, never sounding falsely more for nothing
    assert calibrate_threshold(nights, caught, replace(policy, budget_per_week=20), cands) == 800
    # ... unless a more sensitive one catches more; never below the lowest bound (500 is out)
    more = {n: np.array([2, 2, 1, 1, 0, 0]) if n < 2 else np.zeros(6) for n in range(7)}
    assert calibrate_threshold(nights, more, replace(policy, budget_per_week=20), cands) == 600
    # no lows: the least sensitive allowed
    none = {n: np.zeros(6) for n in range(7)}
    assert calibrate_threshold(nights, none, replace(policy, budget_per_week=20), cands) == 975
    # nothing fits: the least sensitive the bounds allow
    noisy = {n: np.array([5, 5, 5, 5, 5, 5]) for n in range(7)}
    assert calibrate_threshold(noisy, caught, policy, cands) == 975
    # too few nights to judge: the policy's own threshold
    assert calibrate_threshold({0: nights[0]}, caught, policy, cands) == POLICY.alarm_permille


def test_the_committed_model_carries_its_policy():
    meta = json.loads((MODELS / "glucose_risk.json").read_text())
    policy = policy_from_meta(meta)
    assert policy.alarm_permille == meta["alarm_permille"]
    assert policy_from_meta(meta, budget_per_week=3.0).budget_per_week == 3.0
    assert policy_from_meta({"alarm_permille": 475}).persist == AlarmPolicy(475).persist
    assert "false alarms a week" in policy.describe()


def test_short_gaps_bridged_long_ones_not():
    h = np.array([[0, 100, 0, 0, 130, 0, 0, 0, 0, 150, 0, 160]], dtype=np.float32)
    assert bridge_gaps(h)[0].tolist() == [0, 100, 110, 120, 130, 0, 0, 0, 0, 150, 155, 160]


def test_fifteen_minute_sensor_gets_predictions_at_the_edge():
    """Libre readings every 15 minutes, as the edge's 30-s epochs carry them: a prediction
    after every reading once an hour has passed."""
    meta = json.loads((MODELS / "glucose_risk.json").read_text())
    risk = GlucoseRisk((MODELS / "glucose_risk.tflite").read_bytes(), meta)
    epochs = 2 * 60 * 3  # three hours
    minute = np.arange(epochs) / 2
    since = minute % 15
    glucose = 220 - (minute - since) * 0.5  # the reading last taken, falling 0.5 mg/dL a minute
    r, forecast = risk.per_epoch(glucose, since)
    fresh = since <= 5
    assert np.isnan(r[~fresh]).all()
    later = fresh & (minute >= 75)
    assert np.isfinite(r[later]).all() and np.isfinite(forecast[later]).all()
    assert forecast[later][-1] < glucose[later][-1]  # a fall continues


ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT / "tests" / "edge" / "alarm_policy_check.py"


def _check_clock(got):
    risks = got["libre_risks"]
    # once an hour of 15-minute readings is in, a risk on every pass (no -1 between readings)
    assert all(r >= 0 for r in risks[62:]), risks
    assert all(v > 0 for v in got["history"][2:])  # bridged on the 5-minute grid after 45 min
    assert got["policy_before"].startswith("model ")
    assert got["policy_after"] == "edge 900 x2 30m <85 c30"
    assert got["refused"] is False and got["policy_kept"] == "edge 900 x2 30m <85 c30"
    # mmol/L users read the floor in mmol/L; a threshold the edge could not yet calibrate
    # on the person's nights is shown as the model's own
    assert got["policy_mmol_uncalibrated"] == "model 850 x1 60m <5.0 c45"
    assert got["policy_line_px"] <= 296 - 96 - 4  # fits its place on the status screen
    assert got["bad_floor_refused"] is False
    # two risky readings in a row; after it clears, not again for 30 minutes
    assert got["fired"] == [False, False, False, True, True, False, False, False,
                            False, False, False, False, False, True]
    assert got["while_rising"] is False
    # the forecast floor: a risky prediction whose forecast stays at or above it does not
    # count; without a forecast (weights with no forecast head) the risk alone decides
    assert got["floor"] == [False, True, True]
    # carbs entered at minute 0 hold it for 30 minutes, unless the forecast is urgent
    assert got["carbs"] == [False, False, False, True]
    assert got["carbs_urgent"] is True
    # the trend-line rule (no model on the clock) is held after carbs too
    assert got["trend_after_carbs"] == [False, True]
    # the rising-fast alarm keeps its own threshold (3 mg/dL/min), not the policy's 0.5
    assert got["rising_fast_at_1"] is False


def test_clock_policy__cpython():
    import subprocess
    import sys

    from tests.support.mpy_board import host_env

    proc = subprocess.run([sys.executable, str(CHECK)], capture_output=True, text=True,
                          env=host_env(), check=True, cwd=ROOT)
    _check_clock(json.loads(proc.stdout.strip().splitlines()[-1]))


@pytest.mark.micropython
def test_clock_policy__micropython(mpy_json):
    got = mpy_json(CHECK, libs=[ROOT / "shared", ROOT / "device"], heap=512 * 1024)
    _check_clock(got)


# -- the edge's calibration and what the clocks are sent ----------------------------------------


def _sixteen_days(nadir: float = 72):
    """16 days of 5-minute CGM with, every night at 03:00, a fall that stops at 72 mg/dL (the
    model warns; no low follows: a false alarm a night), or at `nadir`."""
    from tests.support.cgm import person_trace

    times, values = person_trace(days=16, seed=4)
    t_s = np.array([t.timestamp() for t in times])  # the trace's clock as UTC
    minute = (t_s - t_s[0]) / 60
    for d in range(16):
        onset = d * 1440 + 15 * 60
        near = np.interp(minute, [onset - 60, onset, onset + 30, onset + 90],
                         [160, nadir, nadir, 160], left=np.nan, right=np.nan)
        values = np.where(np.isnan(near), values, np.minimum(values, near))
    return t_s, values


def _said_false_per_week(store) -> float:
    """How often the calibrated threshold would have sounded falsely on the person's recent
    nights, as the store's policy in words says it (what the status report sends the cloud)."""
    import re

    from nightlink.edge.sync.clock_feed import POLICY_META

    said = re.search(r"sounded falsely ([0-9.]+) a week", store.meta(POLICY_META) or "")
    assert said, store.meta(POLICY_META)
    return float(said.group(1))


def test_edge_calibration__threshold_within_bounds_and_the_budget_a_ceiling():
    from nightlink.edge.features.glucose_risk import LiteRtGlucose, calibrated_policy

    meta = json.loads((MODELS / "glucose_risk.json").read_text())
    rt = LiteRtGlucose((MODELS / "glucose_risk.tflite").read_bytes())
    t_s, sgv = _sixteen_days()
    base = policy_from_meta(meta)
    strict = calibrated_policy(rt, replace(base, budget_per_week=0.0), t_s, sgv)
    loose = calibrated_policy(rt, replace(base, budget_per_week=50.0), t_s, sgv)
    # false alarms on several nights at every threshold allowed: no budget fits, the least
    # sensitive bound, said to sound more than the budget
    assert strict.alarm_permille == base.highest_permille and strict.false_per_week > 0
    # a loose budget lets a more sensitive threshold in where it warned of more of the trace's
    # own lows before they began, at the false alarms it costs
    assert loose.alarm_permille < strict.alarm_permille
    assert strict.false_per_week < loose.false_per_week <= 50
    # the nightly falls into real lows: 875 warns of them before they begin, the thresholds
    # above it only once they have (no warning: the clock shows the low); no false alarm, so
    # even no budget keeps 875, not the least sensitive
    lows = calibrated_policy(rt, replace(base, budget_per_week=0.0), *_sixteen_days(60))
    assert (lows.alarm_permille, lows.false_per_week) == (875, 0.0)
    # too few readings: the committed threshold stands
    assert calibrated_policy(rt, base, t_s[:5], sgv[:5]).alarm_permille == base.alarm_permille


def test_edge_calibration__says_what_it_found():
    """What the cloud's report and the status show: the nights calibrated on and how often the
    chosen threshold would have sounded falsely on them, against the budget; a budget no
    allowed threshold meets is said; too few nights is "not calibrated yet"."""
    from nightlink.edge.features.glucose_risk import LiteRtGlucose, calibrated_policy

    meta = json.loads((MODELS / "glucose_risk.json").read_text())
    rt = LiteRtGlucose((MODELS / "glucose_risk.tflite").read_bytes())
    t_s, sgv = _sixteen_days()
    base = policy_from_meta(meta)
    strict = calibrated_policy(rt, replace(base, budget_per_week=1.4), t_s, sgv)
    assert strict.calibrated and strict.nights == 14
    assert strict.false_per_week > 1.4  # the nightly 03:00 fall sounds often, even at 925
    text = strict.describe()
    assert "budget 1.4 false alarms a week; on the last 14 nights it would have sounded " \
           f"falsely {strict.false_per_week:.1f} a week, more than the budget" in text
    loose = calibrated_policy(rt, replace(base, budget_per_week=14.0), t_s, sgv)
    assert loose.false_per_week <= 14 and "more than the budget" not in loose.describe()
    three_days = t_s < t_s[0] + 3 * 86400
    young = calibrated_policy(rt, base, t_s[three_days], sgv[three_days])
    assert not young.calibrated and young.alarm_permille == base.alarm_permille
    assert f"not calibrated yet ({young.nights} of 5 nights with CGM needed)" in \
        young.describe()
    assert clock_policy(young)["calibrated"] is False and clock_policy(strict)["calibrated"]


def test_clock_feed_sends_the_calibrated_policy(store):
    from nightlink.edge.sources.cgm import glucose_to_entry
    from nightlink.edge.sources.samples import Glucose
    from nightlink.edge.sync.clock_feed import ClockFeed, predicted_low_policy

    t_s, sgv = _sixteen_days()
    store.add_entries(glucose_to_entry(Glucose(float(t), int(g)), "test")
                      for t, g in zip(t_s, sgv, strict=True))
    policy = predicted_low_policy(store, float(t_s[-1]) + 60)
    assert set(policy) == {"permille", "persist", "refractory_min", "rising", "floor",
                           "carb_hold_min", "urgent", "calibrated"}
    assert policy["calibrated"] is True
    assert policy["permille"] == 925  # 1.4 false alarms a week allowed, 7 a week happen
    sent = []
    feed = ClockFeed(lambda topic, payload, **kw: sent.append(json.loads(payload)), "t", "e")
    feed.alarm = policy
    feed.update(store, float(t_s[-1]) + 60)
    assert sent[0]["alarm"] == policy and sent[0]["sgv"] == int(sgv[-1])
    assert predicted_low_policy(store, float(t_s[-1]), models=Path("/nonexistent")) is None


def _add_carbs(store, t_s: float, grams: float, event: str = "Carb Correction") -> None:
    """A treatment as the local Nightscout site stores one (the core's rules)."""
    from nightlink.nightscout import documents

    doc = {"eventType": event, "created_at": int(t_s * 1000), "carbs": grams,
           "enteredBy": "test"}
    store.docs.put([documents.normalize("treatments", doc, int(t_s * 1000))], mode="replace")


def test_clock_feed_sends_when_carbs_were_entered(store):
    from nightlink.edge.sources.cgm import glucose_to_entry
    from nightlink.edge.sources.samples import Glucose
    from nightlink.edge.sync.clock_feed import ClockFeed, latest_carbs

    t0 = 1_768_510_800.0
    store.add_entries(glucose_to_entry(Glucose(t0 + 300 * k, 120 - k), "test") for k in range(13))
    now = t0 + 3600 + 60
    sent = []
    feed = ClockFeed(lambda topic, payload, **kw: sent.append(json.loads(payload)), "t", "e")
    feed.update(store, now)
    assert "carbs_t" not in sent[-1]
    _add_carbs(store, now - 3 * 3600, 30)  # too long ago to hold anything
    _add_carbs(store, now - 600, 0, "Note")  # no carbs
    assert latest_carbs(store, now) is None
    assert feed.update(store, now) == 0  # nothing new for the clock
    _add_carbs(store, now - 120, 15)
    assert feed.update(store, now) == 1  # the same reading again, now with the carbs
    assert sent[-1]["carbs_t"] == int(now - 120) and sent[-1]["t"] == int(t0 + 3600)
    assert feed.update(store, now) == 0


def test_edge_calibration__carbs_that_hold_the_alarms_are_not_false_alarms(store):
    """The nightly fall of _sixteen_days with carbs entered 30 minutes before its bottom: the
    clock holds those alarms, so the calibration does not count them."""
    from nightlink.edge.sources.cgm import glucose_to_entry
    from nightlink.edge.sources.samples import Glucose
    from nightlink.edge.sync.clock_feed import predicted_low_policy

    t_s, sgv = _sixteen_days()
    store.add_entries(glucose_to_entry(Glucose(float(t), int(g)), "test")
                      for t, g in zip(t_s, sgv, strict=True))
    now = float(t_s[-1]) + 60
    meta = json.loads((MODELS / "glucose_risk.json").read_text())
    bounds = policy_from_meta(meta)
    assert predicted_low_policy(store, now)["permille"] == bounds.highest_permille
    unfed = _said_false_per_week(store)
    for d in range(16):
        _add_carbs(store, t_s[0] + d * 86400 + 15 * 3600 - 30 * 60, 20)
    policy = predicted_low_policy(store, now)
    # the held alarms are not counted: what is left fits the budget the falls broke
    assert _said_false_per_week(store) <= bounds.budget_per_week < unfed
    assert policy["carb_hold_min"] == bounds.carb_hold_min
    assert clock_policy(bounds)["floor"] == round(min(bounds.forecast_floor_mgdl, 400))


def test_edge_calibration__on_the_persons_own_nights(store):
    """The budget counts false alarms in the person's own nights ([night] bedtime and wake),
    not 22:00-07:00 for everyone: the nightly 03:00 fall of _sixteen_days is before a late
    sleeper's bedtime, so it is no false alarm of their nights."""
    from nightlink.edge.sources.cgm import glucose_to_entry
    from nightlink.edge.sources.samples import Glucose
    from nightlink.edge.sync.clock_feed import predicted_low_policy

    t_s, sgv = _sixteen_days()
    store.add_entries(glucose_to_entry(Glucose(float(t), int(g)), "test")
                      for t, g in zip(t_s, sgv, strict=True))
    now = float(t_s[-1]) + 60
    bounds = policy_from_meta(json.loads((MODELS / "glucose_risk.json").read_text()))
    usual = predicted_low_policy(store, now, utc_offset_s=0)
    usual_false = _said_false_per_week(store)
    assert usual == predicted_low_policy(store, now, utc_offset_s=0, night=("22:00", "07:00"))
    assert usual["permille"] == bounds.highest_permille and usual_false > 0
    late = predicted_low_policy(store, now, utc_offset_s=0, night=("04:00", "11:30"))
    assert late["calibrated"] and _said_false_per_week(store) == 0.0
    predicted_low_policy(store, now, utc_offset_s=0, night=("20:30", "05:00"))
    assert _said_false_per_week(store) == usual_false  # 03:00 is inside their night


def test_clock_feed__a_reading_dated_ahead_of_the_clock_is_not_the_newest(store):
    """An uploader's phone with its clock 2 hours ahead sends one reading: the clocks still
    get the real readings as they come (the wrong one held the feed until its time)."""
    from nightlink.edge.sources.cgm import glucose_to_entry
    from nightlink.edge.sources.samples import Glucose
    from nightlink.edge.sync.clock_feed import ClockFeed

    t0 = 1_768_510_800.0
    store.add_entries([glucose_to_entry(Glucose(t0 + 7200, 100), "phone")])
    sent = []
    feed = ClockFeed(lambda topic, payload, **kw: sent.append(json.loads(payload)), "t", "e")
    for k, g in enumerate((70, 60, 52)):
        store.add_entries([glucose_to_entry(Glucose(t0 + 300 * k, g), "g6")])
        feed.update(store, t0 + 300 * k + 30)
        assert (sent[-1]["t"], sent[-1]["sgv"]) == (int(t0 + 300 * k), g)


def test_clock_feed__an_edge_clock_behind_every_uploader_still_feeds_the_clocks(store, caplog):
    """A Raspberry Pi booted without network keeps the time it was shut down at: every phone's
    reading arrives dated ahead of it. The clocks (whose own time is right) still get each
    reading as it comes, and the log says which clock is probably wrong and by how much; a
    single wild date among right ones is still no reading."""
    import logging
    import time

    from nightlink.edge.sources.cgm import glucose_to_entry
    from nightlink.edge.sources.samples import Glucose
    from nightlink.edge.sync.clock_feed import ClockFeed

    now = time.time()  # entries are stored at the system clock's time, as in a running node
    behind = 40 * 60
    sent, synced = [], [False]
    feed = ClockFeed(lambda topic, payload, **kw: sent.append(json.loads(payload)), "t", "e",
                     lambda: synced[0])
    store.add_entries([glucose_to_entry(Glucose(now + behind - 290, 84), "xDrip-DexcomG6")])
    feed.update(store, now)
    assert sent == [] and feed.skew_s == 0  # one reading ahead: perhaps a phone's wrong clock
    with caplog.at_level(logging.WARNING):
        store.add_entries([glucose_to_entry(Glucose(now + behind + 10, 77), "xDrip-DexcomG6")])
        feed.update(store, now + 31)
    assert (sent[-1]["t"], sent[-1]["sgv"]) == (int(now + behind + 10), 77)
    assert sent[-1]["recent"] == [[int(now + behind - 290), 84]]
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "dated about 40 min ahead of this machine's clock" in said, said
    assert "NTP has not synchronized this machine's clock" in said, said
    # Set back by hand an hour: looked at again at once, not half a minute on its old time.
    feed.update(store, now - 3600)
    assert round(feed.skew_s) == behind + 3600 + 10
    # Its time set by NTP at last: the readings are no longer ahead, and the log says so.
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        feed.update(store, now + behind + 62)
    assert feed.skew_s == 0 and "dated by this machine's clock again" in caplog.text
    # On a right clock, a phone whose time is an hour ahead is not followed while another
    # uploader's readings arrive dated as they should be.
    feed = ClockFeed(lambda topic, payload, **kw: sent.append(json.loads(payload)), "t", "e",
                     lambda: True)
    store.add_entries([glucose_to_entry(Glucose(now + 3600 + 5 * k, 200), "phone")
                       for k in range(2)])
    store.add_entries([glucose_to_entry(Glucose(now - 60, 101), "g6")])
    feed.update(store, now)
    assert feed.skew_s == 0 and (sent[-1]["t"], sent[-1]["sgv"]) == (int(now - 60), 101)


def _one_minute_series(n: int = 420) -> tuple[np.ndarray, np.ndarray]:
    """A 1-minute sensor's readings (Unix s, whole mg/dL): slow swings, drift and noise, with
    two falls toward a low."""
    rng = np.random.default_rng(7)
    m = np.arange(n)
    g = 130 + 60 * np.sin(2 * np.pi * m / 200) + np.cumsum(rng.normal(0, 0.6, n))
    g = np.clip(np.rint(g + rng.normal(0, 2, n)), 40, 400).astype(int)
    return 1_768_510_800 + 60 * m, g


@pytest.mark.micropython
def test_one_minute_sensor__clock_agrees_with_the_edge_bit_exact(mpy_json, tmp_path):
    """Libre 3 readings every minute: the edge averages each 5-minute slot in whole
    mg/dL (cgm_grid) and predicts once a slot; the clock, fed every reading by the edge's own
    feed message, gets the same risk at each slot's last minute, under real MicroPython. A
    clock that starts on one message has the whole hour (the feed sends every reading of
    it), and a risky prediction on every reading sounds after 2 slots, not 2 minutes."""
    from nightlink.edge.sources.samples import Glucose
    from nightlink.edge.sync.clock_feed import glucose_message

    t_s, g = _one_minute_series()
    readings = [Glucose(float(t), int(v)) for t, v in zip(t_s, g, strict=True)]
    feed = [json.dumps(glucose_message([r for r in readings[max(0, i - 70):i + 1]
                                        if readings[i].t - r.t <= 3600]))
            for i in range(len(readings))]
    path = tmp_path / "feed.json"
    path.write_text(json.dumps(feed))
    got = mpy_json(ROOT / "tests" / "edge" / "onemin_check.py", libs=[ROOT / "device",
                   ROOT / "shared"], puts=[(path, "/feed.json")], heap=1024 * 1024)
    rt = LiteRtGlucose((MODELS / "glucose_risk.tflite").read_bytes())
    t_min = t_s // 60
    _interval, x, observed, _held = cgm_grid(t_min, g.astype(np.float32))
    slots = np.flatnonzero(observed)
    rows, ok = filled_rows(history_rows(x)[slots])
    _lq, permille, _f = rt.predict(rows)
    edge = dict(zip(slots[ok].tolist(), permille.tolist(), strict=True))
    pairs = [(got["risks"][5 * k + 4], p) for k, p in edge.items() if 5 * k + 4 < len(g)]
    assert len(pairs) > 60
    assert all(c == e for c, e in pairs), [(c, e) for c, e in pairs if c != e][:5]
    assert all(v > 0 for v in got["fresh_history"])  # the whole hour after a reboot
    assert got["fresh_risk"] == got["risks"][-1]
    assert got["first_alarm_min"] == 5


def test_calibration_counts_nights_in_the_persons_zone_not_the_machines(store, monkeypatch):
    """The false alarm at 03:00 UTC each night is a night-time alarm for someone in UTC and
    an evening one (19:00) in Los Angeles: the calibration counts the nights of the zone the
    node is configured with, whatever zone the machine itself is set to."""
    import time

    from nightlink.edge.sources.cgm import glucose_to_entry
    from nightlink.edge.sources.samples import Glucose
    from nightlink.edge.sync.clock_feed import POLICY_META, predicted_low_policy

    t_s, sgv = _sixteen_days()
    store.add_entries(glucose_to_entry(Glucose(float(t), int(g)), "test")
                      for t, g in zip(t_s, sgv, strict=True))
    now = float(t_s[-1]) + 60
    try:
        monkeypatch.setenv("TZ", "America/Los_Angeles")
        time.tzset()
        said = {}
        for name, kw in (("utc", {"utc_offset_s": 0}), ("la", {"utc_offset_s": -8 * 3600}),
                         ("machine", {}),  # no zone given: the machine's
                         ("loose", {"utc_offset_s": 0, "budget_per_week": 14.0})):
            said[name] = (predicted_low_policy(store, now, **kw), _said_false_per_week(store),
                          store.meta(POLICY_META))
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert said["utc"][0]["permille"] == 925  # false alarms most nights: the least sensitive
    assert said["utc"][1] > 1.4  # ... more than the budget
    assert said["la"][1] == 0.0  # its nights hold no false alarm
    assert said["machine"] == said["la"]
    # the person's budget ([alarm]) is used: the same alarms now fit it
    assert "budget 14 false alarms a week" in said["loose"][2]
    assert "more than the budget" in said["utc"][2] and "more than" not in said["loose"][2]


def test_calibration_nights_follow_the_clock_of_their_own_date_across_a_change_of_clocks():
    """Nights before a change of clocks are 22:00-07:00 by that date's offset, not today's:
    the nightly falls moved to about 06:30 UTC are night-time false alarms in London's winter
    (06:30 GMT) and morning ones in its summer (07:30 BST). Sixteen days around 31 March 2024,
    when London's clocks went forward: one offset for every night, whichever, counts either
    every night's alarm or none of the winter ones."""
    from nightlink.edge.features.glucose_risk import LiteRtGlucose, calibrated_policy
    from nightlink.edge.node.zone import zone_offsets_min

    meta = json.loads((MODELS / "glucose_risk.json").read_text())
    rt = LiteRtGlucose((MODELS / "glucose_risk.tflite").read_bytes())
    t_s, sgv = _sixteen_days()
    t_s = t_s + 23 * 86400 + int(3.5 * 3600)  # from 24 March 2024, 15:30 UTC
    # one threshold: what is counted is which nights the falls are in
    one = policy_from_meta(meta).lowest_permille
    base = replace(policy_from_meta(meta), budget_per_week=14.0, highest_permille=one)
    winter = calibrated_policy(rt, base, t_s, sgv, 0)
    summer = calibrated_policy(rt, base, t_s, sgv, 60)
    london = calibrated_policy(rt, base, t_s, sgv,
                               lambda m: zone_offsets_min(m, "Europe/London"))
    assert winter.alarm_permille == summer.alarm_permille == london.alarm_permille
    assert summer.false_per_week < london.false_per_week < winter.false_per_week
    offsets = zone_offsets_min(np.array([t_s[0], t_s[-1]]) // 60, "Europe/London")
    assert offsets.tolist() == [0, 60]


@pytest.mark.parametrize("treated", [False, True])
def test_clock_counts_a_prediction_made_during_a_low_as_the_edge_does(treated):
    """A risky prediction while glucose is already < 70 shows LOW on the clock, not a
    predicted low; the edge's calibration counts it as an alarm and starts the refractory
    hour from it, so the clock does too: no predicted low right after the low recovers.
    Carbs taken for the low do not hold that prediction off (on the edge neither)."""
    from nightlink.device import alarms, config

    cfg = config.with_defaults({"version": 1}, [])
    a = alarms.Alarms(cfg, 800)
    assert a.set_policy({"permille": 800, "persist": 1, "refractory_min": 60, "rising": 5,
                         "floor": 400, "carb_hold_min": 45})
    t0 = 1_768_510_800_000
    if treated:
        a.set_carbs(t0 + 2 * 300_000)
    # past the carb hold (45 min after slot 2) and within the refractory hour from slot 2
    sgv = [90, 85, 68, 66, 65, 72, 72, 73, 74, 74, 74, 74, 74, 74]
    risk = [0, 0] + [900] * 12
    shown, readings = [], []
    for k, (g, r) in enumerate(zip(sgv, risk, strict=True)):
        readings.append((t0 + k * 300_000, g))
        a.evaluate(readings, t0 + k * 300_000 + 1000, 120, r, 60)
        shown.append([kind for kind in (alarms.LOW, alarms.PREDICTED_LOW) if kind in a.active])
    assert shown[2:5] == [[alarms.LOW]] * 3 and not any(alarms.PREDICTED_LOW in s for s in shown)
    edge = policy_alarms(np.arange(len(sgv)), np.array(risk), np.full(len(sgv), 60.0),
                         np.zeros(len(sgv)), AlarmPolicy(800, persist=1, refractory_min=60,
                                                         rising_mgdl_per_min=5),
                         carbs=[2] if treated else None, glucose=np.array(sgv, float))
    assert edge == [2]  # the one alarm the edge counts: in the low, which the clock showed
