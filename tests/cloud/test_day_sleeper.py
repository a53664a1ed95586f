"""A person who sleeps by day (night shifts): their bedside node reports a sleep schedule
across noon, and the cloud's nights begin and end where the node's do, so the day's sleep is
one night, not two halves cut at noon (cloud/fusion.py, cloud/reports/settings.py)."""

import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from nightlink.cloud import fusion, insights, morning
from nightlink.cloud.ingest import handle
from nightlink.cloud.reports.settings import fused_night, patient_settings
from nightlink.cloud.reports.summary import build_report
from nightlink.shared import features, topics
from nightlink.shared.epoch import EPOCH_S
from nightlink.tools.bench.report import DEVICE, put_epochs, put_glucose
from tests.support.cloud import two_tenants

BED = int(datetime(2026, 1, 15, 8, 0, tzinfo=UTC).timestamp()) // EPOCH_S
WAKE = int(datetime(2026, 1, 15, 16, 0, tzinfo=UTC).timestamp()) // EPOCH_S


@pytest.fixture
def store(cloud_db_url):
    s = two_tenants(cloud_db_url, [(DEVICE, "fam-1", "edge")])
    yield s
    s.close()


def _report(store, doc: dict) -> None:
    handle(store, topics.status_topic("fam-1", DEVICE), json.dumps(doc).encode())


