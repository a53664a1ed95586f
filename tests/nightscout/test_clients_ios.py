"""xDrip4iOS and GlucoseDirect (iOS) against the cloud and the edge, from their own source.

xDrip4iOS (JohanDegraeve/xdripswift @ 69eb883, xDrip/…):
- the URL the user enters is cut to `https://host` (path, port, user info and `?token=` are
  taken out: View Controllers/…/SettingsViewNightscoutSettingsViewModel.swift, case
  .nightscoutUrl), so every request goes to the host root and, on the cloud, the credential
  names the tenant;
- Managers/Nightscout/NightscoutSyncManager.swift: uploads (uploadDataAndGetResponse) POST/PUT
  with `Content-Type`/`Accept: application/json`, `api-secret: sha1(secret)` and `?token=`
  through URLComponents; reads and deletes (nightscoutRequest) with header `API-SECRET`, the
  query encoded by URLComponents (brackets as %5B/%5D) and `token=` appended raw; every
  status in 200...299 is success. Treatments are posted as an array with `eventTime` (no
  created_at) and matched back by (created_at to the ms, type, value) from the reply, whose
  created_at must be `yyyy-MM-dd'T'HH:mm:ss.SSS'Z'` or `…ss'Z'` (Treatments/
  TreatmentNSResponse.swift); a treatment missing from the 24 h download is deleted on the
  phone.
- Managers/Nightscout/NightscoutFollowManager.swift + Managers/Nightscout/Endpoint+Nightscout
  .swift: the follower GETs `/api/v1/entries/sgv.json?count=N[&token=T]` with `api-secret`;
  only status 200 is read; `sgv` and `date` must be numbers (Managers/Followers/
  FollowerBgReading.swift).

GlucoseDirect (creepymonster/GlucoseDirect @ 1927efa, App/Modules/Nightscout/Nightscout.swift):
the URL as entered (path kept, `/` trimmed), `api-secret: sha1(secret)`, JSON both ways; the
query strings are written literally into URL(string:), which on iOS 17 percent-encodes the
brackets; only isSensorStarted reads a reply.
"""

import hashlib
import random
import string
import uuid
from datetime import UTC, datetime, timedelta, timezone

from tests.support.nightscout import MIN, SECRET, SECRET_SHA1, iso, now_ms

ON_POSTGRES = True  # these flows also run against the cloud on PostgreSQL

HOUR = 60 * MIN
_RNG = random.Random(17)  # the apps' random ids, the same at every run
JSON = {"Content-Type": "application/json", "Accept": "application/json"}
X_UPLOAD = {**JSON, "api-secret": SECRET_SHA1}  # uploadDataAndGetResponse
X_REQUEST = {**JSON, "API-SECRET": SECRET_SHA1}  # nightscoutRequest
GD = {**JSON, "api-secret": hashlib.sha1(SECRET.encode()).hexdigest()}  # createRequest


def xid() -> str:
    """UniqueId.createEventId(): 24 characters of a-z A-Z 0-9 (so not an ObjectId)."""
    return "Z" + "".join(_RNG.choices(string.ascii_letters + string.digits, k=23))


def enc(query: str) -> str:
    """URLComponents' encoding of a query item name: brackets as %5B/%5D, `$` kept."""
    return query.replace("[", "%5B").replace("]", "%5D")


# -- what xDrip4iOS parses ----------------------------------------------------------------------


def ns_date(text: str) -> int | None:
    """TreatmentNSResponse.fromNightscout: created_at in ms, or None (the item is dropped)."""
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ" if "." in text else "%Y-%m-%dT%H:%M:%SZ"
    if "." in text and len(text.split(".")[1]) != 4:  # .SSS then Z, exactly
        return None
    try:
        dt = datetime.strptime(text, fmt).replace(tzinfo=UTC)
    except ValueError:
        return None
    return round(dt.timestamp() * 1000)


def treatment_responses(items: list) -> list[tuple[str, int, str, float]]:
    """TreatmentNSResponse.arrayFromData: (id+extension, created_at ms, type, value)."""
    out = []
    for d in items:
        if not isinstance(d, dict) or not isinstance(d.get("_id"), str):
            continue
        ms = ns_date(d["created_at"]) if isinstance(d.get("created_at"), str) else None
        if ms is None:
            continue
        def num(k: str, d: dict = d) -> float | None:
            v = d.get(k)
            return v if isinstance(v, int | float) and not isinstance(v, bool) else None

        i, ev = d["_id"], d.get("eventType")
        if num("carbs") is not None:
            out.append((i + "-carbs", ms, "carbs", num("carbs")))
        if num("insulin") is not None:
            out.append((i + "-insulin", ms, "insulin", num("insulin")))
        if ev == "Exercise" and num("duration") is not None:
            out.append((i + "-carbs", ms, "exercise", num("duration")))
        if num("glucose") is not None and isinstance(d.get("units"), str):
            g = num("glucose") if d["units"] == "mg/dl" else num("glucose") * 18.0182
            out.append((i + "-glucose", ms, "bgcheck", g))
        if num("rate") is not None and num("duration") is not None:
            out.append((i + "-rate", ms, "basal", num("rate")))
        for name, kind in (("Site Change", "sitechange"), ("Sensor Start", "sensorstart"),
                           ("Pump Battery Change", "pumpbattery")):
            if ev == name:
                out.append((i + "-" + kind, ms, kind, 0))
    return out


