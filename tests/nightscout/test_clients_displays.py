"""Followers and displays against the cloud and the edge, request for request.

- Nightscouter (someoneAnyone/Nightscouter @ 41fe662, iOS/watchOS): the site form checks the
  typed URL with a HEAD to it (URL-Extensions.swift:75-101: 200...399 or 405 is valid); then
  Nightscout.swift:85-127 builds `<url>/api/v1/{status,entries,devicestatus}.json` with
  appendingPathComponent (a `?token=` typed in the URL stays on status and devicestatus, but
  URLComponents.queryItems = [count=300] replaces it on entries), headers `Content-Type:
  application/json` and `api-secret: <the site's secret as typed>` ("" from the form:
  SiteFormViewController.swift:141; String.sha1() returns itself, Nightscout.swift:13). Replies:
  ParseConfigurationOperation.swift:36 strips every `+` then decodes ServerConfiguration
  (ServerConfiguration.swift:11-198, every key required); ParseReadingsOperation.swift:51 fails
  the whole download on an entry whose type is not sgv/mbg/cal; ParseDeviceStatusOperation.swift
  :44-47 decodes [DeviceStatus] (DeviceStatus.swift:22-127).
- ZeppNightscout (iricigor/ZeppNightscout @ 07f558e, app-side index.js): `${url}/api/v1/status
  ?token=T` (:105-110, :161), `${url}/api/v1/entries.json?count=200&token=T` (:62-67),
  `${url}/api/v1/treatments.json?count=1&token=T` (:176), header `Content-Type:
  application/json` only; every body goes through JSON.parse (:429).
- trmnl-nightscout (gabe565/trmnl-nightscout @ 466db47, fetch.go): `path.Join(url.Path,
  "/api/v2/properties/bgnow,delta,direction")` (:180) and `/api/v1/entries.json?count=72`
  `&find[date][$gte]=<unix SECONDS>` (:202-209, raw brackets), `Api-Secret: sha1(token)`
  (:75-77, :139-141), `If-None-Match` with the last ETag (:135-137); only 200 is decoded, 304 is
  "not modified" (:157-171); Go types in reading.go, delta.go, sgv.go, mills.go (int64).
- nightscout-widget-electron (kashamalasha/nightscout-widget-electron @ 9e3b3a7, backend.js):
  the URL with trailing `/` and `.` trimmed (settings.js:133), JWT from
  `/api/v2/authorization/request/<token>` (:111-133: `token`, `exp` in seconds), then
  `/api/v3/status` and `/api/v3/entries?sort%24desc=date&limit=10&fields=sgv%2Cdirection%2Cdate`
  `&type%24eq=sgv` with `Authorization: Bearer` (:153-202); on 403 `/api/v2/entries/sgv?count=10`
  with `Accept: application/json`, reading `mills` as the date (:32-46, :135-151).
- nightscout-tray (MrCodeEU/nightscout-tray @ 5c5ceea, client.go): trailing `/` trimmed (:30),
  `Accept`/`Content-Type: application/json`, `API-SECRET: sha1(secret)` or `Authorization:
  Bearer <token>` (:60-68); url.Values.Encode (sorted, brackets and `$` escaped); non-2xx is an
  error (:88-90); Go types in glucose.go and treatment.go.
- lametric-nightscout-proxy (aolde/lametric-nightscout-proxy @ fc7e248): got with
  responseType json; querystring.stringify({token, count: 0, find[dateString][$gte]: today})
  (entries.ts:23-31, nightscoutHandler.ts:80-86), `properties/iob,delta?token=` (properties.ts).
- Nightscout-Pixoo (Prince25/Nightscout-Pixoo @ a90ea79, app.py:10): urljoin(URL,
  '/api/v1/entries/sgv.json?count=2'), so the path of the URL is dropped, no credential.
- inkyPhat_nightscout (thomaas/inkyPhat_nightscout @ 2589cd0, nightscoutCalls.py, before it
  moved to Dexcom): ps2/python-nightscout `get_sgvs({'count': 36})`, no credential.
- nightscout-watcher (SergeyRock/nightscout-watcher @ ffdcc70): `%s/api/v1/entries/sgv?count=3000
  &find[dateString][$gte]=<local yyyy-mm-ddThh:nn:ss>&rnd=<n>` (uSettings.pas:477-488), no
  credential, tab-separated rows: quoted dateString, ms, integer sgv (StrToInt), direction,
  device (uNightscout.pas:240-300).
- Nightscout-MacOS-Menu-Bar (adamd9/Nightscout-MacOS-Menu-Bar @ eb8ec3b,
  NightscoutMenuBar.swift:180-186, :345-347): `/api/v1/entries?count=60&token=T` read as
  tab-separated text (:136-159) and `/api/v2/properties?token=T` (:247-330).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import urlencode, urljoin, urlsplit

from tests.support.nightscout import (
    MIN,
    PUB_H,
    SECRET,
    SECRET_SHA1,
    is_int,
    is_num,
    iso,
    now_ms,
    public_tenant,
    wire,
)

ON_POSTGRES = True

HOUR = 60 * MIN
H = {"api-secret": SECRET_SHA1}


def readings(ns, n: int = 6, *, step: int = 5 * MIN, first: int = 100, end: int | None = None,
             direction: str = "Flat") -> int:
    """n readings ending `end` (2 min ago), oldest first, as xDrip+ uploads them."""
    end = end or now_ms() - 2 * MIN
    t0 = end - (n - 1) * step
    ns.post("/api/v1/entries", headers=H, json=[
        {"type": "sgv", "sgv": first + i, "date": t0 + i * step, "dateString": iso(t0 + i * step),
         "direction": direction, "device": "xDrip-DexcomG6", "noise": 1, "filtered": 120000,
         "unfiltered": 118000, "rssi": 100} for i in range(n)])
    return t0










# -- Nightscouter -------------------------------------------------------------------------------


def test_nightscouter__site_form_head_check(ns):
    """URL-Extensions.swift:75-101: HEAD <typed URL>; 200...399 or 405 is a valid site, anything
    else shows 'received a N response' and the site is not added. Nightscout's root is its
    web page (200)."""
    site = urlsplit(ns.site_url).path.rpartition("/t/")[2]  # "" for the edge's root
    for url in (ns.site_url, ns.site_url + "/", f"{ns.site_url}?token={ns.read_token}"):
        r = ns.client.head(url)
        assert 200 <= r.status_code < 400 or r.status_code == 405, (url, r.status_code)
        # a browser opening the address gets the family app, as Nightscout's gives its page
        assert r.status_code == 302 and r.headers["location"] == (
            f"/app/{site}" if site else "/app"), (url, r.headers)
    page = ns.client.get(ns.site_url, follow_redirects=True)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]


NIGHTSCOUTER = {"Content-Type": "application/json", "api-secret": ""}


def decodes_server_configuration(body: str) -> list[str]:
    """ServerConfiguration.swift (after ParseConfigurationOperation strips every `+`): the keys
    whose absence or type makes JSONDecoder throw (the site then shows nothing)."""
    d = json.loads(body.replace("+", ""))
    bad = [k for k in ("status", "version", "name", "serverTime") if not isinstance(d.get(k), str)]
    bad += [k for k in ("apiEnabled", "careportalEnabled", "boluscalcEnabled")
            if not isinstance(d.get(k), bool)]
    s = d.get("settings")
    if s is None:
        return bad
    bad += [f"settings.{k}" for k in ("units", "showRawbg", "customTitle")
            if not isinstance(s.get(k), str)]
    bad += [f"settings.{k}" for k in ("alarmUrgentHigh", "alarmHigh", "alarmLow", "alarmUrgentLow",
                                      "alarmTimeagoWarn", "alarmTimeagoUrgent")
            if not isinstance(s.get(k), bool)]
    bad += [f"settings.{k}" for k in ("alarmUrgentHighMins", "alarmHighMins", "alarmLowMins",
                                      "alarmUrgentLowMins", "alarmWarnMins")
            if not (isinstance(s.get(k), list) and all(is_num(x) for x in s[k]))]
    th = s.get("thresholds")
    if not (isinstance(th, dict) and all(is_num(th.get(k)) for k in
                                         ("bgHigh", "bgLow", "bgTargetBottom", "bgTargetTop"))):
        bad.append("settings.thresholds")
    if not (isinstance(s.get("enable"), list) and all(isinstance(x, str) for x in s["enable"])):
        bad.append("settings.enable")
    return bad


def test_nightscouter__status_and_devicestatus_with_the_token_in_the_url(ns):
    """Nightscout.swift:98: `<url>/api/v1/status.json` and `devicestatus.json` keep a typed
    `?token=`; the form's empty `api-secret` header must not count as a wrong secret."""
    ns.post("/api/v1/devicestatus", headers=H, json=[
        {"device": "xDrip-LimiTTer", "created_at": iso(now_ms() - 3 * MIN),
         "uploaderBattery": 57},
        {"device": "loop://iPhone", "created_at": iso(now_ms() - 2 * MIN),
         "uploader": {"battery": 80},
         "pump": {"clock": iso(now_ms() - 2 * MIN), "reservoir": 112.5,
                  "battery": {"percent": 75},
                  "status": {"bolusing": False, "suspended": False,
                             "timestamp": iso(now_ms() - 2 * MIN)}}}])
    tok = ns.read_token
    r = ns.client.get(f"{ns.site_url}/api/v1/status.json?token={tok}", headers=NIGHTSCOUTER)
    assert r.status_code == 200, r.text
    assert decodes_server_configuration(r.text) == []
    r = ns.client.get(f"{ns.site_url}/api/v1/devicestatus.json?token={tok}",
                      headers=NIGHTSCOUTER)
    assert r.status_code == 200, r.text
    got = r.json()
    assert {d.get("uploaderBattery") for d in got} >= {57}
    for d in got:  # DeviceStatus: uploaderBattery Int?, date Double?, pump types
        assert d.get("uploaderBattery") is None or is_int(d["uploaderBattery"])
        assert d.get("date") is None or is_num(d["date"])
        p = d.get("pump") or {}
        assert p.get("reservoir") is None or is_num(p["reservoir"])
        assert p.get("clock") is None or isinstance(p["clock"], str)


