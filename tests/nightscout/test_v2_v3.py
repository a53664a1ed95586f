"""API v2 (properties, authorization) and API v3 semantics beyond what AndroidAPS exercises:
search operators and bounds, fields, read/update/patch/delete answers, history by header,
fallback deduplication against v1 documents, and subjects."""

from zoneinfo import ZoneInfoNotFoundError

import pytest

from nightlink.nightscout import times
from tests.support.nightscout import MIN, SECRET_SHA1, iso, now_ms

AUTH = {"api-secret": SECRET_SHA1}


def bearer(ns, token=None) -> dict:
    jwt = ns.client.get(f"{ns.root}/api/v2/authorization/request/"
                        f"{token or ns.admin_token}").json()["token"]
    return {"Authorization": f"Bearer {jwt}"}


# -- v3 ------------------------------------------------------------------------------------------


@pytest.fixture
def v3(ns):
    t = now_ms() - 60 * MIN
    ns.post("/api/v1/entries", headers=AUTH, json=[
        {"type": "sgv", "sgv": 100 + i, "date": t + i * 5 * MIN, "device": f"d{i % 2}"}
        for i in range(10)])
    return ns, bearer(ns), t


@pytest.mark.parametrize("query, expected", [
    ("sgv$gte=107&sort=date", [107, 108, 109]),
    ("sgv$lt=102&sort$desc=date", [101, 100]),
    ("sgv$in=100|105&sort=date", [100, 105]),
    ("sgv$nin=100|101|102|103|104|105|106&sort=sgv", None),  # sort by sgv: not supported
    ("device=d1&sgv$gt=105&sort=date", [107, 109]),
    ("device$re=^d0&sort=date&limit=2", [100, 102]),
    ("sort=date&limit=3&skip=2", [102, 103, 104]),
    ("sgv=%27104%27&sort=date", []),  # quoted: the text '104' is not the number 104
])
def test_v3__search(v3, query, expected):
    ns, h, _ = v3
    r = ns.get(f"/api/v3/entries?{query}", headers=h)
    if expected is None:
        assert r.status_code == 400 and r.json()["status"] == 400
        return
    assert r.status_code == 200 and [d["sgv"] for d in r.json()["result"]] == expected
    assert all("_id" not in d and d["identifier"] for d in r.json()["result"])


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "skip=-1", "limit=x",
                                   "sort=date&sort$desc=date", "sgv$foo=1", "sgv$re=("])
def test_v3__bad_search_parameters_400(v3, query):
    ns, h, _ = v3
    r = ns.get(f"/api/v3/entries?{query}", headers=h)
    assert r.status_code == 400 and isinstance(r.json()["message"], str)


def test_v3__fields_and_read_by_identifier(v3):
    ns, h, _ = v3
    [doc] = ns.get("/api/v3/entries?sort$desc=date&limit=1&fields=sgv,device",
                   headers=h).json()["result"]
    assert doc == {"sgv": 109, "device": "d1"}
    [full] = ns.get("/api/v3/entries?sort$desc=date&limit=1", headers=h).json()["result"]
    got = ns.get(f"/api/v3/entries/{full['identifier']}", headers=h)
    assert got.json()["result"]["sgv"] == 109
    last = got.headers["Last-Modified"]
    assert ns.get(f"/api/v3/entries/{full['identifier']}",
                  headers={**h, "If-Modified-Since": last}).status_code == 304
    assert ns.get("/api/v3/entries/nope", headers=h).status_code == 404
    assert ns.get("/api/v3/unicorns", headers=h).json() == {
        "status": 404, "message": "Bad operation or collection"}


def test_v3__put_replace_412_410_and_immutables(ns):
    h = bearer(ns)
    t = now_ms() - 10 * MIN
    r = ns.put("/api/v3/treatments/my-id-1", headers=h,
               json={"date": t, "eventType": "Note", "notes": "a", "app": "test"})
    assert r.status_code == 201 and r.json()["identifier"] == "my-id-1"
    r = ns.put("/api/v3/treatments/my-id-1", headers=h,
               json={"date": t, "eventType": "Note", "notes": "b", "app": "test"})
    assert r.status_code == 200 and r.json()["lastModified"] > 0
    assert ns.put("/api/v3/treatments/my-id-1", headers=h, json={
        "date": t + 1000, "eventType": "Note", "app": "test"}).json() == {
        "status": 400, "message": "Field date cannot be modified by the client"}
    assert ns.put("/api/v3/treatments/my-id-1", headers={
        **h, "If-Unmodified-Since": "Sat, 01 Jan 2000 00:00:00 GMT"}, json={
        "date": t, "eventType": "Note", "app": "test"}).status_code == 412
    assert ns.patch("/api/v3/treatments/my-id-1", headers=h, json={"notes": "c"}
                    ).status_code == 200
    assert ns.get("/api/v3/treatments/my-id-1", headers=h).json()["result"]["notes"] == "c"
    assert ns.delete("/api/v3/treatments/my-id-1", headers=h).status_code == 200
    assert ns.patch("/api/v3/treatments/my-id-1", headers=h, json={"notes": "d"}
                    ).status_code == 410
    assert ns.delete("/api/v3/treatments/my-id-1?permanent=true", headers=h).status_code == 200
    assert ns.get("/api/v3/treatments/my-id-1", headers=h).status_code == 404


