"""Loop (LoopKit's NightscoutKit and NightscoutService) and Trio against the cloud and the edge.

Both send every data call to the host root, replacing the URL's path: on the cloud the
credential names the tenant there.

Loop (NightscoutKit, Sources/NightscoutKit/NightscoutClient.swift): `api-secret` on every
call with `Content-Type` and `Accept: application/json`; login check `GET
/api/v1/experiments/test`; any status but 200 is an error; POSTs are arrays and the reply must
hold as many objects in the same order (`_id`s are mapped back by position); carbs updated by
PUT with that `_id`; overrides posted with an uppercase UUID `_id` and deleted by it; profiles
with `mills` as text; `GET /api/v1/profile/current` must be one object; remote commands to
`/api/v2/notifications/loop` with every value as text.

Trio (Trio/Sources/Services/Network/Nightscout/NightscoutAPI.swift): the connection check POSTs
one Note without created_at to the URL the user entered (path kept); carbs fetched with
`find[carbs][$exists]=true` and `$and`/`$ne` on enteredBy, temp targets with
`find[eventType]=Temporary+Target` (a literal +); deletes by `find[id][$eq]`, `$or` on entries
and `find[created_at][$eq]`; device status and profile as single objects without created_at;
its decoders need `created_at` and a numeric `mills` on profiles, `store.default`, and
directions from the Nightscout list.
"""

import uuid
from datetime import datetime, timedelta, timezone

from tests.support.nightscout import MIN, SECRET_SHA1, iso, iso_s, now_ms

ON_POSTGRES = True  # these flows also run against the cloud on PostgreSQL

LOOP = {"api-secret": SECRET_SHA1, "Content-Type": "application/json",
        "Accept": "application/json"}
TRIO = {"api-secret": SECRET_SHA1, "Content-Type": "application/json"}
DIRECTIONS = {"TripleUp", "DoubleUp", "SingleUp", "FortyFiveUp", "Flat", "FortyFiveDown",
              "SingleDown", "DoubleDown", "TripleDown", "NONE", "NOT COMPUTABLE",
              "RATE OUT OF RANGE"}


def root(ns, path: str) -> str:
    return ns.root + path


# -- Loop ---------------------------------------------------------------------------------------


def test_loop__login_check(ns):
    r = ns.client.get(root(ns, "/api/v1/experiments/test"), headers=LOOP)
    assert r.status_code == 200
    wrong = {**LOOP, "api-secret": "da39a3ee5e6b4b0d3255bfef95601890afd80709"}  # sha1("")
    assert ns.client.get(root(ns, "/api/v1/experiments/test"), headers=wrong).status_code == 401


def test_loop__glucose_batch_resent_after_timeout_keeps_length_and_ids(ns):
    t = now_ms() - 20 * MIN
    batch = [{"date": t + i * 5 * MIN + 0.25, "dateString": iso_s(t + i * 5 * MIN),
              "device": "loop://iPhone", "type": "sgv", "sgv": 110 + i, "trend": 4,
              "direction": "Flat", "trendRate": 0.1, "isCalibration": False}
             for i in range(3)]
    batch[2]["direction"] = "NotComputable"  # Loop's CamelCase spelling
    first = ns.client.post(root(ns, "/api/v1/entries"), json=batch, headers=LOOP)
    assert first.status_code == 200 and len(first.json()) == 3
    again = ns.client.post(root(ns, "/api/v1/entries"), json=batch, headers=LOOP)
    assert again.status_code == 200
    assert [d["_id"] for d in again.json()] == [d["_id"] for d in first.json()]
    assert ns.count("entries") == 3
    got = ns.client.get(root(ns, "/api/v1/entries?count=3"), headers=LOOP).json()
    assert {e["direction"] for e in got} <= DIRECTIONS  # Trio reads what Loop wrote


