"""The bedside node's time zone reaches the cloud in its status report, and the patient's
reports count days and nights in it until someone sets the patient's own zone (without it they
were in UTC, an hour off all summer in the UK)."""

import threading

from nightlink.cloud.reports import settings
from nightlink.edge.sync.cloud_link import SyncClient
from tests.support.waiting import until

from .conftest import TENANT


def test_status_report_carries_the_nodes_zone_and_reports_use_it(rig):
    rig.edge.set_meta("timezone", "Europe/London")  # as the live node records it at start
    data = rig.cloud.tenant(TENANT)
    assert settings.patient_settings(data).tz_source == "default"
    client = SyncClient(rig.edge, rig.sync_config(), TENANT)
    stop = threading.Event()
    worker = threading.Thread(target=client.run, args=(stop,), kwargs={"until_empty": False})
    worker.start()
    try:
        until(lambda: (rig.cloud.device_status(rig.edge.device) or {}).get("timezone"),
              timeout=20, what="the edge's status report with its time zone")
    finally:
        stop.set()
        worker.join(30)
    ps = settings.patient_settings(data)
    assert (ps.tz.key, ps.tz_source) == ("Europe/London", "edge")
    settings.set_patient_settings(data, tz="America/New_York")  # the patient's own wins
    ps = settings.patient_settings(data)
    assert (ps.tz.key, ps.tz_source) == ("America/New_York", "set")
