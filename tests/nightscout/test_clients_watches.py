"""Watch faces and phone followers against the cloud and the edge, request for request.

- GlucoDataHandler (pachi81/GlucoDataHandler @ 114460b, Android/Wear OS): the URL as typed with
  spaces and trailing `/` trimmed (NightscoutSourceTask.kt:123); `api-secret: sha1(secret)`
  only when a secret is set (:164-170, Utils.kt:245-257 gives "" for an empty one), a token
  appended as `?token=` or `&token=` (:153-162). Each poll (:92-116): graph data
  `/api/v1/entries/sgv.json?find[date][$gt]=<ms>&count=<minutes>` with raw brackets (:33,
  :80-90), then `/pebble` (:101, bgs[0] `datetime` getLong, `sgv`, `trend` getInt or
  `direction`, iob and cob: :230-275), and `/api/v1/entries/current.json` when /pebble gave
  nothing (:104). Only 200 is read (DataSourceTask.kt:480-486, HttpRequest.kt:147-165); an
  entry's `type` must be "sgv" and `trend`, when present, an integer (:205-207, :294-297).
  Its uploader (NightscoutUploader.kt:36-164): POST `<url>/api/v1/entries[?token=T]` with
  `Content-Type`/`Accept: application/json`, a JSON array of sgv entries (`dateString` from
  Instant.toString, `direction` "" when there is no previous value: GlucoDataUtils.kt:104-126),
  exactly 200 or an error; the readings since the last upload, all of them again after the
  URL is changed (:189-198).
- Glance (Rytiggy/Glance @ 26647db, Fitbit watch face; companion): with the "custom" host the
  typed URL lowercased + `/pebble?count=47&token=T`, and `/api/v2/properties` with no token
  (settings.js:80-95); fetch.js:46-73 needs a `content-type` holding application/json (or
  text/html) and `response.ok`; standardize.js:43-63, :261-336 takes `data.bgs`, the first bg
  with a non-null `bgdelta` is the current one (only bgs[0] may have one), `iob`/`cob` numbers
  or numeric strings; properties `ar2.forecast.predicted[].mgdl`, `basal.display`,
  `upbat.display`, `sage['Sensor Start'].display`, `rawbg.mgdl` (:575-670).
- garmin-nightscout-integration (bolattleubayev/garmin-nightscout-integration @ c4f236e,
  Connect IQ watch face; SimpleWatchFace.mc): the URL with one trailing `/` cut (:44-46),
  makeWebRequest `<url>/api/v1/entries/sgv.json` with params `find[date][$gte]=<ms an hour
  ago>`, `count=13`, `token=<sha1(API secret)>` (or the secret as typed: "Send secret unhashed",
  :48-64), responseType JSON; only 200 with an array is read: [0] newest, `sgv` and `date`
  Numbers, `direction` a String or absent (:86-116).
- nsfitbit (sulkaharo/nsfitbit @ fb87785, Fitbit watch face; companion): the URL reduced to
  its host and https (settings.js:125-171: the path is dropped, so a cloud tenant is reached at
  the root by its credential), `api-secret: <the field as typed>` (index.js:32-46: SHA-1 only
  for xDrip's local server, so on Nightscout it must be an access token); `/api/v1/entries.json
  ?count=48`, `/api/v1/treatments.json?count=120`, `/api/v1/profile.json?count=1`,
  `/api/v2/properties`, each read only when `response.ok` (:48-245); entries need `sgv`, `date`,
  `type`; treatments `eventType`, `created_at` for `new Date()`, carbs/insulin numbers.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from urllib.parse import quote

from tests.support.nightscout import (
    MIN,
    PUB_H,
    SECRET,
    SECRET_SHA1,
    Reply,
    is_int,
    is_num,
    iso,
    now_ms,
    public_tenant,
    wire,
)

ON_POSTGRES = True

H = {"api-secret": SECRET_SHA1}
ANDROID = ["User-Agent: Dalvik/2.1.0 (Linux; U; Android 14; Pixel 7 Build/UQ1A.240205.004)",
           "Connection: Keep-Alive", "Accept-Encoding: identity"]


def readings(ns, n: int = 6, *, step: int = 5 * MIN, first: int = 100, end: int | None = None,
             direction: str = "Flat", base: str | None = None, headers: dict | None = None) -> int:
    """n readings ending `end` (2 min ago), oldest first, as xDrip+ uploads them."""
    end = end or now_ms() - 2 * MIN
    t0 = end - (n - 1) * step
    r = ns.client.post((base or ns.site_url) + "/api/v1/entries", headers=headers or H, json=[
        {"type": "sgv", "sgv": first + i, "date": t0 + i * step, "dateString": iso(t0 + i * step),
         "direction": direction, "device": "xDrip-DexcomG6", "noise": 1, "filtered": 120000,
         "unfiltered": 118000, "rssi": 100} for i in range(n)])
    assert r.status_code == 200, r.text
    return t0










def java_float(v) -> float:
    """JsonUtils.getFloat: optString then parse (a number or a numeric string)."""
    return float(str(v))


# -- GlucoDataHandler: the Nightscout source ----------------------------------------------------


def gdh_entry_ok(e: dict) -> None:
    """What handleEntriesResponse and getRate take from one entry (NightscoutSourceTask.kt
    :185-221, :294-303): getLong("date"), getFloat("sgv"), getInt("trend") when the key exists
    (JSON null throws), getString("direction"), type "sgv"."""
    assert e.get("type") == "sgv" and is_int(e["date"]) and java_float(e["sgv"]) > 0, e
    if "trend" in e:
        assert is_int(e["trend"]), e
    if "direction" in e:
        assert isinstance(e["direction"], str), e
    if "device" in e:
        assert isinstance(e["device"], str), e


def test_gdh__poll_with_a_token(ns):
    """:92-116 with a token and no secret: graph data since the first needed value (raw
    `[`, `]`, `$`, then `&token=`), /pebble and the current entry (`current.json`), each from Android's
    HttpURLConnection (no Accept header), each exactly 200."""
    t0 = readings(ns, 12, first=120, direction="FortyFiveUp")
    since = t0 + 2 * 5 * MIN  # the first value it still needs
    count = (now_ms() - since) // MIN
    tok = ns.read_token
    r = wire(ns, "GET", f"/api/v1/entries/sgv.json?find[date][$gt]={since}&count={count}"
             f"&token={tok}", ANDROID)
    assert r.status == 200, r.body[:300]
    got = r.json()
    assert [e["sgv"] for e in got] == list(range(131, 122, -1))  # > since, newest first
    for e in got:
        gdh_entry_ok(e)
    assert max(got, key=lambda e: e["date"])["date"] == t0 + 11 * 5 * MIN
    r = wire(ns, "GET", f"/pebble?token={tok}", ANDROID)
    assert r.status == 200, r.body[:300]
    bg = r.json()["bgs"][0]
    assert is_int(bg["datetime"]) and bg["datetime"] == t0 + 11 * 5 * MIN
    assert java_float(bg["sgv"]) == 131 and is_int(bg["trend"]) and bg["trend"] == 3
    assert bg["direction"] == "FortyFiveUp"
    r = wire(ns, "GET", f"/api/v1/entries/current.json?token={tok}", ANDROID)
    assert r.status == 200, r.body[:300]
    cur = r.json()
    assert isinstance(cur, list) and len(cur) == 1
    gdh_entry_ok(cur[0])
    assert cur[0]["sgv"] == 131 and cur[0]["date"] == t0 + 11 * 5 * MIN


def test_gdh__poll_with_the_secret_only(ns):
    """The API secret typed, no token: `api-secret: sha1` on every request, no query."""
    t0 = readings(ns, 3, first=90, direction="SingleDown")
    h = [*ANDROID, f"api-secret: {SECRET_SHA1}"]
    r = wire(ns, "GET", f"/api/v1/entries/sgv.json?find[date][$gt]={t0 - 1}&count=30", h)
    assert r.status == 200 and [e["sgv"] for e in r.json()] == [92, 91, 90]
    for e in r.json():
        gdh_entry_ok(e)
    r = wire(ns, "GET", "/pebble", h)
    bg = r.json()["bgs"][0]
    assert r.status == 200 and bg["sgv"] == "92" and bg["trend"] == 6
    r = wire(ns, "GET", "/api/v1/entries/current.json", h)
    assert r.status == 200 and r.json()[0]["sgv"] == 92


def test_gdh__graph_data_keeps_meter_and_calibration_rows_out(ns):
    """`sgv.json` of the entries is the sgv type only: a meter reading or calibration posted in the
    same minutes must not come back (handleEntriesResponse would take the newest row, and a
    `type` other than sgv is 'Unsupported type')."""
    t0 = readings(ns, 3, first=100)
    ns.post("/api/v1/entries", headers=H, json=[
        {"type": "mbg", "mbg": 111, "date": t0 + 11 * MIN, "device": "meter"},
        {"type": "cal", "slope": 850, "intercept": 32000, "scale": 1, "date": t0 + 12 * MIN}])
    r = wire(ns, "GET", f"/api/v1/entries/sgv.json?find[date][$gt]={t0 - 1}&count=60"
             f"&token={ns.read_token}", ANDROID)
    assert r.status == 200 and {e["type"] for e in r.json()} == {"sgv"}
    cur = wire(ns, "GET", f"/api/v1/entries/current.json?token={ns.read_token}", ANDROID).json()
    assert cur[0]["type"] == "sgv" or cur[0]["date"] == t0 + 12 * MIN  # Nightscout: newest row


def test_gdh__a_day_of_graph_data_in_one_request(ns):
    """On the first poll the graph asks for up to a day: count is the minutes since then
    (1440 or more), which must not be refused or cut below the readings there are."""
    readings(ns, 288, first=60, step=5 * MIN)
    since = now_ms() - 24 * 60 * MIN
    count = (now_ms() - since) // MIN
    r = wire(ns, "GET", f"/api/v1/entries/sgv.json?find[date][$gt]={since}&count={count}"
             f"&token={ns.read_token}", ANDROID)
    assert r.status == 200, r.body[:300]
    assert len(r.json()) >= 287


# -- GlucoDataHandler: the uploader --------------------------------------------------------------


def gdh_upload(ns, values: list[tuple[int, int]], *, token: str = "", secret: str = "",
               base: str | None = None) -> Reply:
    """NightscoutUploader.kt:113-151: one JSON array, as org.json writes it."""
    entries, prev = [], None
    for ts, v in sorted(values):
        direction = "" if prev is None else ("Flat" if abs(v - prev) < 5 else
                                             ("FortyFiveUp" if v > prev else "FortyFiveDown"))
        ds = iso(ts) if ts % 1000 else iso(ts)[:-5] + "Z"  # Instant.toString: no .000
        entries.append({"sgv": v, "date": ts, "dateString": ds, "device": "GlucoDataHandler",
                        "type": "sgv", "noise": 1, "rssi": 100, "filtered": v * 1000,
                        "unfiltered": v * 1000, "direction": direction})
        prev = v
    body = json.dumps(entries, separators=(",", ":")).encode()
    target = "/api/v1/entries" + (f"?token={token}" if token else "")
    lines = [*ANDROID, "Content-Type: application/json", "Accept: application/json"]
    if secret:
        lines.append(f"api-secret: {hashlib.sha1(secret.encode()).hexdigest()}")
    return wire(ns, "POST", target, lines, base=base, body=body)


def test_gdh_uploader__with_the_secret_and_again_after_a_url_change(ns):
    """Exactly 200 or the state is ERROR; a changed URL resets the last upload time, so the
    same day of readings is posted again: stored once."""
    now = now_ms() - now_ms() % 60_000  # whole seconds: dateString without millis
    vals = [(now - i * 5 * MIN, 100 + i) for i in range(6)]
    r = gdh_upload(ns, vals, secret=SECRET)
    assert r.status == 200, r.body[:300]
    r = gdh_upload(ns, vals, secret=SECRET)
    assert r.status == 200, r.body[:300]
    got = ns.get("/api/v1/entries.json?count=50", headers=H).json()
    assert sorted(e["date"] for e in got) == sorted(t for t, _ in vals)
    oldest = min(got, key=lambda e: e["date"])
    assert oldest["direction"] in ("", "NONE", None) or "direction" not in oldest
    assert max(got, key=lambda e: e["date"])["device"] == "GlucoDataHandler"


def test_gdh_uploader__with_an_admin_token(ns):
    """The token field: `?token=` on the POST, no api-secret header."""
    now = now_ms()
    r = gdh_upload(ns, [(now - 5 * MIN, 140), (now, 150)], token=ns.admin_token)
    assert r.status == 200, r.body[:300]
    assert ns.get("/api/v1/entries.json?count=5", headers=H).json()[0]["sgv"] == 150
    denied = gdh_upload(ns, [(now + MIN, 155)], token=ns.read_token)
    assert denied.status == 401  # a read token may not upload (the app shows the error)


# -- Glance (Fitbit) ----------------------------------------------------------------------------


def glance_fetch(r) -> object:
    """fetch.js:46-73: content-type must hold application/json (or text/html, then parsed);
    anything else throws, as does a non-ok reply."""
    ct = r.headers.get("content-type")
    assert ct is not None and ("application/json" in ct or "text/html" in ct), ct
    return r.json() if r.status_code // 100 == 2 else {"error": {"status": r.status_code}}


def glance_current(bgs: list[dict]) -> dict:
    """standardize.js:263-271: the first bg whose bgdelta is not null (undefined crashes)."""
    cur = next((b for b in bgs if b.get("bgdelta") is not None), None)
    assert cur is not None, bgs[:2]
    return cur


def test_glance__pebble_count_47_with_a_token(ns):
    """settings.js:80-95: `<url lowercased>/pebble?count=47&token=T`; the watch graphs 47
    readings, the current one being the only bg with a delta."""
    t0 = readings(ns, 50, first=100, direction="Flat")
    url = ns.site_url.lower() + f"/pebble?count=47&token={ns.read_token}"
    r = ns.client.get(url, headers={"Accept": "*/*"})
    data = glance_fetch(r)
    bgs = data["bgs"]
    assert len(bgs) == 47 and [b for b in bgs[1:] if b.get("bgdelta") is not None] == []
    cur = glance_current(bgs)
    assert cur is bgs[0] and float(cur["sgv"]) == 149 and cur["datetime"] == t0 + 49 * 5 * MIN
    assert float(cur["bgdelta"]) == 1 and cur["direction"] == "Flat"
    for k in ("iob", "cob"):  # Number(x) must not be NaN
        assert float(cur.get(k) or 0) >= 0
    assert all(float(b["sgv"]) >= 39 for b in bgs)


def test_glance__pebble_bgdelta_zero_is_still_current(ns):
    """A steady reading: bgdelta 0 (not null) still marks the current bg."""
    readings(ns, 3, first=100, step=5 * MIN)
    ns.post("/api/v1/entries", headers=H, json=[{"type": "sgv", "sgv": 102,
                                                 "date": now_ms() - MIN, "direction": "Flat"}])
    bgs = glance_fetch(ns.get(f"/pebble?count=47&token={ns.read_token}"))["bgs"]
    assert glance_current(bgs) is bgs[0] and float(bgs[0]["bgdelta"]) == 0


def test_glance__properties_without_the_token(cloud_ns):
    """settings.js:92-95 sends `/api/v2/properties` with no token: a public tenant answers
    with the plugins Glance reads; a private one refuses with JSON (fetch.js then keeps its
    error object, and the watch shows the readings without predictions)."""
    base = public_tenant(cloud_ns)
    readings(cloud_ns, 6, first=120, base=base, headers=PUB_H)
    cloud_ns.client.post(base + "/api/v1/devicestatus", headers=PUB_H, json={
        "device": "xDrip", "created_at": iso(now_ms() - MIN), "uploader": {"battery": 61}})
    cloud_ns.client.post(base + "/api/v1/treatments", headers=PUB_H, json={
        "eventType": "Sensor Start", "created_at": iso(now_ms() - 26 * 60 * MIN)})
    p = glance_fetch(cloud_ns.client.get(base + "/api/v2/properties"))
    assert isinstance(p, dict) and "bgnow" in p
    if p.get("ar2", {}).get("forecast", {}).get("predicted"):
        assert all(is_num(x["mgdl"]) for x in p["ar2"]["forecast"]["predicted"])
    if p.get("upbat"):
        assert isinstance(p["upbat"].get("display"), str | type(None))
    if p.get("sage") and p["sage"].get("Sensor Start"):
        assert isinstance(p["sage"]["Sensor Start"].get("display"), str | type(None))
    private = cloud_ns.client.get(cloud_ns.site_url + "/api/v2/properties")
    assert private.status_code == 401
    assert glance_fetch(private) == {"error": {"status": 401}}


# -- garmin-nightscout-integration (Connect IQ) ---------------------------------------------------


def ciq_query(params: dict) -> str:
    """Connect IQ encodes makeWebRequest's params as a form: keys and values escaped."""
    return "&".join(f"{quote(str(k), safe='')}={quote(str(v), safe='')}"
                    for k, v in params.items())