def test_nightscouter__entries_need_a_readable_site(cloud_ns):
    """Nightscout.swift:111-116 replaces the query with `count=300`, so entries carry no token:
    only a site readable without one answers (else 401, and the app's `as! [[String: Any]]`
    traps on the error object). Each entry must be sgv, mbg or cal; an mbg needs a number `mbg`,
    a cal `slope`, `intercept` and `scale` (ParseReadingsOperation.swift:49-76)."""
    base = public_tenant(cloud_ns)
    now = now_ms()
    cloud_ns.client.post(base + "/api/v1/entries", headers=PUB_H, json=[
        *[{"type": "sgv", "sgv": 120 + i, "date": now - i * 5 * MIN, "direction": "Flat",
           "device": "xDrip", "noise": 1, "dateString": iso(now - i * 5 * MIN)}
          for i in range(4)],
        {"type": "mbg", "mbg": 118, "date": now - 7 * MIN, "device": "meter"},
        {"type": "cal", "slope": 856.6, "intercept": 32179, "scale": 1, "date": now - 8 * MIN}])
    r = cloud_ns.client.get(base + "/api/v1/entries.json?count=300", headers=NIGHTSCOUTER)
    assert r.status_code == 200, r.text
    got = json.loads(r.text.replace("+", ""))
    assert isinstance(got, list) and {e["type"] for e in got} == {"sgv", "mbg", "cal"}
    for e in got:
        assert e["type"] in ("sgv", "mbg", "cal") and is_num(e["date"])
        if e["type"] == "sgv":
            assert is_num(e["sgv"]) and e.get("noise") in (None, 0, 1, 2, 3, 4, 5)
        elif e["type"] == "mbg":
            assert is_num(e["mbg"])
        else:
            assert all(is_num(e[k]) for k in ("slope", "intercept", "scale"))
    private = cloud_ns.client.get(f"{cloud_ns.site_url}/api/v1/entries.json?count=300",
                                  headers=NIGHTSCOUTER)
    assert private.status_code == 401