def decodes_profile(p: dict) -> bool:
    """NightscoutProfileResponse (Codable, every key below required)."""
    if not (isinstance(p.get("_id"), str) and isinstance(p.get("defaultProfile"), str)
            and isinstance(p.get("startDate"), str) and isinstance(p.get("store"), dict)):
        return False
    for prof in p["store"].values():
        if not (isinstance(prof, dict) and isinstance(prof.get("timezone"), str)
                and isinstance(prof.get("units"), str)
                and isinstance(prof.get("dia"), int | float)):
            return False
        for key in ("basal", "carbratio", "sens", "target_low", "target_high"):
            rows = prof.get(key)
            if not isinstance(rows, list) or not all(
                    isinstance(r, dict) and isinstance(r.get("time"), str)
                    and isinstance(r.get("value"), int | float)
                    and isinstance(r.get("timeAsSeconds"), int) for r in rows):
                return False
    return True


_DS_TYPES = {  # NightscoutDeviceStatusResponse: optional keys, but a wrong type fails it all
    "created_at": str, "device": str, "_id": str, "isCharging": bool, "mills": int,
    "uploaderBattery": int, "utcOffset": int, "uploader.battery": int,
    "uploader.isCharging": bool, "uploader.timestamp": str, "pump.clock": str,
    "pump.reservoir": (int, float), "pump.battery.percent": int, "pump.suspended": bool,
    "pump.bolusing": bool, "pump.secondsFromGMT": int, "loop.timestamp": str,
    "loop.iob.iob": (int, float), "loop.cob.cob": (int, float), "loop.enacted.rate": (int, float),
    "loop.enacted.duration": int, "loop.enacted.timestamp": str,
    "openaps.enacted.rate": (int, float), "openaps.enacted.duration": int,
    "openaps.enacted.timestamp": str, "openaps.suggested.COB": (int, float),
    "openaps.suggested.IOB": (int, float), "openaps.suggested.timestamp": str,
}


def decodes_devicestatus(d: dict) -> list[str]:
    """The keys whose type would make JSONDecoder throw for the whole array."""
    bad = []
    for path, want in _DS_TYPES.items():
        cur = d
        for part in path.split("."):
            cur = cur.get(part) if isinstance(cur, dict) else None
        if cur is None:
            continue
        if want is int and isinstance(cur, float) and cur.is_integer():
            continue  # JSONDecoder reads 30.0 as Int 30
        if isinstance(cur, bool) and want is not bool or not isinstance(cur, want):
            bad.append(f"{path}={cur!r}")
    return bad


def reading(ms: int, sgv: int, direction: str = "Flat") -> dict:
    """BgReading.dictionaryRepresentationForNightscoutUpload."""
    return {"_id": xid(), "device": "Dexcom G7", "date": ms, "dateString": iso(ms),
            "type": "sgv", "sgv": sgv, "direction": direction, "filtered": sgv * 1000,
            "unfiltered": sgv * 1000, "noise": 1, "sysTime": iso(ms)}


# -- xDrip4iOS: credentials -----------------------------------------------------------------------


def test_xdrip4ios__settings_check_at_the_host_root(ns):
    """SettingsViewNightscoutSettingsViewModel.swift testNightscoutCredentials: GET
    <https://host>/api/v1/experiments/test, `api-secret` = sha1(secret), or the token as it is
    when there is no secret; 200...299 is success, 401 'API_SECRET is not valid'."""
    url = ns.root + "/api/v1/experiments/test"
    assert 200 <= ns.client.get(url, headers={**JSON, "api-secret": SECRET_SHA1}).status_code < 300
    r = ns.client.get(url, headers={**JSON, "api-secret": ns.admin_token})
    assert 200 <= r.status_code < 300, r.text
    wrong = hashlib.sha1(b"not-the-secret").hexdigest()
    assert ns.client.get(url, headers={**JSON, "api-secret": wrong}).status_code == 401


def test_xdrip4ios__sync_manager_check_upper_case_header_and_raw_token(ns):
    """NightscoutSyncManager.swift testNightscoutCredentials -> nightscoutRequest: header
    `API-SECRET`; with a token, `?token=<token>` appended; success is 200...299."""
    url = ns.root + "/api/v1/experiments/test"
    assert 200 <= ns.client.get(url, headers=X_REQUEST).status_code < 300
    r = ns.client.get(f"{url}?token={ns.admin_token}", headers=JSON)
    assert 200 <= r.status_code < 300, r.text


# -- xDrip4iOS: uploads -----------------------------------------------------------------------------