def garmin_request(ns, token: str, base: str | None = None) -> Reply:
    since = now_ms() - 60 * MIN
    q = ciq_query({"find[date][$gte]": since, "count": 13, "token": token})
    return wire(ns, "GET", f"/api/v1/entries/sgv.json?{q}",
                ["User-Agent: ConnectIQ", "Accept: application/json",
                 "Content-Type: application/x-www-form-urlencoded"], base=base)


def garmin_read(r: Reply) -> list[dict]:
    """:86-116: 200 and an array; [0] newest; sgv and date Numbers (Monkey C `as Number`)."""
    assert r.status == 200, (r.status, r.body[:300])
    arr = r.json()
    assert isinstance(arr, list) and arr
    for e in arr:
        assert is_int(e["sgv"]) and is_int(e["date"]), e
        assert e.get("direction") is None or isinstance(e["direction"], str)
    assert arr == sorted(arr, key=lambda e: -e["date"])
    return arr


def test_garmin__unhashed_access_token(ns):
    """"Send secret unhashed": an access token typed into the secret field."""
    readings(ns, 16, first=100)
    arr = garmin_read(garmin_request(ns, ns.read_token))
    assert len(arr) == 12 and arr[0]["sgv"] == 115  # the hour, at most 13


def test_garmin__sha1_of_the_api_secret_as_the_token(ns):
    """The default: `token=sha1(API secret)`. Nightscout takes no hash as `?token=` (only as
    `api-secret` or `?secret=`: its authorization index.js:45-68, :175-199), ignores the unknown
    token and answers with the default roles, so there this face works only on a site anyone
    may read; here the hash is taken as the site's secret, on a private site too."""
    readings(ns, 3, first=100)
    assert garmin_read(garmin_request(ns, SECRET_SHA1))[0]["sgv"] == 102