def test_v3__create_dedups_onto_a_v1_document_and_reports_its_old_identifier(ns):
    t = now_ms() - 10 * MIN
    [v1] = ns.post("/api/v1/treatments", headers=AUTH,
                   json=[{"eventType": "Meal Bolus", "created_at": iso(t), "carbs": 10}]).json()
    r = ns.post("/api/v3/treatments", headers=bearer(ns),
                json={"date": t, "eventType": "Meal Bolus", "carbs": 12, "app": "AAPS"})
    body = r.json()
    assert r.status_code == 200 and body["isDeduplication"] is True
    assert body["deduplicatedIdentifier"] == v1["_id"] and body["identifier"] != v1["_id"]
    assert ns.count("treatments") == 1
    [again] = ns.get("/api/v1/treatments", headers=AUTH).json()
    assert again["_id"] == v1["_id"] and again["carbs"] == 12


def test_v3__history_by_header_and_permissions(ns):
    h = bearer(ns)
    ns.post("/api/v1/devicestatus", headers=AUTH, json={"device": "x", "uploader": {}})
    r = ns.get("/api/v3/devicestatus/history", headers={
        **h, "Last-Modified": "Sat, 01 Jan 2000 00:00:00 GMT"})
    assert r.status_code == 200 and len(r.json()["result"]) == 1
    assert ns.get("/api/v3/devicestatus/history", headers=h).status_code == 400
    reader = bearer(ns, ns.read_token)
    r = ns.post("/api/v3/treatments", headers=reader, json={"date": now_ms(), "app": "x"})
    assert r.status_code == 403 and r.json()["message"] == "Missing permission " \
        "api:treatments:create"
    assert ns.get("/api/v3/settings", headers=reader).status_code == 403  # needs admin
    assert ns.get("/api/v3/entries", headers={"Authorization": "Bearer nonsense"}
                  ).status_code == 401
    assert ns.get("/api/v3/entries", params={"token": ns.read_token}).status_code == 401
    assert ns.post("/api/v3/treatments", headers=h, json={"app": "x"}).json()["message"] == \
        "Bad or missing date field"


# -- v2 -------------------------------------------------------------------------------------------


def test_v2__subjects_made_with_the_api_secret(ns):
    r = ns.post("/api/v2/authorization/subjects", headers=AUTH,
                json={"name": "nightscout-connect-reader", "roles": ["readable"],
                      "notes": "bridge"})
    assert r.status_code == 200
    token = r.json()["accessToken"]
    names = [s["name"] for s in ns.get("/api/v2/authorization/subjects", headers=AUTH).json()]
    assert "nightscout-connect-reader" in names
    assert ns.get("/api/v1/entries.json", params={"token": token}).status_code == 200
    assert ns.get("/api/v2/authorization/subjects",
                  params={"token": token}).status_code == 401
    assert ns.delete(f"/api/v2/authorization/subjects/{r.json()['_id']}",
                     headers=AUTH).status_code == 200
    assert ns.get("/api/v1/entries.json", params={"token": token}).status_code == 401
    assert ns.post("/api/v2/authorization/subjects", headers=AUTH,
                   json={"name": "x", "roles": ["root"]}).status_code == 400
    roles = ns.get("/api/v2/authorization/roles", headers=AUTH).json()
    assert {"name": "readable", "permissions": ["*:*:read"]} in roles