def test_xdrip4ios__readings_upload_and_resend(ns):
    """NightscoutSyncManager.swift uploadBgReadingsToNightscout -> uploadData: POST
    /api/v1/entries, one array (BgReading+Nightscout.swift), any 2xx (or 500 with
    description.code 66) is success; after a timeout the same readings come again."""
    t = now_ms() - 20 * MIN
    batch = [reading(t, 120), reading(t + 5 * MIN, 118, "FortyFiveDown"),
             reading(t + 10 * MIN, 117, "NOT COMPUTABLE")]
    r = ns.client.post(ns.root + "/api/v1/entries", json=batch, headers=X_UPLOAD)
    assert 200 <= r.status_code < 300, r.text
    r = ns.client.post(ns.root + "/api/v1/entries", json=batch, headers=X_UPLOAD)
    assert 200 <= r.status_code < 300, r.text
    assert ns.count("entries") == 3


def test_xdrip4ios__upload_with_token_in_the_query(ns):
    """uploadDataAndGetResponse: a token is set as urlComponents.queryItems = [token]."""
    t = now_ms() - 5 * MIN
    r = ns.client.post(f"{ns.root}/api/v1/entries?token={ns.admin_token}", json=[reading(t, 99)],
                       headers=JSON)
    assert 200 <= r.status_code < 300, r.text
    assert ns.count("entries") == 1


def test_xdrip4ios__secret_and_a_read_token_together_may_upload(ns):
    """uploadDataAndGetResponse sends the `api-secret` header and `?token=` both when the user
    set both (settings keep API_SECRET and token apart): the secret's rights must apply."""
    t = now_ms() - 5 * MIN
    r = ns.client.post(f"{ns.root}/api/v1/entries?token={ns.read_token}", json=[reading(t, 99)],
                       headers=X_UPLOAD)
    assert 200 <= r.status_code < 300, r.text


def test_xdrip4ios__calibration_cal_and_mbg_records(ns):
    """uploadCalibrationsToNightscout: POST /api/v1/entries with the cal records then the mbg
    records (Calibration+Nightscout.swift), each with its own random `_id`."""
    t = now_ms() - 10 * MIN
    slope, intercept = 0.85, -12.0
    body = [{"_id": xid(), "device": "Dexcom G7", "date": t, "dateString": iso(t), "type": "cal",
             "sysTime": iso(t), "slope": 1000 / slope, "intercept": -(intercept * 1000) / slope,
             "scale": 1},
            {"_id": xid(), "device": "Dexcom G7", "date": t, "dateString": iso(t),
             "type": "mbg", "mbg": 131.0, "sysTime": iso(t)}]
    r = ns.client.post(ns.root + "/api/v1/entries", json=body, headers=X_UPLOAD)
    assert 200 <= r.status_code < 300, r.text
    assert ns.count("entries") == 2


def test_xdrip4ios__sensor_start_and_transmitter_battery(ns):
    """uploadActiveSensorToNightscout: one object {_id, eventType: Sensor Start, created_at,
    enteredBy}; uploadTransmitterBatteryInfoToNightscout: {"uploader": {...}} without a time
    or device, `battery` (Int) or the iPhone's battery plus `batteryVoltage`."""
    t = now_ms() - 3 * 24 * HOUR
    start = {"_id": xid(), "eventType": "Sensor Start", "created_at": iso(t),
             "enteredBy": "xDrip4iOS"}
    for _ in range(2):  # uploadedToNS is set only after a 2xx
        r = ns.client.post(ns.root + "/api/v1/treatments", json=start, headers=X_UPLOAD)
        assert 200 <= r.status_code < 300, r.text
    assert ns.count("treatments") == 1
    for body in ({"uploader": {"name": "transmitter", "battery": 85}},
                 {"uploader": {"name": "transmitter", "battery": 64, "batteryVoltage": 285}}):
        r = ns.client.post(ns.root + "/api/v1/devicestatus", json=body, headers=X_UPLOAD)
        assert 200 <= r.status_code < 300, r.text
    assert ns.count("devicestatus") == 2


# -- xDrip4iOS: treatments sync --------------------------------------------------------------------


def _local_treatments(t: int) -> list[tuple[dict, str, float]]:
    """TreatmentEntry.dictionaryRepresentationForNightscoutUpload, with what the entry is
    matched on afterwards (type, value)."""
    base = {"enteredBy": "xDrip4iOS"}
    return [
        ({**base, "eventTime": iso(t), "eventType": "Bolus", "insulin": 2.5}, "insulin", 2.5),
        ({**base, "eventTime": iso(t), "eventType": "Carbs", "carbs": 30.0}, "carbs", 30),
        ({**base, "eventTime": iso(t + MIN + 321), "eventType": "Exercise", "duration": 45.0},
         "exercise", 45),
        ({**base, "eventTime": iso(t + 2 * MIN), "eventType": "BG Check", "glucose": 112.0,
          "glucoseType": "Finger", "units": "mg/dl"}, "bgcheck", 112),
        ({**base, "eventTime": iso(t + 3 * MIN), "eventType": "Temp Basal", "rate": 0.45,
          "duration": 30.0}, "basal", 0.45),
        ({**base, "eventTime": iso(t + 4 * MIN), "eventType": "Site Change"}, "sitechange", 0),
        ({**base, "eventTime": iso(t + 5 * MIN), "eventType": "Pump Battery Change"},
         "pumpbattery", 0),
    ]