# -- ZeppNightscout -----------------------------------------------------------------------------


ZEPP = {"Content-Type": "application/json"}


def test_zepp__verify_url_parses_the_status_as_json(ns):
    """index.js:100-147: GET `${url}/api/v1/status?token=T`, `Content-Type: application/json`,
    no Accept; the body goes through JSON.parse and needs status, name or version."""
    for accept in ([], ["Accept: */*"]):  # none on the wire, or a fetch library's default
        r = wire(ns, "GET", f"/api/v1/status?token={ns.read_token}",
                 ["Content-Type: application/json", *accept])
        assert r.status == 200
        body = json.loads(r.body)  # a text/html '<h1>STATUS OK</h1>' is "✗ Connection failed"
        assert body["status"] == "ok" and body["name"] and body["version"]
    # a browser (or curl) still gets Nightscout's page
    page = wire(ns, "GET", f"/api/v1/status?token={ns.read_token}", ["Accept: */*"])
    assert page.status == 200 and page.body == b"<h1>STATUS OK</h1>"


def test_zepp__entries_and_token_check(ns):
    """index.js:57-93 and 260-305: count=200 then `&token=`; latest = [0], delta from [1],
    `new Date(dateString || date)`; validateToken (:155-211) reads treatments.json?count=1."""
    t0 = readings(ns, 6, direction="FortyFiveUp")
    tok = ns.read_token
    r = ns.client.get(f"{ns.site_url}/api/v1/entries.json?count=200&token={tok}", headers=ZEPP)
    got = json.loads(r.text)
    assert r.status_code == 200 and [e["sgv"] for e in got[:2]] == [105, 104]
    assert got[0]["direction"] == "FortyFiveUp"
    assert datetime.fromisoformat(got[0]["dateString"].replace("Z", "+00:00")).timestamp() \
        * 1000 == t0 + 5 * 5 * MIN
    r = ns.client.get(f"{ns.site_url}/api/v1/treatments.json?count=1&token={tok}", headers=ZEPP)
    assert r.status_code == 200 and json.loads(r.text) == []


