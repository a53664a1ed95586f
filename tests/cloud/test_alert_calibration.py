"""The cloud calibrates the predicted-low threshold on the person's nights when no bedside node
does (cloud/alert_calibration.py): the rule, its budget, the worker, the settings, the report."""

import asyncio
import time
from zoneinfo import ZoneInfo

import pytest

from nightlink.cloud import alert_calibration as cal
from nightlink.cloud import alerts
from nightlink.cloud.reports import settings
from nightlink.nightscout.hub import Hub as EventBus
from nightlink.shared import lowrisk
from tests.support.shared_data import BRIS, bris_readings

MIN = 60_000
DAY = 86_400_000
T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC
UTC = ZoneInfo("UTC")


def nights(days, dips=(), nadir=72, start=T0, step_min=5, level=130.0):
    """Readings every step_min minutes over `days` days, level but for a fall of 2 mg/dL a
    minute at each minute of the day in `dips` down to `nadir`, held 20 minutes, and back."""
    out = []
    for d in range(days):
        for k in range(0, 1440, step_min):
            g = level
            for at in dips:
                x = k - at
                if 0 <= x < 30:
                    g = max(nadir, level - 2.0 * x)
                elif 30 <= x < 50:
                    g = nadir
                elif 50 <= x < 80:
                    g = min(level, nadir + 2.0 * (x - 50))
            out.append((start + d * DAY + k * MIN, g))
    return out


NEAR_MISSES = (60, 240)  # 01:00 and 04:00: dips to 72 that come back, twice a night


def test_calibrate__too_few_nights_keep_the_models_threshold_and_say_so():
    doc = cal.calibrate(nights(3, NEAR_MISSES), [], UTC, T0 + 3 * DAY)
    assert doc["calibrated"] is False and doc["nights"] == 3
    assert doc["permille"] == lowrisk.ALARM_PERMILLE and doc["false_per_week"] is None
    assert alerts.LowModel.of(None, calibration=doc).source == "model"


LOW_AT = (160,)  # 02:40: a fall into a real low (60 mg/dL), warned of at 875 and below


def with_lows(days, at=LOW_AT, near=NEAR_MISSES, start=T0):
    """nights() with the near misses and, at each minute in `at`, a fall into a real low."""
    lows = nights(days, at, nadir=60, start=start)
    dips = nights(days, near, start=start)
    return [(t, min(a, b)) for (t, a), (_t, b) in zip(lows, dips, strict=True)]


def test_calibrate__the_threshold_that_caught_most_lows_within_the_budget():
    # nothing to catch and nothing false: the least sensitive threshold allowed
    quiet = cal.calibrate(nights(8), [], UTC, T0 + 8 * DAY)
    assert (quiet["permille"], quiet["false_per_week"]) == (lowrisk.HIGHEST_PERMILLE, 0.0)
    # near misses (dips to 72 that come back) sound falsely at the sensitive thresholds;
    # with no low to catch, no budget makes it worth sounding at them
    dips = nights(8, NEAR_MISSES)
    for budget in (None, 14):
        doc = cal.calibrate(dips, [], UTC, T0 + 8 * DAY, budget_per_week=budget)
        assert doc["calibrated"] and doc["nights"] == 8
        assert (doc["permille"], doc["false_per_week"]) == (lowrisk.HIGHEST_PERMILLE, 0.0)
    # falls into real lows, warned of at 875 and below only: the least sensitive of those
    lows = cal.calibrate(nights(8, LOW_AT, nadir=60), [], UTC, T0 + 8 * DAY, 0)
    assert (lows["permille"], lows["false_per_week"]) == (875, 0.0)
    # lows and near misses: 875 catches the lows and sounds falsely twice a night; within
    # a budget of 14 a week it is kept, within the model's 1.4 it is not
    both = with_lows(8)
    lax = cal.calibrate(both, [], UTC, T0 + 8 * DAY, budget_per_week=14)
    assert (lax["permille"], lax["false_per_week"]) == (875, 14.0)
    strict = cal.calibrate(both, [], UTC, T0 + 8 * DAY)
    assert (strict["permille"], strict["false_per_week"]) == (lowrisk.HIGHEST_PERMILLE, 0.0)