def _download(ns) -> list:
    """getLatestTreatmentsNSResponses: GET /api/v1/treatments?find[created_at][$gte]=<24 h
    ago> (URLComponents-encoded), header API-SECRET."""
    since = iso(now_ms() - 24 * HOUR)
    r = ns.client.get(ns.root + "/api/v1/treatments?" + enc("find[created_at][$gte]") + "="
                      + since, headers=X_REQUEST)
    assert 200 <= r.status_code < 300, r.text
    return r.json()


def test_xdrip4ios__treatments_upload_reply_matches_each_entry(ns):
    """uploadTreatmentsToNightscout: POST /api/v1/treatments, an array with `eventTime`; the
    reply must be a JSON array from which checkIfUploaded finds every entry by created_at (ms),
    type and value (TreatmentNSResponse.matchesTreatmentEntry) to learn its `_id`."""
    t = now_ms() - 2 * HOUR + 123
    local = _local_treatments(t)
    r = ns.client.post(ns.root + "/api/v1/treatments", json=[d for d, _, _ in local],
                       headers=X_UPLOAD)
    assert 200 <= r.status_code < 300, r.text
    got = treatment_responses(r.json())
    for doc, kind, value in local:
        ms = ns_date(doc["eventTime"])
        assert [g for g in got if g[1:] == (ms, kind, value)], (kind, got)
    # the next sync's download finds them all under the same ids (else they are deleted locally)
    down = treatment_responses(_download(ns))
    assert {g[0] for g in got} <= {g[0] for g in down}


def test_xdrip4ios__treatment_update_by_put_then_delete(ns):
    """updateTreatmentToNightscout: PUT /api/v1/treatments, one object with `_id` (the id
    from the reply, extension cut), `eventTime` and the changed value; a removed part of a
    downloaded treatment is a PUT of what remains (deleteTreatmentAtNightscout, more than one
    entry with the id); else DELETE /api/v1/treatments/<_id>. Then the download must show it."""
    t = now_ms() - HOUR
    meal = {"eventType": "Meal Bolus", "created_at": iso(t), "enteredBy": "Loop",
            "carbs": 40, "insulin": 4.0}
    [stored] = ns.client.post(ns.root + "/api/v1/treatments", json=[meal],
                              headers=X_UPLOAD).json()
    oid = stored["_id"]
    # local edit of the carbs of the downloaded meal: both parts, NS eventType and enteredBy
    put = {"enteredBy": "Loop", "eventTime": iso(t), "_id": oid, "eventType": "Meal Bolus",
           "carbs": 45.0, "insulin": 4.0}
    r = ns.client.put(ns.root + "/api/v1/treatments", json=put, headers=X_UPLOAD)
    assert 200 <= r.status_code < 300, r.text
    down = treatment_responses(_download(ns))
    assert (oid + "-carbs", t, "carbs", 45) in down and ns.count("treatments") == 1
    # carbs deleted on the phone: the insulin part alone is PUT, carbs must be gone
    put = {"enteredBy": "Loop", "eventTime": iso(t), "_id": oid, "eventType": "Meal Bolus",
           "insulin": 4.0}
    r = ns.client.put(ns.root + "/api/v1/treatments", json=put, headers=X_UPLOAD)
    assert 200 <= r.status_code < 300, r.text
    down = treatment_responses(_download(ns))
    assert [g[0] for g in down] == [oid + "-insulin"], down
    r = ns.client.delete(ns.root + f"/api/v1/treatments/{oid}", headers=X_REQUEST)
    assert 200 <= r.status_code < 300, r.text
    assert _download(ns) == []


def test_xdrip4ios__downloaded_treatments_from_other_apps_parse(ns):
    """getLatestTreatmentsNSResponses -> newTreatmentsIfRequired: treatments of other
    uploaders (Loop's created_at without ms, AAPS's ms) must keep `_id` and a created_at in one
    of the two formats, else they are not shown (and the phone's copies deleted)."""
    t = now_ms() - 3 * HOUR
    ns.client.post(ns.root + "/api/v1/treatments", headers=X_UPLOAD, json=[
        {"eventType": "Correction Bolus", "created_at": iso(t)[:19] + "Z", "insulin": 1.2,
         "enteredBy": "loop://iPhone"},
        {"eventType": "Carb Correction", "created_at": iso(t + MIN)[:19] + "+02:00", "carbs": 12,
         "enteredBy": "Trio"},
        {"eventType": "Meal Bolus", "date": t + 2 * MIN, "carbs": 20, "insulin": 2,
         "app": "AAPS", "utcOffset": 60}])
    down = _download(ns)
    assert len(down) == 3
    assert len(treatment_responses(down)) == 4, down  # the meal gives insulin and carbs


def test_xdrip4ios__delete_a_reading_by_its_datestring_second(ns):
    """deleteBgReadingFromNightscout: DELETE /api/v1/entries?find[dateString][$gte]=<t-1 s>
    &find[dateString][$lte]=<t+1 s> (ISO with ms, URLComponents-encoded)."""
    t = now_ms() - 30 * MIN
    ns.client.post(ns.root + "/api/v1/entries", headers=X_UPLOAD,
                   json=[reading(t, 140), reading(t + 5 * MIN, 145)])
    q = (enc("find[dateString][$gte]") + "=" + iso(t - 1000) + "&"
         + enc("find[dateString][$lte]") + "=" + iso(t + 1000))
    r = ns.client.delete(ns.root + "/api/v1/entries?" + q, headers=X_REQUEST)
    assert 200 <= r.status_code < 300, r.text
    assert [d.doc["sgv"] for d in ns.docs.latest("entries", kind="sgv", count=10)] == [145]


