"""Uploaders and bridges (MiniMed Connect, diasend, Tidepool, the legacy Android uploader)
against the cloud and the edge, request for request, from their own source.

minimed-connect-to-nightscout (nightscout/minimed-connect-to-nightscout @ 57bb042, v1.5.8):
the URL is `NS` as typed (or `https://` + WEBSITE_HOSTNAME) + `/api/v1/entries.json` and
`/api/v1/devicestatus.json` (run.js:50-51); nightscout.js:11-19 is `request.post` with
`json: true` (so `accept` and `content-type: application/json`), the body an array, and
`api-secret: sha1(API_SECRET)`; anything but **200** is logged as a failure (nightscout.js:23).
transform.js:142-168 makes the sgvs (trend and direction on the newest only, `NONE` is trend
0), transform.js:87-139 the one status (pump battery percent, reservoir, `pump.iob.bolusiob`,
`pump.clock`, `uploader.battery`, `connect.*`; a Guardian sends no `pump`). The recency filter
(filter.js) lives in memory: after a restart the last 24 sgvs (CARELINK_SGV_LIMIT) and the
status go again, and run.js:87-89 counts on the entries upsert to keep the stored trend.

diasend-nightscout-bridge (burnedikt/diasend-nightscout-bridge @ 04ba884, http-api.ts): axios
0.27 at `new URL("/api/v1", NIGHTSCOUT_URL)`, which drops any path of the URL (so the host
root, where the secret names the tenant), `api-secret: sha1(secret)`, paths with a trailing
slash (`/treatments/`, `/entries/`), params encoded by axios (brackets, `$`, `:` raw, space as
`+`). Each cycle (index.ts:241-276) reads the newest treatment of each type with
`count=1&find[app]=diasend&find[eventType]=…` and the newest entry; treatments.ts:137 reads
`find[created_at][$gte]=<ISO>` and dedups by `===` on created_at, device, app, notes and the
amounts (utils.ts:34-84); a meal bolus takes the carbs of a stored Carb Correction and that
treatment is deleted with `DELETE /treatments/` whose find is **every field of the document
as read back** (treatments.ts:196-221, http-api.ts:80-84). Pump settings: GET `/profile`,
`[0]` changed, PUT `/profile` back (index.ts:228-234, pump-settings.ts:68-93).

TidepoolToNightScoutSync (skalahonza/TidepoolToNightScoutSync @ c098d19,
NightscoutClient.cs): Pathoschild FluentClient 4.0 (the base URL's path kept, a `/` added),
every request with `?token=<ApiKey>` (the README's ApiKey is the API secret, its appsettings
say a secret or token "with at least careportal role"), writes also with
`api-secret: sha1(ApiKey)`; Newtonsoft bodies without nulls: treatments have no eventType
unless Exercise, doubles as `4.0`, `units: "mmol"`, created_at to the second when whole;
profiles carry `mills` as text, a zone-less `startDate` and every number as text
(TidepoolToNightScoutSyncer.cs:29-113). The profile of the same `mills` is found in GET
`profile` and PUT back with its `_id`; the PUT reply is read as one profile object and the
POST reply as an array; any non-2xx throws and ends the run (Program.cs:40-41: the
treatments sync does not run after a failed profile sync). Every run posts the day again.

android-uploader (nightscout/android-uploader, RestV1Uploader.java and
AbstractRestUploader.java; master @ 37d1fe0 and dev @ 31fcdee): the URL
`https://SECRET@host/api/v1` (RestUriUtils.java: the user info's SHA-1 as `api-secret`, the
rest joined with `/` + `entries` or `devicestatus`, no `.json`), one JSON object per POST,
`Content-Type` and `Accept: application/json`; any 2xx is success. master's `dateString` is
java.util.Date.toString() ("Sun Mar 08 18:03:54 PST 2015"); dev adds `sysTime` (the
receiver's seconds), `ins` entries and `receiverBattery`. Statuses have no `created_at`.

Chinese CGM bridges (ImLovinIt/nightscout-sisensingcgm-uploader @ cf7f142, module.py:22-35
and setup.py:61-65; yorunoken/nightscout-sibionics-uploader, utils.ts:23-52 and
consts.ts:3-8; pmakhotkin/ottai-nightscout-uploader before 444c548): every cycle starts
with `GET {url}api/v1/slice/entries/dateString/sgv/.*/.*?count=1`, the path sent as written,
headers `api-secret: <SHA-1 of an access token>`, `User-Agent`, `Content-Type` and `Accept:
application/json`; `[]` means nothing stored yet, otherwise `data[0].date` is the newest
reading and only newer ones are posted. A 404 ends the Sibionics run (it throws on any non-2xx)
and makes the Sisensing one index the error object (nothing uploaded). Nightscout
(cgm-remote-monitor lib/api/entries/index.js:613-693 and :774) brace-expands the prefix and
regex into patterns the field must match, sets `type`, counts 10 by default and skips the
4-day window because the query names `dateString`.

Not replayed: NightscoutLoader (gh-davidr) and NightscoutTreatmentsToSidiary (tanja3981) read
Nightscout's MongoDB directly (a `mongodb+srv://` URL), not its HTTP API.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import quote, urlsplit

from tests.support.nightscout import MIN, SECRET, SECRET_SHA1, Reply, iso, now_ms, wire

ON_POSTGRES = True


# -- the wire -------------------------------------------------------------------------------


def compact(doc) -> bytes:
    """JSON.stringify / org.json / Newtonsoft: no spaces."""
    return json.dumps(doc, separators=(",", ":")).encode()


# -- minimed-connect-to-nightscout ------------------------------------------------------------

MC = [f"api-secret: {SECRET_SHA1}", "accept: application/json",
      "content-type: application/json"]  # nightscout.js:11-19 (request, json: true)


def mc_post(ns, what: str, items: list, base: str | None = None) -> Reply:
    return wire(ns, "POST", f"/api/v1/{what}.json", MC, compact(items), base)


def mc_sgvs(start: int, n: int, trend: tuple[int, str] | None, family: str = "NGP") -> list:
    """transform.js:142-168: newest last; the CareLink trend merged into the newest only."""
    out = [{"type": "sgv", "sgv": 120 + i, "date": start + i * 5 * MIN,
            "dateString": iso(start + i * 5 * MIN), "device": f"connect-{family.lower()}"}
           for i in range(n)]
    if trend:
        out[-1].update(trend=trend[0], direction=trend[1])
    return out


def mc_status(t: int, family: str = "NGP") -> dict:
    """transform.js:87-139 for data['lastMedicalDeviceDataUpdateServerTime'] = t."""
    connect = {"sensorState": "NO_ERROR_MESSAGE", "calibStatus": "LESS_THAN_TWELVE_HRS",
               "sensorDurationHours": 73, "timeToNextCalibHours": 9, "conduitInRange": True,
               "conduitMedicalDeviceInRange": True, "conduitSensorInRange": True}
    if family == "GUARDIAN":
        return {"created_at": iso(t), "device": "connect-guardian", "uploader": {"battery": 64},
                "connect": {**connect, "medicalDeviceBatteryLevelPercent": 64,
                            "medicalDeviceFamily": "GUARDIAN"}}
    return {"created_at": iso(t), "device": "connect-ngp", "uploader": {"battery": 87},
            "pump": {"battery": {"percent": 75}, "reservoir": 112.5,
                     "iob": {"timestamp": iso(t), "bolusiob": 1.35}, "clock": iso(t - 40_000)},
            "connect": connect}


def test_minimed_connect__sgvs_answer_200_and_a_restart_keeps_the_stored_trend(ns):
    t = now_ms() - 23 * 5 * MIN
    first = mc_sgvs(t, 24, (2, "SingleUp"))
    r = mc_post(ns, "entries", first)
    assert r.status == 200, (r.status, r.body[:300])  # nightscout.js:23: 201 would be an error
    assert len(r.json()) == 24
    # the next cycle: only the newer reading passes filter.js, CareLink's trend on it
    nxt = mc_sgvs(t + 24 * 5 * MIN, 1, (6, "SingleDown"))
    assert mc_post(ns, "entries", nxt).status == 200
    # restart (filter.js forgets): the last 24 again, only the newest with a trend
    again = mc_sgvs(t + 5 * MIN, 24, (6, "SingleDown"))
    again[-2]["sgv"] = first[-1]["sgv"]  # the same reading CareLink reported before
    r = mc_post(ns, "entries", again)
    assert r.status == 200
    got = ns.get(f"/api/v1/entries.json?count=50&token={ns.read_token}").json()
    assert len(got) == 25
    by_date = {e["date"]: e for e in got}
    assert by_date[first[-1]["date"]]["direction"] == "SingleUp"  # run.js:87-89
    assert by_date[first[-1]["date"]]["trend"] == 2
    assert got[0]["direction"] == "SingleDown" and got[0]["sgv"] == 143


def test_minimed_connect__trend_none_and_the_azure_root_url(ns):
    """CareLink's NONE is `trend: 0, direction: "NONE"`; WEBSITE_HOSTNAME gives the root."""
    t = now_ms() - 10 * MIN
    r = mc_post(ns, "entries", mc_sgvs(t, 3, (0, "NONE"), "GUARDIAN"), base=ns.root)
    assert r.status == 200, (r.status, r.body[:300])
    newest = ns.get(f"/api/v1/entries/sgv.json?count=1&token={ns.read_token}").json()[0]
    assert newest["direction"] == "NONE" and newest["trend"] == 0
    assert newest["device"] == "connect-guardian"