def test_loop__carbs_posted_then_updated_by_put_then_deleted(ns):
    t = now_ms() - 30 * MIN
    carb = {"created_at": iso_s(t), "timestamp": iso_s(t), "enteredBy": "loop://iPhone",
            "eventType": "Carb Correction", "carbs": 20, "absorptionTime": 180,
            "syncIdentifier": str(uuid.uuid4()), "userEnteredAt": iso_s(t + 4000)}
    bolus = {"created_at": iso_s(t), "timestamp": iso_s(t), "enteredBy": "loop://iPhone",
             "eventType": "Correction Bolus", "type": "normal", "insulin": 2.5,
             "programmed": 2.5, "unabsorbed": 0, "duration": 0.0, "automatic": False,
             "insulinType": "Humalog", "syncIdentifier": str(uuid.uuid4())}
    r = ns.client.post(root(ns, "/api/v1/treatments"), json=[carb, bolus], headers=LOOP)
    assert r.status_code == 200
    ids = [d["_id"] for d in r.json()]
    assert len(ids) == 2 and all(isinstance(i, str) and len(i) == 24 for i in ids)
    upd = {**carb, "_id": ids[0], "carbs": 25}
    assert ns.client.put(root(ns, "/api/v1/treatments"), json=upd, headers=LOOP
                         ).status_code == 200
    got = ns.client.get(root(ns, "/api/v1/treatments?find[created_at][$gte]="
                             f"{iso_s(t - MIN)}&find[created_at][$lte]={iso_s(t + MIN)}"),
                        headers=LOOP).json()
    by_id = {d["_id"]: d for d in got}
    assert by_id[ids[0]]["carbs"] == 25 and by_id[ids[0]]["timestamp"] == iso_s(t)
    assert by_id[ids[0]]["syncIdentifier"] == carb["syncIdentifier"]
    assert by_id[ids[1]]["insulin"] == 2.5 and by_id[ids[1]]["type"] == "normal"
    r = ns.client.delete(root(ns, f"/api/v1/treatments/{ids[0]}"), headers=LOOP)
    assert r.status_code == 200 and isinstance(r.json(), dict)
    assert ns.count("treatments") == 1


def test_loop__two_remote_carb_entries_at_the_same_second_stay_two(ns):
    """cgm-remote-monitor issue 8185: created_at + eventType collapsed distinct entries."""
    t = now_ms() - 5 * MIN
    carbs = [{"created_at": iso_s(t), "timestamp": iso_s(t), "enteredBy": "loop://iPhone",
              "eventType": "Carb Correction", "carbs": g, "absorptionTime": 180,
              "syncIdentifier": str(uuid.uuid4())} for g in (10, 15)]
    r = ns.client.post(root(ns, "/api/v1/treatments"), json=carbs, headers=LOOP)
    assert len({d["_id"] for d in r.json()}) == 2 and ns.count("treatments") == 2


def test_loop__override_with_uuid_id_updated_by_repost_and_deleted_by_uuid(ns):
    """cgm-remote-monitor issue 8450: a non-ObjectId `_id` must work for update and delete."""
    t = now_ms() - 10 * MIN
    oid = str(uuid.uuid4()).upper()
    override = {"_id": oid, "created_at": iso_s(t), "timestamp": iso_s(t), "enteredBy": "Loop",
                "eventType": "Temporary Override", "reason": "🏃 Workout",
                "durationType": "indefinite", "insulinNeedsScaleFactor": 0.8,
                "correctionRange": [140, 160]}
    assert ns.client.post(root(ns, "/api/v1/treatments"), json=[override],
                          headers=LOOP).status_code == 200
    ended = {**override, "duration": 42.5}
    del ended["durationType"]
    r = ns.client.post(root(ns, "/api/v1/treatments"), json=[ended], headers=LOOP)
    assert r.status_code == 200 and ns.count("treatments") == 1
    [doc] = ns.client.get(root(ns, "/api/v1/treatments"), headers=LOOP).json()
    assert doc["duration"] == 42.5 and "durationType" not in doc and doc["identifier"] == oid
    r = ns.client.delete(root(ns, f"/api/v1/treatments/{oid}"), headers=LOOP)
    assert r.status_code == 200 and r.json()["deletedCount"] == 1
    assert ns.count("treatments") == 0