# -- xDrip4iOS: follower and AID follow (profile, device status) ---------------------------------------


def test_xdrip4ios__follower_sgv_json_from_the_host_root(ns):
    """NightscoutFollowManager.swift download: GET /api/v1/entries/sgv.json?count=<minutes/5+1>
    (Endpoint: host only), `api-secret` header; only 200 is read; FollowerBgReading needs `sgv`
    and `date` as numbers (the app orders them itself)."""
    t = now_ms() - 60 * MIN
    ns.client.post(ns.root + "/api/v1/entries", headers=X_UPLOAD,
                   json=[reading(t + i * 5 * MIN, 100 + i) for i in range(12)])
    ns.client.post(ns.root + "/api/v1/entries", headers=X_UPLOAD, json=[
        {"_id": xid(), "device": "x", "date": t + 1, "dateString": iso(t + 1), "type": "mbg",
         "mbg": 150, "sysTime": iso(t + 1)}])
    r = ns.client.get(ns.root + "/api/v1/entries/sgv.json?count=13",
                      headers={"api-secret": SECRET_SHA1})
    assert r.status_code == 200
    got = r.json()
    assert sorted(e["sgv"] for e in got) == list(range(100, 112))
    assert all(isinstance(e["sgv"], int | float) and isinstance(e["date"], int | float)
               and not isinstance(e["sgv"], bool) for e in got)
    # its URLRequest keeps the default cache policy: a reply with Last-Modified and no
    # Cache-Control could be served from URLCache (heuristic freshness) instead of asked again
    assert "no-cache" in r.headers.get("cache-control", "") or "last-modified" not in r.headers


def test_xdrip4ios__follower_with_a_read_token_only(ns):
    """Endpoint+Nightscout.swift getEndpointForLatestNSEntries: `?count=N&token=<token>`,
    no header when there is no API_SECRET."""
    t = now_ms() - 10 * MIN
    ns.client.post(ns.root + "/api/v1/entries", headers=X_UPLOAD, json=[reading(t, 101)])
    r = ns.client.get(f"{ns.root}/api/v1/entries/sgv.json?count=289&token={ns.read_token}")
    assert r.status_code == 200, r.text
    assert [e["sgv"] for e in r.json()] == [101]


def _profile(start_ms: int, name: str, basal: float) -> dict:
    row = lambda v: [{"time": "00:00", "value": v, "timeAsSeconds": 0}]  # noqa: E731
    return {"defaultProfile": name, "startDate": iso(start_ms), "mills": start_ms,
            "units": "mg/dl", "enteredBy": "Trio", "store": {name: {
                "dia": 6, "carbs_hr": 20, "delay": 20, "timezone": "Europe/Berlin",
                "units": "mg/dl", "basal": row(basal), "carbratio": row(10), "sens": row(45),
                "target_low": row(100), "target_high": row(110)}}}


def test_xdrip4ios__profile_newest_first_and_decodable(ns):
    """NightscoutSyncManager.swift updateProfile: GET /api/v1/profile (API-SECRET), decoded as
    [NightscoutProfileResponse] (NightscoutProfileModels.swift, every key required), and
    `.first` is taken as the current profile."""
    t = now_ms()
    ns.client.post(ns.root + "/api/v1/profile", json=_profile(t - HOUR, "Newer", 0.9),
                   headers=X_UPLOAD)
    ns.client.post(ns.root + "/api/v1/profile", json=_profile(t - 30 * 24 * HOUR, "Old", 0.7),
                   headers=X_UPLOAD)  # written later, started earlier
    older = _profile(t - 2 * HOUR, "Offset", 0.8)  # earlier, but later as text (+02:00)
    older["startDate"] = datetime.fromtimestamp((t - 2 * HOUR) / 1000, tz=UTC).astimezone(
        timezone(timedelta(hours=2))).strftime("%Y-%m-%dT%H:%M:%S+02:00")
    ns.client.post(ns.root + "/api/v1/profile", json=older, headers=X_UPLOAD)
    r = ns.client.get(ns.root + "/api/v1/profile", headers=X_REQUEST)
    assert 200 <= r.status_code < 300
    got = r.json()
    assert isinstance(got, list) and all(decodes_profile(p) for p in got), got
    assert got[0]["defaultProfile"] == "Newer"
    assert got[0]["store"]["Newer"]["basal"][0]["value"] == 0.9