def test_minimed_connect__pump_status_reposted_after_restart_and_read_by_plugins(ns):
    t = now_ms() - 2 * MIN
    r = mc_post(ns, "devicestatus", [mc_status(t)])
    assert r.status == 200, (r.status, r.body[:300])
    assert mc_post(ns, "devicestatus", [mc_status(t)]).status == 200  # restart: the same one
    g = mc_post(ns, "devicestatus", [mc_status(t - MIN, "GUARDIAN")])
    assert g.status == 200
    got = ns.get(f"/api/v1/devicestatus.json?count=10&token={ns.read_token}").json()
    assert sorted(s["device"] for s in got) == ["connect-guardian", "connect-ngp"]
    ngp = next(s for s in got if s["device"] == "connect-ngp")
    assert ngp["pump"]["iob"]["bolusiob"] == 1.35 and ngp["connect"]["conduitInRange"] is True
    p = ns.get(f"/api/v2/properties/pump,upbat?token={ns.read_token}").json()
    assert p["pump"]["data"]["reservoir"]["value"] == 112.5
    assert p["pump"]["data"]["battery"]["display"] == "75%"
    assert p["upbat"]["devices"]["connect-ngp"]["min"]["display"] == "87%"


def test_minimed_connect__pump_iob_is_the_sites_iob(ns):
    """iob.js (cgm-remote-monitor plugins) fromDeviceStatus: `pump.iob.iob || .bolusiob`,
    source "MM Connect" when the status has `connect`: what every clock shows as IOB."""
    t = now_ms() - 2 * MIN
    assert mc_post(ns, "devicestatus", [mc_status(t)]).status == 200
    iob = ns.get(f"/api/v2/properties/iob?token={ns.read_token}").json()["iob"]
    assert iob.get("iob") == 1.35, iob
    assert iob.get("source") == "MM Connect" and iob.get("displayLine") == "IOB: 1.35U"