def test_loop__device_status_and_profile(ns):
    t = now_ms() - MIN
    status = {"device": "loop://iPhone", "created_at": iso_s(t),
              "pump": {"clock": iso_s(t), "pumpID": "1234", "manufacturer": "Insulet",
                       "model": "Dash", "battery": {"percent": 80}, "suspended": False,
                       "bolusing": False, "reservoir": 150.5, "secondsFromGMT": 3600},
              "uploader": {"name": "iPhone", "timestamp": iso_s(t), "battery": 75},
              "loop": {"name": "Loop", "version": "3.4", "timestamp": iso_s(t),
                       "iob": {"timestamp": iso_s(t), "iob": 1.5},
                       "cob": {"timestamp": iso_s(t), "cob": 20},
                       "predicted": {"startDate": iso_s(t), "values": [120, 118, 115]},
                       "enacted": {"rate": 0.5, "duration": 30, "timestamp": iso_s(t),
                                   "received": True}}}
    r = ns.client.post(root(ns, "/api/v1/devicestatus"), json=[status], headers=LOOP)
    assert r.status_code == 200 and len(r.json()) == 1 and r.json()[0]["_id"]
    profile = {"defaultProfile": "Default", "startDate": iso_s(t), "mills": str(t),
               "units": "mg/dL", "enteredBy": "Loop", "loopSettings": {
                   "dosingEnabled": True, "overridePresets": [], "deviceToken": "ab12",
                   "bundleIdentifier": "com.loopkit.Loop"},
               "store": {"Default": {"dia": 6, "carbs_hr": "0", "delay": "0",
                                     "timezone": "ETC/GMT-1", "units": "mg/dL",
                                     "basal": [{"time": "00:00", "value": 0.8,
                                                "timeAsSeconds": 0}]}}}
    r = ns.client.post(root(ns, "/api/v1/profile"), json=[profile], headers=LOOP)
    assert r.status_code == 200 and len(r.json()) == 1
    cur = ns.client.get(root(ns, "/api/v1/profile/current"), headers=LOOP).json()
    assert isinstance(cur, dict) and cur["_id"] and cur["loopSettings"]["dosingEnabled"]
    assert cur["mills"] == t  # a number, so Trio can read a Loop profile too
    found = ns.client.get(root(ns, f"/api/v1/profiles?find[startDate][$gte]={iso_s(t - MIN)}"
                               f"&find[startDate][$lte]={iso_s(t + MIN)}"), headers=LOOP).json()
    assert [p["_id"] for p in found] == [cur["_id"]]
    got = ns.client.get(root(ns, f"/api/v1/devicestatus?find[created_at][$gte]="
                             f"{iso_s(t - MIN)}&find[created_at][$lte]={iso_s(t + MIN)}"
                             "&count=10"), headers=LOOP).json()
    assert got[0]["loop"]["iob"]["iob"] == 1.5


def test_loop__profile_zone_in_capitals_is_the_schedules_zone(ns):
    """Loop uploads zones such as `ETC/GMT+8` (cgm-remote-monitor's profile functions carry a
    comment on working around it); Nightscout's moment-timezone looks names up without regard
    to case, the zone database on Linux does not. The basal in force is the local hour's."""
    t = now_ms() - MIN
    basal = [{"time": f"{h:02d}:00", "value": h + 1, "timeAsSeconds": h * 3600}
             for h in range(24)]
    profile = {"defaultProfile": "Default", "startDate": iso_s(t), "mills": str(t),
               "units": "mg/dL", "enteredBy": "Loop",
               "store": {"Default": {"dia": 6, "carbs_hr": "0", "delay": "0",
                                     "timezone": "ETC/GMT+8", "units": "mg/dL",
                                     "basal": basal}}}
    assert ns.client.post(root(ns, "/api/v1/profile"), json=[profile],
                          headers=LOOP).status_code == 200
    utc8 = timezone(timedelta(hours=-8))
    before = datetime.now(utc8).hour
    r = ns.client.get(root(ns, "/api/v2/properties/basal"), headers=LOOP)
    after = datetime.now(utc8).hour
    assert r.status_code == 200, r.text
    assert r.json()["basal"]["current"]["basal"] in (before + 1, after + 1), r.json()


def test_loop__remote_command_notification(ns):
    body = {"eventType": "Remote Carbs Entry", "remoteCarbs": "20.0", "remoteAbsorption": "3.0",
            "otp": "123456", "created_at": iso(now_ms())}
    r = ns.client.post(root(ns, "/api/v2/notifications/loop"), json=body, headers=LOOP)
    assert r.status_code == 200
    [doc] = ns.client.get(root(ns, "/api/v1/treatments"), headers=LOOP).json()
    assert doc["eventType"] == "Remote Carbs Entry" and doc["remoteCarbs"] == 20
    assert "otp" not in doc
    bad = ns.client.post(root(ns, "/api/v2/notifications/loop"), headers=LOOP,
                         json={"eventType": "Launch Rockets"})
    assert bad.status_code == 400


