"""The doctor's report says which predicted-low policy the bedside clocks run, as the edge's
status report last gave it (edge/sync/cloud_link.py), and nothing when none was reported."""

from nightlink.cloud.reports import render, settings
from nightlink.cloud.reports.summary import build_report
from nightlink.cloud.store import Store

POLICY = ("risk >= 875 permille for 1 readings, forecast < 90 mg/dL, not while rising > 0.5 "
          "mg/dL/min, held 45 min after carbs unless forecast < 54, 60 min apart; budget 1.4 "
          "false alarms a week")


def test_report_names_the_reported_alarm_policy(tmp_path):
    store = Store.open(f"sqlite:///{tmp_path / 'r.db'}")
    try:
        store.create_tenant("p1", "Ann Example")
        store.create_tenant("p2", "Bo Example")
        data = store.tenant("p1")
        rep = build_report(data, settings.patient_settings(data), end_day="2026-01-14", days=14)
        assert rep["alarm_policy"] is None
        html = render.report_html(rep, tenant_name="Ann", unit="mg/dL")
        assert 'id="alarm-policy"' not in html
        store.put_device_status("edge-a", "p1", {"outbox": 0, "boot": 1})
        store.put_device_status("edge-b", "p1", {"outbox": 0, "alarm_policy": POLICY})
        store.put_device_status("edge-c", "p2", {"alarm_policy": "another tenant's"})
        rep = build_report(data, settings.patient_settings(data), end_day="2026-01-14", days=14)
        assert rep["alarm_policy"]["text"] == POLICY
        assert rep["alarm_policy"]["device"] == "edge-b"
        html = render.report_html(rep, tenant_name="Ann", unit="mg/dL")
        assert "Predicted-low alarm on the bedside clocks: risk &gt;= 875 permille" in html
        assert "another tenant" not in html
    finally:
        store.close()


def test_report_says_where_its_time_zone_comes_from(tmp_path):
    store = Store.open(f"sqlite:///{tmp_path / 'r.db'}")
    try:
        store.create_tenant("p1", "Ann Example")
        data = store.tenant("p1")

        def said():
            rep = build_report(data, settings.patient_settings(data), end_day="2026-01-14",
                               days=14)
            return rep["tz"], render.report_html(rep, tenant_name="Ann", unit="mg/dL")

        tz, html = said()
        assert tz == "UTC" and "not set: days and nights are counted in UTC" in html
        store.put_device_status("edge-a", "p1", {"timezone": "Mars/Olympus_Mons"})
        assert said()[0] == "UTC"  # a zone this server does not know is no zone
        store.put_device_status("edge-b", "p1", {"timezone": "Europe/London"})
        tz, html = said()
        assert tz == "Europe/London" and "as the bedside node reports it" in html
        store.put_device_status("edge-c", "p1", {"timezone": "Atlantis/Capital"})
        assert said()[0] == "Europe/London"  # the newest zone this server knows
        store.add_device("a4cf12b0c3d4", "p1", "edge", "p1.a4cf12b0c3d4", "-")
        store.put_device_status("a4cf12b0c3d4", "p1", {"timezone": "Asia/Tokyo"})
        assert said()[0] == "Asia/Tokyo"
        data.revoke_device("a4cf12b0c3d4")  # a node taken out of service no longer speaks for her
        assert said()[0] == "Europe/London"
        settings.set_patient_settings(data, report_days=7)  # the zone is not frozen by it
        assert settings.patient_settings(data).tz_source == "edge"
        settings.set_patient_settings(data, tz="Europe/Berlin")
        tz, html = said()
        assert tz == "Europe/Berlin" and "bedside node reports" not in html
        assert "not set" not in html
    finally:
        store.close()


def test_a_clocks_stored_status_is_not_read_for_the_zone_or_the_policy(tmp_path):
    """Reports stored before the ingest kept a clock's report from carrying an edge's fields
    are not read for them either."""
    store = Store.open(f"sqlite:///{tmp_path / 'r.db'}")
    try:
        store.create_tenant("p1", "Ann Example")
        data = store.tenant("p1")
        store.add_device("a4cf12b0c3d4", "p1", "edge", "p1.a4cf12b0c3d4", "-")
        store.put_device_status("a4cf12b0c3d4", "p1", {"timezone": "Europe/Paris",
                                                       "alarm_policy": POLICY})
        store.add_device("c10c00000001", "p1", "clock", "p1.c10c00000001", "-")
        store.put_device_status("c10c00000001", "p1", {"timezone": "Pacific/Kiritimati",
                                                       "alarm_policy": "never warn"})
        assert data.reported_timezones() == ["Europe/Paris"]
        assert data.alarm_policy()["text"] == POLICY
    finally:
        store.close()
