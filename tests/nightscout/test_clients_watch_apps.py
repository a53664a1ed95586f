"""nightguard, Spike and GlucoDataHandler against the cloud and the edge. Both append to the URL the user
entered (so the cloud tenant's /t/{tenant} URL works).

nightguard (nightscout/nightguard, nightguard/external/NightscoutService.swift): only
`?token=` on every request, writes included; login check is status.json's `settings.units`;
v2 properties for bgnow, delta, iob (display text), cob (display number), upbat; entries with
`find[date][$gt]` as a float such as `1714521600000.0`; treatments by `find[eventType]` and a
date-only `find[created_at][$gte]`; POSTs carry a junk `now=(Function)` parameter; carb
corrections need a numeric `mills`.

Spike (SpikeApp/Spike, src/services/NightscoutService.as): never looks at the status code, only
at the body: the credential check PUTs a Note with a 24-hex `_id` and needs `"ok":1` back;
uploads must echo the device name; dates end in `+0000`; the follower asks
`find[dateString][$gte]=<epoch ms>`; treatments `find[eventType][$nin][0]=Temp Basal`.
"""

import json
from urllib.parse import quote

from tests.support.nightscout import MIN, SECRET_SHA1, iso, now_ms


def spike_time(ms: int) -> str:
    from datetime import UTC, datetime

    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}+0000"


# -- nightguard ---------------------------------------------------------------------------------


def test_nightguard__login_status_and_current_values(ns):
    tok = {"token": ns.read_token}
    st = ns.get("/api/v1/status.json", params=tok).json()
    assert "mg" in st["settings"]["units"].lower()
    t = now_ms() - 12 * MIN
    ns.post("/api/v1/entries", headers={"api-secret": SECRET_SHA1}, json=[
        {"type": "sgv", "sgv": 120 + 4 * i, "date": t + i * 5 * MIN, "direction": "FortyFiveUp"}
        for i in range(3)])
    ns.post("/api/v1/devicestatus", headers={"api-secret": SECRET_SHA1},
            json={"device": "phone", "uploader": {"battery": 90}})
    p = ns.get("/api/v2/properties", params=tok).json()
    assert p["bgnow"]["last"] == 128 and isinstance(p["bgnow"]["mills"], int)
    assert p["bgnow"]["sgvs"][0]["direction"] == "FortyFiveUp"
    assert p["delta"]["mgdl"] == 4 and p["delta"]["display"] == "+4"
    assert p["upbat"]["display"] == "90%"
    assert isinstance(p["iob"], dict) and isinstance(p["cob"], dict)


def test_nightguard__chart_entries_with_float_ms(ns):
    t = now_ms() - 60 * MIN
    ns.post("/api/v1/entries", headers={"api-secret": SECRET_SHA1}, json=[
        {"type": "sgv", "sgv": 100 + i, "date": t + i * 5 * MIN, "direction": "Flat"}
        for i in range(12)])
    r = ns.get(f"/api/v1/entries.json?find[date][$gt]={t + 20 * MIN}.0"
               f"&find[date][$lte]={t + 40 * MIN}.0&count=1440&token={ns.read_token}")
    assert [e["sgv"] for e in r.json()] == [108, 107, 106, 105]


def test_nightguard__writes_with_a_token_and_a_junk_parameter(ns):
    tok = ns.careportal_token
    for body in ({"eventType": "Temporary Target", "duration": 60, "reason": "Too Low",
                  "targetBottom": 80, "targetTop": 80, "units": "mg/dl",
                  "enteredBy": "nightguard"},
                 {"eventType": "Carb Correction", "carbs": 15, "duration": 0,
                  "enteredBy": "nightguard"},
                 {"eventType": "Site Change", "enteredBy": "nightguard",
                  "created_at": "2026-01-01T12:00:00Z", "mills": 1767268800000, "notes": "",
                  "carbs": None, "insulin": None}):
        r = ns.post(f"/api/v1/treatments?now=(Function)&token={tok}", content=json.dumps(body),
                    headers={"Content-Type": "application/json", "Accept": "application/json"})
        assert r.status_code == 200, r.text
    day = "2025-12-31"
    [site] = ns.get(f"/api/v1/treatments?find[eventType]=Site%20Change&find[created_at][$gte]="
                    f"{day}&count=1&token={tok}").json()
    assert site["created_at"] == "2026-01-01T12:00:00.000Z"
    [tt] = ns.get(f"/api/v1/treatments?find[eventType]=Temporary%20Target&find[created_at]"
                  f"[$gte]={day}&count=1&token={tok}").json()
    assert (tt["targetTop"], tt["duration"]) == (80, 60)
    carbs = [d for d in ns.get(f"/api/v1/treatments.json?token={tok}").json()
             if d["eventType"] == "Carb Correction"]
    assert carbs[0]["carbs"] == 15 and isinstance(carbs[0]["mills"], int)
    # a hand-built body that is not JSON is refused with a sentence
    bad = ns.post(f"/api/v1/treatments?token={tok}", content=b'{"reason": "Too "Low""}',
                  headers={"Content-Type": "application/json"})
    assert bad.status_code == 400