def test_minimed_connect__the_newest_pump_iob_even_when_0(ns):
    """A pump that reports 0 units on board shows 0, not an older status's 2.5 (Nightscout
    takes the newest pump IOB and never falls back)."""
    t = now_ms()
    older, newer = mc_status(t - 20 * MIN), mc_status(t - MIN)
    older["pump"]["iob"] = {"iob": 2.5}
    newer["pump"]["iob"] = {"iob": 0}
    assert mc_post(ns, "devicestatus", [older, newer]).status == 200
    iob = ns.get(f"/api/v2/properties/iob?token={ns.read_token}").json()["iob"]
    assert iob["iob"] == 0 and iob["display"] == "0", iob


def test_uploader_battery__beside_an_uploader_named_as_text(ns):
    """A status with `uploader` as a name and the old `uploaderBattery` number: properties
    answer (they gave 500 for half an hour after such a status) with its battery."""
    t = now_ms() - MIN
    r = ns.post("/api/v1/devicestatus", headers={"api-secret": SECRET_SHA1},
                json={"device": "phone", "created_at": iso(t), "uploader": "xdrip",
                      "uploaderBattery": 50})
    assert r.status_code == 200, r.text
    got = ns.get(f"/api/v2/properties?token={ns.read_token}")
    assert got.status_code == 200, got.text
    assert got.json()["upbat"]["display"] == "50%"


# -- diasend-nightscout-bridge ----------------------------------------------------------------

AXIOS = ["Accept: application/json, text/plain, */*", f"api-secret: {SECRET_SHA1}",
         "User-Agent: axios/0.27.2"]
AXIOS_JSON = [*AXIOS, "Content-Type: application/json"]


def axios_query(params: dict) -> str:
    """axios 0.27 buildURL: encodeURIComponent, then `:`, `$`, `,`, `[`, `]` back and space
    as `+`; undefined and null skipped; objects as JSON."""
    def enc(v: str) -> str:
        out = quote(v, safe="-_.!~*'()")
        for a, b in (("%3A", ":"), ("%24", "$"), ("%2C", ","), ("%20", "+"), ("%5B", "["),
                     ("%5D", "]")):
            out = out.replace(a, b)
        return out

    parts = []
    for k, v in params.items():
        if v is None:
            continue
        if isinstance(v, bool):
            v = "true" if v else "false"
        elif isinstance(v, dict | list):
            v = json.dumps(v, separators=(",", ":"))
        parts.append(f"{enc(k)}={enc(str(v))}")
    return "?" + "&".join(parts) if parts else ""


def finds(filters: dict) -> dict:
    """http-api.ts:32-36 filtersToQueryParams."""
    return {f"find[{k}]": v for k, v in filters.items()}


def follow(ns, method: str, target: str, lines: list, body: bytes | None) -> Reply:
    """axios in Node goes through follow-redirects (maxRedirects 21): a 307/308 is sent again
    with the same method, headers and body; a 301/302 POST and a 303 become a GET."""
    base = ns.root
    for _ in range(21):
        r = wire(ns, method, target, lines, body, base=base)
        if r.status not in (301, 302, 303, 307, 308):
            return r
        loc = urlsplit(r.headers["location"])
        base = f"{loc.scheme}://{loc.netloc}" if loc.netloc else base
        target = loc.path + (f"?{loc.query}" if loc.query else "")
        if r.status == 303 or (r.status in (301, 302) and method == "POST"):
            method, body = "GET", None
    raise AssertionError("too many redirects")


def dia_get(ns, path: str, params: dict | None = None) -> Reply:
    return follow(ns, "GET", f"/api/v1{path}{axios_query(params or {})}", AXIOS, None)


def dia_send(ns, method: str, path: str, doc) -> Reply:
    return follow(ns, method, f"/api/v1{path}", AXIOS_JSON, compact(doc))


