"""The Nightlink tenant API: epoch rows with cursor pages, CSV, nights, glucose, alerts."""

import base64
import csv
import io
import json

import pytest

from nightlink.shared import codec, features
from nightlink.shared.epoch import iso_epoch

BASE = "/api/nl/v1/tenants"
DEV_A, DEV_B = "a4cf12b0c3d4", "0a0b0c0d0e0f"
E0 = 59_000_000  # an epoch index (2026-02-06)


def _room(i):
    # Every fifth epoch has no CO2 reading: it must come back as None, never imputed.
    return codec.quantize_row(features.ROOM, (20.0 + i * 0.01, 40.0 + (i % 10) * 0.5, float(i % 300),
                                       None if i % 5 == 0 else 400.0 + i, 30.5))


def _put_room_rows(store, n=250):
    """n rows from device A and n from device B (two boots), on overlapping epochs."""
    data = store.tenant("fam-1")
    recs = [
        codec.Record(features.ROOM, codec.device_id(DEV_A), 1, 1, E0, [_room(i) for i in range(n)]),
        codec.Record(features.ROOM, codec.device_id(DEV_B), 3, 10, E0 + 7,
                     [_room(i) for i in range(n // 2)]),
        codec.Record(features.ROOM, codec.device_id(DEV_B), 4, 1, E0 + 7 + n // 2,
                     [_room(i) for i in range(n - n // 2)]),
    ]
    assert data.put_rows(recs) == 2 * n
    # Another tenant's rows in the same range must never show up.
    store.tenant("fam-2").put_rows([codec.Record(features.ROOM, codec.device_id("ffffffffffff"), 1, 1,
                                                 E0, [_room(i) for i in range(20)])])


def _cursor(value) -> str:
    raw = value if isinstance(value, str) else json.dumps(value)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _range(n=250):
    return {"stream": "room", "start": iso_epoch(E0), "end": iso_epoch(E0 + n + 10)}


def test_epochs__cursor_pages_cover_every_row_once_in_order(cloud_any):
    c = cloud_any
    c.user("p@x.org", tenant="fam-1", role="patient")
    _put_room_rows(c.store)
    seen, cursor, pages = [], None, 0
    while True:
        params = {**_range(), "limit": 37, **({"cursor": cursor} if cursor else {})}
        r = c.client.get(f"{BASE}/fam-1/epochs", params=params, headers=c.auth("p@x.org"))
        assert r.status_code == 200, r.text
        body = r.json()
        pages += 1
        assert len(body["rows"]) <= 37
        seen += body["rows"]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    keys = [(r["epoch"], r["device"], r["boot"], r["seq"]) for r in seen]
    assert len(keys) == 500 and len(set(keys)) == 500
    assert keys == sorted(keys)
    assert pages == -(-500 // 37)
    assert {r["device"] for r in seen} == {DEV_A, DEV_B}
    first = seen[0]
    assert first == {"epoch": E0, "time": iso_epoch(E0), "device": DEV_A, "boot": 1, "seq": 1,
                     "flags": 0, "temp_c": 20.0, "humidity_pct": 40.0, "light_lux": 0,
                     "co2_ppm": None, "noise_dba": 30.5}
    assert seen[1]["co2_ppm"] == 401 and seen[1]["temp_c"] == 20.01
    assert body["features"][0] == {"name": "temp_c", "unit": "degC"}


def test_epochs__last_page_exactly_full_has_no_cursor(cloud):
    cloud.user("p@x.org", tenant="fam-1", role="patient")
    _put_room_rows(cloud.store, n=10)
    r = cloud.client.get(f"{BASE}/fam-1/epochs", params={**_range(10), "limit": 20},
                         headers=cloud.auth("p@x.org"))
    assert len(r.json()["rows"]) == 20 and r.json()["next_cursor"] is None


def test_epochs__epoch_index_bounds_are_half_open(cloud):
    cloud.user("p@x.org", tenant="fam-1", role="caregiver")
    _put_room_rows(cloud.store, n=10)
    r = cloud.client.get(f"{BASE}/fam-1/epochs", headers=cloud.auth("p@x.org"),
                         params={"stream": "room", "start": str(E0 + 2), "end": str(E0 + 4)})
    assert [(x["epoch"], x["device"]) for x in r.json()["rows"]] == [(E0 + 2, DEV_A),
                                                                     (E0 + 3, DEV_A)]


def test_epochs_csv__equals_json_rows(cloud):
    cloud.user("p@x.org", tenant="fam-1", role="patient")
    _put_room_rows(cloud.store, n=120)
    h = cloud.auth("p@x.org")
    rows = cloud.client.get(f"{BASE}/fam-1/epochs", params={**_range(120), "limit": 5000},
                            headers=h).json()["rows"]
    r = cloud.client.get(f"{BASE}/fam-1/epochs.csv", params=_range(120), headers=h)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    table = list(csv.DictReader(io.StringIO(r.text)))
    assert list(table[0]) == ["epoch", "time", "device", "boot", "seq", "flags",
                              *features.names(features.ROOM)]
    assert len(table) == len(rows) == 240

    def as_text(v):
        return "" if v is None else str(v)

    assert table == [{k: as_text(v) for k, v in row.items()} for row in rows]


def test_epochs_csv__pages_through_more_than_one_page(cloud, monkeypatch):
    from nightlink.cloud.routes import data as routes_data

    monkeypatch.setattr(routes_data, "CSV_PAGE", 7)
    cloud.user("p@x.org", tenant="fam-1", role="patient")
    _put_room_rows(cloud.store, n=20)
    r = cloud.client.get(f"{BASE}/fam-1/epochs.csv", params=_range(20),
                         headers=cloud.auth("p@x.org"))
    lines = r.text.strip().split("\n")
    assert len(lines) == 41 and len(set(lines)) == 41


@pytest.mark.parametrize("params, words", [
    ({"stream": "sleep"}, "not a stream"),
    ({"start": "yesterday"}, "neither an ISO 8601 time"),
    ({"start": "1770000000"}, "too large for an epoch index"),
    ({"end": iso_epoch(E0 - 10)}, "end must be after start"),
    ({"end": "2026-04-01T00:00:00Z"}, "at most 31 days"),
    ({"cursor": "not-a-cursor"}, "cursor is not valid"),
    # found by fuzzing: each was a 500
    ({"start": "9" * 4400}, "too large for an epoch index"),
    ({"start": "\u0663" * 5}, "neither an ISO 8601 time"),  # digits to \\d, not to the API
    ({"cursor": _cursor([10**26, "x", 1, 1])}, "cursor is not valid"),
    ({"cursor": _cursor("[" * 3000)}, "cursor is not valid"),
    ({"cursor": _cursor('[1,"x\\ud800",1,1]')}, "cursor is not valid"),
    ({"cursor": _cursor([True, "x", 1, 1])}, "cursor is not valid"),
    ({"start": "0001-01-01T00:00:00+23:59"}, "is before 1970"),  # was answered as year 0
])
def test_epochs__bad_query_is_422_with_a_sentence(cloud, params, words):
    cloud.user("p@x.org", tenant="fam-1", role="patient")
    q = {**_range(), **params}
    for path in ("epochs", "epochs.csv"):
        if "cursor" in params and path == "epochs.csv":
            continue
        r = cloud.client.get(f"{BASE}/fam-1/{path}", params=q, headers=cloud.auth("p@x.org"))
        assert r.status_code == 422, r.text
        assert words in r.json()["detail"]


def test_epochs__range_is_required(cloud):
    cloud.user("p@x.org", tenant="fam-1", role="patient")
    r = cloud.client.get(f"{BASE}/fam-1/epochs", params={"stream": "room"},
                         headers=cloud.auth("p@x.org"))
    assert r.status_code == 422


@pytest.mark.parametrize("who, status", [(None, 401), ("other@x.org", 404)])
def test_epochs__needs_a_member(cloud, who, status):
    cloud.user("other@x.org", tenant="fam-2", role="patient")
    headers = cloud.auth(who) if who else {}
    r = cloud.client.get(f"{BASE}/fam-1/epochs", params=_range(), headers=headers)
    assert r.status_code == status


def test_epochs__offset_time_and_naive_time_are_understood(cloud):
    cloud.user("p@x.org", tenant="fam-1", role="patient")
    _put_room_rows(cloud.store, n=10)
    start = iso_epoch(E0)  # 2026-02-06T…Z
    naive = start.rstrip("Z")
    r = cloud.client.get(f"{BASE}/fam-1/epochs", headers=cloud.auth("p@x.org"),
                         params={"stream": "room", "start": naive, "end": str(E0 + 1)})
    assert [x["epoch"] for x in r.json()["rows"]] == [E0]


def test_nights__list_one_and_missing(cloud):
    cloud.user("p@x.org", tenant="fam-1", role="doctor")
    data = cloud.store.tenant("fam-1")
    data.put_night("2026-02-05", {"tst_min": 401, "ahi": 3.2})
    data.put_night("2026-02-06", {"tst_min": 420})
    h = cloud.auth("p@x.org")
    listed = cloud.client.get(f"{BASE}/fam-1/nights", headers=h).json()["edge"]
    assert [n["night"] for n in listed] == ["2026-02-06", "2026-02-05"]
    got = cloud.client.get(f"{BASE}/fam-1/nights/2026-02-05", headers=h).json()
    assert got["night"] == "2026-02-05" and got["edge"] == {"tst_min": 401, "ahi": 3.2}
    assert got["has_data"] is False  # the cloud holds no rows or readings for it
    r = cloud.client.get(f"{BASE}/fam-1/nights/2026-01-01", headers=h)
    assert r.status_code == 404 and "2026-01-01" in r.json()["detail"]
    assert cloud.client.get(f"{BASE}/fam-1/nights/2026-02-30", headers=h).status_code == 422
    r = cloud.client.get(f"{BASE}/fam-1/nights/last-tuesday", headers=h)
    assert r.status_code == 422


def test_glucose__range_oldest_first_without_sensor_errors(cloud):
    cloud.user("p@x.org", tenant="fam-1", role="caregiver")
    t0 = 1_770_000_000_000
    docs = [{"type": "sgv", "date": t0 + i * 300_000, "sgv": 100 + i, "direction": "Flat"}
            for i in range(10)]
    docs[3]["sgv"] = 5  # a sensor error code
    docs.append({"type": "mbg", "date": t0 + 1000, "mbg": 110})
    cloud.store.tenant("fam-1").add_entries(docs)
    r = cloud.client.get(f"{BASE}/fam-1/glucose", headers=cloud.auth("p@x.org"),
                         params={"start": "2026-02-02T02:40:00Z", "end": "2026-02-02T03:25:00Z"})
    assert r.status_code == 200, r.text
    got = r.json()["entries"]
    assert got[0] == {"date": t0, "sgv": 100, "direction": "Flat"}
    assert [g["sgv"] for g in got] == [100, 101, 102, 104, 105, 106, 107, 108]  # end excluded


def test_alerts__list_unacked_and_ack(cloud):
    cloud.user("care@x.org", tenant="fam-1", role="caregiver")
    cloud.user("doc@x.org", tenant="fam-1", role="doctor")
    data = cloud.store.tenant("fam-1")
    a1 = data.add_alert("low", "warning", 1000, "Low: 65 mg/dL (below 70).", value=65)
    a2 = data.add_alert("high", "warning", 2000, "High: 260 mg/dL (above 250).", value=260)
    h = cloud.auth("care@x.org")
    listed = cloud.client.get(f"{BASE}/fam-1/alerts", headers=h).json()["alerts"]
    assert [a["id"] for a in listed] == [a2, a1]
    assert listed[1]["detail"] == {"value": 65} and listed[1]["at"] == "1970-01-01T00:00:01Z"
    assert cloud.client.post(f"{BASE}/fam-1/alerts/{a1}/ack",
                             headers=cloud.auth("doc@x.org")).status_code == 403
    r = cloud.client.post(f"{BASE}/fam-1/alerts/{a1}/ack", headers=h)
    assert r.status_code == 200 and r.json()["acked_at"] is not None
    again = cloud.client.post(f"{BASE}/fam-1/alerts/{a1}/ack", headers=h)
    assert again.json()["acked_at"] == r.json()["acked_at"]
    unacked = cloud.client.get(f"{BASE}/fam-1/alerts", params={"unacked": "true"},
                               headers=h).json()["alerts"]
    assert [a["id"] for a in unacked] == [a2]
    assert cloud.client.post(f"{BASE}/fam-1/alerts/99999/ack", headers=h).status_code == 404


def test_alerts__ack_of_another_tenants_alert_is_404(cloud):
    cloud.user("care@x.org", tenant="fam-1", role="caregiver")
    other = cloud.store.tenant("fam-2").add_alert("low", "warning", 1, "Low.")
    r = cloud.client.post(f"{BASE}/fam-1/alerts/{other}/ack", headers=cloud.auth("care@x.org"))
    assert r.status_code == 404
    assert cloud.store.tenant("fam-2").alerts(unacked=True)[0]["id"] == other


def test_alert_settings__defaults_update_and_per_user(cloud):
    cloud.user("care@x.org", tenant="fam-1", role="caregiver")
    cloud.user("p@x.org", tenant="fam-1", role="patient")
    h = cloud.auth("care@x.org")
    got = cloud.client.get(f"{BASE}/fam-1/alert-settings", headers=h).json()
    assert set(got) == {"urgent_low", "low", "high", "rising_fast", "predicted_low",
                        "stale_data"}
    assert got["low"]["enabled"] is True and got["low"]["threshold"] == 70
    assert got["stale_data"]["unit"] == "min"
    r = cloud.client.put(f"{BASE}/fam-1/alert-settings", headers=h,
                         json={"low": {"enabled": True, "threshold": 80},
                               "high": {"enabled": False}})
    assert r.status_code == 200, r.text
    assert r.json()["low"]["threshold"] == 80 and r.json()["high"]["enabled"] is False
    assert r.json()["high"]["threshold"] == 250
    mine = cloud.client.get(f"{BASE}/fam-1/alert-settings", headers=h).json()
    assert mine["low"]["threshold"] == 80
    theirs = cloud.client.get(f"{BASE}/fam-1/alert-settings",
                              headers=cloud.auth("p@x.org")).json()
    assert theirs["low"]["threshold"] == 70 and theirs["high"]["enabled"] is True


@pytest.mark.parametrize("body, words", [
    ({"snoring": {"enabled": True}}, "not an alert rule"),
    ({"low": {"threshold": 30}}, "between 55 and 100"),
])
def test_alert_settings__bad_rule_or_threshold_is_422(cloud, body, words):
    cloud.user("care@x.org", tenant="fam-1", role="caregiver")
    r = cloud.client.put(f"{BASE}/fam-1/alert-settings", headers=cloud.auth("care@x.org"),
                         json=body)
    assert r.status_code == 422 and words in r.json()["detail"]
    assert cloud.store.tenant("fam-1").alert_settings(1) == {}