# -- Spike --------------------------------------------------------------------------------------


def test_spike__credential_check_put_then_delete(ns):
    h = {"api-secret": SECRET_SHA1, "Content-Type": "application/json", "pragma": "no-cache"}
    oid = "1714564800123abcdef01234"
    r = ns.put("/api/v1/treatments", headers=h, content=json.dumps(
        {"_id": oid, "eventType": "Note", "duration": 30, "notes": "Spike Authentication Test"}))
    body = r.json()
    assert body["ok"] == 1 and "Error" not in r.text
    r = ns.delete(f"/api/v1/treatments/{oid}", headers=h)
    assert "Error" not in r.text and ns.count("treatments") == 0
    wrong = ns.put("/api/v1/treatments", headers={**h, "api-secret": "0" * 40},
                   content=json.dumps({"_id": oid, "eventType": "Note"}))
    assert "status" in wrong.json() and '"ok"' not in wrong.text


def test_spike__uploads_echo_the_device_and_follow_by_epoch_ms(ns):
    h = {"api-secret": SECRET_SHA1, "Content-Type": "application/json"}
    t = now_ms() - 20 * MIN
    readings = [{"_id": f"{t + i:013d}{'a' * 11}", "device": "G6 8XXXXX", "date": t + i * 5 * MIN,
                 "dateString": spike_time(t + i * 5 * MIN), "sgv": 120 + i, "direction": "Flat",
                 "type": "sgv", "filtered": 120000, "unfiltered": 118000, "rssi": 100,
                 "noise": 1, "sysTime": spike_time(t + i * 5 * MIN)} for i in range(4)]
    r = ns.post("/api/v1/entries", headers=h, content=json.dumps(readings))
    assert "G6 8XXXXX" in r.text
    r = ns.post("/api/v1/devicestatus.json", headers=h, content=json.dumps(
        {"device": "Spike iPhone", "uploader": {"name": "Spike iPhone", "battery": 88}}))
    assert "uploader" in r.text
    since = t + 5 * MIN + 1
    got = ns.get(f"/api/v1/entries/sgv.json?find%5BdateString%5D%5B%24gte%5D={since}&count=10",
                 headers=h).json()
    assert [e["sgv"] for e in got] == [123, 122]


def test_spike__treatments_query_and_profile(ns):
    h = {"api-secret": SECRET_SHA1, "Content-Type": "application/json"}
    t = now_ms() - 60 * MIN
    for body in ({"_id": "1714564800000aaaaaaaaaaa", "eventType": "Meal Bolus", "insulin": 3,
                  "carbs": 40, "carbDelayTime": 20, "created_at": spike_time(t),
                  "enteredBy": "Spike", "notes": ""},
                 {"_id": "1714564800001aaaaaaaaaaa", "eventType": "Temp Basal", "duration": 30,
                  "absolute": 0.5, "created_at": spike_time(t + MIN), "enteredBy": "Spike",
                  "notes": ""}):
        assert "ok" in ns.put("/api/v1/treatments", headers=h, content=json.dumps(body)).text
    since = quote(spike_time(t - 24 * 60 * MIN))
    got = ns.get(f"/api/v1/treatments.json?find%5Bcreated_at%5D%5B%24gte%5D={since}"
                 f"&find%5BeventType%5D%5B%24nin%5D%5B0%5D=Temp%20Basal", headers=h).json()
    assert [d["eventType"] for d in got] == ["Meal Bolus"]
    basals = ns.get(f"/api/v1/treatments.json?find%5Bcreated_at%5D%5B%24gte%5D={since}"
                    f"&find%5BeventType%5D%5B%24in%5D%5B0%5D=Temp%20Basal", headers=h).json()
    assert [d["absolute"] for d in basals] == [0.5]
    ns.post("/api/v1/profile.json", headers=h, json={
        "defaultProfile": "Default", "startDate": spike_time(t), "units": "mg/dl",
        "store": {"Default": {"dia": 4, "carbs_hr": 30, "timezone": "UTC",
                              "basal": [{"time": "00:00", "value": 0.9}]}}})
    profiles = ns.get("/api/v1/profile.json", headers=h)
    assert "defaultProfile" in profiles.text and profiles.json()[0]["store"]["Default"]["dia"] == 4
    props = ns.get("/api/v2/properties", headers=h)
    assert "bgnow" in props.text and "basal" in props.json()