def _slept_by_day(data) -> None:
    """08:00 to 16:00 UTC: the classifier's stages (asleep from 08:10 to 15:50) and a
    reading every 5 minutes, then readings up to 18:00."""
    rows = {e: {"sleep_stage": 0 if e < BED + 20 or e >= WAKE - 20 else 1 + (e // 40) % 3,
                "stage_conf": 0.9, "snore": 0, "apnea_events": 0, "desat3": 0, "desat4": 0,
                "low_risk": 0.0, "forecast30_mgdl": 120} for e in range(BED, WAKE)}
    put_epochs(data, features.INFER, rows)
    put_glucose(data, [(e * EPOCH_S * 1000, 110 + (e // 10) % 20)
                       for e in range(BED - 120, WAKE + 240, 10)])


def test_the_day_s_sleep_is_one_night_named_by_its_date(store):
    data = store.tenant("fam-1")
    _slept_by_day(data)
    _report(store, {"timezone": "UTC", "night_schedule": "08:00-16:00"})
    ps = patient_settings(data)
    assert (ps.schedule, ps.boundary) == ("08:00-16:00", 0)
    doc = fused_night(data, "2026-01-15", ps.tz, ps.sleep)
    assert doc["has_data"] and doc["sleep"]["tib_min"] == 480.0  # not cut at noon
    assert doc["sleep"]["tst_min"] == pytest.approx(480.0 - 20.0, abs=1.0)
    # without the schedule, noon to noon: the same sleep falls in two nights
    halves = [fusion.fuse(fusion.load_night(data, n, ps.tz))["sleep"]["tib_min"]
              for n in ("2026-01-14", "2026-01-15")]
    assert halves == [240.0, 240.0]
    # "last night" at 18:00, two hours after waking: the day's sleep
    assert morning.last_night(data, ps) == "2026-01-15"
    card = morning.card(data, ps)
    assert card["night"] == "2026-01-15" and card["has_data"]
    # the doctor's report lists it under the day of its sleep
    rep = build_report(data, ps, end_day="2026-01-15", days=1)
    assert [r["night"] for r in rep["nights"]] == ["2026-01-15"]
    got = insights.insights(data, ps, nights=3)
    assert got["end_night"] == "2026-01-15" and got["nights_with_data"] == 1


def test_a_night_sleeper_s_nights_stay_noon_to_noon(store):
    data = store.tenant("fam-1")
    _report(store, {"timezone": "UTC", "night_schedule": "22:30-07:00"})
    ps = patient_settings(data)
    assert (ps.schedule, ps.boundary) == ("22:30-07:00", 720)
    assert fusion.night_window("2026-01-15", ps.tz, ps.boundary) == fusion.night_window(
        "2026-01-15", ps.tz)


@pytest.mark.parametrize("bad", ["25:00-08:00", "8:00-16:00", "08:00", 800, ["08:00", "16:00"]])
def test_a_schedule_the_cloud_cannot_read_is_as_none(store, bad):
    """Stored as reported (the status report is kept whole), read as no schedule: noon."""
    _report(store, {"timezone": "UTC", "night_schedule": bad})
    ps = patient_settings(store.tenant("fam-1"))
    assert (ps.schedule, ps.boundary) == (None, 720)


def test_the_cache_follows_a_changed_schedule(store):
    """A fused night cached under the noon boundary is recomputed once the node reports a
    day sleeper's schedule."""
    data = store.tenant("fam-1")
    _slept_by_day(data)
    _report(store, {"timezone": "UTC"})
    ps = patient_settings(data)
    assert fused_night(data, "2026-01-15", ps.tz, ps.sleep)["sleep"]["tib_min"] == 240.0
    _report(store, {"timezone": "UTC", "night_schedule": "08:00-16:00"})
    ps = patient_settings(data)
    assert fused_night(data, "2026-01-15", ps.tz, ps.sleep)["sleep"]["tib_min"] == 480.0


def test_last_night_follows_the_schedule_and_a_night_sleeper_s_is_as_before():
    """fusion.ended_night and nights.night_ending_on: an afternoon sleeper (14:00-22:00, the
    noon boundary) at 23:00 has slept the night of that date, not the day before; a day
    sleeper after 16:00 the day's sleep; for a night sleeper the schedule changes nothing, at
    any hour of a week across a change of clocks."""
    from zoneinfo import ZoneInfo

    from nightlink.nights import night_ending_on

    utc, berlin = ZoneInfo("UTC"), ZoneInfo("Europe/Berlin")
    at = datetime(2026, 1, 15, 23, 0, tzinfo=UTC).timestamp()
    assert fusion.ended_night(at, utc, (14 * 60, 22 * 60)) == "2026-01-15"
    assert night_ending_on("2026-01-15", (14 * 60, 22 * 60)) == "2026-01-15"
    assert fusion.ended_night(at - 8 * 3600, utc, (8 * 60, 16 * 60)) == "2026-01-15"  # 15:00...
    assert fusion.ended_night(at - 9 * 3600, utc, (8 * 60, 16 * 60)) == "2026-01-15"  # (asleep)
    assert fusion.ended_night(at - 17 * 3600, utc, (8 * 60, 16 * 60)) == "2026-01-14"  # 06:00
    t0 = datetime(2026, 3, 25, 0, 0, tzinfo=UTC).timestamp()  # Berlin springs forward the 29th
    for k in range(7 * 48):
        t = t0 + k * 1800
        assert fusion.ended_night(t, berlin, (22 * 60, 7 * 60 + 30)) == \
            fusion.ended_night(t, berlin)
    for day in ("2026-03-28", "2026-03-29"):
        assert night_ending_on(day, (22 * 60, 7 * 60 + 30)) == night_ending_on(day)


def test_without_sleep_found_a_day_sleeper_s_glucose_period_is_their_schedule(store):
    """No stages and no wearable: the nocturnal glucose figures fall back to the consensus
    00:00-06:00 for a night sleeper, and to the schedule for a day sleeper (they are at work
    at 03:00)."""
    data = store.tenant("fam-1")
    put_glucose(data, [(e * EPOCH_S * 1000, 110) for e in range(BED - 960, WAKE + 240, 10)])
    _report(store, {"timezone": "UTC", "night_schedule": "08:00-16:00"})
    ps = patient_settings(data)
    doc = fused_night(data, "2026-01-15", ps.tz, ps.sleep)
    assert doc["glucose"]["period"] == "08:00-16:00"


def test_the_insights_evening_and_next_day_are_around_a_day_sleeper_s_own_sleep(store):
    """A day sleeper's 'evening' is the 7 hours before bedtime (carbs at 05:00, not at
    19:00 the day before) and their 'next day' the 15 hours after waking; the insights say
    so in their labels. A night sleeper's stay 17:00-24:00 and 07:00-22:00."""
    data = store.tenant("fam-1")
    _slept_by_day(data)
    put_glucose(data, [(e * EPOCH_S * 1000, 150) for e in range(WAKE, WAKE + 15 * 120, 10)])
    data.add_documents("treatments", [
        {"eventType": "Meal Bolus", "carbs": 40, "created_at": "2026-01-15T05:00:00Z"},
        {"eventType": "Meal Bolus", "carbs": 90, "created_at": "2026-01-14T19:00:00Z"}],
        mode="keep")
    _report(store, {"timezone": "UTC", "night_schedule": "08:00-16:00"})
    ps = patient_settings(data)
    rows = {r["night"]: r for r in insights.night_rows(data, ps, "2026-01-15", 2)}
    assert rows["2026-01-15"]["evening_carbs_g"] == 40
    assert 140 < rows["2026-01-15"]["next_day_mean"] <= 150  # after 16:00, not the sleep's 110-129
    got = insights.associations([{**rows["2026-01-15"], "has_data": True}] * 12,
                                insights.DAY_SLEEPER_LABELS)
    labels = {r["factor_label"] for r in got["rows"]} | {r["outcome_label"] for r in got["rows"]}
    assert "Carbs in the 7 h before bed" in labels
    # The same days of a night sleeper (a node reporting this schedule now would leave these
    # past nights to the day schedule they were slept by: tests/cloud/test_status_history.py)
    night_sleeper = replace(patient_settings(data), schedule="22:00-07:00", schedules=())
    rows = {r["night"]: r for r in insights.night_rows(data, night_sleeper, "2026-01-15", 2)}
    assert rows["2026-01-14"]["evening_carbs_g"] == 90  # 19:00, a night sleeper's evening