def test_loop__glucose_read_by_datestring_range(ns):
    t = (now_ms() - 30 * MIN) // 1000 * 1000  # Loop's bounds have whole seconds
    ns.post("/api/v1/entries", headers=LOOP,
            json=[{"type": "sgv", "sgv": 100 + i, "date": t + i * 5 * MIN} for i in range(6)])
    got = ns.client.get(root(ns, f"/api/v1/entries?find[dateString][$gte]={iso_s(t)}"
                             f"&find[dateString][$lte]={iso_s(t + 10 * MIN)}&count=100"),
                        headers=LOOP).json()
    assert [e["sgv"] for e in got] == [102, 101, 100]


# -- Trio ---------------------------------------------------------------------------------------


def test_trio__connection_check_keeps_the_path_then_data_at_the_root(ns):
    r = ns.client.post(ns.site_url + "/api/v1/treatments.json", headers=TRIO,
                       json={"eventType": "Note", "enteredBy": "Trio", "notes": "Trio connected"})
    assert 200 <= r.status_code < 300
    [note] = ns.client.get(root(ns, "/api/v1/treatments.json"), headers=TRIO).json()
    assert note["notes"] == "Trio connected" and note["created_at"].endswith("Z")


def test_trio__carbs_and_temp_targets_queries(ns):
    t = now_ms() - 60 * MIN
    treatments = [
        {"eventType": "Carb Correction", "created_at": iso(t), "enteredBy": "Trio", "carbs": 20,
         "fat": 0, "protein": 0, "id": str(uuid.uuid4())},
        {"eventType": "Carb Correction", "created_at": iso(t + MIN), "enteredBy": "loop://iPhone",
         "carbs": 15},
        {"eventType": "Meal Bolus", "created_at": iso(t + 2 * MIN), "enteredBy": "xdrip",
         "carbs": 30, "insulin": 3},
        {"eventType": "Correction Bolus", "created_at": iso(t + 3 * MIN), "enteredBy": "xdrip",
         "insulin": 1},
        {"eventType": "Temporary Target", "created_at": iso(t + 4 * MIN), "enteredBy": "xdrip",
         "duration": 60, "targetTop": 140, "targetBottom": 140, "reason": "Eating Soon"},
        {"eventType": "Temporary Target", "created_at": iso(t + 5 * MIN), "enteredBy": "Trio",
         "duration": 30, "targetTop": 100, "targetBottom": 100},
    ]
    ns.client.post(root(ns, "/api/v1/treatments.json"), json=treatments, headers=TRIO)
    ne = "".join(f"&find[$and][{i}][enteredBy][$ne]={who}" for i, who in enumerate(
        ("Trio", "AndroidAPS", "openaps://AndroidAPS", "iAPS", "loop://iPhone")))
    carbs = ns.client.get(root(ns, "/api/v1/treatments.json?find[carbs][$exists]=true" + ne
                               + f"&find[created_at][$gt]={iso(t - MIN)}"), headers=TRIO)
    assert carbs.status_code == 200
    assert [(d["eventType"], d["carbs"]) for d in carbs.json()] == [("Meal Bolus", 30)]
    targets = ns.client.get(root(ns, "/api/v1/treatments.json?find[eventType]=Temporary+Target"
                                 "&find[duration][$exists]=true" + ne), headers=TRIO).json()
    assert [(d["_id"] is not None, d["targetTop"]) for d in targets] == [(True, 140)]
    assert all(d["created_at"].endswith("Z") for d in targets)


