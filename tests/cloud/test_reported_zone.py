"""The patient's zone as the bedside node reports it (cloud/reports/settings.py)."""

import json

import pytest

from nightlink.cloud.ingest import handle
from nightlink.cloud.reports.settings import patient_settings
from nightlink.shared import topics
from nightlink.tools.bench.report import DEVICE
from tests.support.cloud import two_tenants


@pytest.fixture
def store(cloud_db_url):
    s = two_tenants(cloud_db_url, [(DEVICE, "fam-1", "edge")])
    yield s
    s.close()


def _report_zone(store, name: str) -> None:
    handle(store, topics.status_topic("fam-1", DEVICE), json.dumps({"timezone": name}).encode())


def test_a_zone_database_file_reported_as_a_zone_is_not_used(store):
    """"localtime" opens as a zone on any machine: it would be the server's own zone, not the
    patient's. As if no zone were reported: UTC, and said."""
    for name in ("localtime", "right/Europe/Berlin"):
        _report_zone(store, name)
        ps = patient_settings(store.tenant("fam-1"))
        assert (ps.tz.key, ps.tz_source) == ("UTC", "default")