def dia_treatment_equal(a: dict, b: dict) -> bool:
    """utils.ts:34-84 isTreatmentEqual(existing, new): `===` over new's keys."""
    if a.get("eventType") != b.get("eventType"):
        return False
    keys = ["created_at", "device", "app", "notes"] + {
        "Meal Bolus": ["carbs", "insulin"], "Carb Correction": ["carbs"],
        "Correction Bolus": ["insulin"], "Temp Basal": ["absolute", "duration"]}[a["eventType"]]
    return all(a.get(k, "<undefined>") == v for k, v in b.items() if k in keys)


DEVICE = "CamAPS FX (1234-5678-9)"


def test_diasend__latest_import_dates_on_an_empty_site(ns):
    """index.ts:241-276: four treatment reads and one entry read; `[0]` of each."""
    for event in ("Carb Correction", "Correction Bolus", "Meal Bolus", "Temp Basal"):
        r = dia_get(ns, "/treatments/", {"count": 1, **finds({"app": "diasend",
                                                               "eventType": event})})
        assert r.status == 200 and r.json() == [], (event, r.status, r.body[:200])
    r = dia_get(ns, "/entries/", {"count": 1})
    assert r.status == 200 and r.json() == []


def test_diasend__trailing_slash_paths_answered_in_place(ns):
    """Express routes are not strict: `/api/v1/treatments/` is `/api/v1/treatments` on
    Nightscout. The bridge always sends the slash; on the cloud under /t/TENANT too when the
    URL is used by other axios apps with the same `baseURL + "/treatments/"` habit."""
    for base in (ns.root, ns.site_url):
        for target in ("/api/v1/treatments/?count=1&find[app]=diasend", "/api/v1/entries/?count=1",
                       "/api/v1/profile/"):
            r = wire(ns, "GET", target, AXIOS, base=base)
            assert r.status == 200, (base, target, r.status, r.headers.get("location"))
        r = wire(ns, "POST", "/api/v1/treatments/", AXIOS_JSON, compact(
            [{"eventType": "Note", "notes": "slash", "created_at": iso(now_ms())}]), base=base)
        assert r.status == 200, (base, r.status, r.headers.get("location"))


def test_diasend__a_cycle_then_a_meal_bolus_takes_the_stored_carbs(ns):
    t = (now_ms() - 60 * MIN) // 1000 * 1000
    base = {"app": "diasend", "device": DEVICE}
    # synchronizeGlucoseRecords: sgv without direction, a finger stick as mbg
    entries = [{"type": "sgv", "sgv": 140 + i, "dateString": iso(t + i * 5 * MIN),
                "date": t + i * 5 * MIN, **base} for i in range(3)]
    entries.append({"type": "mbg", "mbg": 151, "dateString": iso(t + 11 * MIN),
                    "date": t + 11 * MIN, **base})
    r = dia_send(ns, "POST", "/entries/", entries)
    assert r.status == 200 and len(r.json()) == 4, (r.status, r.body[:300])
    # synchronizeTreatmentRecords: nothing stored yet from 10 minutes before the earliest
    first = [{"eventType": "Carb Correction", "carbs": 45, **base, "created_at": iso(t)},
             {"eventType": "Temp Basal", "absolute": 0.45, "rate": 0.45, "duration": 360,
              **base, "created_at": iso(t + MIN)},
             {"eventType": "Correction Bolus", "insulin": 1.2, **base,
              "created_at": iso(t + 3 * MIN)}]
    r = dia_get(ns, "/treatments/", {"find[created_at][$gte]": iso(t - 10 * MIN)})
    assert r.status == 200 and r.json() == []
    r = dia_send(ns, "POST", "/treatments/", first)
    assert r.status == 200 and len(r.json()) == 3, (r.status, r.body[:300])
    # the next cycle: the newest of each kind, by app and eventType
    latest = {}
    for event in ("Carb Correction", "Correction Bolus", "Meal Bolus", "Temp Basal"):
        got = dia_get(ns, "/treatments/", {"count": 1, **finds({"app": "diasend",
                                                                 "eventType": event})}).json()
        latest[event] = got[0]["created_at"] if got else None
    assert latest == {"Carb Correction": iso(t), "Correction Bolus": iso(t + 3 * MIN),
                      "Meal Bolus": None, "Temp Basal": iso(t + MIN)}
    newest = dia_get(ns, "/entries/", {"count": 1}).json()[0]
    assert newest["date"] == t + 11 * MIN and newest["type"] == "mbg"
    # diasend reports the meal's bolus 2 minutes after its carbs; the carbs come back again
    # (same record) and must be found equal to the stored one (utils.ts, `===`)
    existing = dia_get(ns, "/treatments/", {"find[created_at][$gte]": iso(t - 8 * MIN)})
    existing = existing.json()
    assert {e["eventType"] for e in existing} == {"Carb Correction", "Temp Basal",
                                                  "Correction Bolus"}
    for mine in first:
        assert any(dia_treatment_equal(e, mine) for e in existing), (mine, existing)
    carb = next(e for e in existing if e["eventType"] == "Carb Correction")
    meal = {"eventType": "Meal Bolus", "insulin": 4.5, **base, "created_at": iso(t + 2 * MIN),
            "carbs": 45, "carbsReference": f"{carb['created_at']} 45g"}
    r = dia_send(ns, "POST", "/treatments/", [meal])
    assert r.status == 200
    # treatments.ts:196-221: the merged carb correction is deleted by all its fields
    r = follow(ns, "DELETE", "/api/v1/treatments/" + axios_query(finds(carb)), AXIOS, None)
    assert r.status == 200, (r.status, r.body[:300])
    left = dia_get(ns, "/treatments/", {"find[created_at][$gte]": iso(t - 8 * MIN)}).json()
    assert sorted(e["eventType"] for e in left) == ["Correction Bolus", "Meal Bolus",
                                                    "Temp Basal"], \
        (axios_query(finds(carb)), left)
    assert next(e for e in left if e["eventType"] == "Meal Bolus")["carbs"] == 45