def test_calibrate__a_budget_met_exactly_fits():
    """1 false alarm in 5 nights is 1.4 a week: within the default budget of 1.4 a week."""
    def five(near_miss_nights):
        return [r for d in range(5) for r in with_lows(
            1, near=(60,) if d in near_miss_nights else (), start=T0 + d * DAY)]

    doc = cal.calibrate(five({2}), [], UTC, T0 + 5 * DAY)
    assert doc["nights"] == 5 and doc["false_per_week"] == lowrisk.BUDGET_PER_WEEK == 1.4
    assert doc["permille"] == 875  # it caught the lows
    # two in 5 nights are over the budget: the thresholds that catch the lows are out
    assert cal.calibrate(five({2, 3}), [], UTC, T0 + 5 * DAY)["permille"] == \
        lowrisk.HIGHEST_PERMILLE


def test_low_model__whose_threshold():
    """A calibrated node's wins; the cloud's beats a node not calibrated yet; an old one of
    the cloud's (a tenant back after weeks) counts no more."""
    mine = {"permille": 900, "calibrated": True, "nights": 9, "computed_ms": T0}
    node = {"params": {"permille": 800, "calibrated": True}, "updated_ms": T0}
    new_node = {"params": {"permille": 850, "calibrated": False}, "updated_ms": T0}
    assert alerts.LowModel.of(node, calibration=mine, now_ms=T0).source == "edge"
    got = alerts.LowModel.of(new_node, calibration=mine, now_ms=T0)
    assert (got.source, got.policy[0]) == ("cloud", 900)
    later = T0 + (alerts.CALIBRATION_DAYS + 1) * DAY
    assert alerts.LowModel.of(new_node, calibration=mine, now_ms=later).source == "model"
    assert alerts.LowModel.of(None, calibration=mine, now_ms=later).policy == (
        lowrisk.DEFAULT_POLICY)


def test_calibrate__carbs_hold_the_alarm_off_and_nights_are_the_patients_own():
    both = with_lows(8)
    unfed = cal.calibrate(both, [], UTC, T0 + 8 * DAY, budget_per_week=0)
    assert unfed["permille"] == lowrisk.HIGHEST_PERMILLE  # 875 sounds falsely at the dips
    # a snack 10 minutes into each near miss: the alarms it holds off are no false alarms,
    # so 875, which catches the lows, fits even no budget
    carbs = [T0 + d * DAY + (at + 10) * MIN for d in range(8) for at in NEAR_MISSES]
    fed = cal.calibrate(both, carbs, UTC, T0 + 8 * DAY, budget_per_week=0)
    assert (fed["permille"], fed["false_per_week"]) == (875, 0.0)
    # lows at 10:40 UTC are 02:40 in Los Angeles: the person's night there, not in UTC
    la_lows = nights(8, (640,), nadir=60)
    la = cal.calibrate(la_lows, [], ZoneInfo("America/Los_Angeles"), T0 + 8 * DAY, 0)
    assert (la["permille"], la["false_per_week"], la["tz"]) == (875, 0.0, "America/Los_Angeles")
    in_utc = cal.calibrate(la_lows, [], UTC, T0 + 8 * DAY, 0)
    assert in_utc["permille"] == lowrisk.HIGHEST_PERMILLE


def test_calibrate__a_one_minute_sensor_counts_one_prediction_per_five_minutes():
    readings = nights(8, NEAR_MISSES, step_min=1)
    points = [t for t, _p in cal.sounding(readings, [])]
    assert points and min(b - a for a, b in zip(points, points[1:], strict=False)
                          ) >= lowrisk.PREDICT_GAP_MS
    doc = cal.calibrate(readings, [], UTC, T0 + 8 * DAY)
    assert doc["nights"] == 8 and doc["calibrated"]


def test_sounding__decides_as_predicted_low_at_every_threshold():
    readings = nights(1, NEAR_MISSES + (600, 900), nadir=60)
    points = dict(cal.sounding(readings, []))
    assert points  # the falls sound at some threshold
    model = lowrisk.LowRisk()
    for t, _g in readings[20::3]:
        for permille in (lowrisk.LOWEST_PERMILLE, 900, 990):
            policy = (permille, *lowrisk.DEFAULT_POLICY[1:])
            said = lowrisk.predicted_low(model, readings, t, policy) is not None
            assert said == (points.get(t, -1) >= permille), (t, permille)