def test_xdrip4ios__device_status_decodable_and_latest_by_created_at(ns):
    """updateDeviceStatus: GET /api/v1/devicestatus (no count), decoded as
    [NightscoutDeviceStatusResponse] (one wrong type fails the whole array), the latest picked
    by comparing `created_at` as text."""
    t = now_ms() - 20 * MIN
    loop = {"device": "loop://iPhone", "created_at": iso(t)[:19] + "Z",
            "pump": {"clock": iso(t)[:19] + "Z", "pumpID": "1", "manufacturer": "Insulet",
                     "model": "Dash", "battery": {"percent": 80}, "suspended": False,
                     "bolusing": False, "reservoir": 150.5, "secondsFromGMT": 3600},
            "uploader": {"name": "iPhone", "timestamp": iso(t)[:19] + "Z", "battery": 75},
            "loop": {"name": "Loop", "timestamp": iso(t)[:19] + "Z",
                     "iob": {"timestamp": iso(t), "iob": 1.5},
                     "cob": {"timestamp": iso(t), "cob": 20},
                     "enacted": {"rate": 0.5, "duration": 30, "timestamp": iso(t),
                                 "received": True}}}
    trio = {"device": "Trio", "openaps": {
        "enacted": {"rate": 0.8, "duration": 30, "timestamp": iso(t + 5 * MIN), "COB": 10,
                    "IOB": 1.1},
        "suggested": {"COB": 10, "IOB": 1.1, "timestamp": iso(t + 5 * MIN)}},
        "uploader": {"battery": 64, "isCharging": False}}  # no created_at: stamped now
    for body in ([loop], trio, {"uploader": {"name": "transmitter", "battery": 85}}):
        r = ns.client.post(ns.root + "/api/v1/devicestatus", json=body, headers=X_UPLOAD)
        assert 200 <= r.status_code < 300, r.text
    r = ns.client.get(ns.root + "/api/v1/devicestatus", headers=X_REQUEST)
    assert 200 <= r.status_code < 300
    got = r.json()
    assert len(got) == 3
    assert [decodes_devicestatus(d) for d in got] == [[], [], []]
    latest = sorted(got, key=lambda d: d.get("created_at") or "", reverse=True)[0]
    assert latest["uploader"] == {"name": "transmitter", "battery": 85}


# -- GlucoseDirect ----------------------------------------------------------------------------------


def gd_sgv(ms: int, value: int, trend: tuple[str, int] = ("Flat", 4)) -> dict:
    """SensorGlucose.toNightscoutGlucose."""
    u = str(uuid.uuid4()).upper()
    return {"_id": u, "device": "GlucoseDirect", "date": ms, "dateString": iso(ms),
            "type": "sgv", "sgv": value, "rawbg": value + 3, "direction": trend[0],
            "trend": trend[1], "glucoseDirect": u}


def gd_mbg(ms: int, value: int) -> dict:
    """BloodGlucose.toNightscoutGlucose."""
    u = str(uuid.uuid4()).upper()
    return {"_id": u, "device": "GlucoseDirect", "date": ms, "dateString": iso(ms),
            "type": "mbg", "mbg": value, "glucoseDirect": u}


def gd_url(ns, path: str) -> str:
    """`state.nightscoutURL.trimmingCharacters(in: "/")` + path: the path the user typed kept."""
    return (ns.site_url + "/").strip("/") + path


def test_glucosedirect__sensor_glucose_upload(ns):
    """NightscoutService.addSensorGlucose: POST <url>/api/v1/entries, an array; anything but
    200 is logged as an error. The same values are sent again with the next batch."""
    t = now_ms() - 15 * MIN
    batch = [gd_sgv(t, 110), gd_sgv(t + MIN, 112, ("FortyFiveUp", 3)),
             gd_sgv(t + 2 * MIN, 38, ("NONE", 0))]
    for _ in range(2):
        r = ns.client.post(gd_url(ns, "/api/v1/entries"), json=batch, headers=GD)
        assert r.status_code == 200, r.text
    assert ns.count("entries") == 3
    stored = {d.doc["sgv"]: d.doc for d in ns.docs.latest("entries", kind="sgv", count=10)}
    assert stored[112]["glucoseDirect"] == batch[1]["glucoseDirect"]


def test_glucosedirect__delete_one_value_by_its_uuid(ns):
    """deleteSensorGlucose / deleteBloodGlucose: DELETE <url>/api/v1/entries?find[glucoseDirect]
    =<UUID> (brackets percent-encoded by URL(string:) on iOS 17, raw before)."""
    t = now_ms() - 15 * MIN
    batch = [gd_sgv(t, 110), gd_sgv(t + MIN, 111), gd_mbg(t + 2 * MIN, 125)]
    ns.client.post(gd_url(ns, "/api/v1/entries"), json=batch, headers=GD)
    r = ns.client.delete(gd_url(ns, "/api/v1/entries?find%5BglucoseDirect%5D="
                                + batch[0]["glucoseDirect"]), headers=GD)
    assert r.status_code == 200, r.text
    r = ns.client.delete(gd_url(ns, "/api/v1/entries?find[glucoseDirect]="
                                + batch[2]["glucoseDirect"]), headers=GD)
    assert r.status_code == 200, r.text
    assert [d.doc["sgv"] for d in ns.docs.latest("entries", count=10)] == [111]