def test_v2__iob_cob_loop_from_device_status_win_over_treatments(ns):
    t = now_ms()
    ns.post("/api/v1/treatments", headers=AUTH,
            json=[{"eventType": "Correction Bolus", "insulin": 1, "created_at": iso(t - MIN)}])
    ns.post("/api/v1/profile", headers=AUTH, json={
        "defaultProfile": "D", "startDate": iso(t - 86_400_000), "store": {"D": {
            "dia": 3, "sens": [{"time": "00:00", "value": 50}], "carbs_hr": 30,
            "carbratio": [{"time": "00:00", "value": 10}]}}})
    p = ns.get("/api/v2/properties/iob", headers=AUTH).json()["iob"]
    assert p["source"] == "Care Portal" and 0.99 < p["iob"] <= 1
    ns.post("/api/v1/devicestatus", headers=AUTH, json={
        "device": "loop://iPhone", "created_at": iso(t - MIN), "loop": {
            "timestamp": iso(t - MIN), "iob": {"iob": 2.345, "timestamp": iso(t - MIN)},
            "cob": {"cob": 17.2}, "predicted": {"values": [120, 110]},
            "enacted": {"rate": 0.5, "duration": 30, "received": True,
                        "timestamp": iso(t - MIN)}}})
    p = ns.get("/api/v2/properties/iob,cob,loop", headers=AUTH).json()
    assert (p["iob"]["source"], p["iob"]["iob"], p["iob"]["display"]) == ("Loop", 2.345,
                                                                           "2.35")
    assert p["iob"]["treatmentIob"] > 0.99
    assert (p["cob"]["cob"], p["cob"]["display"], p["cob"]["source"]) == (17.2, 17.2, "Loop")
    assert p["loop"]["display"] == {"symbol": "⌁", "code": "enacted", "label": "Enacted"}
    assert p["loop"]["lastPredicted"]["values"] == [120, 110]


def test_v2__properties_ages_pump_and_mmol(ns):
    t = now_ms()
    ns.post("/api/v1/treatments", headers=AUTH, json=[
        {"eventType": "Site Change", "created_at": iso(t - 50 * 3600 * 1000)},
        {"eventType": "Sensor Start", "created_at": iso(t - 3 * 24 * 3600 * 1000)}])
    ns.post("/api/v1/devicestatus", headers=AUTH, json={
        "device": "openaps://pi", "pump": {"clock": iso(t - 2 * MIN), "reservoir": 112.4,
                                           "battery": {"percent": 64},
                                           "status": {"status": "normal"}}})
    p = ns.get("/api/v2/properties/cage,sage,pump", headers=AUTH).json()
    assert p["cage"]["display"] == "50h" and p["cage"]["level"] == 1
    assert p["sage"]["Sensor Start"]["found"] and p["sage"]["min"] == "Sensor Start"
    assert p["pump"]["data"]["reservoir"]["display"] == "112U"
    assert p["pump"]["data"]["battery"]["display"] == "64%"
    assert p["pump"]["data"]["clock"]["display"] == "2m ago"


def test_v3__a_device_status_dated_before_2000_is_refused_and_api_v1_stamps_it(ns):
    """API v3 keys a document on its date: a status dated 1970 (seconds read as ms, or a
    clock never set) is refused as an entry's or a treatment's is, so a retry cannot store
    it twice under two arrival times. API v1, as Nightscout, stamps it on arrival (oref0's
    snooze sends `date` in seconds)."""
    h = bearer(ns)
    doc = {"date": 5000, "device": "openaps://rig", "app": "oref0"}
    for _ in range(2):
        r = ns.post("/api/v3/devicestatus", headers=h, json=doc)
        assert r.status_code == 400 and "before the year 2000" in r.json()["message"]
    r = ns.post("/api/v1/devicestatus.json", headers=AUTH,
                json={"date": int(now_ms() / 1000), "device": "openaps://rig",
                      "snooze": "carbsReq"})
    assert r.status_code == 200
    stored = r.json()[0] if isinstance(r.json(), list) else r.json()
    assert abs(times.parse(stored["created_at"])[0] - now_ms()) < 60_000


@pytest.mark.parametrize("name, key", [("ETC/GMT+8", "Etc/GMT+8"), ("europe/berlin",
                                                                      "Europe/Berlin"),
                                        ("UTC", "UTC"), ("America/New_York", "America/New_York")])
def test_zone_named__any_case_as_moment_timezone(name, key):
    assert times.zone_named(name).key == key


@pytest.mark.parametrize("name", ["localtime", "LOCALTIME", "right/UTC", "posixrules",
                                  "Europe", "Mars/Olympus", "../etc/passwd", "", None])
def test_zone_named__not_a_zone_a_client_could_mean(name):
    """The server's own zone, a folder, leap-second copies and paths are no profile's zone."""
    with pytest.raises(ZoneInfoNotFoundError):
        times.zone_named(name)
