"""The bedside node's time zone reaches the cloud in its status report, and the patient's
reports count days and nights in it until someone sets the patient's own zone (without it they
were in UTC, an hour off all summer in the UK)."""

from nightlink.cloud.reports import settings

from .conftest import TENANT, status_reported


def test_status_report_carries_the_nodes_zone_and_reports_use_it(rig):
    rig.edge.set_meta("timezone", "Europe/London")  # as the live node records it at start
    data = rig.cloud.tenant(TENANT)
    assert settings.patient_settings(data).tz_source == "default"
    assert status_reported(rig, "timezone", "the edge's status report with its time zone") == \
        "Europe/London"
    ps = settings.patient_settings(data)
    assert (ps.tz.key, ps.tz_source) == ("Europe/London", "edge")
    settings.set_patient_settings(data, tz="America/New_York")  # the patient's own wins
    ps = settings.patient_settings(data)
    assert (ps.tz.key, ps.tz_source) == ("America/New_York", "set")


def test_status_report_carries_a_day_sleeper_s_schedule(rig):
    """Through the real broker: the node's sleep schedule (as the live node records it at
    start) reaches the cloud, whose nights then begin and end at the middle of the person's
    waking hours instead of noon."""
    rig.edge.set_meta("night_schedule_set", "08:00-16:00")  # as a node with [night] set
    assert status_reported(rig, "night_schedule", "the edge's status report with its "
                           "sleep schedule") == "08:00-16:00"
    ps = settings.patient_settings(rig.cloud.tenant(TENANT))
    assert (ps.schedule, ps.boundary) == ("08:00-16:00", 0)