def test_glucosedirect__clear_its_blood_then_its_sensor_values_only(ns):
    """clearBloodGlucoseValues / clearSensorGlucoseValues: DELETE <url>/api/v1/entries?
    find[device]=GlucoseDirect&find[type]=mbg (then sgv): another uploader's values stay."""
    t = now_ms() - 30 * MIN
    ns.client.post(gd_url(ns, "/api/v1/entries"), headers=GD,
                   json=[gd_sgv(t, 100), gd_sgv(t + MIN, 101), gd_mbg(t + 2 * MIN, 120)])
    ns.client.post(ns.root + "/api/v1/entries", headers=X_UPLOAD,
                   json=[reading(t + 10 * MIN, 130),
                         {"device": "Meter", "type": "mbg", "mbg": 135, "date": t + 11 * MIN}])
    r = ns.client.delete(gd_url(ns, "/api/v1/entries?find%5Bdevice%5D=GlucoseDirect"
                                "&find%5Btype%5D=mbg"), headers=GD)
    assert r.status_code == 200, r.text
    assert sorted(d.doc.get("sgv") or d.doc.get("mbg")
                  for d in ns.docs.latest("entries", count=10)) == [100, 101, 130, 135]
    r = ns.client.delete(gd_url(ns, "/api/v1/entries?find%5Bdevice%5D=GlucoseDirect"
                                "&find%5Btype%5D=sgv"), headers=GD)
    assert r.status_code == 200, r.text
    assert sorted(d.doc.get("sgv") or d.doc.get("mbg")
                  for d in ns.docs.latest("entries", count=10)) == [130, 135]


def _gd_sensor_started(ns, serial: str, raw: bool = False,
                       headers: dict | None = None) -> bool | None:
    """isSensorStarted: GET <url>/api/v1/treatments?find[_id][$in][]=<serial>
    &find[eventType][$in][]=Sensor%20Start; 200 and [Treatment] decodable ({_id, eventType,
    created_at, enteredBy} all text) else nil (and then no Sensor Start is posted)."""
    q = f"find[_id][$in][]={serial}&find[eventType][$in][]=Sensor%20Start"
    r = ns.client.get(gd_url(ns, "/api/v1/treatments?" + (q if raw else enc(q))),
                      headers=headers or GD)
    if r.status_code != 200:
        return None
    items = r.json()
    if not isinstance(items, list) or not all(
            isinstance(i, dict) and all(isinstance(i.get(k), str)
                                        for k in ("_id", "eventType", "created_at", "enteredBy"))
            for i in items):
        return None
    return bool(items)


def test_glucosedirect__sensor_start_checked_by_serial_then_posted(ns):
    """setSensorState -> isSensorStarted(serial) -> setSensorStart: POST <url>/api/v1/treatments
    one object {_id: <sensor serial>, eventType: Sensor Start, created_at, enteredBy}; the next
    check for the same serial must find it (Nightscout keeps a non-ObjectId `_id`)."""
    serial = "3MH00" + "".join(_RNG.choices(string.ascii_uppercase + string.digits, k=6))
    t = now_ms() - 2 * HOUR
    ns.client.post(gd_url(ns, "/api/v1/treatments"), headers=GD, json=[  # other treatments
        {"_id": str(uuid.uuid4()).upper(), "enteredBy": "GlucoseDirect", "created_at": iso(t),
         "eventType": "Correction Bolus", "insulin": 1.5, "glucoseDirect": "x"},
        {"eventType": "Sensor Start", "created_at": iso(t - 10 * 24 * HOUR),
         "enteredBy": "xdrip"}])
    assert _gd_sensor_started(ns, serial) is False
    assert _gd_sensor_started(ns, serial, raw=True) is False
    start = {"_id": serial, "eventType": "Sensor Start", "created_at": iso(t - HOUR),
             "enteredBy": "GlucoseDirect"}
    r = ns.client.post(gd_url(ns, "/api/v1/treatments"), json=start, headers=GD)
    assert r.status_code == 200, r.text
    assert _gd_sensor_started(ns, serial) is True
    assert _gd_sensor_started(ns, serial, raw=True) is True
    assert _gd_sensor_started(ns, "3MH00NOTTHIS") is False


def test_glucosedirect__sensor_started_days_ago_is_found(ns):
    """A Libre sensor lasts 14 days and the check carries no time: a start 6 days back must
    still be found (Nightscout's 4-day default window does not apply to an `_id` query)."""
    serial = "3MH00" + "".join(_RNG.choices(string.ascii_uppercase + string.digits, k=6))
    start = {"_id": serial, "eventType": "Sensor Start",
             "created_at": iso(now_ms() - 6 * 24 * HOUR), "enteredBy": "GlucoseDirect"}
    assert ns.client.post(gd_url(ns, "/api/v1/treatments"), json=start,
                          headers=GD).status_code == 200
    assert _gd_sensor_started(ns, serial) is True