def test_garmin__public_tenant_with_its_own_and_a_mistyped_secret(cloud_ns):
    """A public tenant: the SHA-1 of its secret is read. The SHA-1 of a mistyped secret is
    served with the readable default, as by Nightscout (an unknown `?token=` is no attempt
    there, its authorization index.js:45-68); here it is still counted as a guess."""
    base = public_tenant(cloud_ns)
    readings(cloud_ns, 4, first=100, base=base, headers=PUB_H)
    own = hashlib.sha1(b"public-family-secret-26").hexdigest()
    assert garmin_read(garmin_request(cloud_ns, own, base=base))[0]["sgv"] == 103
    mistyped = garmin_request(cloud_ns, hashlib.sha1(b"a-mistyped-secret").hexdigest(), base=base)
    assert mistyped.status == 200 and [e["sgv"] for e in garmin_read(mistyped)][0] == 103


# -- nsfitbit (Fitbit) --------------------------------------------------------------------------


def test_nsfitbit__host_only_with_a_token_in_the_secret_field(ns):
    """settings.js:125-171 keeps only the host: on the cloud the token names the tenant at the
    root. index.js:32-46: `api-secret: <token as typed>`; four reads, each needing ok."""
    readings(ns, 5, first=110)
    ns.post("/api/v1/treatments", headers=H, json=[
        {"eventType": "Meal Bolus", "carbs": 30, "insulin": 2.5,
         "created_at": iso(now_ms() - 20 * MIN)},
        {"eventType": "Temp Basal", "absolute": 0.4, "duration": 30,
         "created_at": iso(now_ms() - 10 * MIN)}])
    ns.post("/api/v1/profile", headers=H, json={
        "defaultProfile": "Default", "startDate": iso(now_ms() - 24 * 60 * MIN), "units": "mg/dl",
        "store": {"Default": {"dia": 4, "carbs_hr": 30, "timezone": "UTC",
                              "basal": [{"time": "00:00", "value": 0.8}]}}})
    h = {"api-secret": ns.read_token}
    root = ns.root
    r = ns.client.get(root + "/api/v1/entries.json?count=48", headers=h)
    assert r.status_code == 200, r.text
    data = [b for b in r.json() if b.get("sgv") and b.get("type") != "mbg" and b.get("date")]
    assert data[0]["sgv"] == 114 and is_num(data[0]["date"])
    r = ns.client.get(root + "/api/v1/treatments.json?count=120", headers=h)
    assert r.status_code == 200, r.text
    meal = next(t for t in r.json() if t["eventType"] == "Meal Bolus")
    assert float(meal["carbs"]) == 30 and float(meal["insulin"]) == 2.5
    datetime.fromisoformat(meal["created_at"])
    assert any(t["eventType"] == "Temp Basal" for t in r.json())
    r = ns.client.get(root + "/api/v1/profile.json?count=1", headers=h)
    assert r.status_code == 200 and r.json()[0]["defaultProfile"] == "Default"
    r = ns.client.get(root + "/api/v2/properties", headers=h)
    assert r.status_code == 200 and "bgnow" in r.json()


def test_nsfitbit__the_plain_api_secret_is_refused(ns):
    """The API secret typed as it is: Nightscout compares the header with its SHA-1 or SHA-512
    only (enclave.js:50-52), so the face gets 401 and shows nothing."""
    r = ns.client.get(ns.root + "/api/v1/entries.json?count=48", headers={"api-secret": SECRET})
    assert r.status_code == 401
