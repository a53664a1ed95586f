"""OpenAPS oref0 rigs against the cloud and the edge, request for request.

Source: openaps/oref0, branch dev at 8cae7b3 (2023-09-14; master 88cf032 differs only in
`--compressed` and the `User-Agent: openaps` of oref0-get-ns-entries). A rig keeps the URL the
user typed (NIGHTSCOUT_HOST, trailing / stripped) and appends /api/v1/...; its credential is
API_SECRET from the crontab: the SHA-1 hex of the secret (oref0-setup.sh:1141,1168,1319;
nightscout.sh:318) or `token=<subject>-<16 hex>`.

- bin/ns-get.sh (every read of nightscout.sh): curl `-m 30 -H api-secret:<sha1> --compressed -g
  -s <host>/api/v1/<REPORT>?<QUERY>`: raw brackets, `$`, `+` and `\\/` go on the wire as typed;
  `?` is appended even with no query; with a token it is `?token=...&<QUERY>` and no header.
  `nightscout latest-openaps-treatment` passes the query inside REPORT, so the secret lands
  after it: `treatments.json?find[enteredBy]=/openaps:\\/\\//&count=1?<sha1>`.
- bin/ns-upload.sh: curl POST of a file, `API-SECRET: <sha1>`, `content-type: application/json`,
  body as written (newline at the end); the reply is only printed through jq.
- bin/oref0-get-ns-entries.js (oref0-ns-loop's CGM from Nightscout): request(json, gzip) of
  `/api/v1/entries/sgv.json?count=<12*h>` with `api-secret`, `If-Modified-Since: <ISO>` and
  `User-Agent: openaps`; 200 or 304 are both fine.
- bin/oref0-upload-profile.js (nightly, after autotune), bin's oref0_nightscout_check.py (setup,
  token mode), bin/oref0-pushover.sh (pump loop), bin/oref0-autotune.sh (nightly),
  bin/ns-delete-old-devicestatus.sh (by hand).

Also: nightscout-menu-bar (gabe565/nightscout-menu-bar 21f442a, Go tray app: API v2 properties
decoded into Go ints) and Urchin CGM (mddub/urchin-cgm eb59b66, Pebble watchface: anonymous
reads, `$or` and `$not` in find).
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime, timedelta, timezone

from tests.support.nightscout import MIN, SECRET_SHA1, Reply, iso, now_ms, wire

ON_POSTGRES = True

CURL = ["User-Agent: curl/7.64.0", "Accept: */*", "Accept-Encoding: deflate, gzip"]
CURL_AUTH = [f"api-secret:{SECRET_SHA1}"]  # ns-get.sh:35 `-H api-secret:'${API_SECRET}`: no space
UPLOAD = [f"API-SECRET: {SECRET_SHA1}", "content-type: application/json"]  # ns-upload.sh:48-49
EST = timezone(timedelta(hours=-5))  # the rig's local zone (pump history is zoned)


# -- the wire -------------------------------------------------------------------------------


def ns_get(ns, report: str, query: str = "", *, token: str | None = None) -> Reply:
    """bin/ns-get.sh:24-35 (and its `host` branch, 47-58): what every nightscout.sh read sends."""
    if token:
        target = f"/api/v1/{report}?token={token}" + (f"&{query}" if query else "")
        return wire(ns, "GET", target, CURL)
    return wire(ns, "GET", f"/api/v1/{report}?{query}", CURL + CURL_AUTH)


def ns_upload(ns, type_: str, doc, *, token: str | None = None) -> Reply:
    """bin/ns-upload.sh:38-51: the file's bytes (jq output: a trailing newline)."""
    body = (json.dumps(doc, indent=2) + "\n").encode()
    if token:
        return wire(ns, "POST", f"/api/v1/{type_}?token={token}",
                    ["User-Agent: curl/7.64.0", "Accept: */*", "Accept-Encoding: deflate, gzip",
                     "content-type: application/json"], body)
    return wire(ns, "POST", f"/api/v1/{type_}",
                ["User-Agent: curl/7.64.0", "Accept: */*", "Accept-Encoding: deflate, gzip",
                 *UPLOAD], body)


def minutes_utc(ms: int) -> str:
    """`date -d <expr> -Iminutes -u` (nightscout.sh:297,301): 2026-12-01T05:52+00:00."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M+00:00")


def minutes_local(ms: int, tz=timezone(timedelta(hours=1))) -> str:
    """`date --date=... -Iminutes` on a rig east of UTC (oref0-autotune.sh:216)."""
    return datetime.fromtimestamp(ms / 1000, tz).isoformat(timespec="minutes")


def zoned(ms: int, tz=EST) -> str:
    """A pump history timestamp: local time with its offset, seconds (2018-06-02T00:05:00-07:00)."""
    return datetime.fromtimestamp(ms / 1000, tz).isoformat(timespec="seconds")


def instant(text: str) -> int:
    return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


# -- what a rig uploads ---------------------------------------------------------------------


def pump_treatments(t: int, model: str = "722") -> list[dict]:
    """mm-format-ns-treatments.sh:27-40 over oref0-normalize-temps (lib/bolus.js, lib/temps.js,
    lib/pump.js): numbers as text, zoned created_at, enteredBy openaps://medtronic/<model>."""
    by = f"openaps://medtronic/{model}"
    temp_ts, bolus_ts, meal_ts, prime_ts = zoned(t), zoned(t + 10 * MIN), zoned(t + 20 * MIN), \
        zoned(t + 25 * MIN)
    temp = {"duration": "30",
            "raw_duration": {"timestamp": temp_ts, "_type": "TempBasalDuration",
                             "duration (min)": 30},
            "absolute": "0.5", "rate": 0.5,
            "raw_rate": {"timestamp": temp_ts, "_type": "TempBasal", "temp": "absolute",
                         "rate": 0.5},
            "timestamp": temp_ts, "eventType": "Temp Basal",
            "medtronic": "mm://openaps/mm-format-ns-treatments/Temp Basal",
            "created_at": temp_ts, "enteredBy": by}
    raw_bolus = {"timestamp": bolus_ts, "_type": "Bolus", "amount": 1.5, "programmed": 1.5,
                 "duration": 0}
    bolus = {"duration": "0", "bolus": raw_bolus, "created_at": bolus_ts, "timestamp": bolus_ts,
             "eventType": "Correction Bolus", "insulin": "1.5",
             "notes": "Normal bolus (solo, no bolus wizard).\nCalculated IOB: 0.8\n"
                      "Programmed bolus 1.5\nDelivered bolus 1.5\nPercent delivered:  100%",
             "medtronic": "mm://openaps/mm-format-ns-treatments/Correction Bolus",
             "enteredBy": by}
    wizard = {"timestamp": meal_ts, "_type": "BolusWizard", "bg": 140, "carb_input": 30,
              "carb_ratio": 10, "sensitivity": 45, "bg_target_low": 100, "bg_target_high": 110,
              "food_estimate": 3, "correction_estimate": 0.5, "bolus_estimate": 3.5}
    meal = {"carbs": "30", "ratio": "10", "bg": "140", "glucose": "140",
            "glucoseType": "BolusWizard", "wizard": wizard, "duration": "0",
            "bolus": {**raw_bolus, "timestamp": meal_ts, "amount": 3.5, "programmed": 3.5},
            "created_at": meal_ts, "timestamp": meal_ts, "eventType": "Meal Bolus",
            "insulin": "3.5", "notes": "Normal bolus with wizard.",
            "medtronic": "mm://openaps/mm-format-ns-treatments/Meal Bolus", "enteredBy": by}
    prime = {"timestamp": prime_ts, "_type": "Prime", "type": "manual", "amount": 0.5,
             "fixed": 0, "medtronic": "mm://openaps/mm-format-ns-treatments/Prime",
             "created_at": prime_ts, "enteredBy": by, "eventType": "Note",
             "notes": f"Prime {model} "}
    return [prime, meal, bolus, temp]  # pump history order: newest first


