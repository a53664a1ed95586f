"""A bedside node that reports a new zone (a phone edge taken from New York to Tokyo): past
nights keep the zone they were recorded in, new ones take the new zone (cloud/zone_history.py).
With one zone for all history every past night was re-dated: New York's night of the 10th
became the night of the 11th, and the 10th showed no recording."""

import json
import random
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from nightlink.cloud.ingest import handle
from nightlink.cloud.reports.settings import fused_night, patient_settings
from nightlink.cloud.reports.summary import build_report
from nightlink.cloud.zone_history import ZoneHistory, zone_for_night
from nightlink.shared import topics
from nightlink.tools.bench.report import DEVICE, synth_day_streams, synth_night
from tests.support.cloud import two_tenants

NY, TOKYO = ZoneInfo("America/New_York"), ZoneInfo("Asia/Tokyo")
FIRST = date(2026, 11, 10)
MOVED = datetime(2026, 11, 15, 12, 0, tzinfo=UTC).timestamp()  # after the fifth NY night


@pytest.fixture
def store(cloud_db_url):
    s = two_tenants(cloud_db_url, [(DEVICE, "fam-1", "edge")])
    yield s
    s.close()


def _report_zone(store, name: str) -> None:
    handle(store, topics.status_topic("fam-1", DEVICE), json.dumps({"timezone": name}).encode())


def test_past_nights_keep_their_zone_when_the_node_moves(store):
    data = store.tenant("fam-1")
    rng = random.Random(1)
    for i in range(5):  # 23:00-07:00 in New York
        synth_day_streams(data, FIRST + timedelta(days=i), NY, rng)
        synth_night(data, FIRST + timedelta(days=i), NY, rng, hours=8.0)
    tokyo_night = FIRST + timedelta(days=6)  # 23:00-07:00 in Tokyo, after the move
    synth_night(data, tokyo_night, TOKYO, rng, hours=8.0)
    _report_zone(store, "America/New_York")  # through the ingest, as a node reports it
    assert data.zone_history() == [(0.0, "America/New_York")]
    _report_zone(store, "America/New_York")
    assert len(data.zone_history()) == 1  # the same zone again is no change
    data.note_zone("Asia/Tokyo", MOVED)
    ps = patient_settings(data)
    assert isinstance(ps.tz, ZoneHistory) and ps.tz.key == "Asia/Tokyo"
    for i in range(5):
        night = (FIRST + timedelta(days=i)).isoformat()
        doc = fused_night(data, night, ps.tz)
        start = datetime.fromtimestamp(doc["recording"]["start_ms"] / 1000, NY)
        assert (start.date().isoformat(), start.hour) == (night, 23), night
        assert doc["sleep"]["tib_min"] == 480.0 and doc["tz"] == "America/New_York"
    doc = fused_night(data, tokyo_night.isoformat(), ps.tz)
    start = datetime.fromtimestamp(doc["recording"]["start_ms"] / 1000, TOKYO)
    assert (start.date(), start.hour, doc["tz"]) == (tokyo_night, 23, "Asia/Tokyo")
    # Eastwards the first night in Tokyo would begin (noon in Tokyo) before the last one in
    # New York ends (noon there): it begins where that one ends, so no night is shown twice.
    morning = (tokyo_night + timedelta(days=1)).isoformat()
    rep = build_report(data, ps, end_day=morning, days=8, with_insights=False)
    assert [n["night"] for n in rep["nights"] if n.get("tib_min")] == [
        (FIRST + timedelta(days=i)).isoformat() for i in range(5)] + [tokyo_night.isoformat()]


def test_a_zone_history_is_a_tzinfo_that_agrees_both_ways():
    history = ZoneHistory([(0.0, NY), (MOVED, TOKYO)])
    for t in range(int(MOVED) - 3 * 86400, int(MOVED) + 3 * 86400, 1800):
        local = datetime.fromtimestamp(t, history)
        zone = NY if t < MOVED else TOKYO
        assert local.replace(tzinfo=None) == datetime.fromtimestamp(t, zone).replace(tzinfo=None)
        if abs(t - MOVED) > 86400:  # away from the day of the move a wall time is one moment
            assert local.timestamp() == t
    assert zone_for_night(history, "2026-11-14") is NY
    assert zone_for_night(history, "2026-11-16") is TOKYO
    assert zone_for_night(NY, "2026-11-16") is NY


def test_a_zone_database_file_reported_as_a_zone_is_not_used(store):
    """"localtime" opens as a zone on any machine: it would be the server's own zone, not the
    patient's. As if no zone were reported: UTC, and said."""
    _report_zone(store, "localtime")
    ps = patient_settings(store.tenant("fam-1"))
    assert (ps.tz.key, ps.tz_source) == ("UTC", "default")
