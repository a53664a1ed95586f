"""Uploaders and bridges beyond tests/nightscout/test_clients_uploaders.py, request for request
from their own source, against the cloud (tenant fam-1), the edge and the cloud on PostgreSQL:
Ottai/Syai, two LibreLinkUp ports and a third uploader, a CareLink bridge and the Home
Assistant CareLink integration, Medtrum EasyView, two Glooko bridges, Diabetes-M (dm2nsc),
Trndi's Glooko import, a Dexcom follower, a Sibionics uploader, a Google Fit importer, ddguard.

Where a client's file is named below it is the file in that project at the commit given.
dm2nsc reads its last upload without a credential (so it needs a tenant everyone may read, or
it posts the whole diary every run) and posts the diary in one array: past 20,000 documents
that is refused in one sentence (docs/nightscout.md, Limits), as nothing here holds more.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import quote

from tests.support.nightscout import MIN, SECRET, SECRET_SHA1, iso, now_ms, wire

ON_POSTGRES = True


def sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def compact(doc) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def spaced(doc) -> bytes:  # Python requests' json=, json.dumps defaults
    return json.dumps(doc).encode()


def entries(ns, q: str = "count=100") -> list[dict]:
    r = ns.get(f"/api/v1/entries.json?{q}&token={ns.read_token}")
    assert r.status_code == 200, r.text
    return r.json()


def treatments(ns, q: str = "count=100") -> list[dict]:
    r = ns.get(f"/api/v1/treatments.json?{q}&token={ns.read_token}")
    assert r.status_code == 200, r.text
    return r.json()


REQUESTS_H = ["User-Agent: python-requests/2.32.3", "Accept-Encoding: gzip, deflate",
              "Accept: */*"]


# -- pmakhotkin/ottai-nightscout-uploader @ 19da143 (Ottai and Syai, the /entries version) ----
# module.py:214-231 headers; :262-273 GET {ns}/api/v1/status must be 200; :375-432 one entry;
# :434-486 POST {ns}/api/v1/entries, json=entry (ONE object), success only on == 200; every
# minute (main.py) all HOURS_AGO hours are sent again, one POST each, oldest first.

OTTAI_H = [f"api-secret: {SECRET_SHA1}", "Content-Type: application/json",
           "Accept: application/json", "User-Agent: python-requests/2.32.3",
           "Accept-Encoding: gzip, deflate", "Connection: keep-alive"]


def ottai_entry(t: int, mmol: float) -> dict:
    return {"type": "sgv", "sgv": int(mmol * 18.018 + 0.5), "direction": "Flat",
            "device": "Ottai-user049395", "date": t,
            "dateString": datetime.fromtimestamp(t / 1000, UTC).replace(tzinfo=None)
            .isoformat(timespec="milliseconds") + "Z"}


def test_ottai__status_then_single_object_posts_resent_every_minute(ns):
    r = wire(ns, "GET", "/api/v1/status", OTTAI_H[:-1])
    assert r.status == 200, (r.status, r.body[:200])
    start = now_ms() - 60 * 5 * MIN + 879  # Ottai's monitorTime keeps its milliseconds
    curve = [ottai_entry(start + i * 5 * MIN, 4.0 + (i % 7) / 10) for i in range(60)]
    for _cycle in range(2):  # the next minute: the same 5 hours again
        for e in curve:
            r = wire(ns, "POST", "/api/v1/entries", OTTAI_H[:-1], spaced(e))
            assert r.status == 200, (r.status, r.body[:300])
    got = entries(ns, "count=200")
    assert len(got) == 60
    assert got[0]["date"] == curve[-1]["date"] and got[0]["sgv"] == curve[-1]["sgv"]
    assert got[0]["device"] == "Ottai-user049395" and got[0]["direction"] == "Flat"


# -- MrCodeEU/nightscout-librelink-up-go @ 8872e7c --------------------------------------------
# client.go:45-101: POST {NIGHTSCOUT_URL}/api/v1/entries, body `[entry]`, headers
# Content-Type, api-secret (README: the SHA-1 of API_SECRET), X-Forwarded-Proto: https; any
# 2xx. main.go: every LINK_UP_TIME_INTERVAL (1 min) the latest LibreLinkUp reading again.
# Date parsed in the container's zone; dateString time.RFC3339 (offset, no milliseconds).

def test_librelink_go__latest_reading_posted_every_minute(ns):
    t = (now_ms() // 1000 - 120) * 1000
    zone = timezone(timedelta(hours=1))
    ds = datetime.fromtimestamp(t / 1000, zone).isoformat()  # 2025-…T15:14:29+01:00
    body = compact([{"type": "sgv", "sgv": 123, "direction": "FortyFiveUp",
                     "device": "nightscout-librelink-up-go", "date": t, "dateString": ds}])
    h = ["User-Agent: Go-http-client/1.1", "Content-Type: application/json",
         f"api-secret: {SECRET_SHA1}", "X-Forwarded-Proto: https", "Accept-Encoding: gzip"]
    for _ in range(3):
        r = wire(ns, "POST", "/api/v1/entries", h, body)
        assert 200 <= r.status < 300, (r.status, r.body[:300])
    got = entries(ns)
    assert len(got) == 1 and got[0]["date"] == t and got[0]["sgv"] == 123
    assert got[0]["utcOffset"] == 60


# -- brendlin/nightscout-librelink-up-py @ 621192a --------------------------------------------
# librelinkup.py:18-24 headers (api-secret as configured, UA, Content-Type); :164-171 the last
# entry is `GET …/api/v1/entries?count=1` read as TEXT: `int(r.text.split('\t')[1])`, "" when
# empty; :174-180 POST …/api/v1/entries json=[entry] (response ignored); :263-271 the entry.

BRENDLIN_H = [f"api-secret: {SECRET_SHA1}",
              "User-Agent: FreeStyle LibreLink Up NightScout Uploader",
              "Content-Type: application/json", "Accept-Encoding: gzip, deflate", "Accept: */*"]


def test_librelink_py__last_entry_as_tab_separated_text(ns):
    r = wire(ns, "GET", "/api/v1/entries?count=1", BRENDLIN_H)
    assert r.status == 200
    assert r.body == b""  # nothing stored: `if not r.text: return 0`
    t = (now_ms() // 1000 - 60) * 1000
    e = {"type": "sgv", "dateString": iso(t), "date": t, "sgv": 104, "device": "timoschlueter",
         "direction": "Flat"}
    r = wire(ns, "POST", "/api/v1/entries", BRENDLIN_H, spaced([e]))
    assert r.status == 200
    r = wire(ns, "GET", "/api/v1/entries?count=1", BRENDLIN_H)
    assert r.status == 200, r.status
    text = r.body.decode()
    assert int(text.split("\t")[1]) == t, text[:200]


# -- Cash59710/librelink-to-nightscout @ 5ab3b4d (worker.py:31-47) -----------------------------
# POST {NIGHTSCOUT_URL}/api/v1/entries, API-SECRET as configured, json=[{type, date: now,
# sgv, direction: LibreLinkUp's TrendArrow (an integer 1-5), device}], 200 or 201 is success.

def test_librelink_cash__integer_trend_arrow_as_direction(ns):
    t = now_ms()
    h = [f"API-SECRET: {SECRET_SHA1}", "Content-Type: application/json", *REQUESTS_H]
    r = wire(ns, "POST", "/api/v1/entries", h,
             spaced([{"type": "sgv", "date": t, "sgv": 117, "direction": 3,
                      "device": "LibreLinkUp"}]))
    assert r.status in (200, 201), (r.status, r.body[:300])
    got = entries(ns)
    assert len(got) == 1 and got[0]["sgv"] == 117, got


# -- NovaLux12/carelink-bridge @ 037c18a ------------------------------------------------------
# main.ts:31-33 `NS` + /api/v1/entries.json and /devicestatus.json; upload.ts: axios 1.x POST, `api-secret: sha1(API_SECRET)`, anything but 200 throws;
# index.ts (transform): sgvs with trend on the newest, one status with `last_alarm`.

AXIOS1_H = [f"api-secret: {SECRET_SHA1}", "Accept: application/json, text/plain, */*",
            "Content-Type: application/json", "User-Agent: axios/1.19.0",
            "Accept-Encoding: gzip, compress, deflate, br"]


def test_carelink_bridge__sgvs_and_status_with_last_alarm(ns):
    t0 = now_ms() - 12 * 5 * MIN
    sgvs = [{"type": "sgv", "sgv": 140 + i, "date": t0 + i * 5 * MIN,
             "dateString": iso(t0 + i * 5 * MIN), "device": "connect-ngp"} for i in range(12)]
    sgvs[-1].update(direction="SingleUp", trend=2)
    r = wire(ns, "POST", "/api/v1/entries.json", AXIOS1_H, compact(sgvs))
    assert r.status == 200, (r.status, r.body[:300])
    status = {"created_at": iso(t0 + 11 * 5 * MIN), "device": "connect-ngp",
              "uploader": {"battery": 80},
              "last_alarm": {"code": 817, "datetime": "2026-08-05T10:00:00.000Z",
                             "text": "Low reservoir", "severity": "other"},
              "pump": {"battery": {"percent": 50}, "reservoir": 80.5,
                       "iob": {"timestamp": iso(t0), "bolusiob": 1.2}, "clock": iso(t0)},
              "connect": {"sensorState": "NO_ERROR_MESSAGE", "calibStatus": "NO",
                          "sensorDurationHours": 100, "timeToNextCalibHours": 5,
                          "conduitInRange": True, "conduitMedicalDeviceInRange": True,
                          "conduitSensorInRange": True}}
    for _ in range(2):  # a restart forgets filter.ts's memory: both again
        assert wire(ns, "POST", "/api/v1/devicestatus.json", AXIOS1_H,
                    compact([status])).status == 200
        assert wire(ns, "POST", "/api/v1/entries.json", AXIOS1_H, compact(sgvs)).status == 200
    assert len(entries(ns)) == 12
    ds = ns.get(f"/api/v1/devicestatus.json?count=10&token={ns.read_token}").json()
    assert len(ds) == 1 and ds[0]["last_alarm"]["code"] == 817


# -- yo-han/Home-Assistant-Carelink @ 03eb7b4 (nightscout_uploader.py)
# :37-43 headers (API-SECRET sha1, Content-Type, UA, Accept); :417-425 reachability: GET
# {url}/api/v1/devicestatus.json must be 200; :236-249 each document its own POST to
# /api/v1/{devicestatus,entries,treatments} (data=json.dumps(doc)), anything but 200 aborts
# the rest of that kind; every scan (60 s default) the whole last 24 h again.

HA_H = [f"API-SECRET: {SECRET_SHA1}", "Content-Type: application/json",
        "User-Agent: Home Assistant Carelink", "Accept: application/json",
        "Accept-Encoding: gzip, deflate"]


def ha_sgvs(t0: int, n: int) -> list[dict]:
    zone = timezone(timedelta(hours=2))
    out = []
    for i in range(n):
        t = t0 + i * 5 * MIN
        out.append({"device": "Home Assistant Carelink", "direction": "Flat" if i else "null",
                    "delta": 0 if i else "null", "type": "sgv", "sgv": float(110 + i),
                    "date": t, "dateString": datetime.fromtimestamp(t / 1000, zone).isoformat(),
                    "noise": 1})
    return out


def test_ha_carelink__reach_then_one_post_each_resent_every_scan(ns):
    assert wire(ns, "GET", "/api/v1/devicestatus.json", HA_H).status == 200
    t0 = (now_ms() // 1000) * 1000 - 10 * 5 * MIN
    zone = timezone(timedelta(hours=2))
    when = datetime.fromtimestamp(t0 / 1000, zone)
    status = {"device": "MMT-1884", "pump": {"battery": {"status": "MEDIUM", "voltage": 50},
                                               "reservoir": 1.35,
                                               "status": {"status": "NORMAL",
                                                          "suspended": False}}}
    docs = [
        ("treatments", {"enteredBy": "Home Assistant Carelink", "eventType": "Temp Basal",
                        "duration": 5, "absolute": 0.025, "created_at": when.isoformat()}),
        ("treatments", {"device": "Home Assistant Carelink", "timestamp": t0,
                        "enteredBy": "Home Assistant Carelink", "created_at": when.isoformat(),
                        "eventType": "Correction Bolus", "insulin": 0.3}),
        ("treatments", {"timestamp": t0 + MIN, "enteredBy": "Home Assistant Carelink",
                        "created_at": (when + timedelta(minutes=1)).isoformat(),
                        "eventType": "Meal", "glucoseType": "sensor", "carbs": 40,
                        "insulin": 3.2}),
        ("treatments", {"timestamp": t0 + 2 * MIN, "enteredBy": "Home Assistant Carelink",
                        "created_at": (when + timedelta(minutes=2)).isoformat(),
                        "eventType": "Note", "glucoseType": "sensor", "glucose": 62.0,
                        "notes": "LOW_SG"}),
    ]
    for _scan in range(2):
        assert wire(ns, "POST", "/api/v1/devicestatus", HA_H, compact(status)).status == 200
        for e in ha_sgvs(t0, 10):
            r = wire(ns, "POST", "/api/v1/entries", HA_H, compact(e))
            assert r.status == 200, (r.status, r.body[:300])
        for coll, d in docs:
            r = wire(ns, "POST", f"/api/v1/{coll}", HA_H, compact(d))
            assert r.status == 200, (r.status, r.body[:300])
    got = entries(ns)
    assert len(got) == 10, [(e["date"], e["sgv"]) for e in got]
    first = min(got, key=lambda e: e["date"])
    assert first["sgv"] == 110 and first["date"] == t0
    tr = treatments(ns)
    assert sorted(x["eventType"] for x in tr) == ["Correction Bolus", "Meal", "Note",
                                                  "Temp Basal"], tr
    meal = next(x for x in tr if x["eventType"] == "Meal")
    assert meal["carbs"] == 40 and meal["created_at"] == iso(t0 + MIN)


# -- nl-ruud/nightscout-easyview (Medtrum EasyView) @ 218ffc0 (uploader.py:383-436) ------
# GET {url}/api/v1/entries.json?count=1 (raise_for_status, data[0]["date"] is the resume
# point), then POST {url}/api/v1/entries.json json=[entry] per new reading.

def test_medtrum_easyview__resume_point_then_posts(ns):
    h = ["Content-Type: application/json", "Accept: application/json",
         f"api-secret: {SECRET_SHA1}", "User-Agent: python-requests/2.32.3",
         "Accept-Encoding: gzip, deflate"]
    r = wire(ns, "GET", "/api/v1/entries.json?count=1", h)
    assert r.status == 200 and r.json() == []
    t = (now_ms() // 1000 - 90) * 1000
    e = {"type": "sgv", "date": t,
         "dateString": datetime.fromtimestamp(t / 1000, UTC).isoformat(),  # +00:00
         "sgv": round(6.4 * 18), "direction": "FortyFiveDown", "device": "TouchCareNano"}
    r = wire(ns, "POST", "/api/v1/entries.json", h, spaced([e]))
    assert r.status == 200, r.body[:200]
    r = wire(ns, "GET", "/api/v1/entries.json?count=1", h)
    assert r.json()[0]["date"] == t


# -- earldouglas/glooko-to-nightscout @ 198dbad with earldouglas/nightscout-client @ 287aade --
# nightscout.js:12-23: fetch POST https://{NIGHTSCOUT_HOST}/api/v1/treatments,
# `api-secret`: "the SHA-1 hash of an access token with the api:treatments:create
# permission", Content-Type application/json; charset=UTF-8, body the array; `status === 200`
# is success. index.js: each run posts every bolus Glooko returns again.

def test_glooko_earldouglas__bolus_array_with_a_careportal_token_hash(ns):
    h = [f"api-secret: {sha1(ns.careportal_token)}",
         "Content-Type: application/json; charset=UTF-8", "Accept: */*",
         "Accept-Language: *", "Sec-Fetch-Mode: cors", "User-Agent: node",
         "Accept-Encoding: gzip, deflate"]
    t = (now_ms() // 1000) * 1000 - 3 * 3600_000
    body = compact([{"eventType": "Bolus", "insulin": 2.35, "created_at": iso(t)},
                    {"eventType": "Bolus", "insulin": 0.5, "created_at": iso(t + 3600_000)}])
    for _run in range(2):
        r = wire(ns, "POST", "/api/v1/treatments", h, body)
        assert r.status == 200, (r.status, r.body[:300])
    tr = treatments(ns)
    assert len(tr) == 2 and {x["insulin"] for x in tr} == {2.35, 0.5}


# -- itconor/glooko-nightscout-eu @ 2b7fbc4 (glooko_uploader.py:74-77) ------------------------
# urllib: POST {NIGHTSCOUT_URL}/api/v1/treatments, body `[t]`, Content-Type, api-secret sha1;
# an HTTPError (>= 400) aborts the run before its state is saved, so the next run re-sends.

def test_glooko_eu__one_treatment_per_post_and_resend_after_a_failed_run(ns):
    h = ["Accept-Encoding: identity", "Content-Type: application/json",
         f"api-secret: {SECRET_SHA1}", "User-Agent: Python-urllib/3.12"]
    t = (now_ms() // 1000) * 1000 - 2 * 3600_000
    docs = [{"created_at": iso(t), "enteredBy": "glooko-bridge", "glookoGuid": "g-1",
             "eventType": "Meal Bolus", "insulin": 4.2, "carbs": 45.0},
            {"created_at": iso(t), "eventType": "Carb Correction", "carbs": 12.0,
             "enteredBy": "glooko-bridge", "glookoGuid": "g-2"},
            {"created_at": iso(t + 600_000), "eventType": "Correction Bolus", "insulin": 1.0,
             "enteredBy": "glooko-bridge", "glookoGuid": "g-3"}]
    for _run in range(2):
        for d in docs:
            r = wire(ns, "POST", "/api/v1/treatments", h, json.dumps([d]).encode())
            assert r.status < 400, (r.status, r.body[:300])
    tr = treatments(ns)
    assert len(tr) == 3, tr
    assert next(x for x in tr if x["eventType"] == "Meal Bolus")["glookoGuid"] == "g-1"


# -- jwoglom/dm2nsc (Diabetes-M) @ a47f7d2 (getdata.py) ----------------------------------------
# :114-120 POST NS_URL + 'api/v1/treatments?api_secret=' + PLAIN secret, header api-secret
# sha1, body the array of converted diary entries; :122-127 the last one uploaded is read with
# NO credential: GET NS_URL + api/v1/treatments?count=1000&find[enteredBy]=Diabetes-M (dm2nsc)
# and js[0]['created_at']; when that fails (not 200) everything (page_count 90000) is posted.
# created_at is arrow's default format(): "YYYY-MM-DD HH:mm:ssZZ" (a space, an offset).

def test_dm2nsc__space_separated_times_and_a_full_repost(ns):
    t = datetime.now(timezone(timedelta(hours=1))).replace(microsecond=0) - timedelta(days=1)
    fmt = "%Y-%m-%d %H:%M:%S%z"

    def arrow_format(d):  # arrow: +01:00
        s = d.strftime(fmt)
        return s[:-2] + ":" + s[-2:]

    author = "Diabetes-M (dm2nsc)"
    docs = [{"eventType": "Meal Bolus", "created_at": arrow_format(t), "carbs": 50,
             "insulin": 5.5, "notes": "", "enteredBy": author},
            {"eventType": "BG Check", "created_at": arrow_format(t + timedelta(hours=2)),
             "carbs": 0, "insulin": 0, "notes": "", "enteredBy": author,
             "glucoseType": "Finger", "units": "mmol", "glucose": 6.2},
            {"eventType": "HbA1c", "created_at": arrow_format(t + timedelta(hours=3)),
             "carbs": 0, "insulin": 0, "notes": "HbA1c 6.4%", "enteredBy": author,
             "hba1c": 6.4}]
    r = wire(ns, "GET", "/api/v1/treatments?count=1000&find[enteredBy]="
             + quote(author), REQUESTS_H)
    first_read = r.status
    h = [*REQUESTS_H[:2], "Accept: application/json", "Content-Type: application/json",
         f"api-secret: {SECRET_SHA1}"]
    for _run in range(2):
        r = wire(ns, "POST", f"/api/v1/treatments?api_secret={quote(SECRET)}", h,
                 spaced(docs))
        assert r.status == 200, (r.status, r.body[:300])
    tr = treatments(ns)
    assert len(tr) == 3, tr
    meal = next(x for x in tr if x["eventType"] == "Meal Bolus")
    assert meal["created_at"] == (t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S") + ".000Z")
    assert first_read in (200, 401)  # reported: without a credential


# -- slicke/trndisync (Glooko CSV export) @ b59aa04 (umain.pp:31-84, uinsulindata.pp:214-241)
# fphttpclient POST {url}/api/v1/treatments, API-SECRET lower-case sha1, Accept and
# Content-Type json, body fpjson's AsJSON of the array: spaces around ':' and floats as
# Str() writes them ("2.5000000000000000E+000"); created_at local time WITHOUT a zone.
# Anything but 200 raises.

def test_trndisync__fpjson_floats_and_zoneless_created_at(ns):
    h = ["User-Agent: Mozilla/4.0 (compatible; fpweb)", f"API-SECRET: {SECRET_SHA1}",
         "Accept: application/json", "Content-Type: application/json"]
    body = (b'[{ "eventType" : "Bolus", "enteredBy" : "Trndi", "insulin" : '
            b'2.5000000000000000E+000, "created_at" : "2025-01-10T08:30:00" }, '
            b'{ "eventType" : "Bolus", "enteredBy" : "Trndi", "insulin" : '
            b'3.0000001192092896E-001, "created_at" : "2025-01-10T12:05:00", '
            b'"insulinInitial" : 1.0000000000000000E+000, "insulinExtended" : '
            b'2.0000000000000000E+000 }]')
    for _import in range(2):  # the same export imported twice
        r = wire(ns, "POST", "/api/v1/treatments", h, body)
        assert r.status == 200, (r.status, r.body[:300])
    tr = treatments(ns, "count=10&find[created_at][$gte]=2025-01-01")
    assert len(tr) == 2, tr
    first = next(x for x in tr if x["insulin"] == 2.5)
    assert first["created_at"] == "2025-01-10T08:30:00.000Z"  # as Nightscout: zone-less is UTC


# -- DiaKEM/dexcom-follower-to-nightscout-bridge @ 207d9f5 (nightscout-client.ts) -------
# axios 0.27 baseURL = the URL as typed, POST '/api/v2/entries' (the path kept), Content-Type
# and Accept json, API-SECRET sha1, body [{type: 'svg' (sic), device: 'share2', sgv, date,
# dateString, direction}]; a rejection is unhandled in the observe listener (the process ends).

def test_dexcom_follower__v2_entries_path(ns):
    h = ["Accept: application/json", "Content-Type: application/json",
         f"API-SECRET: {SECRET_SHA1}", "User-Agent: axios/0.27.2"]
    t = now_ms() - 60_000
    body = compact([{"type": "svg", "device": "share2", "sgv": 131, "date": t,
                     "dateString": iso(t), "direction": "Flat"}])
    r = wire(ns, "POST", "/api/v2/entries", h, body)
    assert 200 <= r.status < 300, (r.status, r.body[:300])


# -- RafaelBomfim128/nightscout-sibionics-uploader @ 7d0ef77 (nightscout.js) --------------
# new URL("/api/v1/entries?count=1", NIGHTSCOUT_URL): the typed path is DROPPED (the host
# root), `api-secret: sha1(NIGHTSCOUT_TOKEN)`, axios 1.x; needs 200 and response.data[0].date
# (a JSON array); then POST root /api/v1/entries with the new readings, success only on 200.

def test_sibionics_rafael__root_with_the_hash_of_the_secret_or_a_token(ns):
    for cred in (SECRET, ns.admin_token):
        h = [f"api-secret: {sha1(cred)}", "User-Agent: Nightscout Sibionics Uploader",
             "Content-Type: application/json", "Accept: application/json, text/plain, */*",
             "Accept-Encoding: gzip, compress, deflate, br"]
        r = wire(ns, "GET", "/api/v1/entries?count=1", h, base=ns.root)
        assert r.status == 200, (cred[:6], r.status, r.body[:200])
        last = r.json()
        t = (last[0]["date"] if last else now_ms() - 10 * MIN) + 5 * MIN
        e = {"type": "sgv", "sgv": 99, "direction": "Flat",
             "device": "nightscout-sibionics-uploader", "date": t, "dateString": iso(t)}
        r = wire(ns, "POST", "/api/v1/entries", h, compact([e]), base=ns.root)
        assert r.status == 200, (r.status, r.body[:200])
    assert len(entries(ns)) == 2


# -- diabetesdt1/google-fit-into-nightscout-importer @ 2ce71d8 (2017) -------------------------
# config.inc.php: apiurl …/api/v1/ + 'treatments/' (trailing slash); Filestuff.class.php:117-140
# curl POST, headers Content-Type json, API-SECRET sha1; the body one Exercise treatment whose
# insulin, carbs and glucose are empty strings.

def test_google_fit__exercise_with_empty_string_fields(ns):
    h = ["User-Agent: asdfasdf", "Referer: 1", "Accept: */*",
         "Content-Type: application/json", f"API-SECRET: {SECRET_SHA1}"]
    body = json.dumps({"eventType": "Exercise", "duration": 45, "notes": "5200M Walking",
                       "enteredBy": "Google-Fit", "insulin": "", "carbs": "", "glucose": "",
                       "NSCLIENT_ID": "Google-Fit",
                       "created_at": "2017-12-01T08:00:00.000Z"}).encode()
    r = wire(ns, "POST", "/api/v1/treatments/", h, body)
    assert r.status == 200, (r.status, r.body[:300])
    tr = treatments(ns, "count=5&find[created_at][$gte]=2017-01-01")
    assert len(tr) == 1 and tr[0]["duration"] == 45
    assert "insulin" not in tr[0] and "carbs" not in tr[0], tr[0]


def test_dm2nsc__a_diary_past_20000_documents_is_refused_in_one_sentence(ns):
    """dm2nsc asks Diabetes-M for page_count 90000 and, when its read of the last upload is
    refused, posts the whole diary as one array: past the limit, a 400 that says so and
    nothing stored (Nightscout takes up to 50 MiB)."""
    h = [*REQUESTS_H[:2], "Accept: application/json", "Content-Type: application/json",
         f"api-secret: {SECRET_SHA1}"]
    start = datetime(2014, 1, 1, 8, tzinfo=timezone(timedelta(hours=1)))
    docs = [{"eventType": "Meal Bolus",
             "created_at": (start + timedelta(hours=5 * i)).isoformat(sep=" "),
             "carbs": 30, "insulin": 3.0, "notes": "", "enteredBy": "Diabetes-M (dm2nsc)"}
            for i in range(20_001)]
    r = wire(ns, "POST", f"/api/v1/treatments?api_secret={quote(SECRET)}", h, spaced(docs))
    assert r.status == 400, (r.status, r.body[:300])
    assert "at most 20000" in r.json()["description"], r.body[:300]
    assert treatments(ns, "count=5&find[created_at][$gte]=2000-01-01") == []


# -- ondrej1024/ddguard @ 60b0135 (nightscoutlib.py:140-345) ----------------------------------
# requests.post(url, headers={user-agent: dd-guard, Content-Type, api-secret sha1},
# data=json.dumps(one object)) to {server}/api/v1/entries.json, devicestatus.json, treatments;
# anything but 200 is an error. Sensor exceptions are sgv 1, 5, 6, 9 ("NOT COMPUTABLE") or
# 40/400 ("RATE OUT OF RANGE"); devicestatus and treatments carry created_at as EPOCH MS.

def test_ddguard__exception_sgvs_and_epoch_ms_created_at(ns):
    h = ["user-agent: dd-guard", "Content-Type: application/json", f"api-secret: {SECRET_SHA1}",
         "Accept-Encoding: gzip, deflate", "Accept: */*"]
    zone = timezone(timedelta(hours=1))
    t = (now_ms() // 1000) * 1000 - 20 * MIN
    out = []
    for i, (sgv, direction) in enumerate([(5, "NOT COMPUTABLE"), (40, "RATE OUT OF RANGE"),
                                          (112, "Flat")]):
        ti = t + i * 5 * MIN
        e = {"device": "medtronic-600://NG1234567H", "type": "sgv",
             "dateString": datetime.fromtimestamp(ti / 1000, zone).isoformat(), "date": ti,
             "sgv": sgv, "direction": direction}
        r = wire(ns, "POST", "/api/v1/entries.json", h, json.dumps(e).encode())
        assert r.status == 200, (r.status, r.body[:300])
        out.append(r.json())
    st = {"device": "medtronic-600://NG1234567H", "created_at": t, "uploaderBattery": 100,
          "pump": {"clock": t, "reservoir": 87.5, "battery": {"percent": 50},
                   "iob": {"timestamp": t, "bolusiob": 1.1},
                   "status": {"bolusing": False, "suspended": False, "status": " | 80% 3:05h"}}}
    r = wire(ns, "POST", "/api/v1/devicestatus.json", h, json.dumps(st).encode())
    assert r.status == 200, (r.status, r.body[:300])
    for d in ({"eventType": "Correction Bolus", "created_at": t, "glucose": None,
               "insulin": 1.5, "device": "medtronic-600://NG1234567H"},
              {"eventType": "Temp Basal", "device": "medtronic-600://NG1234567H",
               "created_at": t, "absolute": 0.85, "duration": 5}):
        r = wire(ns, "POST", "/api/v1/treatments", h, json.dumps(d).encode())
        assert r.status == 200, (r.status, r.body[:300])
    got = entries(ns)
    assert sorted(e["sgv"] for e in got) == [5, 40, 112], got
    tr = treatments(ns)
    assert {x["created_at"] for x in tr} == {iso(t)}, tr
    ds = ns.get(f"/api/v1/devicestatus.json?count=5&token={ns.read_token}").json()
    assert ds[0]["created_at"] == iso(t), ds[0]
    since = ns.get(f"/api/v1/devicestatus.json?find[created_at][$gte]={iso(t - MIN)}"
                   f"&token={ns.read_token}").json()
    assert len(since) == 1, since