# -- trmnl-nightscout ---------------------------------------------------------------------------


def trmnl_headers(token: str, etag: str = "") -> dict:
    h = {"User-Agent": "trmnl-nightscout/0.12.0 (linux/arm64)", "Accept-Encoding": "gzip",
         "Api-Secret": hashlib.sha1(token.encode()).hexdigest()}
    if etag:
        h["If-None-Match"] = etag
    return h


def go_reading(r: dict) -> None:
    """reading.go/sgv.go/mills.go: json.Number fields take numbers (or null), Mills int64."""
    for k in ("mean",):
        assert r.get(k) is None or is_num(r[k]), k
    assert is_num(r["last"]) and is_int(r["mills"])
    for s in r["sgvs"]:
        assert is_int(s["mills"]) and is_num(s["mgdl"]), s
        for k in ("_id", "device", "direction", "type"):
            assert s.get(k) is None or isinstance(s[k], str), (k, s)
        for k in ("filtered", "unfiltered", "noise", "rssi", "scaled"):
            assert s.get(k) is None or is_num(s[k]), (k, s)


def test_trmnl__properties_with_the_sha1_of_a_token(ns):
    """fetch.go:174-194: `<url>/api/v2/properties/bgnow,delta,direction` with
    `Api-Secret: sha1(NIGHTSCOUT_TOKEN)`; a typed `?token=` is kept as the query."""
    readings(ns, 3, first=150)
    for url, h in ((f"{ns.site_url}/api/v2/properties/bgnow,delta,direction",
                    trmnl_headers(ns.read_token)),
                   (f"{ns.site_url}/api/v2/properties/bgnow,delta,direction?token={ns.read_token}",
                    {"User-Agent": "trmnl-nightscout/0.12.0"}),
                   (f"{ns.site_url}/api/v2/properties/bgnow,delta,direction",
                    trmnl_headers(SECRET))):
        r = ns.client.get(url, headers=h)
        assert r.status_code == 200, (url, r.text)
        p = r.json()
        go_reading(p["bgnow"])
        assert p["bgnow"]["last"] == 152 and p["bgnow"]["sgvs"][0]["direction"] == "Flat"
        d = p["delta"]
        assert is_num(d["mgdl"]) and d["mgdl"] == 1 and isinstance(d["display"], str)
        assert isinstance(d["interpolated"], bool)
        assert is_int(d["times"]["recent"]) and is_int(d["times"]["previous"])
        for k in ("absolute", "elapsedMins", "mean5MinsAgo", "scaled"):
            assert d.get(k) is None or is_num(d[k]), k
        go_reading(d["previous"])
        for k in ("entity", "label", "value"):
            assert p["direction"].get(k) is None or isinstance(p["direction"][k], str), k


def test_trmnl__entries_since_unix_seconds_and_etags(ns):
    """fetch.go:196-222: `count=72` (6 h / 5 min) `&find[date][$gte]=<unix seconds>` with raw
    brackets: every reading is newer than that number, so the newest 72 come back; If-None-Match
    with the last ETag: 304 only while nothing changed (the display would keep old values)."""
    readings(ns, 80, end=now_ms() - 2 * MIN)
    secs = int((datetime.now(UTC) - timedelta(hours=6)).timestamp())
    target = f"/api/v1/entries.json?count=72&find[date][$gte]={secs}"
    ua = ["User-Agent: trmnl-nightscout/0.12.0 (linux/arm64)", "Accept-Encoding: identity",
          f"Api-Secret: {hashlib.sha1(ns.read_token.encode()).hexdigest()}"]
    r = wire(ns, "GET", target, ua)
    assert r.status == 200, r.body[:300]
    got = r.json()
    assert len(got) == 72 and got[0]["sgv"] == 179
    for e in got:  # SGVv1: date/mills int64, sgv number, delta float64, strings
        assert is_int(e["date"]) and is_num(e["sgv"])
        assert e.get("mills") is None or is_int(e["mills"])
        assert e.get("delta") is None or is_num(e["delta"])
        for k in ("_id", "device", "direction", "type"):
            assert e.get(k) is None or isinstance(e[k], str)
    props = "/api/v2/properties/bgnow,delta,direction"
    for path in (target, props):
        first = wire(ns, "GET", path, ua)
        etag = first.headers.get("etag")
        if not etag:
            continue
        again = wire(ns, "GET", path, [*ua, f"If-None-Match: {etag}"])
        assert again.status in (200, 304)
        ns.post("/api/v1/entries", headers=H, json={"type": "sgv", "sgv": 222,
                                                   "date": now_ms() - MIN, "direction": "Flat"})
        changed = wire(ns, "GET", path, [*ua, f"If-None-Match: {etag}"])
        assert changed.status == 200, (path, changed.status)
        assert b"222" in changed.body