def test_diasend__pump_settings_replace_the_profile_they_read(ns):
    h = {"api-secret": SECRET_SHA1}
    made = ns.post("/api/v1/profile", headers=h, json={
        "defaultProfile": "Diasend", "startDate": iso(now_ms() - 86_400_000), "store": {
            "Diasend": {"dia": 4, "carbratio": [{"time": "00:00", "value": 10}],
                        "sens": [{"time": "00:00", "value": 40}], "timezone": "Europe/Berlin",
                        "basal": [{"time": "00:00", "value": 0.5}], "units": "mg/dl",
                        "target_low": [{"time": "00:00", "value": 100}],
                        "target_high": [{"time": "00:00", "value": 120}]}}})
    assert made.status_code == 200
    r = dia_get(ns, "/profile")
    assert r.status == 200
    profile = r.json()[0]  # http-api.ts:118: the active profile is the first
    new_basal = [{"value": 0.55, "time": "00:00", "timeAsSeconds": 0},
                 {"value": 0.7, "time": "06:30", "timeAsSeconds": 23400}]
    updated = {**profile, "store": {**profile["store"], "Diasend": {
        **profile["store"]["Diasend"], "basal": new_basal}}}
    r = dia_send(ns, "PUT", "/profile", updated)
    assert r.status == 200, (r.status, r.body[:300])
    after = dia_get(ns, "/profile").json()
    assert len(after) == 1 and after[0]["_id"] == profile["_id"]
    assert after[0]["store"]["Diasend"]["basal"] == new_basal
    assert after[0]["store"]["Diasend"]["carbratio"] == [{"time": "00:00", "value": 10}]


# -- TidepoolToNightScoutSync -----------------------------------------------------------------

FLUENT = ["Accept: application/json, text/json, application/xml, text/xml, "
          "application/x-www-form-urlencoded",
          "User-Agent: FluentHttpClient/4.0.0 (+http://github.com/Pathoschild/FluentHttpClient)"]


def tp_request(ns, method: str, resource: str, api_key: str, body=None, base=None) -> Reply:
    """NightscoutClient.cs: `?token=<ApiKey>` always; writes with `api-secret: sha1(ApiKey)`
    and Newtonsoft's body as `application/json; charset=utf-8`."""
    lines = list(FLUENT)
    data = None
    if body is not None:
        lines += [f"api-secret: {hashlib.sha1(api_key.encode()).hexdigest()}",
                  "Content-Type: application/json; charset=utf-8"]
        data = compact(body)
    return wire(ns, method, f"/{resource}?token={quote(api_key, safe='')}", lines, data, base)


def tp_time(ms: int) -> str:
    """Newtonsoft, a UTC DateTime: seconds, fraction only when non-zero, `Z`."""
    dt = datetime.fromtimestamp(ms / 1000, UTC)
    frac = f".{dt.microsecond // 1000:03d}".rstrip("0").rstrip(".") if dt.microsecond else ""
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + frac + "Z"


def tp_treatments(t: int) -> list:
    """TidepoolToNightScoutSyncer.cs:133-163: boluses with their food, food alone, exercise."""
    return [{"carbs": 60.0, "insulin": 4.8, "created_at": tp_time(t), "units": "mmol",
             "enteredBy": "Tidepool"},
            {"insulin": 1.36, "created_at": tp_time(t + 30 * MIN), "units": "mmol",
             "enteredBy": "Tidepool"},
            {"insulin": 2.0, "duration": 120.0, "relative": 1.5, "created_at": tp_time(t + 60 * MIN),
             "units": "mmol", "enteredBy": "Tidepool"},
            {"carbs": 15.0, "created_at": tp_time(t + 90 * MIN + 89), "units": "mmol",
             "enteredBy": "Tidepool"},
            {"eventType": "Exercise", "notes": "Running", "duration": 45.0,
             "created_at": tp_time(t + 120 * MIN), "units": "mmol", "enteredBy": "Tidepool"}]


def tp_profile(device_time: datetime, mills: str) -> dict:
    """TidepoolToNightScoutSyncer.cs:40-106 (numbers as text, a zone-less startDate)."""
    def rows(pairs):
        return [{"time": f"{s // 3600:02d}:{s % 3600 // 60:02d}", "value": v,
                 "timeAsSeconds": str(s)} for s, v in pairs]

    info = {"carbratio": rows([(0, "10"), (43200, "12")]), "sens": rows([(0, "2.5")]),
            "basal": rows([(0, "0.65"), (14400, "0.7")]),
            "target_low": rows([(0, "3.7")]), "target_high": rows([(0, "10.36089758925464")])}
    return {"defaultProfile": "Chill", "store": {"Chill": info},
            "startDate": device_time.strftime("%Y-%m-%dT%H:%M:%S"), "mills": mills,
            "units": "mmol/L"}