@pytest.mark.skipif(not BRIS.is_dir(),
                    reason="needs ../shared/data/cgm-bris-t1d-open (real CGM)")
@pytest.mark.parametrize("person", ["P02", "P01"])  # a 5-minute sensor, a 15-minute Libre 2
def test_calibrate__real_nights_a_larger_budget_is_never_stricter(person):
    """Real CGM (BrisT1D-Open): the threshold follows the budget monotonically, stays within
    the bounds, and what it reports fits the budget unless it is the strictest allowed."""
    readings = bris_readings(person)
    now = readings[0][0] + 40 * DAY
    chosen = []
    for budget in (0.0, 1.4, 14.0):
        doc = cal.calibrate(readings, [], UTC, now, budget)
        assert doc["calibrated"] and doc["nights"] >= lowrisk.CAL_MIN_NIGHTS
        assert lowrisk.LOWEST_PERMILLE <= doc["permille"] <= lowrisk.HIGHEST_PERMILLE
        assert (doc["false_per_week"] <= budget
                or doc["permille"] == lowrisk.HIGHEST_PERMILLE), doc
        chosen.append(doc["permille"])
    assert chosen == sorted(chosen, reverse=True)


def _falling_now(now):
    """An hour at 130 and a fall at 2 mg/dL a minute to 80 ending now."""
    out = [(now - (90 - k) * MIN, 130.0) for k in range(0, 60, 5)]
    out += [(now - (25 - k) * MIN, 130.0 - 2 * (k + 5)) for k in range(0, 30, 5)]
    return [{"type": "sgv", "date": t, "sgv": g, "direction": "Flat"} for t, g in out]