# -- nightscout-widget-electron -------------------------------------------------------------------


def test_widget_electron__jwt_then_v3_status_and_entries(ns):
    """backend.js:111-133 (synchronous XHR, JSON.parse of the text), :153-202."""
    readings(ns, 4, first=130, direction="SingleDown")
    url = ns.site_url.rstrip("/.")
    auth = ns.client.get(f"{url}/api/v2/authorization/request/{ns.read_token}")
    assert auth.status_code == 200
    a = json.loads(auth.text)
    assert isinstance(a["token"], str) and is_int(a["exp"]) and a["exp"] * 1000 > now_ms()
    bearer = {"Authorization": f"Bearer {a['token']}"}
    st = ns.client.get(f"{url}/api/v3/status", headers=bearer)
    assert st.status_code == 200 and st.json()["status"] == 200
    q = urlencode({"sort$desc": "date", "limit": 10, "fields": "sgv,direction,date",
                   "type$eq": "sgv"})
    assert q == "sort%24desc=date&limit=10&fields=sgv%2Cdirection%2Cdate&type%24eq=sgv"
    r = ns.client.get(f"{url}/api/v3/entries?{q}", headers=bearer)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == 200
    res = body["result"]  # util.js:118-151: result[0] is the newest, `date` ms
    assert [e["sgv"] for e in res] == [133, 132, 131, 130]
    assert res[0]["direction"] == "SingleDown" and is_int(res[0]["date"])
    assert now_ms() - res[0]["date"] < 5 * MIN
    # "Bearer null" before a JWT was had: a 401 whose body has `message` (createRequest :68-70)
    r = ns.client.get(f"{url}/api/v3/entries?{q}", headers={"Authorization": "Bearer null"})
    assert r.status_code == 401 and isinstance(r.json().get("message"), str)


def test_widget_electron__v2_fallback_reads_mills(ns):
    """backend.js:32-46, :135-151: after a 403 from v3, `/api/v2/entries/sgv?count=10` with
    `Accept: application/json` and the JWT; each item's date is taken from `mills` (Nightscout
    15 sets `mills = mills || date` on entries served from its cache)."""
    readings(ns, 3)
    jwt_ = ns.client.get(f"{ns.site_url}/api/v2/authorization/request/{ns.read_token}").json()
    r = ns.client.get(f"{ns.site_url}/api/v2/entries/sgv?count=10", headers={
        "Authorization": f"Bearer {jwt_['token']}", "Accept": "application/json"})
    assert r.status_code == 200
    got = r.json()
    assert [e["sgv"] for e in got] == [102, 101, 100]
    assert all(is_int(e.get("mills")) and e["mills"] == e["date"] for e in got), got[0]


# -- nightscout-tray (MrCodeEU) --------------------------------------------------------------------


TRAY = {"Accept": "application/json", "Content-Type": "application/json",
        "API-SECRET": SECRET_SHA1}


def test_tray__status_decodes_into_go_types(ns):
    """client.go:96-113 -> models ServerStatus: showPlugins string, timeFormat int,
    thresholds ints; a decode error fails TestConnection."""
    r = ns.client.get(ns.site_url.rstrip("/") + "/api/v1/status", headers=TRAY)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    st = r.json()
    s = st["settings"]
    assert isinstance(st["status"], str) and isinstance(st["apiEnabled"], bool)
    assert isinstance(s["units"], str) and is_int(s["timeFormat"])
    assert isinstance(s["nightMode"], bool) and isinstance(s["showPlugins"], str)
    for k in ("alarmHigh", "alarmLow", "alarmUrgentHigh", "alarmUrgentLow"):
        assert isinstance(s[k], bool), k
    assert all(is_int(s["thresholds"][k]) for k in
               ("bgHigh", "bgLow", "bgTargetTop", "bgTargetBottom")), s["thresholds"]


def go_entry(e: dict) -> None:
    """glucose.go GlucoseEntry: sgv int, date/mills int64, trend int, strings."""
    assert is_int(e["sgv"]) and is_int(e["date"])
    for k in ("trend",):
        assert e.get(k) is None or is_int(e[k]), (k, e)
    assert e.get("mills") is None or is_int(e["mills"])
    for k in ("_id", "dateString", "direction", "device", "type"):
        assert e.get(k) is None or isinstance(e[k], str), (k, e)