# -- GlucoDataHandler ---------------------------------------------------------------------------


def test_glucodatahandler__pebble_with_insulin_and_carbs_on_board(ns):
    """GlucoDataHandler (pachi81/GlucoDataHandler, NightscoutSourceTask.kt) polls `/pebble`
    with the SHA-1 api-secret header and reads bgs[0] sgv, datetime, trend, direction, and iob
    and cob (parsePebbleIobCob; on by default): Nightscout's iob and cob plugins' display."""
    t = now_ms() - 11 * MIN
    h = {"api-secret": SECRET_SHA1}
    ns.post("/api/v1/entries", headers=h, json=[
        {"type": "sgv", "sgv": 150 - 4 * i, "date": t + i * 5 * MIN, "direction": "FortyFiveDown"}
        for i in range(3)])
    ns.post("/api/v1/treatments", headers=h, json={
        "eventType": "Meal Bolus", "insulin": 3, "carbs": 40,
        "created_at": iso(now_ms() - 30 * MIN)})
    ns.post("/api/v1/profile", headers=h, json={  # carbs on board need the absorption rate
        "defaultProfile": "Default", "startDate": iso(now_ms() - 24 * 60 * MIN), "store": {
            "Default": {"dia": 4, "carbs_hr": 30, "sens": [{"time": "00:00", "value": 40}],
                        "carbratio": [{"time": "00:00", "value": 10}], "timezone": "UTC",
                        "basal": [{"time": "00:00", "value": 0.8}]}}})
    first = ns.get("/pebble", headers=h).json()["bgs"][0]
    props = ns.get("/api/v2/properties/iob,cob", headers=h).json()
    assert first["sgv"] == "142" and first["direction"] == "FortyFiveDown"
    assert first["iob"] == props["iob"]["display"] and 0 < float(first["iob"]) < 3
    assert first["cob"] == props["cob"]["display"] and 0 < first["cob"] <= 40
    assert ns.get("/pebble", params={"token": ns.read_token}).json()["bgs"][0]["iob"] == \
        first["iob"]


def test_menu_bar__properties_readings_carry_their_id(ns):
    """gabe565/nightscout-menu-bar decodes `bgnow.sgvs[]._id` and `buckets[].sgvs[]._id` as
    the entry's id (as Nightscout gives it), not null; so do `delta.previous.sgvs[]`."""
    t = now_ms() - 7 * MIN
    ns.post("/api/v1/entries", headers={"api-secret": SECRET_SHA1}, json=[
        {"type": "sgv", "sgv": 110 + i, "date": t + i * 5 * MIN, "direction": "Flat"}
        for i in range(2)])
    ids = {e["date"]: e["_id"] for e in ns.get("/api/v1/entries.json?count=2",
                                                  headers={"api-secret": SECRET_SHA1}).json()}
    p = ns.get("/api/v2/properties/bgnow,buckets,delta", params={"token": ns.read_token}).json()
    assert p["bgnow"]["sgvs"][0]["_id"] == ids[t + 5 * MIN]
    assert p["delta"]["previous"]["sgvs"][0]["_id"] == ids[t]
    assert p["buckets"][1]["sgvs"][0]["_id"] == ids[t]