def _tp_sync_profiles(ns, key: str, base: str | None = None):
    device_time = datetime.now().replace(microsecond=0) - timedelta(hours=3)
    mills = str(int(device_time.replace(tzinfo=timezone(timedelta(hours=1))).timestamp() * 1000))
    profile = tp_profile(device_time, mills)
    r = tp_request(ns, "GET", "api/v1/profile", key, base=base)
    assert r.status == 200, (r.status, r.body[:300])
    assert isinstance(r.json(), list)
    match = next((p for p in r.json() if str(p.get("mills")) == mills), None)
    assert match is None
    r = tp_request(ns, "PUT", "api/v1/profile", key, profile, base=base)
    assert r.status == 200, (r.status, r.body[:300])
    assert isinstance(r.json(), dict) and isinstance(r.json().get("_id"), str)  # .As<Profile>()
    # the next run: found by mills (Newtonsoft reads a number into the string property)
    listed = tp_request(ns, "GET", "api/v1/profile", key, base=base).json()
    match = [p for p in listed if str(p.get("mills")) == mills]
    assert len(match) == 1, listed
    again = tp_request(ns, "PUT", "api/v1/profile", key, {**profile, "_id": match[0]["_id"]},
                       base=base)
    assert again.status == 200 and again.json()["_id"] == match[0]["_id"]
    assert len(tp_request(ns, "GET", "api/v1/profile", key, base=base).json()) == 1


def _tp_sync_treatments(ns, key: str, base: str | None = None):
    t = (now_ms() - 4 * 60 * MIN) // 1000 * 1000
    for _ in range(2):  # every run posts the day again
        r = tp_request(ns, "POST", "api/v1/treatments", key, tp_treatments(t), base=base)
        assert r.status == 200, (r.status, r.body[:300])
        got = r.json()
        assert isinstance(got, list) and len(got) == 5
        assert all(isinstance(d.get("_id"), str) and "error" not in d for d in got), got
    stored = ns.get(f"/api/v1/treatments.json?count=50&token={ns.read_token}").json()
    assert len(stored) == 5, stored
    by_time = {d["created_at"]: d for d in stored}
    assert by_time[iso(t)]["carbs"] == 60 and by_time[iso(t)]["insulin"] == 4.8
    assert by_time[iso(t + 120 * MIN)]["eventType"] == "Exercise"


def test_tidepool__api_secret_as_api_key(ns):
    """The README's setup: ApiKey the API secret, so `?token=<the plain secret>`, which names
    no token (ignored, as Nightscout ignores it) beside the header's SHA-1 on writes. The
    profile read carries only the query: a private site refuses it as a private Nightscout
    (AUTH_DEFAULT_ROLES=denied) does, and Program.cs then stops before the treatments; the
    Azure timer (Function.cs Timer) syncs treatments only, which works."""
    for base in (ns.root, ns.site_url):
        r = tp_request(ns, "GET", "api/v1/profile", SECRET, base=base)
        assert r.status == 401 and r.json()["status"] == 401
        r = tp_request(ns, "PUT", "api/v1/profile", SECRET,
                       tp_profile(datetime.now().replace(microsecond=0), "1"), base=base)
        assert r.status == 200 and isinstance(r.json(), dict)
    _tp_sync_treatments(ns, SECRET, base=ns.root)


def test_tidepool__an_admin_token_as_api_key(ns):
    """appsettings.json's "secret with at least careportal role": a token, also hashed into
    the api-secret header of writes (PUT profile needs more than careportal: admin)."""
    _tp_sync_profiles(ns, ns.admin_token)
    _tp_sync_treatments(ns, ns.admin_token)


def test_tidepool__a_careportal_token_adds_treatments(ns):
    _tp_sync_treatments(ns, ns.careportal_token)


# -- android-uploader (REST v1) ---------------------------------------------------------------

APACHE = ["Content-Type: application/json", "Accept: application/json",
          f"api-secret: {SECRET_SHA1}", "User-Agent: Apache-HttpClient/UNAVAILABLE (java 1.4)"]


def java_date(ms: int) -> str:
    """java.util.Date.toString() on a phone in UTC+1: `EEE MMM dd HH:mm:ss zzz yyyy`."""
    dt = datetime.fromtimestamp(ms / 1000, timezone(timedelta(hours=1)))
    return dt.strftime("%a %b %d %H:%M:%S GMT+01:00 %Y")


def joda(ms: int) -> str:
    """Joda DateTime.toString(): ISO with millis and the phone's offset."""
    dt = datetime.fromtimestamp(ms / 1000, timezone(timedelta(hours=-7)))
    return dt.isoformat(timespec="milliseconds")