def test_tray__current_recent_and_range_pages(ns):
    """client.go:116-145 (`entries/current?count=1`, object or array), :278-298
    (`entries/sgv?count=24`), :149-250: pages of `count=10000&find[date][$gte]=…&find[date]
    [$lte]=…` encoded by url.Values, each ending 1 ms before the oldest of the last."""
    t0 = readings(ns, 30, first=90)
    cur = ns.client.get(f"{ns.site_url}/api/v1/entries/current?count=1", headers=TRAY)
    assert cur.status_code == 200
    body = cur.json()
    entry = body if isinstance(body, dict) else body[0]
    go_entry(entry)
    assert entry["sgv"] == 119
    recent = ns.client.get(f"{ns.site_url}/api/v1/entries/sgv?count=24", headers=TRAY).json()
    assert len(recent) == 24 and recent[0]["sgv"] == 119
    for e in recent:
        go_entry(e)
    frm, to = t0 + 10 * 5 * MIN, now_ms()
    q = urlencode({"count": "10000", "find[date][$gte]": str(frm), "find[date][$lte]": str(to)})
    assert "find%5Bdate%5D%5B%24gte%5D" in q
    page = ns.client.get(f"{ns.site_url}/api/v1/entries/sgv?{q}", headers=TRAY).json()
    assert [e["sgv"] for e in page] == list(range(119, 99, -1))


def test_tray__treatments_by_rfc3339_with_a_zone(ns):
    """client.go:302-372: `find[created_at][$gte]=<time.RFC3339 in local time>` and `$lte` now;
    Treatment decodes insulin, carbs, duration, glucose, percent, absolute, targets as
    float64, date as int64, notes/_id/created_at as strings."""
    now = now_ms()
    ns.post("/api/v1/treatments", headers=H, json=[
        {"eventType": "Meal Bolus", "insulin": 4.5, "carbs": 45, "created_at": iso(now - 3 * HOUR)},
        {"eventType": "Temp Basal", "absolute": 0.4, "duration": 30, "created_at": iso(now - 2 * HOUR)},
        {"eventType": "BG Check", "glucose": 140, "glucoseType": "Finger", "units": "mg/dl",
         "created_at": iso(now - 90 * MIN)},
        {"eventType": "Correction Bolus", "insulin": 1, "created_at": iso(now - 10 * HOUR)}])
    cest = timezone(timedelta(hours=2))
    frm = datetime.fromtimestamp((now - 8 * HOUR) / 1000, cest).strftime("%Y-%m-%dT%H:%M:%S%z")
    frm = frm[:-2] + ":" + frm[-2:]  # Go's RFC3339: +02:00
    to = datetime.fromtimestamp(now / 1000, cest).isoformat(timespec="seconds")
    q = urlencode({"count": "10000", "find[created_at][$gte]": frm,
                   "find[created_at][$lte]": to})
    r = ns.client.get(f"{ns.site_url}/api/v1/treatments?{q}", headers=TRAY)
    assert r.status_code == 200, r.text
    got = r.json()
    assert sorted(d["eventType"] for d in got) == ["BG Check", "Meal Bolus", "Temp Basal"]
    for d in got:
        for k in ("insulin", "carbs", "protein", "fat", "duration", "glucose", "percent",
                  "absolute", "targetTop", "targetBottom"):
            assert d.get(k) is None or is_num(d[k]), (k, d)
        assert d.get("date") is None or is_int(d["date"])
        for k in ("_id", "eventType", "created_at", "notes", "enteredBy", "units", "profile"):
            assert d.get(k) is None or isinstance(d[k], str), (k, d)


def test_tray__token_mode_sends_the_access_token_as_bearer(ns):
    """client.go:64-65: with "use token", `Authorization: Bearer <access token>` as typed (no
    JWT exchange). Nightscout 15 verifies a Bearer as a JWT only (401); both tiers here take
    a token there, and neither the API secret (only `api-secret` and `?secret=` carry it)."""
    r = ns.client.get(f"{ns.site_url}/api/v1/status", headers={
        "Accept": "application/json", "Authorization": f"Bearer {ns.read_token}"})
    assert r.status_code == 200, (ns.kind, r.status_code, r.text)
    for secret in (SECRET_SHA1, SECRET_SHA1.upper(), hashlib.sha512(SECRET.encode()).hexdigest()):
        for path in ("/api/v1/entries.json", "/api/v3/entries"):
            r = ns.client.get(f"{ns.site_url}{path}", headers={"Authorization": f"Bearer {secret}"})
            assert r.status_code == 401, (path, r.status_code, r.text)


# -- lametric-nightscout-proxy ------------------------------------------------------------------