def test_glucosedirect__insulin_upload_and_delete_by_uuid(ns):
    """addInsulinDelivery: POST <url>/api/v1/treatments, an array {_id: UUID, enteredBy,
    created_at, eventType, insulin, glucoseDirect}; deleteInsulinDelivery: DELETE
    <url>/api/v1/treatments?find[glucoseDirect]=<UUID>."""
    t = now_ms() - HOUR

    def dose(ms: int, kind: str, units: float) -> dict:
        u = str(uuid.uuid4()).upper()
        return {"_id": u, "enteredBy": "GlucoseDirect", "created_at": iso(ms), "eventType": kind,
                "insulin": units, "glucoseDirect": u}

    doses = [dose(t, "Meal Bolus", 4.5), dose(t + MIN, "Correction Bolus", 1.0),
             dose(t + 2 * MIN, "Temp Basal", 0.4), dose(t + 3 * MIN, "Snack Bolus", 2.0)]
    for _ in range(2):  # the same values are sent again with the next change
        r = ns.client.post(gd_url(ns, "/api/v1/treatments"), json=doses, headers=GD)
        assert r.status_code == 200, r.text
    assert ns.count("treatments") == 4
    r = ns.client.delete(gd_url(ns, "/api/v1/treatments?find%5BglucoseDirect%5D="
                                + doses[1]["glucoseDirect"]), headers=GD)
    assert r.status_code == 200, r.text
    left = ns.client.get(gd_url(ns, "/api/v1/treatments"), headers=GD).json()
    assert sorted(d["insulin"] for d in left) == [0.4, 2.0, 4.5]


def test_xdrip4ios__treatments_sync_with_a_token_only(ns):
    """A site set up with a token and no API_SECRET: uploads get `?token=` from URLComponents,
    nightscoutRequest appends `token=` raw after its own (encoded) query."""
    t = now_ms() - HOUR
    r = ns.client.post(f"{ns.root}/api/v1/treatments?token={ns.admin_token}", headers=JSON,
                       json=[{"enteredBy": "xDrip4iOS", "eventTime": iso(t), "eventType": "Carbs",
                              "carbs": 15.0}])
    assert 200 <= r.status_code < 300, r.text
    [(oid, ms, kind, value)] = treatment_responses(r.json())
    assert (ms, kind, value) == (t, "carbs", 15)
    since = iso(now_ms() - 24 * HOUR)
    r = ns.client.get(ns.root + "/api/v1/treatments?" + enc("find[created_at][$gte]") + "="
                      + since + "&token=" + ns.admin_token, headers=JSON)
    assert r.status_code == 200 and [g[0] for g in treatment_responses(r.json())] == [oid]
    r = ns.client.delete(f"{ns.root}/api/v1/treatments/{oid.split('-')[0]}?token="
                         f"{ns.admin_token}", headers=JSON)
    assert 200 <= r.status_code < 300 and ns.count("treatments") == 0


def test_glucosedirect__same_minute_again_with_a_new_uuid(ns):
    """SensorGlucose(timestamp:…) gives every value a new UUID and a timestamp rounded to the
    minute (Library/Content/SensorGlucose.swift): a minute sent again replaces the first, and
    deleteSensorGlucose by the new UUID finds it."""
    t = (now_ms() - 10 * MIN) // MIN * MIN
    a, b = gd_sgv(t, 110), gd_sgv(t, 112)
    for item in (a, b):
        assert ns.client.post(gd_url(ns, "/api/v1/entries"), json=[item],
                              headers=GD).status_code == 200
    [doc] = [d.doc for d in ns.docs.latest("entries", count=5)]
    assert (doc["sgv"], doc["glucoseDirect"]) == (112, b["glucoseDirect"])
    r = ns.client.delete(gd_url(ns, "/api/v1/entries?find%5BglucoseDirect%5D="
                                + b["glucoseDirect"]), headers=GD)
    assert r.status_code == 200 and ns.count("entries") == 0


def test_glucosedirect__clear_a_day_of_one_minute_values(ns):
    """clearSensorGlucoseValues after a day of Libre 2 one-minute values: every one of them
    goes (a delete by find is not cut at a read's default count)."""
    t = (now_ms() - 2 * MIN) // MIN * MIN
    day = [gd_sgv(t - i * MIN, 100 + i % 50) for i in range(1440)]
    assert ns.client.post(gd_url(ns, "/api/v1/entries"), json=day, headers=GD).status_code == 200
    assert ns.count("entries") == 1440
    r = ns.client.delete(gd_url(ns, "/api/v1/entries?find%5Bdevice%5D=GlucoseDirect"
                                "&find%5Btype%5D=sgv"), headers=GD)
    assert r.status_code == 200 and r.json()["n"] == 1440 and ns.count("entries") == 0


def test_glucosedirect__an_access_token_typed_as_its_api_secret(ns):
    """GlucoseDirect has only an API-Secret field and sends sha1(field) (nightscoutMiddleware:
    nightscoutApiSecret.toSha1()): an upload token typed there arrives as its SHA-1."""
    token = ns.token("glucosedirect", ["admin"])
    h = {**JSON, "api-secret": hashlib.sha1(token.encode()).hexdigest()}
    t = now_ms() - 5 * MIN
    r = ns.client.post(gd_url(ns, "/api/v1/entries"), json=[gd_sgv(t, 120)], headers=h)
    assert r.status_code == 200, r.text
    assert _gd_sensor_started(ns, "3MH00NOTHERE", headers=h) is False  # its GET, same header