def au_post(ns, endpoint: str, doc: dict, base: str | None = None) -> Reply:
    """AbstractRestUploader.doPost: `<uri>/<endpoint>` (Joiner on '/'), one object."""
    return wire(ns, "POST", f"/api/v1/{endpoint}", APACHE, compact(doc), base)


def test_android_uploader_master__java_date_strings(ns):
    t = (now_ms() - 20 * MIN) // 1000 * 1000
    sgv = {"device": "dexcom", "date": t, "dateString": java_date(t), "sgv": 132,
           "direction": "FortyFiveUp", "type": "sgv", "filtered": 162368, "unfiltered": 158272,
           "rssi": 179, "noise": 1}
    r = au_post(ns, "entries", sgv)
    assert r.status // 100 == 2, (r.status, r.body[:300])
    mbg = {"device": "dexcom", "type": "mbg", "date": t + MIN, "dateString": java_date(t + MIN),
           "mbg": 128}
    cal = {"device": "dexcom", "type": "cal", "date": t + MIN, "dateString": java_date(t + MIN),
           "slope": 828.3002146147081, "intercept": 30000.0, "scale": 1.0}
    nc = {"device": "dexcom", "date": t + 5 * MIN, "dateString": java_date(t + 5 * MIN),
          "sgv": 5, "direction": "NOT COMPUTABLE", "type": "sgv"}  # a special value (?NC)
    for doc in (mbg, cal, nc):
        r = au_post(ns, "entries", doc)
        assert r.status // 100 == 2, (doc, r.status, r.body[:300])
    status = au_post(ns, "devicestatus", {"uploaderBattery": 76})
    assert status.status // 100 == 2, (status.status, status.body[:300])
    got = ns.get(f"/api/v1/entries.json?count=10&find[type][$in][]=sgv&find[type][$in][]=mbg"
                 f"&find[type][$in][]=cal&token={ns.read_token}").json()
    by_type = {(e["type"], e["date"]): e for e in got}
    assert by_type[("sgv", t)]["sgv"] == 132 and by_type[("sgv", t)]["dateString"] == iso(t)
    assert by_type[("mbg", t + MIN)]["mbg"] == 128
    assert by_type[("cal", t + MIN)]["slope"] == 828.3002146147081
    bat = ns.get(f"/api/v2/properties/upbat?token={ns.read_token}").json()["upbat"]
    assert bat["display"] == "76%"


def test_android_uploader_dev__sys_time_and_insertions(ns):
    t = (now_ms() - 20 * MIN) // 1000 * 1000
    sys_time = 541_234_567  # the receiver's seconds since 2009
    egv = {"device": "DEXCOM_G4", "date": t, "sysTime": sys_time, "dateString": joda(t),
           "sgv": 118, "direction": "Flat", "type": "sgv"}
    ins = {"sysTime": sys_time - 7200, "date": t - 2 * 60 * MIN,
           "dateString": joda(t - 2 * 60 * MIN), "state": "INSERTION_STARTED", "type": "ins"}
    mbg = {"device": "DEXCOM_G4", "type": "mbg", "date": t + MIN, "sysTime": sys_time + 60,
           "dateString": joda(t + MIN), "mbg": 121}
    for doc in (egv, ins, mbg):
        r = au_post(ns, "entries", doc)
        assert r.status // 100 == 2, (doc, r.status, r.body[:300])
    r = au_post(ns, "devicestatus", {"uploaderBattery": 54, "receiverBattery": 80})
    assert r.status // 100 == 2
    got = ns.get(f"/api/v1/entries/sgv.json?count=5&token={ns.read_token}").json()
    assert got[0]["date"] == t and got[0]["sgv"] == 118
    assert got[0]["dateString"] == iso(t) and got[0]["utcOffset"] == -420
    ins_read = ns.get(f"/api/v1/entries/ins.json?count=5&token={ns.read_token}").json()
    assert [e["state"] for e in ins_read] == ["INSERTION_STARTED"]


# -- Sisensing / Sibionics / Ottai uploaders: the newest reading through /slice --------------

SLICE_NEWEST = "/api/v1/slice/entries/dateString/sgv/.*/.*?count=1"


def cn_headers(ns, agent: str) -> list[str]:
    """consts.ts:3-8 and setup.py:61-65: the SHA-1 of an access token as api-secret."""
    token = ns.token(agent.split()[0].lower(), ["admin"])  # entries:create is admin's alone
    return [f"api-secret: {hashlib.sha1(token.encode()).hexdigest()}", f"User-Agent: {agent}",
            "Content-Type: application/json", "Accept: application/json"]