def test_lametric__today_by_date_string_with_count_zero(ns):
    """entries.ts:17-40 with nightscoutHandler.ts:80-91: querystring.stringify of {token,
    count: 0, 'find[dateString][$gte]': today (UTC)}, got's `accept: application/json`; the
    frames read entries[0].sgv/.delta, every sgv, and properties iob.iob, iob.displayLine,
    delta.times.recent."""
    readings(ns, 5, first=140)
    ns.post("/api/v1/treatments", headers=H, json={
        "eventType": "Correction Bolus", "insulin": 2, "created_at": iso(now_ms() - 40 * MIN)})
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    q = ("token=" + ns.read_token + "&count=0&find%5BdateString%5D%5B%24gte%5D=" + today)
    got_ = {"accept": "application/json", "user-agent": "got (https://github.com/sindresorhus/got)",
            "accept-encoding": "gzip, deflate, br"}
    r = ns.client.get(f"{ns.site_url}/api/v1/entries.json?{q}", headers=got_)
    assert r.status_code == 200
    got = r.json()
    midnight = int(datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
                   .timestamp() * 1000)
    assert got and got[0]["sgv"] == 144 and all(e["date"] >= midnight for e in got)
    p = ns.client.get(f"{ns.site_url}/api/v2/properties/iob,delta?token={ns.read_token}",
                      headers=got_)
    assert p.status_code == 200
    props = p.json()
    assert is_num(props["iob"]["iob"]) and isinstance(props["iob"]["displayLine"], str)
    assert props["delta"]["times"]["recent"] == got[0]["date"]


def test_lametric__no_token_is_an_empty_parameter(cloud_ns):
    """querystring.stringify({token: null}) gives `token=`: a public site must read it as no
    credential, not a wrong one."""
    base = public_tenant(cloud_ns)
    cloud_ns.client.post(base + "/api/v1/entries", headers=PUB_H,
                         json={"type": "sgv", "sgv": 101, "date": now_ms(), "direction": "Flat"})
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    r = cloud_ns.client.get(f"{base}/api/v1/entries.json?token=&count=0"
                            f"&find%5BdateString%5D%5B%24gte%5D={today}",
                            headers={"accept": "application/json"})
    assert r.status_code == 200 and [e["sgv"] for e in r.json()] == [101]
    r = cloud_ns.client.get(f"{base}/api/v2/properties/iob,delta?token=",
                            headers={"accept": "application/json"})
    assert r.status_code == 200


# -- Nightscout-Pixoo, inkyPhat_nightscout, nightscout-watcher (no credential at all) ------------


def test_pixoo__urljoin_drops_the_tenant_path(cloud_ns):
    """app.py:10: urljoin(URL, '/api/v1/entries/sgv.json?count=2'): a `/t/TENANT` URL loses
    its path, so the request reaches the root with no credential (401 'Name the site'); only
    a tenant named by its subdomain (NIGHTLINK_TENANT_DOMAIN) and open for reading works."""
    base = public_tenant(cloud_ns)
    url = urljoin(base, "/api/v1/entries/sgv.json?count=2")
    assert url == f"{cloud_ns.root}/api/v1/entries/sgv.json?count=2"
    assert cloud_ns.client.get(url).status_code == 401
    now = now_ms()
    cloud_ns.client.post(base + "/api/v1/entries", headers=PUB_H, json=[
        {"type": "sgv", "sgv": 120 - 3 * i, "date": now - i * 5 * MIN, "direction": "Flat"}
        for i in range(3)])
    host = urlsplit(cloud_ns.root).netloc
    r = wire(cloud_ns, "GET", "/api/v1/entries/sgv.json?count=2",
             ["User-Agent: python-requests/2.32.3", "Accept: */*"], base=cloud_ns.root)
    assert r.status == 401 and host
    # what the app does with a site that answers: str(sgv), int(sgv0 - sgv1)
    data = cloud_ns.client.get(f"{base}/api/v1/entries/sgv.json?count=2").json()
    assert (str(data[0]["sgv"]), int(data[0]["sgv"] - data[1]["sgv"])) == ("120", 3)


def test_inkyphat__python_nightscout_without_a_secret(cloud_ns):
    """ps2/python-nightscout get_sgvs: `site_url + '/api/v1/entries/sgv.json'`, params count,
    `Content-Type`/`Accept: application/json`; SGV.date from dateString (dateutil)."""
    base = public_tenant(cloud_ns)
    now = now_ms()
    cloud_ns.client.post(base + "/api/v1/entries", headers=PUB_H, json=[
        {"type": "sgv", "sgv": 100 + i, "date": now - i * 5 * MIN, "dateString": iso(now - i * 5 * MIN),
         "direction": "Flat", "delta": 1} for i in range(40)])
    r = cloud_ns.client.get(base + "/api/v1/entries/sgv.json", params={"count": 36}, headers={
        "Content-Type": "application/json", "Accept": "application/json"})
    got = r.json()
    assert r.status_code == 200 and len(got) == 36 and got[0]["sgv"] == 100
    assert datetime.fromisoformat(got[0]["dateString"].replace("Z", "+00:00"))
    assert got[0]["delta"] == 1  # entries[0].delta: the uploader's own field, kept