def test_worker__calibrates_a_family_without_a_bedside_node_and_alerts_with_it(cloud):
    store = cloud.store
    now = int(time.time() * 1000)
    data = store.tenant("fam-1")
    settings.set_patient_settings(data, tz="UTC")
    start = (now // DAY - 8) * DAY
    data.add_entries([{"type": "sgv", "date": t, "sgv": g, "direction": "Flat"}
                      for t, g in nights(8, NEAR_MISSES, start=start) if t < now - 2 * 3600_000])
    data.add_entries(_falling_now(now))
    assert cal.due(data, now) and alerts.tenant_predictor(data, now).source == "model"

    async def run():
        worker = alerts.AlertWorker(store, EventBus(), interval_s=60, debounce_s=0.05)
        task = asyncio.create_task(worker.run())
        try:
            for _ in range(400):
                await asyncio.sleep(0.05)
                if worker.calibrations:
                    break
        finally:
            task.cancel()
        return worker.calibrations

    assert asyncio.run(run()) == 1
    doc = data.alarm_calibration()
    assert doc["calibrated"] and doc["nights"] >= lowrisk.CAL_MIN_NIGHTS
    done = doc["computed_ms"]
    assert not cal.due(data, done + 3600_000) and cal.due(data, done + DAY)
    low = alerts.tenant_predictor(data, now)
    assert (low.source, low.policy[0]) == ("cloud", doc["permille"])
    assert f"calibrated by the server on the person's last {doc['nights']} nights" in low.text()
    # the report says which policy the family's phones get
    from nightlink.cloud.reports.summary import alert_policy
    assert alert_policy(data, data.alarm_policy())["source"] == "cloud"
    # a bedside node that reports its own threshold wins: the clock sounds that one
    store.add_device("a4cf12b0c3d4", "fam-1", "edge", "fam-1.a4cf12b0c3d4", "x")
    store.put_device_status("a4cf12b0c3d4", "fam-1", {
        "alarm_policy": "risk >= 800 permille",
        "alarm_policy_params": {"permille": 800, "calibrated": True}})
    assert not cal.due(data, now + 2 * DAY)
    assert alerts.tenant_predictor(data, now).source == "edge"
    assert alert_policy(data, data.alarm_policy()) == {
        "text": alerts.tenant_predictor(data, now).text(), "source": "edge", "calibration": None}
    # ... while it reports: a node silent for over a week (retired, offline) no longer does
    late = now + (alerts.EDGE_POLICY_DAYS + 1) * DAY
    assert cal.due(data, late) and alerts.tenant_predictor(data, late).source == "model"
    # ... nor a revoked one
    data.revoke_device("a4cf12b0c3d4")
    assert cal.due(data, done + DAY) and alerts.tenant_predictor(data, now).source == "cloud"
    # a new budget or time zone makes the calibration due at once
    data.set_alarm_calibration({**doc, "computed_ms": now})
    assert not cal.due(data, now)
    settings.set_patient_settings(data, alarm_budget=3)
    assert cal.due(data, now)
    data.set_alarm_calibration({**doc, "computed_ms": now, "budget_per_week": 3.0})
    assert not cal.due(data, now)
    settings.set_patient_settings(data, tz="America/Chicago")
    assert cal.due(data, now)


def test_settings__the_budget_is_checked_named_and_kept(cloud_any):
    """SQLite and PostgreSQL: the setting and the calibration the store keeps."""
    data = cloud_any.store.tenant("fam-1")
    doc = cal.calibrate(nights(6, NEAR_MISSES), [], UTC, T0 + 6 * DAY)
    data.set_alarm_calibration(doc)
    data.set_alarm_calibration({**doc, "permille": 925})  # the next day's replaces it
    assert data.alarm_calibration() == {**doc, "permille": 925}
    for bad in (-1, 15, "many", float("nan")):
        with pytest.raises(settings.SettingsError, match="false alarms a week"):
            settings.set_patient_settings(data, alarm_budget=bad)
    settings.set_patient_settings(data, alarm_budget="3.5")
    assert settings.patient_settings(data).alarm_budget == 3.5
    settings.set_patient_settings(data, report_days=7)  # other changes leave it
    assert settings.patient_settings(data).alarm_budget == 3.5
    settings.set_patient_settings(data, alarm_budget=None)
    assert settings.patient_settings(data).alarm_budget is None


def test_settings__without_a_node_the_zone_of_the_nightscout_profile(cloud):
    """A family with AndroidAPS or Loop and no bedside node: its nights are the profile's
    zone's until someone sets one, not UTC."""
    data = cloud.store.tenant("fam-2")
    assert settings.patient_settings(data).tz_source == "default"
    data.add_documents("profile", [{
        "defaultProfile": "Day", "startDate": "2026-01-01T00:00:00.000Z",
        "created_at": "2026-01-01T00:00:00.000Z",
        "store": {"Day": {"timezone": "America/New_York", "dia": 5, "units": "mg/dl"}}}])
    ps = settings.patient_settings(data)
    assert (ps.tz.key, ps.tz_source) == ("America/New_York", "profile")
    data.add_documents("profile", [{  # Loop's spelling (test_clients_loop_trio.py)
        "defaultProfile": "Default", "startDate": "2026-01-02T00:00:00.000Z",
        "created_at": "2026-01-02T00:00:00.000Z",
        "store": {"Default": {"timezone": "ETC/GMT+8", "dia": 6, "units": "mg/dL"}}}])
    ps = settings.patient_settings(data)
    assert (ps.tz.key, ps.tz_source) == ("Etc/GMT+8", "profile")


def test_store__carbs_of_two_weeks_among_a_pumps_temp_basals(cloud_any):
    """AndroidAPS and Loop upload a temp basal about every 5 minutes: the carbs of the nights
    calibrated on are all found among them."""
    data = cloud_any.store.tenant("fam-1")

    def at(ms):
        return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(ms / 1000))

    data.add_documents("treatments", [
        {"eventType": "Temp Basal", "rate": 0.5, "duration": 30, "created_at": at(T0 + k * 5 * MIN)}
        for k in range(16 * 288)] + [
        {"eventType": "Carb Correction", "carbs": 12, "created_at": at(T0 + d * DAY + 3600_000)}
        for d in range(16)])
    assert sorted(data.carbs_times(T0, T0 + 16 * DAY)) == [T0 + d * DAY + 3600_000 for d in range(16)]