def ns_status(now: int, host: str = "edison-rig") -> dict:
    """bin/ns-status.js:124-183 with the files oref0-ns-loop.sh:223 passes."""
    t = iso(now)
    preds = {"IOB": [142 + i for i in range(48)], "ZT": [142 - i for i in range(48)],
             "COB": [142 + 2 * i for i in range(48)], "UAM": [142 + i // 2 for i in range(48)]}
    suggested = {"temp": "absolute", "bg": 142, "tick": "+3", "eventualBG": 160,
                 "targetBG": 110, "insulinReq": 0.4, "deliverAt": t, "sensitivityRatio": 1,
                 "predBGs": preds, "COB": 20, "IOB": 1.2,
                 "reason": "COB: 20, Dev: 10, BGI: -1.2, ISF: 45, CR: 10, Target: 110; "
                           "Eventual BG 160 >= 110, insulinReq 0.4; setting 30m temp 1.2U/h.",
                 "duration": 30, "rate": 1.2, "timestamp": t, "mills": now}
    enacted = {k: v for k, v in suggested.items() if k != "predBGs"}
    enacted.update(recieved=True, timestamp=t, mills=now)
    iob = {"iob": 1.2, "activity": 0.0123, "basaliob": 0.3, "bolusiob": 0.9,
           "netbasalinsulin": 0.3, "bolusinsulin": 3,
           "iobWithZeroTemp": {"iob": 1.2, "activity": 0.0123, "basaliob": 0.3,
                               "bolusiob": 0.9, "netbasalinsulin": 0.3, "bolusinsulin": 3,
                               "time": t},
           "lastBolusTime": now - 40 * MIN,
           "lastTemp": {"rate": 1.2, "timestamp": zoned(now - 5 * MIN),
                        "started_at": iso(now - 5 * MIN), "date": now - 5 * MIN,
                        "duration": 30},
           "timestamp": t, "mills": now}
    return {"device": f"openaps://{host}",
            "openaps": {"iob": iob, "suggested": suggested, "enacted": enacted,
                        "version": "0.7.1"},
            "pump": {"clock": zoned(now),
                     "battery": {"voltage": 1.45, "string": "normal"},
                     "reservoir": 120.5,
                     "status": {"status": "normal", "bolusing": False, "suspended": False,
                                "timestamp": t}},
            "created_at": t,
            "preferences": {"max_iob": 3, "nightscout_host": "redacted",
                            "enableSMB_with_COB": True, "curve": "rapid-acting"},
            "uploader": {"batteryVoltage": 3680, "battery": 50}}


def seed_sgvs(ns, n: int, *, end: int | None = None, step: int = 5 * MIN) -> int:
    """Readings another uploader (xDrip+, a bridge) put there; returns the newest date."""
    end = end or now_ms() - MIN
    r = ns.post("/api/v1/entries", headers={"api-secret": SECRET_SHA1}, json=[
        {"type": "sgv", "sgv": 100 + i % 50, "date": end - i * step,
         "dateString": iso(end - i * step), "direction": "Flat", "device": "xDrip-DexcomG6"}
        for i in range(n)])
    assert r.status_code == 200
    return end


# -- oref0-ns-loop: every minute ------------------------------------------------------------


def test_ns_loop__cgm_from_nightscout_with_if_modified_since(ns):
    """oref0-get-ns-entries.js:171-198 (called by oref0-ns-loop.sh:65,69 with hours 24 and 1):
    GET /api/v1/entries/sgv.json?count=288 (then count=12), `api-secret`, `If-Modified-Since`
    = the newest dateString of its last file as toISOString(), `User-Agent: openaps`, json and
    gzip. 200 or 304 are accepted (:194); on 200 each record gets glucose = sgv (:216-218),
    oref0-ns-loop.sh:71 sorts by `.date`, :96 reads `.[0].date/1000`, :101 needs
    `new Date(this.dateString)` within 10 minutes. With a token: `&token=...`, no header."""
    end = seed_sgvs(ns, 30)
    older = datetime.fromtimestamp((end - 15 * MIN) / 1000, UTC).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")
    req = [f"api-secret: {SECRET_SHA1}", f"If-Modified-Since: {older}", "User-Agent: openaps",
           "accept: application/json", "accept-encoding: gzip, deflate", "Connection: close"]
    r = wire(ns, "GET", "/api/v1/entries/sgv.json?count=288", req)
    assert r.status == 200, r.body[:300]
    got = r.json()
    assert len(got) == 30 and [e["date"] for e in got] == sorted((e["date"] for e in got),
                                                                 reverse=True)
    assert got[0]["date"] == end and isinstance(got[0]["sgv"], int)
    assert instant(got[0]["dateString"]) == end
    newest = iso(end)
    again = wire(ns, "GET", "/api/v1/entries/sgv.json?count=12",
                 [*req[:1], f"If-Modified-Since: {newest}", *req[2:]])
    assert again.status in (200, 304)
    if again.status == 200:
        assert len(again.json()) == 12
    tok = ns.read_token
    r = wire(ns, "GET", f"/api/v1/entries/sgv.json?count=12&token={tok}",
             ["User-Agent: openaps", "accept: application/json",
              "accept-encoding: gzip, deflate", "Connection: close"])
    assert r.status == 200 and len(r.json()) == 12


def test_ns_loop__temp_targets_since_yesterday(ns):
    """nightscout.sh:295-297: `find[created_at][$gte]=$(date -d -24hours -Iminutes -u)
    &find[eventType]=Temporary+Target` (the offset's `+` unescaped, a space on arrival).
    oref0-ns-loop.sh:107 keeps the file only when `.[0].duration` has a digit;
    lib/profile/targets.js:37-60 sorts by created_at, cancels on `duration === 0` (a number),
    else needs targetBottom and targetTop."""
    now = now_ms()
    h = {"api-secret": SECRET_SHA1}
    careportal = {"eventType": "Temporary Target", "reason": "Eating Soon", "targetTop": 80,
                  "targetBottom": 80, "duration": 60, "units": "mg/dl",
                  "enteredBy": "careportal"}
    assert ns.post("/api/v1/treatments", headers=h, json=[
        {**careportal, "created_at": iso(now - 30 * 60 * MIN)},  # 30 h ago: outside
        {**careportal, "created_at": iso(now - 40 * MIN)},
        {"eventType": "Temporary Target", "duration": 0, "reason": "Cancel",
         "enteredBy": "careportal", "created_at": iso(now - 5 * MIN)},
        {"eventType": "Note", "notes": "not a target", "created_at": iso(now - MIN)}]
    ).status_code == 200
    since = minutes_utc(now - 24 * 60 * MIN)
    r = ns_get(ns, "treatments.json",
               f"find[created_at][$gte]={since}&find[eventType]=Temporary+Target")
    assert r.status == 200, r.body[:300]
    got = r.json()
    assert [x["eventType"] for x in got] == ["Temporary Target"] * 2
    assert got[0]["duration"] == 0 and type(got[0]["duration"]) is int  # `=== 0`
    assert got[1]["targetTop"] == 80 and got[1]["targetBottom"] == 80 and \
        got[1]["duration"] == 60
    tok = ns.token("rig-tt", ["readable"])
    r = ns_get(ns, "treatments.json",
               f"find[created_at][$gte]={since}&find[eventType]=Temporary+Target", token=tok)
    assert r.status == 200 and len(r.json()) == 2


def test_ns_loop__carb_history_since_yesterday(ns):
    """nightscout.sh:299-301: `find[created_at][$gte]=<-Iminutes -u>&find[carbs][$exists]=true`;
    oref0-ns-loop.sh:137 keeps the file when `.[0].carbs` has a digit; lib/meal/history.js:27-39
    takes each record's `carbs` and `created_at`."""
    now = now_ms()
    h = {"api-secret": SECRET_SHA1}
    assert ns.post("/api/v1/treatments", headers=h, json=[
        {"eventType": "Carb Correction", "carbs": 25, "enteredBy": "careportal",
         "created_at": iso(now - 60 * MIN)},
        {"eventType": "Meal Bolus", "carbs": 40, "insulin": 4, "enteredBy": "xdrip",
         "created_at": iso(now - 20 * MIN)},
        {"eventType": "Correction Bolus", "insulin": 1, "created_at": iso(now - 10 * MIN)},
        {"eventType": "Carb Correction", "carbs": 15, "created_at": iso(now - 26 * 60 * MIN)}]
    ).status_code == 200
    r = ns_get(ns, "treatments.json",
               f"find[created_at][$gte]={minutes_utc(now - 24 * 60 * MIN)}"
               "&find[carbs][$exists]=true")
    assert r.status == 200, r.body[:300]
    got = r.json()
    assert [(x["carbs"], instant(x["created_at"])) for x in got] == \
        [(40, now - 20 * MIN), (25, now - 60 * MIN)]
    assert re.search(r"[0-9]", json.dumps(got[0]["carbs"]))


def test_ns_loop__pump_history_upload_then_latest_openaps_treatment(ns):
    """oref0-ns-loop.sh:230-259: `nightscout latest-openaps-treatment` (nightscout.sh:164-165,
    ns-get.sh:7-10,34) sends `treatments.json?find[enteredBy]=/openaps:\\/\\//&count=1?<sha1>`
    (the secret lands in count's value) with the api-secret header; `date -Is -d` of
    `.created_at` bounds the next upload (nightscout.sh:348 keeps only history newer), so that
    must be the newest openaps treatment. The upload (ns-upload.sh:47, :235) is the pump history
    of mm-format-ns-treatments.sh:27-40, resent whole when the query fails; lib/iob/history.js
    :318-330 reads `duration`/`rate` arithmetically, autotune needs the order newest first."""
    t = now_ms() - 60 * MIN
    batch = pump_treatments(t)
    r = ns_upload(ns, "treatments.json", batch)
    assert r.status == 200, r.body[:300]
    assert isinstance(r.json(), list)
    # a treatment entered later by hand is not the rig's
    ns.post("/api/v1/treatments", headers={"api-secret": SECRET_SHA1},
            json={"eventType": "Note", "notes": "by hand", "enteredBy": "careportal",
                  "created_at": iso(t + 40 * MIN)})
    q = wire(ns, "GET", f"/api/v1/treatments.json?find[enteredBy]=/openaps:\\/\\//"
                        f"&count=1?{SECRET_SHA1}", CURL + CURL_AUTH)
    assert q.status == 200, q.body[:300]
    got = q.json()
    assert len(got) == 1 and got[0]["enteredBy"] == "openaps://medtronic/722"
    assert instant(got[0]["created_at"]) == instant(batch[0]["created_at"])
    # the next loop re-sends overlapping history: no duplicates (Nightscout upserts on
    # created_at + eventType)
    before = ns.count("treatments")
    assert ns_upload(ns, "treatments.json", batch).status == 200
    assert ns.count("treatments") == before
    rows = ns_get(ns, "treatments.json",
                  f"find[created_at][$gte]={minutes_utc(t - MIN)}&count=10").json()
    temp = next(x for x in rows if x["eventType"] == "Temp Basal")
    assert temp["duration"] == 30 and temp["absolute"] == 0.5 and temp["rate"] == 0.5
    meal = next(x for x in rows if x["eventType"] == "Meal Bolus")
    assert meal["carbs"] == 30 and meal["insulin"] == 3.5 and meal["bolus"]["amount"] == 3.5
    assert [instant(x["created_at"]) for x in rows] == sorted(
        (instant(x["created_at"]) for x in rows), reverse=True)
    # token rigs: `...&count=1?token=<t>&token=<t>` and no header
    tok = ns.token("edisonrig", ["readable", "careportal"])
    q = wire(ns, "GET", f"/api/v1/treatments.json?find[enteredBy]=/openaps:\\/\\//"
                        f"&count=1?token={tok}&token={tok}", CURL)
    assert q.status == 200 and len(q.json()) == 1


def test_ns_loop__devicestatus_upload(ns):
    """oref0-ns-loop.sh:191-215: ns-status.js's object (created_at from `new Date()`, pump clock
    zoned, predBGs) POSTed by ns-upload.sh:47 to /api/v1/devicestatus.json; the reply goes
    through `jq '.[0].openaps.suggested | {BG: .bg, ...}'` (:213), an array. The OpenAPS pill
    (what followers read) must show it (COB, as on Nightscout, only with a profile)."""
    _seed_profile(ns)
    now = now_ms() - 30_000
    status = ns_status(now)
    r = ns_upload(ns, "devicestatus.json", status)
    assert r.status == 200, r.body[:300]
    reply = r.json()
    assert isinstance(reply, list) and reply[0]["openaps"]["suggested"]["bg"] == 142
    got = ns_get(ns, "devicestatus.json", "count=1").json()[0]
    assert got["device"] == "openaps://edison-rig"
    assert got["openaps"]["suggested"]["predBGs"]["IOB"][:2] == [142, 143]
    assert got["pump"]["reservoir"] == 120.5 and got["pump"]["clock"] == status["pump"]["clock"]
    props = ns.get(f"/api/v2/properties/iob,cob,openaps?token={ns.read_token}").json()
    assert props["iob"]["source"] == "OpenAPS" and props["iob"]["iob"] == 1.2
    assert props["cob"]["cob"] == 20
    # a token rig: `?token=` and no header
    tok = ns.token("edisonrig", ["readable", "devicestatus-upload"])
    again = ns_upload(ns, "devicestatus.json", ns_status(now + 5 * MIN), token=tok)
    assert again.status == 200 and again.json()[0]["openaps"]["iob"]["iob"] == 1.2


def test_ns_loop__status_preflight(ns):
    """nightscout.sh:184-192 (`nightscout ns <host> <secret> preflight`): ns-get host
    status.json with no query, so `/api/v1/status.json?`; `jq -r .status` must be ok."""
    r = ns_get(ns, "status.json")
    assert r.status == 200 and r.json()["status"] == "ok"


# -- oref0-pump-loop: pushover snooze shared between rigs -------------------------------------


def test_pushover__snooze_devicestatus_seen_by_other_rigs(ns):
    """oref0-pushover.sh:110 uploads `{"date":<epoch seconds>,"device":"openaps://<host>",
    "snooze":"carbsReq"}` (no created_at) with ns-upload to devicestatus.json; every rig then
    reads `/api/v1/devicestatus.json?count=100` (:83-91) and `select(.snooze=="carbsReq") |
    select(.date > <now-10min in seconds>)`. Nightscout stamps a status without created_at
    with the time it arrives (lib/server/devicestatus.js create: moment(obj.created_at) or
    now); `date` is the rig's own field."""
    now_s = now_ms() // 1000
    snooze = {"date": now_s, "device": "openaps://edison-rig", "snooze": "carbsReq"}
    r = wire(ns, "POST", "/api/v1/devicestatus.json",
             ["User-Agent: curl/7.64.0", "Accept: */*", *UPLOAD],
             (json.dumps(snooze) + "\n").encode())
    assert r.status == 200, r.body[:300]
    ns_upload(ns, "devicestatus.json", ns_status(now_s * 1000 - MIN))
    r = wire(ns, "GET", "/api/v1/devicestatus.json?count=100",
             ["User-Agent: curl/7.64.0", "Accept: */*", "Accept-Encoding: deflate, gzip",
              *CURL_AUTH])
    assert r.status == 200
    seen = [d for d in r.json() if d.get("snooze") == "carbsReq" and d["date"] > now_s - 600]
    assert [d["date"] for d in seen] == [now_s], [
        {k: d.get(k) for k in ("date", "created_at", "snooze")} for d in r.json()]


# -- nightly: autotune and the profile upload ------------------------------------------------


def test_autotune__day_of_sgv_and_treatments(ns):
    """oref0-autotune.sh:206-218: `/api/v1/entries/sgv.json?find%5Bdate%5D%5B%24gte%5D=<ms>&
    find%5Bdate%5D%5B%24lte%5D=<ms>&count=1500` and `treatments.json?find%5Bcreated_at%5D
    %5B%24gte%5D=<date -Iminutes, local>&find%5Bcreated_at%5D%5B%24lte%5D=...` (no count: a day
    of 5-minute temps is more than 100; Nightscout defaults to 1000 with a find). The
    treatments are walked newest first (lib/iob/history.js:276-282 skips out-of-order ones)."""
    end = now_ms() - 2 * MIN
    start = end - 24 * 60 * MIN
    seed_sgvs(ns, 289, end=end)
    temps = [{"eventType": "Temp Basal", "duration": 30, "absolute": 0.8, "rate": 0.8,
              "enteredBy": "openaps://medtronic/722", "created_at": zoned(end - i * 5 * MIN),
              "timestamp": zoned(end - i * 5 * MIN)} for i in range(150)]
    assert ns_upload(ns, "treatments.json", temps).status == 200
    q = (f"find%5Bdate%5D%5B%24gte%5D={start}&find%5Bdate%5D%5B%24lte%5D={end}&count=1500")
    r = ns_get(ns, "entries/sgv.json", q)
    assert r.status == 200, r.body[:300]
    sgvs = r.json()
    assert len(sgvs) == 289 and sgvs[0]["date"] == end and sgvs[-1]["date"] == start
    q = (f"find%5Bcreated_at%5D%5B%24gte%5D={minutes_local(start - 18 * 60 * MIN)}"
         f"&find%5Bcreated_at%5D%5B%24lte%5D={minutes_local(end + 18 * 60 * MIN)}")
    r = ns_get(ns, "treatments.json", q)
    assert r.status == 200, r.body[:300]
    got = r.json()
    assert len(got) == 150
    times_ = [instant(x["created_at"]) for x in got]
    assert times_ == sorted(times_, reverse=True) and times_[0] == end // 1000 * 1000


def _js_str(value) -> str:
    """JavaScript's '' + number."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _js_round(x: float) -> int:
    import math
    return math.floor(x + 0.5)


def oref0_profile_changes(data: dict, profiledata: dict) -> tuple[dict, bool]:
    """oref0-upload-profile.js:111-272 in Python: the profile to upload, and whether it
    differs from Nightscout's (`!_.isEqual(original_profile, new_profile)`)."""
    import copy
    original = data
    new = copy.deepcopy(data)
    pid = data["defaultProfile"]
    store = new["store"][pid]
    store["dia"] = profiledata["dia"]
    store["basal"] = [{"time": b["start"][:5], "value": _js_str(_js_round(b["rate"] * 100) / 100),
                       "timeAsSeconds": _js_str(b["minutes"] * 60)}
                      for b in profiledata["basalprofile"]]
    units = new.get("units")
    lows, highs = [], []
    for e in profiledata["bg_targets"]["targets"]:
        time = e["start"][:5]
        seconds = int(time[:2]) * 3600 + int(time[3:5]) * 60
        dec = 10 if units == "mmol" else 1
        f = 1
        if units and profiledata["bg_targets"].get("units") and \
                units.upper() != profiledata["bg_targets"]["units"].upper():
            f = 0.055 if units == "mmol" else 18
        lo = _js_round(e["low"] * f * dec) / dec
        hi = _js_round(e["high"] * f * dec) / dec
        lows.append({"time": time, "value": _js_str(lo), "timeAsSeconds": _js_str(seconds)})
        highs.append({"time": time, "value": _js_str(hi), "timeAsSeconds": _js_str(seconds)})
    store["target_low"], store["target_high"] = lows, highs
    sens = []
    for e in profiledata["isfProfile"]["sensitivities"]:
        dec = 10 if units == "mmol" else 1
        f = 1
        if units and profiledata["isfProfile"].get("units") and \
                units.upper() != profiledata["isfProfile"]["units"].upper():
            f = 0.055 if units == "mmol" else 18
        sens.append({"time": e["start"][:5], "value": _js_str(_js_round(e["sensitivity"] * f * dec)
                                                              / dec),
                     "timeAsSeconds": _js_str(e["offset"] * 60)})
    store["sens"] = sens
    store["carbratio"] = [{"time": c["start"][:5], "value": _js_str(_js_round(c["ratio"] * 10) / 10),
                           "timeAsSeconds": _js_str(c["offset"] * 60)}
                          for c in profiledata["carb_ratios"]["schedule"]]
    upload = copy.deepcopy(data) if pid != "OpenAPS Autosync" else new
    changed = original != new
    if changed:
        d = datetime.now(UTC)
        store["startDate"] = d.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        if pid != "OpenAPS Autosync":
            upload["defaultProfile"] = "OpenAPS Autosync"
            upload["store"]["OpenAPS Autosync"] = store
        upload.pop("_id", None)
        upload["startDate"] = upload["created_at"] = store["startDate"]
        upload["mills"] = int(d.timestamp() * 1000)
    return upload, changed


PROFILEDATA = {  # the rig's profile.json (settings/) as oref0-get-profile writes it
    "dia": 5, "basalprofile": [{"i": 0, "start": "00:00:00", "rate": 0.8, "minutes": 0},
                               {"i": 1, "start": "06:00:00", "rate": 1.05, "minutes": 360}],
    "bg_targets": {"units": "mg/dL", "user_preferred_units": "mg/dL", "targets": [
        {"i": 0, "start": "00:00:00", "offset": 0, "low": 100, "high": 110,
         "min_bg": 100, "max_bg": 110}]},
    "isfProfile": {"units": "mg/dL", "user_preferred_units": "mg/dL", "sensitivities": [
        {"i": 0, "start": "00:00:00", "sensitivity": 45, "offset": 0, "x": 0,
         "endOffset": 1440}]},
    "carb_ratios": {"units": "grams", "schedule": [
        {"x": 0, "i": 0, "start": "00:00:00", "offset": 0, "ratio": 10, "r": 10}]},
}


def _seed_profile(ns):
    """The profile the user made in Nightscout's profile editor."""
    start = iso(now_ms() - 30 * 24 * 60 * MIN)
    entry = {"dia": "4", "carbratio": [{"time": "00:00", "value": "12", "timeAsSeconds": "0"}],
             "carbs_hr": "20", "delay": "20",
             "sens": [{"time": "00:00", "value": "50", "timeAsSeconds": "0"}],
             "timezone": "America/New_York",
             "basal": [{"time": "00:00", "value": "0.7", "timeAsSeconds": "0"}],
             "target_low": [{"time": "00:00", "value": "90", "timeAsSeconds": "0"}],
             "target_high": [{"time": "00:00", "value": "120", "timeAsSeconds": "0"}],
             "startDate": "1970-01-01T00:00:00.000Z", "units": "mg/dl"}
    r = ns.post("/api/v1/profile", headers={"api-secret": SECRET_SHA1},
                json={"defaultProfile": "Default", "store": {"Default": entry},
                      "startDate": start, "mills": 0, "units": "mg/dl", "created_at": start})
    assert r.status_code == 200


def _upload_profile(ns, get_target: str, get_lines: list[str], post_target: str,
                    post_lines: list[str]) -> None:
    node = ["accept: application/json", "Connection: close"]
    r = wire(ns, "GET", get_target, [*get_lines, *node])
    assert r.status == 200, (r.status, r.body[:300])  # :106 exits otherwise
    data = r.json()
    assert data["defaultProfile"] and isinstance(data["store"][data["defaultProfile"]], dict)
    upload, changed = oref0_profile_changes(data, PROFILEDATA)
    assert changed
    r = wire(ns, "POST", post_target, [*post_lines, *node], json.dumps(upload).encode())
    assert r.status == 200, r.body[:300]  # :315
    # the next night: the profile read back is the one sent, so nothing is sent again
    data = wire(ns, "GET", get_target, [*get_lines, *node]).json()
    assert data["defaultProfile"] == "OpenAPS Autosync"
    again, changed = oref0_profile_changes(data, PROFILEDATA)
    assert not changed, json.dumps(data["store"]["OpenAPS Autosync"])[:400]


def test_upload_profile__plain_secret(ns):
    """oref0-upload-profile.js:72-77 with a plain secret (run by hand): SHA-1 in `api-secret`
    on GET /api/v1/profile/current, which must be 200 with defaultProfile and its store
    (:106-120); POST /api/v1/profile with `API-SECRET` (:298-312), status 200 (:315); the
    next run compares with `_.isEqual` (:255): what was uploaded must read back equal."""
    _seed_profile(ns)
    _upload_profile(ns, "/api/v1/profile/current",
                    ["content-type: application/json", f"api-secret: {SECRET_SHA1}"],
                    "/api/v1/profile",
                    ["Content-Type: application/json", f"API-SECRET: {SECRET_SHA1}"])


def test_upload_profile__hashed_secret_from_cron(ns):
    """oref0-cron-nightly.sh:26 passes $API_SECRET, which the crontab holds hashed (40 hex,
    oref0-setup.sh:1319). oref0-upload-profile.js:72-80 then takes the else branch: GET
    `/api/v1/profile/current?<sha1>` with no api-secret header (a Nightscout answers because its
    default role is readable); the POST still sends `API-SECRET: <sha1>` (:300-304)."""
    _seed_profile(ns)
    _upload_profile(ns, f"/api/v1/profile/current?{SECRET_SHA1}",
                    ["content-type: application/json"],
                    "/api/v1/profile",
                    ["Content-Type: application/json", f"API-SECRET: {SECRET_SHA1}"])


def test_upload_profile__token_and_switch(ns):
    """oref0-upload-profile.js:79 (token): GET `/api/v1/profile/current?token=...`, POST
    `/api/v1/profile?token=...` (:300-301); with --switch a Profile Switch without created_at to
    `/api/v1/treatments.json?token=...` (:329-351), status 200."""
    _seed_profile(ns)
    tok = ns.token("edisonrig", ["admin"])  # a profile write needs api:profile:create
    _upload_profile(ns, f"/api/v1/profile/current?token={tok}",
                    ["content-type: application/json"],
                    f"/api/v1/profile?token={tok}", ["Content-Type: application/json"])
    switch = {"enteredBy": "OpenAPS", "eventType": "Profile Switch", "duration": 0,
              "profile": "OpenAPS Autosync", "reason": "Applying uploaded profile",
              "notes": "Applying uploaded profile"}
    r = wire(ns, "POST", f"/api/v1/treatments.json?token={tok}",
             ["Content-Type: application/json", "accept: application/json"],
             json.dumps(switch).encode())
    assert r.status == 200
    got = ns_get(ns, "treatments.json", "find[eventType]=Profile+Switch&count=1").json()
    assert got[0]["profile"] == "OpenAPS Autosync"


# -- setup: token permissions ----------------------------------------------------------------


def _oref0_check(ns, token: str) -> list[str]:
    """oref0_nightscout_check.py:54-109 (bin/): what the check reports missing ([] = ok)."""
    m = re.match(r"^token=(?P<token>[a-z0-9_]+-[a-z0-9]{16}).*", "token=" + token)
    assert m, f"{token!r} is not a token oref0-setup accepts (:57-64)"
    r = wire(ns, "GET", f"/api/v2/authorization/request/{m.group('token')}",
             ["User-Agent: python-requests/2.25.1", "Accept-Encoding: gzip, deflate",
              "Accept: */*", "Connection: keep-alive"])
    assert r.status == 200, r.body[:300]
    d = r.json()
    assert isinstance(d["exp"], int)
    pg = d["permissionGroups"][0]
    if pg == ["*"]:
        return []
    return [p for p in ["api:treatments:read", "api:treatments:create",
                        "api:devicestatus:read", "api:devicestatus:create"] if p not in pg]


def test_setup__admin_token_passes_the_permission_check(ns):
    """oref0-setup.sh:935-938 runs oref0_nightscout_check.py for token rigs and stops on
    failure; an admin token passes with a warning (:96-97)."""
    assert _oref0_check(ns, ns.token("myedisonhostname", ["admin"])) == []


def test_setup__rig_role_passes_the_permission_check(ns):
    """The OpenAPS docs (the walkthrough's phase-1 nightscout-setup.md, "Switching from
    API_SECRET to token based authentication for your rig") have the user add a role
    `oref0rig` with api:devicestatus:create, api:devicestatus:read, api:entries:create,
    api:entries:read, api:treatments:create, api:treatments:read and give the rig's subject
    that role; oref0_nightscout_check.py:93-109 requires the four treatments/devicestatus ones
    literally in permissionGroups[0]. The site has that role built in (roles cannot be
    added), so the docs' second step, a subject with the role, works as written."""
    admin = {"api-secret": SECRET_SHA1}
    made = ns.post("/api/v2/authorization/subjects", headers=admin, json={
        "name": "myedisonhostname", "roles": ["oref0rig"]})
    assert made.status_code == 200, made.text
    tok = made.json()["accessToken"]
    assert _oref0_check(ns, tok) == []
    # and what the rig then does with it: read and write treatments, statuses, entries
    q = f"?token={tok}"
    assert ns.get(f"/api/v1/treatments.json{q}").status_code == 200
    assert ns.post(f"/api/v1/entries.json{q}", json=[{"type": "sgv", "sgv": 111,
                                                        "date": now_ms() - MIN}]).status_code \
        == 200
    assert ns.post(f"/api/v1/profile{q}", json={"defaultProfile": "x"}).status_code in (
        401, 403)  # not a profile writer


# -- CGM uploaders on the rig ------------------------------------------------------------------


def test_rig_cgm__entries_uploads(ns):
    """oref0-upload-entries.sh:37 (G5/G6 via the rig, oref0-cron-every-minute.sh:99-100):
    ns-upload to `/api/v1/entries` (no extension) of cgm-glucose.json (cgm/); and Medtronic CGM
    (oref0-setup's mdt-cgm.json:71-91): nightscout.sh:211-225 records with type sgv or
    `pumpdata` (no sgv), uploaded to entries.json after `entries.json?count=300` (:203)."""
    end = now_ms() - MIN
    g6 = [{"device": "openaps://edison-rig", "date": end - i * 5 * MIN,
           "dateString": iso(end - i * 5 * MIN), "sgv": 120 + i, "glucose": 120 + i,
           "direction": "Flat", "type": "sgv", "filtered": 120000, "unfiltered": 121000,
           "rssi": -70, "noise": 1} for i in range(3)]
    r = ns_upload(ns, "entries", g6)
    assert r.status == 200 and isinstance(r.json(), list), r.body[:300]
    local = datetime.fromtimestamp((end - 20 * MIN) / 1000, EST).strftime("%Y-%m-%dT%H:%M:%S")
    mdt = [{"sgv": 130, "glucose": 130, "_type": "GlucoseSensorData", "name": "GlucoseSensorData",
            "dateString": local, "date": end - 20 * MIN, "type": "sgv",
            "medtronic": "GlucoseSensorData", "device": "openaps://medtronic/pump/cgm"},
           {"_type": "SensorWeakSignal", "name": "SensorWeakSignal", "dateString": local,
            "date": end - 20 * MIN + 1000, "type": "pumpdata", "medtronic": "SensorWeakSignal",
            "device": "openaps://medtronic/pump/cgm"}]
    assert ns_get(ns, "entries.json", "count=300").status == 200
    r = ns_upload(ns, "entries.json", mdt)
    assert r.status == 200, r.body[:300]
    assert len(r.json()) == 2  # uploaded-entries.json (nightscout/); `jq '. | length'` (ns-loop:285)
    got = ns_get(ns, "entries.json", "find[type][$eq]=sgv").json()
    assert [e["sgv"] for e in got] == [120, 121, 122, 130]
    assert got[0]["dateString"] and instant(got[0]["dateString"]) == end


def test_delete_old_devicestatus(ns):
    """ns-delete-old-devicestatus.sh:35-54 (by hand or `nightly`): after eval, GET and
    `DELETE -H "API-SECRET: <sha1>"` of `devicestatus.json?find[created_at][$lte]=<YYYY-MM-DD>
    &count=100000`; older statuses go, newer stay."""
    now = now_ms()
    for days in (40, 35, 1):
        ns_upload(ns, "devicestatus.json", ns_status(now - days * 24 * 60 * MIN))
    day = datetime.fromtimestamp((now - 30 * 24 * 60 * MIN) / 1000, UTC).strftime("%Y-%m-%d")
    q = f"/api/v1/devicestatus.json?find[created_at][$lte]={day}&count=100000"
    old = wire(ns, "GET", q, ["User-Agent: curl/7.64.0", "Accept: */*", *CURL_AUTH])
    assert old.status == 200 and len(old.json()) == 2
    r = wire(ns, "DELETE", q, ["User-Agent: curl/7.64.0", "Accept: */*",
                               f"API-SECRET: {SECRET_SHA1}"])
    assert r.status == 200, r.body[:300]
    assert ns.count("devicestatus") == 1


# -- nightscout-menu-bar (gabe565/nightscout-menu-bar, 21f442a, 2026-04-16) -------------------


def _go_int(value, where: str) -> None:
    """What encoding/json accepts for a Go int / int64 (Mgdl, Mills): an integer literal, or
    null / absent (left zero). 120.0 or 1.5 fail the whole Decode."""
    assert value is None or (isinstance(value, int) and not isinstance(value, bool)), \
        f"{where} = {value!r} does not decode into a Go int"


def _go_reading(r: dict, where: str) -> None:
    """internal/nightscout/reading.go Reading: last Mgdl(int), mills/fromMills/toMills
    Mills(int64), mean/index json.Number, sgvs []SGV (sgv.go: mgdl int, mills int64, _id/device/
    direction/type strings, the rest json.Number)."""
    for k in ("last", "mills", "fromMills", "toMills"):
        _go_int(r.get(k), f"{where}.{k}")
    for k in ("mean", "index"):
        assert r.get(k) is None or isinstance(r[k], int | float), f"{where}.{k}"
    for i, s in enumerate(r.get("sgvs") or []):
        _go_int(s.get("mgdl"), f"{where}.sgvs[{i}].mgdl")
        _go_int(s.get("mills"), f"{where}.sgvs[{i}].mills")
        for k in ("_id", "device", "direction", "type"):
            assert s.get(k) is None or isinstance(s[k], str), f"{where}.sgvs[{i}].{k}"
        for k in ("filtered", "unfiltered", "noise", "rssi", "scaled"):
            assert s.get(k) is None or isinstance(s[k], int | float), f"{where}.sgvs[{i}].{k}"


def test_nightscout_menu_bar__properties_decode_into_its_go_types(ns):
    """internal/fetch/fetch.go:61-101,114-132: GET <url>/api/v2/properties/bgnow,buckets,delta,
    direction (path.Join keeps the URL's path), `Api-Secret: sha1(<token setting>)`, Go's
    `Accept-Encoding: gzip`, `If-None-Match` with the last ETag; 304 means unchanged, any status
    but 200/304 is an error; the body must decode into internal/nightscout/*.go (ints for mgdl
    and mills). internal/ticker/fetch.go:45-50 schedules the next read from buckets[0]'s
    toMills - fromMills. Readings every minute (Libre 3 through Juggluco or xDrip+) make
    bucket means fractional."""
    end = now_ms() - 30_000
    r = ns.post("/api/v1/entries", headers={"api-secret": SECRET_SHA1}, json=[
        {"type": "sgv", "sgv": 100 + (i * 7) % 5, "date": end - i * MIN,
         "dateString": iso(end - i * MIN), "direction": "FortyFiveUp", "device": "Juggluco"}
        for i in range(30)])
    assert r.status_code == 200
    for token, label in ((ns.read_token, "token"), (None, "secret")):
        checksum = hashlib.sha1((token or "bedside-upload-secret-2026").encode()).hexdigest()
        lines = ["User-Agent: nightscout-menu-bar/0.17.0 (linux/amd64)",
                 f"Api-Secret: {checksum}", "Accept-Encoding: gzip"]
        got = wire(ns, "GET", "/api/v2/properties/bgnow,buckets,delta,direction", lines)
        assert got.status == 200, (label, got.status, got.body[:200])
        p = got.json()
        _go_reading(p["bgnow"], "bgnow")
        for i, b in enumerate(p["buckets"]):
            _go_reading(b, f"buckets[{i}]")
        d = p["delta"]
        _go_int(d.get("mgdl"), "delta.mgdl")
        _go_int(d["times"].get("recent"), "delta.times.recent")
        _go_int(d["times"].get("previous"), "delta.times.previous")
        assert isinstance(d.get("display"), str) and isinstance(d.get("interpolated"), bool)
        _go_reading(d.get("previous") or {}, "delta.previous")
        assert all(isinstance(p["direction"].get(k), str) for k in ("entity", "label", "value"))
        assert p["bgnow"]["mills"] == end and p["bgnow"]["sgvs"][0]["direction"] == "FortyFiveUp"
        b0 = p["buckets"][0]
        assert b0["toMills"] > b0["fromMills"]
        etag = got.headers.get("etag")
        if etag:
            again = wire(ns, "GET", "/api/v2/properties/bgnow,buckets,delta,direction",
                         [*lines, f"If-None-Match: {etag}"])
            assert again.status in (200, 304)


# -- Urchin CGM (mddub/urchin-cgm, Pebble, eb59b66, 2016) -------------------------------------


def test_urchin__pebble_watchface_queries(cloud_ns):
    """src/js/data.js:720-809: no credential at all (a site whose default role is readable),
    `Cache-Control: no-cache`, status must be 200 (:83); sgv.json with find[date][$gt],
    Temp Basal treatments, `find[$or][0][uploaderBattery][$exists]=true&find[$or][1]
    [uploader][$exists]=true`, `find[openaps][$exists]=true`, Loop statuses with
    `find[loop.failureReason][$not][$exists]=true` (:789), then each again with
    `&find[created_at][$gt]=<encodeURIComponent(newest created_at)>` (:723). Only a public
    cloud tenant can answer it (the edge has no anonymous reads)."""
    store = cloud_ns.app.state.store
    store.create_tenant("fam-pub", "Public", public_read=True)
    store.set_api_secret("fam-pub", "public-family-secret-26")
    base = f"{cloud_ns.root}/t/fam-pub"
    h = {"api-secret": hashlib.sha1(b"public-family-secret-26").hexdigest()}
    now = now_ms()
    cloud_ns.client.post(base + "/api/v1/entries", headers=h, json=[
        {"type": "sgv", "sgv": 120 + i, "date": now - i * 5 * MIN, "direction": "Flat"}
        for i in range(6)])
    cloud_ns.client.post(base + "/api/v1/devicestatus", headers=h, json=[
        ns_status(now - 4 * MIN),
        {"device": "loop://iPhone", "created_at": iso(now - 3 * MIN),
         "loop": {"iob": {"iob": 1}, "timestamp": iso(now - 3 * MIN)}},
        {"device": "loop://iPhone", "created_at": iso(now - 2 * MIN),
         "loop": {"failureReason": "pump comms", "timestamp": iso(now - 2 * MIN)}},
        {"device": "xDrip", "created_at": iso(now - MIN), "uploader": {"battery": 80}}])
    cloud_ns.client.post(base + "/api/v1/treatments", headers=h, json=[
        {"eventType": "Temp Basal", "absolute": 0.5, "duration": 30,
         "created_at": iso(now - 20 * MIN)},
        {"eventType": "Correction Bolus", "insulin": 1, "created_at": iso(now - 30 * MIN)}])
    req = ["Cache-Control: no-cache", "User-Agent: Mozilla/5.0 (Pebble)", "Accept: */*"]
    q = {
        "sgv": f"/api/v1/entries/sgv.json?count=1000&find[date][$gt]={now - 61 * 5 * MIN}",
        "temps": "/api/v1/treatments.json?find[eventType]=Temp+Basal&count=60",
        "battery": "/api/v1/devicestatus.json?find[$or][0][uploaderBattery][$exists]=true"
                   "&find[$or][1][uploader][$exists]=true&count=1",
        "cal": "/api/v1/entries/cal.json?count=1",
        "boluses": "/api/v1/treatments.json?find[insulin][$exists]=true&count=30",
        "openaps": "/api/v1/devicestatus.json?find[openaps][$exists]=true&count=24",
        "loop": "/api/v1/devicestatus.json?find[loop][$exists]=true"
                "&find[loop.failureReason][$not][$exists]=true&count=1",
        "enacted": "/api/v1/devicestatus.json?find[loop.enacted][$exists]=true&count=1",
        "profile": "/api/v1/profile.json"}
    status = {}
    for name, target in q.items():
        r = wire(cloud_ns, "GET", target, req, base=base)
        status[name] = r.status
        if r.status == 200:
            assert isinstance(r.json(), list), name
    assert status == dict.fromkeys(q, 200), status
    newest = wire(cloud_ns, "GET", q["openaps"], req, base=base).json()[0]["created_at"]
    from urllib.parse import quote
    r = wire(cloud_ns, "GET", q["openaps"] + f"&find[created_at][$gt]={quote(newest, safe='')}",
             req, base=base)
    assert r.status == 200 and r.json() == []
    loop = wire(cloud_ns, "GET", q["loop"], req, base=base)
    assert loop.status == 200 and [d["loop"]["iob"]["iob"] for d in loop.json()] == [1]