def test_watcher__tab_separated_since_a_local_date_string(cloud_ns):
    """uSettings.pas:477-488 (FPHTTPClient, no Accept, raw brackets), uNightscout.pas:240-300:
    col 1 quoted dateString, col 2 ms (first 10 digits), col 3 StrToInt(sgv), col 4
    direction."""
    base = public_tenant(cloud_ns)
    now = now_ms()
    cloud_ns.client.post(base + "/api/v1/entries", headers=PUB_H, json=[
        {"type": "sgv", "sgv": 100 + i, "date": now - 150_000 - i * 5 * MIN,
         "dateString": iso(now - 150_000 - i * 5 * MIN), "direction": "Flat",
         "device": "xDrip"} for i in range(40)])  # 2.5 .. 197.5 minutes ago
    since = (datetime.now(UTC) - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S")
    r = wire(cloud_ns, "GET", f"/api/v1/entries/sgv?count=3000&find[dateString][$gte]={since}"
             f"&rnd=1804289383", ["User-Agent: Mozilla/4.0 (compatible; fpweb)"], base=base)
    assert r.status == 200
    rows = [line.split("\t") for line in r.body.decode().splitlines() if line]
    assert len(rows) == 24  # 2.5, 7.5, … 117.5 minutes ago
    for cols in rows:
        assert cols[0].startswith('"') and cols[1][:10].isdigit() and int(cols[2]) > 0
        assert cols[3].strip('"') == "Flat"


# -- Nightscout-MacOS-Menu-Bar (adamd9) ---------------------------------------------------------


URLSESSION = ["Accept: */*", "Accept-Language: en-GB,en;q=0.9", "Accept-Encoding: identity",
              "User-Agent: Nightscout%20Menu%20Bar/1 CFNetwork/1494.0.7 Darwin/23.4.0"]


def test_menu_bar_adamd9__tab_separated_entries_and_properties(ns):
    """NightscoutMenuBar.swift:136-159 and 180-246: rows split on tabs, [1] the ms (integer
    part), [2] a number, [3] the direction in quotes; properties iob/cob `display` (Int, Double
    or String), pump.data.{clock,battery,reservoir}.display strings."""
    readings(ns, 5, first=160, direction="SingleUp")
    now = now_ms()
    ns.post("/api/v1/devicestatus", headers=H, json={
        "device": "loop://iPhone", "created_at": iso(now - MIN),
        "pump": {"clock": iso(now - MIN), "reservoir": 88, "battery": {"percent": 60}}})
    ns.post("/api/v1/treatments", headers=H, json={
        "eventType": "Correction Bolus", "insulin": 1.5, "created_at": iso(now - 30 * MIN)})
    r = wire(ns, "GET", f"/api/v1/entries?count=60&token={ns.read_token}", URLSESSION)
    assert r.status == 200
    rows = [line.split("\t") for line in r.body.decode().split("\n") if line]
    assert len(rows) == 5 and all(len(c) > 3 for c in rows)
    assert float(rows[0][2]) == 164 and rows[0][3].replace('"', "") == "SingleUp"
    assert now - float(rows[0][1].split(".")[0]) < HOUR
    p = wire(ns, "GET", f"/api/v2/properties?token={ns.read_token}", URLSESSION)
    assert p.status == 200
    props = p.json()
    assert isinstance(props["iob"]["display"], int | float | str)
    assert props["cob"] == {} or isinstance(props["cob"]["display"], int | float | str)
    data = props["pump"]["data"]
    for k in ("clock", "battery", "reservoir"):
        assert isinstance(data[k]["display"], str), (k, data.get(k))


def test_lametric__iob_of_a_site_with_treatments_but_no_insulin(ns):
    """iobFrame.ts:5-10 hides the frame when `iob.iob === 0` and shows `iob.displayLine`.
    Nightscout's iob plugin (calcTotal) runs fromTreatments whenever there are treatments, so
    a day of carbs only is `{iob: 0, display: '0', displayLine: 'IOB: 0U'}`, not `{}`."""
    readings(ns, 3)
    ns.post("/api/v1/treatments", headers=H, json={
        "eventType": "Carb Correction", "carbs": 15, "created_at": iso(now_ms() - 30 * MIN)})
    p = ns.client.get(f"{ns.site_url}/api/v2/properties/iob,delta?token={ns.read_token}",
                      headers={"accept": "application/json"}).json()
    assert p["iob"].get("iob") == 0 and p["iob"].get("displayLine") == "IOB: 0U", p["iob"]