def test_cn_uploaders__slice_answers_empty_then_the_newest_sgv_of_all_time(ns):
    lines = cn_headers(ns, "Sibionics Nightscout Uploader")
    first = wire(ns, "GET", SLICE_NEWEST, lines)
    assert (first.status, first.json()) == (200, [])  # utils.ts:41: nothing stored yet
    old = now_ms() - 6 * 24 * 60 * MIN  # older than Nightscout's 4-day default window
    cycle = [{"type": "sgv", "sgv": 100 + i, "direction": "Flat", "device": "Sibionics",
              "date": old + i * 5 * MIN, "dateString": iso(old + i * 5 * MIN)} for i in range(3)]
    cycle.append({"type": "mbg", "mbg": 140, "date": old + 20 * MIN,
                  "dateString": iso(old + 20 * MIN)})  # a meter reading: not an sgv
    assert wire(ns, "POST", "/api/v1/entries", lines, compact(cycle)).status == 200
    r = wire(ns, "GET", SLICE_NEWEST, lines)
    assert r.status == 200 and r.headers["content-type"].startswith("application/json")
    got = r.json()
    assert [(e["sgv"], e["date"]) for e in got] == [(102, old + 10 * MIN)]  # no window, sgv only
    # module.py:131-133: a day's readings by a dateString prefix (default count 10)
    day = iso(old)[:10]
    r = wire(ns, "GET", f"/api/v1/slice/entries/dateString/sgv/{day}.*", lines)
    assert [e["sgv"] for e in r.json()] == [102, 101, 100]
    r = wire(ns, "GET", "/api/v1/slice/entries/dateString/sgv/1999-01-01.*", lines)
    assert r.json() == []
    # the path's type replaces a find[type] (Nightscout sets find.type), hints and all
    r = wire(ns, "GET", SLICE_NEWEST + "&find[type]=mbg", lines)
    assert [e["sgv"] for e in r.json()] == [102]
    r = wire(ns, "GET", f"/api/v1/entries/sgv.json?count=1&find[type]=mbg&find[date][$gte]={old}",
             lines)
    assert [e["sgv"] for e in r.json()] == [102]


def test_slice__brace_patterns_times_and_other_storages_as_nightscout(ns):
    """lib/api/entries/index.js:600-693: /times/2015-04/T{13..18}:{00..15} style patterns."""
    base = datetime(2026, 4, 1, tzinfo=UTC)
    stamps = [base + timedelta(days=d, hours=h, minutes=m)
              for d in (0, 1) for h in (12, 13, 14) for m in (0, 20)]
    docs = [{"type": "sgv", "sgv": 100 + i, "date": int(t.timestamp() * 1000),
             "dateString": t.strftime("%Y-%m-%dT%H:%M:%S.000Z")} for i, t in enumerate(stamps)]
    h = [f"api-secret: {SECRET_SHA1}", "Accept: application/json"]
    assert wire(ns, "POST", "/api/v1/entries", h, compact(docs)).status == 200
    r = wire(ns, "GET", "/api/v1/times/2026-04/T{13..14}:{00..10}.json?count=50", h)
    assert r.status == 200, r.body[:200]
    assert sorted(e["dateString"][8:16] for e in r.json()) == [
        "01T13:00", "01T14:00", "02T13:00", "02T14:00"]
    r = wire(ns, "GET", "/api/v1/times/2026-04-0{1,2}/T12:20?count=50", h)
    assert sorted(e["dateString"][:16] for e in r.json()) == ["2026-04-01T12:20",
                                                              "2026-04-02T12:20"]
    # the path's find[] still applies beside the patterns
    r = wire(ns, "GET", "/api/v1/times/2026-04-02?count=50&find[sgv][$gte]=110", h)
    assert sorted(e["sgv"] for e in r.json()) == [110, 111]
    echo = wire(ns, "GET", "/api/v1/times/echo/2026-04/T{13..14}", h).json()
    assert echo["pattern"] == [".*T13", ".*T14"], echo  # one prefix: a $regex of its own
    assert echo["query"]["find"]["dateString"]["$regex"] == "^2026-04"
    assert wire(ns, "GET", "/api/v1/times/echo/2026-0{3,4}/T1", h).json()["pattern"] == [
        "^2026-03.*T1", "^2026-04.*T1"]  # several: each pattern starts with one
    # treatments by their own time field, text as the format when asked
    t = now_ms() - 10 * 24 * 60 * MIN
    assert wire(ns, "POST", "/api/v1/treatments", h, compact(
        [{"eventType": "Note", "notes": "old", "created_at": iso(t)}])).status == 200
    r = wire(ns, "GET", "/api/v1/slice/treatments/created_at?count=5", h)
    assert [d["notes"] for d in r.json()] == ["old"]  # no 4-day window: a time field named
    tsv = wire(ns, "GET", "/api/v1/slice/entries/dateString/sgv/2026-04-01T12.tsv", h)
    assert tsv.headers["content-type"].startswith("text/tab-separated-values")
    assert tsv.body.decode().count("\n") == 1 and '"2026-04-01T12:' in tsv.body.decode()


def test_slice__bad_paths_are_400_and_credentials_count(ns):
    h = [f"api-secret: {SECRET_SHA1}", "Accept: application/json"]
    for target in ("/api/v1/slice/entries/$where/sgv", "/api/v1/times/{1..5000}",
                   "/api/v1/times/{1..40}{1..40}", "/api/v1/slice/entries/dateString/sgv/(",
                   "/api/v1/times/2026/" + quote("[unclosed", safe="")):
        r = wire(ns, "GET", target, h)
        assert r.status == 400, (target, r.status, r.body[:200])
        assert "detail" in r.json() or "message" in r.json()
    assert wire(ns, "GET", SLICE_NEWEST, ["Accept: application/json"]).status == 401
