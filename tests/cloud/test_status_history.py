"""A bedside node taken abroad (a phone edge on a trip): the nights recorded before the trip
stay in the zone they were recorded in, the time after it is counted in the new one
(cloud/zones.py). A shift worker's node that changes its sleep schedule: the day sleeps before
the change stay whole (reports/settings.py PatientSettings.sleep_of). The node's changes are
kept by cloud/store/devices.py."""

import json
import pickle
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from nightlink.cloud import fusion, zones
from nightlink.cloud.ingest import handle
from nightlink.cloud.reports import render
from nightlink.cloud.reports.settings import (
    fused_night,
    patient_night,
    patient_settings,
    set_patient_settings,
)
from nightlink.cloud.reports.summary import build_report
from nightlink.cloud.retention import purge_deleted
from nightlink.shared import features, topics
from nightlink.shared.epoch import EPOCH_S
from nightlink.tools.bench.report import DEVICE, put_epochs, put_glucose
from tests.support.cloud import two_tenants

BERLIN, NEW_YORK, TOKYO = (ZoneInfo(k) for k in ("Europe/Berlin", "America/New_York",
                                                 "Asia/Tokyo"))
FLIGHT = datetime(2026, 1, 18, 12, 0, tzinfo=UTC).timestamp()  # the node reports New York


def _utc_s(zone, day: str, hh: int) -> float:
    return datetime.combine(date.fromisoformat(day), time(hh), zone).timestamp()


@pytest.mark.parametrize("before, after", [(BERLIN, NEW_YORK), (NEW_YORK, BERLIN),
                                           (NEW_YORK, TOKYO)])
def test_history__every_moment_reads_back_in_the_zone_it_was_in(before, after):
    tz = zones.history([(0, before), (FLIGHT, after)], after)
    assert tz.key == after.key and tz.at(FLIGHT - 1) is before and tz.at(FLIGHT) is after
    for k in range(-400, 400):  # every 5 minutes, 33 hours either side of the change
        t = FLIGHT + 300 * k
        local = datetime.fromtimestamp(t, tz)
        assert local.timestamp() == t
        want = before if t < FLIGHT else after
        assert local.utcoffset() == datetime.fromtimestamp(t, want).utcoffset()
        assert local.replace(tzinfo=None) == datetime.fromtimestamp(t, want).replace(tzinfo=None)
    # noon to noon: the day before in the old zone, the day after in the new
    assert datetime.combine(date(2026, 1, 16), time(12), tz).timestamp() == \
        _utc_s(before, "2026-01-16", 12)
    assert datetime.combine(date(2026, 1, 20), time(12), tz).timestamp() == \
        _utc_s(after, "2026-01-20", 12)
    back = pickle.loads(pickle.dumps(tz))
    assert back.segments[1:] == tz.segments[1:] and repr(back) == repr(tz)


@pytest.mark.parametrize("moved, fall_back, home, away", [
    ("2026-06-10", "2026-11-01T06:00", BERLIN, NEW_YORK),  # New York's clocks go back
    ("2026-12-10", "2026-10-25T01:00", BERLIN, NEW_YORK),  # Berlin's, before the trip
])
def test_history__the_hour_a_zone_repeats_reads_back_with_its_own_offset(moved, fall_back,
                                                                          home, away):
    at = datetime.fromisoformat(moved).replace(tzinfo=UTC).timestamp()
    tz = zones.history([(0, home), (at, away)], away)
    middle = datetime.fromisoformat(fall_back).replace(tzinfo=UTC).timestamp()
    for k in range(-16, 16):  # every 15 minutes, 4 hours around the change
        t = middle + 900 * k
        want = datetime.fromtimestamp(t, away if t >= at else home)
        got = datetime.fromtimestamp(t, tz)
        assert (got.timestamp(), got.utcoffset(), got.replace(tzinfo=None)) == \
            (t, want.utcoffset(), want.replace(tzinfo=None)), got