def test_trio__uploads_and_query_based_deletes(ns):
    t = now_ms() - 30 * MIN
    fpu = str(uuid.uuid4())
    items = [{"eventType": "Carb Correction", "created_at": iso(t + i * 30 * MIN // 3),
              "enteredBy": "Trio", "carbs": 5, "fat": 0, "protein": 0, "id": fpu,
              "fpuID": fpu} for i in range(3)]  # fat/protein units share one id
    ns.client.post(root(ns, "/api/v1/treatments.json"), json=items, headers=TRIO)
    assert ns.count("treatments") == 3
    r = ns.client.delete(root(ns, f"/api/v1/treatments.json?find[id][$eq]={fpu}"), headers=TRIO)
    assert r.status_code == 200 and ns.count("treatments") == 0
    g = str(uuid.uuid4())
    entry = {"id": g, "sgv": 120, "direction": "Flat", "date": t + 0.456,
             "dateString": iso(t), "unfiltered": 120, "filtered": 120, "glucose": 120,
             "type": "sgv"}
    other = dict(entry, id=str(uuid.uuid4()), date=t + 5 * MIN, dateString=iso(t + 5 * MIN),
                 sgv=130)
    ns.client.post(root(ns, "/api/v1/entries.json"), json=[entry, other], headers=TRIO)
    r = ns.client.delete(root(ns, f"/api/v1/entries.json?find[$or][0][id][$eq]={g}"
                              f"&find[$or][1][dateString][$eq]={iso(t)}"), headers=TRIO)
    assert r.status_code == 200 and ns.count("entries") == 1
    over = {"duration": 60, "eventType": "Exercise", "created_at": iso(t), "enteredBy": "Trio",
            "notes": "Running"}
    ns.client.post(root(ns, "/api/v1/treatments.json"), json=[over], headers=TRIO)
    r = ns.client.delete(root(ns, f"/api/v1/treatments.json?find[created_at][$eq]={iso(t)}"),
                         headers=TRIO)
    assert r.status_code == 200 and ns.count("treatments") == 0


def test_trio__device_status_and_profile_round_trip(ns):
    status = {"device": "Trio", "openaps": {
        "iob": {"iob": 1.1, "activity": 0.01, "basaliob": 0.2, "bolusiob": 0.9,
                "time": iso(now_ms())},
        "suggested": {"bg": 130, "eventualBG": 110, "COB": 10, "IOB": 1.1, "reason": "x",
                      "timestamp": iso(now_ms()), "predBGs": {"IOB": list(range(100, 400))}},
        "version": "0.2.0"}, "pump": {"clock": iso(now_ms()), "reservoir": 90,
                                      "battery": {"percent": 50, "string": "normal"},
                                      "status": {"status": "normal", "bolusing": False,
                                                 "suspended": False,
                                                 "timestamp": iso(now_ms())}},
        "uploader": {"battery": 64, "isCharging": False}}
    r = ns.client.post(root(ns, "/api/v1/devicestatus.json"), json=status, headers=TRIO)
    assert r.status_code == 200
    stored = ns.docs.latest("devicestatus")[0].doc
    assert len(stored["openaps"]["suggested"]["predBGs"]["IOB"]) == 288  # cut as Nightscout
    t = now_ms()
    profile = {"defaultProfile": "default", "startDate": iso(t), "mills": t, "units": "mg/dl",
               "enteredBy": "Trio", "store": {"default": {
                   "dia": 6, "carbs_hr": 0, "delay": 0, "timezone": "Europe/Berlin",
                   "units": "mg/dl", "target_low": [{"time": "00:00", "value": 100,
                                                      "timeAsSeconds": 0}],
                   "target_high": [{"time": "00:00", "value": 110, "timeAsSeconds": 0}],
                   "sens": [{"time": "00:00", "value": 50, "timeAsSeconds": 0}],
                   "basal": [{"time": "00:00", "value": 0.8, "timeAsSeconds": 0}],
                   "carbratio": [{"time": "00:00", "value": 10, "timeAsSeconds": 0}]}},
               "bundleIdentifier": "org.nightscout.Trio", "isAPNSProduction": True}
    r = ns.client.post(root(ns, "/api/v1/profile.json"), json=profile, headers=TRIO)
    assert r.status_code == 200
    got = ns.client.get(root(ns, "/api/v1/profile.json?count=1"), headers=TRIO)
    assert got.headers["content-type"].split(";")[0] == "application/json"
    [p] = got.json()
    assert p["_id"] and p["created_at"] and isinstance(p["mills"], int)
    assert p["store"]["default"]["carbs_hr"] == 0 and p["defaultProfile"] == "default"


def test_trio__glucose_fetch_since_a_sync_date(ns):
    t = now_ms() - 25 * MIN
    ns.client.post(root(ns, "/api/v1/entries.json"), headers=TRIO, json=[
        {"sgv": 100 + i, "direction": "Flat", "date": t + i * 5 * MIN,
         "dateString": iso(t + i * 5 * MIN), "type": "sgv"} for i in range(5)])
    got = ns.client.get(root(ns, f"/api/v1/entries/sgv.json?count=1600"
                             f"&find[dateString][$gte]={iso(t + 10 * MIN)}"), headers=TRIO)
    docs = got.json()
    assert [d["sgv"] for d in docs] == [104, 103, 102]
    for d in docs:  # Trio's decoder: numeric date, ISO dateString, a known direction
        assert isinstance(d["date"], int) and d["dateString"].endswith("Z")
        assert d["direction"] in DIRECTIONS