def test_history__hours_a_flight_east_skips_read_in_the_zone_before_it():
    """There and back: the hours the flight home skips read in New York's time, so the
    night in New York is whole up to the change."""
    back = datetime(2026, 1, 25, 17, 0, tzinfo=UTC).timestamp()
    tz = zones.history([(0, BERLIN), (FLIGHT, NEW_YORK), (back, BERLIN)], BERLIN)
    assert fusion.night_window("2026-01-24", tz) == (
        int(_utc_s(NEW_YORK, "2026-01-24", 12)) // EPOCH_S, int(back) // EPOCH_S)
    assert fusion.night_window("2026-01-25", tz)[0] == int(back) // EPOCH_S
    assert pickle.loads(pickle.dumps(tz)) == tz and hash(pickle.loads(pickle.dumps(tz))) == hash(tz)


def test_history__one_zone_is_the_zone_itself_and_the_current_zone_has_the_last_word():
    assert zones.history([], BERLIN) is BERLIN
    assert zones.history([(0, BERLIN)], BERLIN) is BERLIN
    # a trip and back: three zones; the newest status report names the current one
    tz = zones.history([(0, BERLIN), (FLIGHT, NEW_YORK), (FLIGHT + 7 * 86400, BERLIN)], BERLIN)
    assert [z.key for _, z in tz.segments] == [BERLIN.key, NEW_YORK.key, BERLIN.key]
    assert zones.changes(tz) == [(FLIGHT, BERLIN.key, NEW_YORK.key),
                                 (FLIGHT + 7 * 86400, NEW_YORK.key, BERLIN.key)]
    # another node's newer report names the current zone: the last change gives way to it
    assert zones.history([(0, BERLIN), (FLIGHT, NEW_YORK)], BERLIN) is BERLIN
    assert zones.changes(BERLIN) == []


@pytest.fixture
def store(cloud_db_url):
    s = two_tenants(cloud_db_url, [(DEVICE, "fam-1", "edge")])
    yield s
    s.close()


def _report(store, doc: dict, at: float, monkeypatch) -> None:
    monkeypatch.setattr("nightlink.cloud.store.devices.time.time", lambda: at)
    handle(store, topics.status_topic("fam-1", DEVICE), json.dumps(doc).encode())
    monkeypatch.undo()


def _slept(data, day: str, bed_h: int, zone=UTC, before_h: int = 2, after_h: int = 2) -> None:
    """8 hours asleep from bed_h:00 local on `day` (stages from the classifier), a reading
    every 5 minutes from before_h hours before to after_h hours after."""
    bed = int(_utc_s(zone, day, bed_h)) // EPOCH_S
    wake = bed + 8 * 120
    put_epochs(data, features.INFER, {
        e: {"sleep_stage": 0 if e < bed + 20 else 1 + (e // 40) % 3, "stage_conf": 0.9,
            "snore": 0, "apnea_events": 0, "desat3": 0, "desat4": 0, "low_risk": 0.0,
            "forecast30_mgdl": 120} for e in range(bed, wake)})
    put_glucose(data, [(e * EPOCH_S * 1000, 110 + (e // 10) % 20)
                       for e in range(bed - before_h * 120, wake + after_h * 120, 10)])


def test_a_trip__nights_before_it_stay_in_their_zone(store, monkeypatch):
    data = store.tenant("fam-1")
    _slept(data, "2026-01-14", 23, BERLIN, 5, 4)
    _slept(data, "2026-01-20", 23, NEW_YORK, 5, 4)
    _report(store, {"timezone": "Europe/Berlin"}, FLIGHT - 10 * 86400, monkeypatch)
    _report(store, {"timezone": "Europe/Berlin"}, FLIGHT - 86400, monkeypatch)
    ps = patient_settings(data)
    assert ps.tz is BERLIN and data.reported_changes("timezone") == []  # one zone
    before = fused_night(data, "2026-01-14", ps.tz, ps.sleep)
    computed = data.fusion_cache_info("2026-01-14")

    _report(store, {"timezone": "America/New_York"}, FLIGHT, monkeypatch)
    _report(store, {"timezone": "America/New_York"}, FLIGHT + 3600, monkeypatch)  # no change
    assert data.reported_changes("timezone") == [(0, "Europe/Berlin"),
                                                 (int(FLIGHT * 1000), "America/New_York")]
    ps = patient_settings(data)
    assert (ps.tz.key, ps.tz_source) == ("America/New_York", "edge")

    old = fused_night(data, "2026-01-14", ps.tz, ps.sleep)
    assert old == before and data.fusion_cache_info("2026-01-14") == computed  # not re-fused
    assert old["tz"] == "Europe/Berlin"
    assert old["first_epoch"] == int(_utc_s(BERLIN, "2026-01-14", 12)) // EPOCH_S
    assert old["sleep"]["tib_min"] == 480.0
    # the night of the flight: its window begins in Berlin, its sleep is in New York
    _slept(data, "2026-01-18", 23, NEW_YORK, 5, 4)
    arrival = fused_night(data, "2026-01-18", ps.tz, ps.sleep)
    assert arrival["tz"] == "America/New_York" and arrival["sleep"]["tib_min"] == 480.0
    assert arrival["first_epoch"] == int(_utc_s(BERLIN, "2026-01-18", 12)) // EPOCH_S
    new = fused_night(data, "2026-01-20", ps.tz, ps.sleep)
    assert new["tz"] == "America/New_York" and new["sleep"]["tib_min"] == 480.0
    assert new["first_epoch"] == int(_utc_s(NEW_YORK, "2026-01-20", 12)) // EPOCH_S

    rep = build_report(data, ps, "2026-01-21", 10)
    assert rep["tz_changes"] == [{"at_ms": int(FLIGHT * 1000), "from": "Europe/Berlin",
                                  "to": "America/New_York"}]
    # the modal day: both nights' readings from 18:00 to 11:00 local, none 11:00-17:00 (in
    # New York time alone, the Berlin night's evening would read 12:00-17:00)
    hours = {b["minute"] // 60 for b in rep["agp"] if b["n"]}
    assert hours == set(range(18, 24)) | set(range(0, 11))
    html = render.report_html(rep, tenant_name="Ann", unit="mg/dL")
    assert ("the bedside node moved from Europe/Berlin to America/New_York at 2026-01-18 07:00 "
            "(America/New_York)") in html
    # a report of a later fortnight does not repeat an old move
    later = build_report(data, ps, "2026-02-14", 14)
    assert later["tz_changes"] == rep["tz_changes"]  # its pages still read the history
    assert 'id="tz-changes"' not in render.report_html(later, tenant_name="Ann", unit="mg/dL")

    # a zone set by hand holds for all time, the node's moves no longer read
    set_patient_settings(data, tz="Asia/Tokyo")
    ps = patient_settings(data)
    assert ps.tz is TOKYO or ps.tz.key == "Asia/Tokyo"
    assert zones.changes(ps.tz) == []


def test_a_trip__the_changes_outlive_a_revoked_node_and_go_with_the_tenant(store, monkeypatch):
    data = store.tenant("fam-1")
    _report(store, {"timezone": "Europe/Berlin"}, FLIGHT - 86400, monkeypatch)
    _report(store, {"timezone": "America/New_York"}, FLIGHT, monkeypatch)
    _report(store, {"battery": 80}, FLIGHT + 60, monkeypatch)  # no zone: no change
    _report(store, {"timezone": "x" * 65}, FLIGHT + 120, monkeypatch)  # not a zone name
    assert len(data.reported_changes("timezone")) == 2
    data.revoke_device(DEVICE)  # a phone replaced: the nights it recorded were where it said
    assert len(data.reported_changes("timezone")) == 2
    store.set_tenant("fam-1", deleted_at=FLIGHT)
    assert purge_deleted(store, 30, now=FLIGHT + 31 * 86400) == ["fam-1"]
    for table in ("status_changes", "device_status"):
        assert store.db.scalar(f"SELECT count(*) AS n FROM {table} WHERE tenant_id = ?",
                               ("fam-1",)) == 0


def test_a_trip__a_zone_this_server_does_not_know_leaves_the_one_before_it(store, monkeypatch):
    data = store.tenant("fam-1")
    _report(store, {"timezone": "Europe/Berlin"}, FLIGHT - 86400, monkeypatch)
    _report(store, {"timezone": "Mars/Olympus_Mons"}, FLIGHT, monkeypatch)
    _report(store, {"timezone": "America/New_York"}, FLIGHT + 86400, monkeypatch)
    tz = patient_settings(data).tz
    assert zones.changes(tz) == [(FLIGHT + 86400, "Europe/Berlin", "America/New_York")]
    assert fusion.night_window("2026-01-18", tz)[0] == \
        int(_utc_s(BERLIN, "2026-01-18", 12)) // EPOCH_S
    assert timedelta(0) < datetime.fromtimestamp(FLIGHT, tz).utcoffset()


def test_shift_work__day_sleeps_before_a_change_to_nights_stay_whole(store, monkeypatch):
    data = store.tenant("fam-1")
    _slept(data, "2026-01-15", 8)  # a day sleep, 08:00-16:00
    _slept(data, "2026-01-18", 23)  # a night sleep, 23:00-07:00
    days = {"timezone": "UTC", "night_schedule": "08:00-16:00"}
    nights = {"timezone": "UTC", "night_schedule": "22:30-07:00"}
    _report(store, days, FLIGHT - 10 * 86400, monkeypatch)
    _report(store, nights, FLIGHT - 30 * 3600, monkeypatch)  # 2026-01-17 06:00
    ps = patient_settings(data)
    assert ps.schedule == "22:30-07:00" and len(ps.schedules) == 2
    assert ps.sleep_of("2026-01-15") == (8 * 60, 16 * 60)
    assert ps.sleep_of("2026-01-18") == (22 * 60 + 30, 7 * 60)
    assert ps.night_ending_on("2026-01-15") == "2026-01-15"  # woke that afternoon
    assert ps.night_ending_on("2026-01-19") == "2026-01-18"
    day_sleep = fused_night(data, "2026-01-15", ps.tz, ps.sleep_of("2026-01-15"))
    night_sleep = fused_night(data, "2026-01-18", ps.tz, ps.sleep_of("2026-01-18"))
    assert day_sleep["sleep"]["tib_min"] == night_sleep["sleep"]["tib_min"] == 480.0
    # with the night schedule alone, the day sleep is cut at noon into two nights' halves
    halves = [fusion.fuse(fusion.load_night(data, n, ps.tz, ps.sleep))["sleep"]["tib_min"]
              for n in ("2026-01-14", "2026-01-15")]
    assert halves == [240.0, 240.0]

    # the day of the change names the night before it (the day sleep of the 16th) again:
    # listed once
    assert ps.night_ending_on("2026-01-16") == ps.night_ending_on("2026-01-17") == "2026-01-16"
    _slept(data, "2026-01-16", 8)
    rep = build_report(data, ps, "2026-01-19", 6)
    assert [(r["night"], r["tib_min"]) for r in rep["nights"]] == [
        ("2026-01-15", 480.0), ("2026-01-16", 480.0), ("2026-01-18", 480.0)]

    # and back to days: the nights slept by night stay noon to noon
    _report(store, days, FLIGHT + 86400, monkeypatch)
    ps = patient_settings(data)
    assert len(ps.schedules) == 3 and ps.sleep_of("2026-01-18") == (22 * 60 + 30, 7 * 60)
    assert ps.sleep_of("2026-01-15") == (8 * 60, 16 * 60)
    assert ps.sleep_of("2026-01-25") == (8 * 60, 16 * 60)


def test_shift_work__nights_to_days_loses_no_night_and_counts_no_sleep_twice(store, monkeypatch):
    """Back to day sleeping: the last night's sleep and the first day sleep both end on the
    day of the change; both are listed, and their windows meet between them."""
    data = store.tenant("fam-1")
    for day in ("2026-01-16", "2026-01-17", "2026-01-18", "2026-01-19"):
        _slept(data, day, 23)
    for day in ("2026-01-20", "2026-01-21"):
        _slept(data, day, 8)
    _report(store, {"timezone": "UTC", "night_schedule": "22:30-07:00"},
            _utc_s(UTC, "2026-01-10", 0), monkeypatch)
    _report(store, {"timezone": "UTC", "night_schedule": "08:00-16:00"},
            _utc_s(UTC, "2026-01-20", 10), monkeypatch)
    ps = patient_settings(data)
    assert ps.nights_ending_on("2026-01-20") == ["2026-01-19", "2026-01-20"]
    rep = build_report(data, ps, "2026-01-22", 7)
    assert [(r["night"], r["tib_min"]) for r in rep["nights"]] == [
        (f"2026-01-{d}", 480.0) for d in (16, 17, 18, 19, 20, 21)]
    last, first = (patient_night(data, ps, n) for n in ("2026-01-19", "2026-01-20"))
    assert last["end_epoch"] == first["first_epoch"] == \
        int(_utc_s(UTC, "2026-01-20", 7)) // EPOCH_S + 60  # 07:30, between wake and bed
    assert last["first_epoch"] == int(_utc_s(UTC, "2026-01-19", 12)) // EPOCH_S


def test_shift_work__a_cleared_schedule_keeps_the_day_sleeps_before_it(store, monkeypatch):
    data = store.tenant("fam-1")
    _slept(data, "2026-01-15", 8)
    _report(store, {"timezone": "UTC", "night_schedule": "22:30-07:00"},
            _utc_s(UTC, "2026-01-01", 0), monkeypatch)
    _report(store, {"timezone": "UTC", "night_schedule": "08:00-16:00"},
            _utc_s(UTC, "2026-01-10", 0), monkeypatch)
    _report(store, {"timezone": "UTC"}, _utc_s(UTC, "2026-01-20", 0), monkeypatch)  # cleared
    ps = patient_settings(data)
    assert ps.schedule is None and ps.sleep_of("2026-01-25") is None
    assert ps.sleep_of("2026-01-15") == (8 * 60, 16 * 60)
    assert patient_night(data, ps, "2026-01-15")["sleep"]["tib_min"] == 480.0
    # the same report again is no change
    _report(store, {"timezone": "UTC"}, _utc_s(UTC, "2026-01-21", 0), monkeypatch)
    assert len(data.reported_changes("night_schedule")) == 3
