"""Home Assistant on API v3, AI assistants' connectors and the ecc1 Go library against the cloud
and the edge, request for request, from their own source.

- ha-nightscout-v3 (savek-cc/ha-nightscout-v3 @ 57a17f0, custom_components/nightscout_v3): the
  URL as typed with trailing `/` removed (config_flow.py:67-72), the token exchanged at
  `<url>/api/v2/authorization/request/<token>` (auth.py:64): 401 is "invalid_auth", anything
  but 200 an error, the body must have `token`, `exp` and `iat` (auth.py:84-107); then every
  read is `GET <url><path>?<k>=<quote(v, safe='$')>&...` with `Authorization: Bearer <jwt>` and
  `Accept: application/json`, only 200 accepted (client.py:130-151). The setup probe
  (capabilities.py:55-111): `/api/v3/status` (`result.settings.units`), entries
  `limit=1&sort$desc=date` (must not be empty), devicestatus `limit=1&sort$desc=created_at`,
  treatments `eventType$eq=<type>&limit=1&sort$desc=created_at` for Sensor/Site/Insulin/Pump
  Battery Change. Each tick (coordinator.py:161-287): entries `date$gte=<ms>&limit=2&sort$desc=
  date`, `/api/v3/lastModified` (`result.collections.entries|treatments`), the backfill pages
  `date$lt=<ms>&limit=1000&sort$desc=date` (one date bound only: :196-201), treatments
  `created_at$gte=<datetime.isoformat()>Z&limit=500&sort$desc=created_at` (client.py:21-23,
  :99-107: `:` quoted as `%3A`, microseconds as six digits). history_store.py:97-110 keeps only
  entries with `identifier`, reads `int(date)`, `int(sgv)`, `srvModified`; coordinator.py:
  359-366 `datetime.fromisoformat(created_at)`.
- mcp-nightscout (lozit/mcp-nightscout @ 7e1a720, src/upstream): NIGHTSCOUT_URL reduced to its
  origin (config.ts:89-90), so a cloud tenant is reached at the host root by its token; a
  readable token (a 40-hex one is refused) exchanged at `/api/v2/authorization/request/
  <encodeURIComponent(token)>` with `accept: application/json` (auth.ts:81-88), then v3 reads
  with `accept` and `authorization: Bearer` (client.ts:353-358), query by URLSearchParams
  (`$` as `%24`): `limit=1&fields=_all` on profile (entries.ts:124), entries `limit=1000&
  fields=_all&date%24gte=<ms>&sort%24desc=date` (entries.ts:135) and pages `...&date%24gte=<ms>
  &sort=date` (client.ts:264-271); the reply must be `{status: number, result: array}`
  (client.ts:368-372), one re-exchange on 401 (:328-334). units.ts:71-108 needs the profile's
  `defaultProfile`, its store's `units` or the top `units`.
- nightscout-mcp (ssuppe/nightscout-mcp @ a380d5d, src/lib/nightscout.ts): axios GET
  `${NIGHTSCOUT_URL}/api/v1/entries.json` and `/treatments.json` with `count` and `find[k]`
  params and `api-secret: <NIGHTSCOUT_TOKEN as typed>` (:46-51, :84-89); zod (schemas.ts):
  entries need `type` string and `date` number, `sgv`, `noise`, `filtered`, `unfiltered`,
  `rssi` numbers when present (not null); treatments `eventType` and `created_at` strings,
  `carbs`/`insulin` number or null, `protein`/`fat` numbers, `glucose` a string.
- nightscout-cgm-skill (shanselman/nightscout-cgm-skill @ b2f0793, cgm.py of its scripts): no
  credential header; NIGHTSCOUT_URL + `/api/v1/entries.json` (:38-50), the API root for
  `status.json`, `treatments.json?count=1`, `devicestatus.json?count=1`, `profile.json`
  (:67, :176-223); the 90-day download pages by `count=10000&find[date][$lte]=<oldest-1>`
  (:326-368), treatments since `find[created_at][$gte]=YYYY-mm-ddTHH:MM:SSZ` (:5744-5752).
  The README's `...entries.json?token=T` URL gives `?token=T` + `/api/v1/entries.json` after
  :49, so only a readable site without a credential works (on Nightscout too).
- cli-anything-nightscout (jonwilliams84/cli-anything-nightscout @ a822cab,
  nightscout_backend.py): the URL with `/api/v1` or `/api/v3` cut (:87-110); v1/v2 with
  `Content-Type`/`Accept: application/json`, `api-secret: sha1(secret)` and `?token=` when a
  token is set (:123-127, :224-236); v3 with `Authorization: Bearer` when the token has a `.`
  (a JWT), else `?token=` (:130-135); any non-2xx raises (:150-187). Requests from core/*.py.
- ecc1/nightscout (ecc1/nightscout @ c6ec02f, nightscout.go, gaps.go, entries.go; used by
  ecc1/medtronic cgmupdate @ 721237c): `URL.ResolveReference("api/v1/entries?...")` (so the
  site URL needs its trailing `/` under a path), `accept`/`content-type: application/json`,
  `api-secret: $NIGHTSCOUT_API_SECRET` as given, or `token=<name>-<16 hex>` added to the query
  (url.Values.Encode: sorted keys, `[`, `]`, `$`, `:` escaped); exactly 200 or it fails
  (nightscout.go:120-124). Gaps: `count=<2/min>&find[dateString][$gte]=<RFC 3339, local
  offset>` (gaps.go:22-34); uploads one entry object per POST (cgmupdate main.go:157-158).

cli-anything's `/api/v3/activity` commands (activity.py) and `status versions`
(`/api/v1/versions`) fail on Nightscout too (its v3 collections are devicestatus, entries, food,
profile, settings, treatments: api3/index.js:67; versions is `/api/versions`): not replayed.

- tconnectsync (jwoglom/tconnectsync @ 8381e50, nightscout.py; widely used for Tandem pumps):
  `urljoin(url, "api/v1/<entity>?api_secret=<the secret as typed>")` with `api-secret: sha1`,
  `Accept`/`Content-Type: application/json`; exactly 200 or it raises (:40-65). Treatments have
  arrow's `.format()` created_at ("YYYY-MM-DD HH:mm:ss+01:00") and explicit nulls
  (nightscout.py of its parser: 31-74); entries a `%z` dateString ("+0100", :86-95). The "already
  uploaded?" reads put arrow's isoformat **unescaped** in the URL (:17-28, :67-134):
  `find[created_at][$gte]=2026-03-15T10:00:00+01:00`, whose `+` the server decodes as a space
  (Nightscout's query.js:66-68 puts the first space back as `+`), then again with the `T` as
  a space when nothing came back.

Not replayed: brenordv/nightscout-companion-apps reads Nightscout's MongoDB (and its own Azure
Function), not the HTTP API; gestrich/NightscoutService is a 2021 fork of Loop's
NightscoutService, whose requests (NightscoutUploadKit) are Loop's, already replayed.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import quote, urlencode

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

HOUR = 60 * MIN
H = {"api-secret": SECRET_SHA1}






def upload_readings(ns, n: int, *, end: int | None = None, step: int = 5 * MIN,
                    first: int = 100) -> list[int]:
    end = end or now_ms() - 2 * MIN
    dates = [end - (n - 1 - i) * step for i in range(n)]
    r = ns.post("/api/v1/entries", headers=H, json=[
        {"type": "sgv", "sgv": first + i, "date": d, "dateString": iso(d), "direction": "Flat",
         "device": "xDrip-DexcomG6", "noise": 1} for i, d in enumerate(dates)])
    assert r.status_code == 200, r.text
    return dates


def add_treatments(ns, docs: list[dict]) -> None:
    r = ns.post("/api/v1/treatments", headers=H, json=docs)
    assert r.status_code == 200, r.text


PROFILE = {"defaultProfile": "Default", "startDate": "2026-01-01T00:00:00.000Z",
           "units": "mg/dl", "store": {"Default": {
               "dia": 5, "units": "mg/dl", "timezone": "Europe/Paris",
               "basal": [{"time": "00:00", "value": 0.8, "timeAsSeconds": 0}],
               "carbratio": [{"time": "00:00", "value": 10, "timeAsSeconds": 0}],
               "sens": [{"time": "00:00", "value": 40, "timeAsSeconds": 0}],
               "target_low": [{"time": "00:00", "value": 90, "timeAsSeconds": 0}],
               "target_high": [{"time": "00:00", "value": 130, "timeAsSeconds": 0}]}}}


def add_profile(ns, **over) -> None:
    r = ns.post("/api/v1/profile", headers=H, json={**PROFILE, **over})
    assert r.status_code == 200, r.text


# -- ha-nightscout-v3 (savek-cc) ---------------------------------------------------------------


def ha_jwt(ns, base: str | None = None) -> dict:
    """auth.py:82-107: 200, then `token`, `exp`, `iat` read with int()."""
    r = wire(ns, "GET", f"/api/v2/authorization/request/{ns.read_token}",
             ["Accept: */*", "Accept-Encoding: gzip, deflate"], base=base)
    assert r.status == 200, (r.status, r.body[:200])
    a = r.json()
    assert isinstance(a["token"], str) and is_int(a["exp"]) and is_int(a["iat"]), a
    assert a["exp"] - now_ms() / 1000 > 3600  # REFRESH_THRESHOLD_SECONDS: no refresh loop
    return a


def ha_get(ns, jwt: str, path: str, params: list[tuple[str, str]],
           base: str | None = None) -> Reply:
    """client.py:130-151."""
    qs = "&".join(f"{k}={quote(v, safe='$')}" for k, v in params)
    return wire(ns, "GET", path + (f"?{qs}" if qs else ""), [
        f"Authorization: Bearer {jwt}", "Accept: application/json",
        "Accept-Encoding: gzip, deflate", "User-Agent: HomeAssistant/2026.4 aiohttp/3.11"],
        base=base)


def ha_list(ns, jwt: str, path: str, params: list[tuple[str, str]]) -> list:
    r = ha_get(ns, jwt, path, params)
    assert r.status == 200, (path, params, r.status, r.body[:300])
    result = r.json().get("result", [])
    assert isinstance(result, list), r.body[:300]
    return result


def ha_iso(ms: int) -> str:
    """client.py:21-23: datetime.isoformat() with "+00:00" as "Z" (six-digit fraction)."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


def test_ha_v3__setup_probe(ns):
    """config_flow.py:91-110 then capabilities.py:55-111."""
    upload_readings(ns, 3, first=140)
    t = now_ms() - 3 * HOUR
    add_treatments(ns, [
        {"eventType": "Sensor Change", "created_at": iso(t), "enteredBy": "xdrip"},
        {"eventType": "Site Change", "created_at": iso(t + MIN), "enteredBy": "aaps"},
        {"eventType": "Pump Battery Change", "created_at": iso(t + 2 * MIN)}])
    ns.post("/api/v1/devicestatus", headers=H, json={
        "device": "openaps://phone", "created_at": iso(now_ms() - MIN), "uploaderBattery": 71,
        "openaps": {"iob": {"iob": 1.2, "basaliob": 0.3, "activity": 0.01},
                    "suggested": {"eventualBG": 120, "COB": 12, "reason": "x"}},
        "pump": {"reservoir": 80, "battery": {"percent": 60},
                 "status": {"status": "normal"}, "extended": {"BaseBasalRate": 0.8}}})
    url = ns.site_url.rstrip("/")
    jwt = ha_jwt(ns, url)["token"]
    st = ha_get(ns, jwt, "/api/v3/status", [])
    assert st.status == 200, st.body[:300]
    units = (st.json()["result"].get("settings") or {}).get("units", "mg/dl")
    assert units in ("mg/dl", "mmol/L", "mmol"), units
    entries = ha_list(ns, jwt, "/api/v3/entries", [("limit", "1"), ("sort$desc", "date")])
    assert len(entries) == 1 and entries[0]["sgv"] == 142  # raises "no entries" when empty
    ds = ha_list(ns, jwt, "/api/v3/devicestatus", [("limit", "1"), ("sort$desc", "created_at")])
    assert ds and ds[0].get("openaps") and ds[0]["pump"]["battery"]["percent"] == 60
    assert "uploaderBattery" in ds[0]
    found = {}
    for ev in ("Sensor Change", "Site Change", "Insulin Change", "Pump Battery Change"):
        found[ev] = ha_list(ns, jwt, "/api/v3/treatments", [
            ("eventType$eq", ev), ("limit", "1"), ("sort$desc", "created_at")])
    assert [bool(v) for v in found.values()] == [True, True, False, True]
    sc = found["Sensor Change"][0]
    assert sc["eventType"] == "Sensor Change"
    assert datetime.fromisoformat(sc["created_at"].replace("Z", "+00:00")).tzinfo is not None


def test_ha_v3__bad_token_is_invalid_auth_not_cannot_connect(ns):
    """auth.py:85-86: only 401 from the exchange is "invalid_auth"; any other non-200 (403,
    404) is retried five times with back-off and then "cannot_connect"."""
    r = wire(ns, "GET", "/api/v2/authorization/request/nosuch-0123456789abcdef", [])
    assert r.status == 401, (r.status, r.body[:200])


def test_ha_v3__fast_cycle_and_last_modified(ns):
    """coordinator.py:161-187, models in history_store.py:97-110 and coordinator.py:400-410."""
    dates = upload_readings(ns, 4, first=120)
    jwt = ha_jwt(ns)["token"]
    since = now_ms() - 24 * HOUR
    got = ha_list(ns, jwt, "/api/v3/entries", [
        ("date$gte", str(since)), ("limit", "2"), ("sort$desc", "date")])
    assert [e["sgv"] for e in got] == [123, 122]
    for e in got:
        assert isinstance(e.get("identifier"), str) and e["identifier"]
        assert is_int(e["date"]) and is_int(e["sgv"]) and e.get("direction") == "Flat"
        assert is_int(e.get("srvModified", e["date"]))
    assert got[0]["date"] == dates[-1]
    r = ha_get(ns, jwt, "/api/v3/lastModified", [])
    assert r.status == 200
    cols = r.json()["result"]["collections"]
    assert is_int(cols["entries"]) and int(cols["entries"]) > 0
    assert int(cols.get("treatments") or 0) == 0  # no treatments yet: 0 or absent


def test_ha_v3__backfill_pages_by_date_lt(ns):
    """coordinator.py:189-249: `limit=1000&sort$desc=date`, then `date$lt=<oldest>` pages; the
    loop stops on a short page, and logs a runaway if the oldest does not go back."""
    dates = upload_readings(ns, 12, first=100)
    jwt = ha_jwt(ns)["token"]
    first = ha_list(ns, jwt, "/api/v3/entries", [("limit", "1000"), ("sort$desc", "date")])
    assert len(first) == 12
    before = dates[6]
    page = ha_list(ns, jwt, "/api/v3/entries", [
        ("date$lt", str(before)), ("limit", "1000"), ("sort$desc", "date")])
    assert [e["date"] for e in page] == sorted(dates[:6], reverse=True)


def test_ha_v3__treatments_since_an_isoformat_date(ns):
    """coordinator.py:264-287 and client.py:99-107: `created_at$gte` is datetime.isoformat()
    with `Z` (".123000" microseconds, or none on a whole second), quoted `%3A`."""
    t = now_ms() - 20 * HOUR
    add_treatments(ns, [
        {"eventType": "Meal Bolus", "created_at": iso(t), "carbs": 40, "insulin": 4},
        {"eventType": "Carb Correction", "created_at": iso(t + HOUR), "carbs": 15},
        {"eventType": "Note", "created_at": iso(t + 2 * HOUR), "notes": "walk"},
        {"eventType": "Carb Correction", "created_at": iso(now_ms() - 60 * HOUR), "carbs": 99}])
    jwt = ha_jwt(ns)["token"]
    for since_ms in (now_ms() - 48 * HOUR, (now_ms() - 48 * HOUR) // 1000 * 1000):
        since = ha_iso(since_ms)
        recent = ha_list(ns, jwt, "/api/v3/treatments", [
            ("created_at$gte", since), ("limit", "500"), ("sort$desc", "created_at")])
        assert sorted(x.get("carbs") or 0 for x in recent) == [0, 15, 40], (since, recent)
    meal = ha_list(ns, jwt, "/api/v3/treatments", [
        ("eventType$eq", "Meal Bolus"), ("limit", "1"), ("sort$desc", "created_at")])
    assert meal[0]["carbs"] == 40
    note = ha_list(ns, jwt, "/api/v3/treatments", [
        ("eventType$eq", "Note"), ("limit", "1"), ("sort$desc", "created_at")])
    assert note[0]["notes"] == "walk"


def test_ha_v3__profile_latest(ns):
    """client.py:109-115: `limit=1&sort$desc=date`, result[0]; an empty list is an error."""
    add_profile(ns, startDate="2026-01-01T00:00:00.000Z")
    add_profile(ns, startDate="2026-02-01T00:00:00.000Z", defaultProfile="Default")
    jwt = ha_jwt(ns)["token"]
    got = ha_list(ns, jwt, "/api/v3/profile", [("limit", "1"), ("sort$desc", "date")])
    assert len(got) == 1 and got[0]["defaultProfile"] == "Default"
    assert got[0]["startDate"] == "2026-02-01T00:00:00.000Z", got[0].get("startDate")


def test_ha_v3__expired_jwt_is_401(ns):
    """client.py:145-146: 401 raises AuthError, which becomes a re-auth prompt
    (coordinator.py:144-148); a stale JWT must not be answered 403."""
    r = ha_get(ns, "eyJhbGciOiJIUzI1NiJ9.eyJ4IjoxfQ.c2ln", "/api/v3/entries", [("limit", "1")])
    assert r.status == 401, (r.status, r.body[:200])


# -- mcp-nightscout (lozit) --------------------------------------------------------------------

UNDICI = ["accept: application/json", "accept-language: *", "sec-fetch-mode: cors",
          "user-agent: node", "accept-encoding: gzip, deflate"]


def lozit_read(ns, jwt: str, collection: str, params: dict) -> Reply:
    """client.ts:198-227 and :353-358, at the origin."""
    q = urlencode({"limit": "1000", "fields": "_all"} | params)
    return wire(ns, "GET", f"/api/v3/{collection}?{q}",
                [*UNDICI, f"authorization: Bearer {jwt}"], base=ns.root)


def test_lozit__origin_only_jwt_then_profile_and_recent_entries(ns):
    """A cloud tenant's URL loses its path (config.ts:89-90): the token alone names it."""
    upload_readings(ns, 5, first=110)
    add_profile(ns)
    r = wire(ns, "GET", f"/api/v2/authorization/request/{quote(ns.read_token, safe='')}",
             UNDICI, base=ns.root)
    assert r.status == 200, (r.status, r.body[:200])
    jwt = r.json()["token"]
    p = lozit_read(ns, jwt, "profile", {"limit": "1"})
    assert p.status == 200, (p.status, p.body[:300])
    body = p.json()
    assert is_int(body["status"]) and isinstance(body["result"], list)
    prof = body["result"][0]
    name = prof["defaultProfile"]
    assert prof["store"][name]["units"] == "mg/dl" and prof["store"][name]["timezone"]
    since = now_ms() - 3 * HOUR
    q = {"date$gte": str(since), "sort$desc": "date"}
    assert urlencode(q).startswith("date%24gte=")
    e = lozit_read(ns, jwt, "entries", q)
    assert e.status == 200, (e.status, e.body[:300])
    got = e.json()["result"]
    assert [x["sgv"] for x in got] == [114, 113, 112, 111, 110]
    assert all(x["type"] == "sgv" and is_num(x["sgv"]) and is_num(x["date"]) for x in got)


def test_lozit__window_pages_ascending_with_one_bound(ns):
    """client.ts:249-322: `date$gte` only, `sort=date` ascending, the bound raised to the last
    date + 1 while pages are full."""
    dates = upload_readings(ns, 8, first=90)
    jwt = ns.client.get(f"{ns.root}/api/v2/authorization/request/{ns.read_token}").json()["token"]
    page = lozit_read(ns, jwt, "entries", {"date$gte": str(dates[2]), "sort": "date"})
    assert page.status == 200
    assert [x["date"] for x in page.json()["result"]] == dates[2:]


def test_lozit__401_then_one_re_exchange(ns):
    """client.ts:325-344: a 401 on a read means re-exchange once; 403 is not retried."""
    r = lozit_read(ns, "not-a-jwt", "entries", {"sort$desc": "date"})
    assert r.status == 401, (r.status, r.body[:200])


# -- nightscout-mcp (ssuppe) -------------------------------------------------------------------


def ssuppe_get(ns, path: str, count: int, find: dict | None, credential: str) -> Reply:
    """nightscout.ts:33-95: axios params (brackets and `$` raw), `api-secret` as typed."""
    parts = [f"count={count}"]
    for k, v in (find or {}).items():
        parts.append(f"find[{k}]={quote(str(v), safe='$:,')}")
    return wire(ns, "GET", f"/api/v1/{path}?{'&'.join(parts)}", [
        "Accept: application/json, text/plain, */*", f"api-secret: {credential}",
        "User-Agent: axios/1.10.0", "Accept-Encoding: gzip, compress, deflate, br"])


def zod_entry(e: dict) -> bool:
    """schemas.ts entrySchema (optional means absent, not null)."""
    if not isinstance(e.get("type"), str) or not is_num(e.get("date")):
        return False
    if "dateString" in e and not isinstance(e["dateString"], str):
        return False
    if "direction" in e and not isinstance(e["direction"], str):
        return False
    return all(is_num(e[k]) for k in ("sgv", "noise", "filtered", "unfiltered", "rssi")
               if k in e)


def zod_treatment(t: dict) -> bool:
    """schemas.ts treatmentSchema."""
    if not isinstance(t.get("eventType"), str) or not isinstance(t.get("created_at"), str):
        return False
    for k in ("carbs", "insulin"):
        if k in t and t[k] is not None and not is_num(t[k]):
            return False
    for k in ("protein", "fat"):
        if k in t and not is_num(t[k]):
            return False
    return all(isinstance(t[k], str) for k in ("_id", "glucoseType", "units", "notes",
                                                "enteredBy", "transmitterId", "sensorCode")
               if k in t)


def test_ssuppe__entries_with_a_token_in_the_api_secret_header(ns):
    """Nightscout takes an access token in `api-secret` (authorization/index.js: "Check if
    there's a token in the secret"); the .env example names it NIGHTSCOUT_TOKEN."""
    dates = upload_readings(ns, 4, first=150)
    ns.post("/api/v1/entries", headers=H, json=[
        {"type": "mbg", "mbg": 133, "date": dates[1] + MIN, "dateString": iso(dates[1] + MIN),
         "device": "meter"},
        {"type": "sgv", "sgv": 99, "date": dates[0] - 5 * MIN,
         "dateString": iso(dates[0] - 5 * MIN), "device": "Spike", "direction": "Flat"}])
    for cred in (ns.read_token, SECRET_SHA1):
        r = ssuppe_get(ns, "entries.json", 100, None, cred)
        assert r.status == 200, (cred, r.status, r.body[:200])
        got = r.json()
        assert len(got) == 6 and all(zod_entry(e) for e in got), [
            e for e in got if not zod_entry(e)]
    since = iso(dates[2])
    r = ssuppe_get(ns, "entries.json", 100, {"dateString][$gte": since}, ns.read_token)
    assert r.status == 200 and [e["sgv"] for e in r.json()] == [153, 152], r.body[:300]
    r = ssuppe_get(ns, "entries.json", 10, {"type": "sgv", "date][$gte": dates[2]},
                   ns.read_token)
    assert r.status == 200 and [e["sgv"] for e in r.json()] == [153, 152]


def test_ssuppe__treatments_decode_with_zod(ns):
    """Any treatment failing the schema fails the whole tool: one posted without eventType
    (kept without it, as Nightscout's REST API keeps it) or a BG Check (`glucose` is a number
    after Nightscout's treatments.js prepareData) fails on Nightscout too; not replayed."""
    t = now_ms() - 2 * HOUR
    add_treatments(ns, [
        {"eventType": "Meal Bolus", "created_at": iso(t), "carbs": 30, "insulin": 3,
         "enteredBy": "Loop", "notes": "lunch", "protein": 10, "fat": 5},
        {"eventType": "Temp Basal", "created_at": iso(t + MIN), "duration": 30,
         "absolute": 0.5, "rate": 0.5, "enteredBy": "openaps://phone"},
        {"eventType": "Sensor Start", "created_at": iso(t + 2 * MIN),
         "transmitterId": "8G1234", "sensorCode": "5678"},
        {"eventType": "Note", "created_at": iso(t + 3 * MIN), "notes": "n"}])
    r = ssuppe_get(ns, "treatments.json", 10, None, ns.read_token)
    assert r.status == 200, (r.status, r.body[:200])
    got = r.json()
    assert len(got) == 4
    assert [x for x in got if not zod_treatment(x)] == []
    r = ssuppe_get(ns, "treatments.json", 10, {"eventType": "Meal Bolus",
                                              "created_at][$gte": iso(t - MIN)}, ns.read_token)
    assert r.status == 200 and [x["carbs"] for x in r.json()] == [30], r.body[:300]


# -- nightscout-cgm-skill (shanselman) -----------------------------------------------------------




REQUESTS = ["User-Agent: python-requests/2.32.3", "Accept-Encoding: gzip, deflate",
            "Accept: */*"]


def test_skill__download_pages_status_and_capabilities(cloud_ns):
    base = public_tenant(cloud_ns)
    end = now_ms() - 2 * MIN
    docs = [{"type": "sgv", "sgv": 100 + i, "date": end - i * 5 * MIN,
             "dateString": iso(end - i * 5 * MIN), "direction": "Flat", "device": "G7"}
            for i in range(6)]
    assert cloud_ns.client.post(f"{base}/api/v1/entries", headers=PUB_H,
                                json=docs).status_code == 200
    cloud_ns.client.post(f"{base}/api/v1/treatments", headers=PUB_H, json=[
        {"eventType": "Correction Bolus", "insulin": 1.5, "created_at": iso(end - HOUR)}])
    cloud_ns.client.post(f"{base}/api/v1/profile", headers=PUB_H, json=PROFILE)
    cloud_ns.client.post(f"{base}/api/v1/devicestatus", headers=PUB_H, json={
        "device": "loop://iPhone", "created_at": iso(end),
        "pump": {"manufacturer": "Insulet", "model": "Dash"}, "loop": {"name": "Loop",
                                                                       "version": "3.4"}})
    r = wire(cloud_ns, "GET", "/api/v1/entries.json?count=10000", REQUESTS, base=base)
    assert r.status == 200, (r.status, r.body[:200])
    got = r.json()
    assert len(got) == 6 and all(isinstance(e["_id"], str) for e in got)
    oldest = min(e["date"] for e in got)
    r = wire(cloud_ns, "GET", f"/api/v1/entries.json?count=10000&find%5Bdate%5D%5B%24lte%5D="
             f"{got[2]['date'] - 1}", REQUESTS, base=base)
    assert r.status == 200 and [e["date"] for e in r.json()][-1] == oldest
    assert len(r.json()) == 3
    st = wire(cloud_ns, "GET", "/api/v1/status.json", REQUESTS, base=base)
    assert st.status == 200
    s = st.json()["settings"]
    assert s["units"].lower().startswith("mg") and is_num(s["thresholds"]["bgLow"])
    tr = wire(cloud_ns, "GET", "/api/v1/treatments.json?count=1", REQUESTS, base=base)
    assert tr.status == 200 and len(tr.json()) == 1
    ds = wire(cloud_ns, "GET", "/api/v1/devicestatus.json?count=1", REQUESTS, base=base)
    assert ds.status == 200 and ds.json()[0]["pump"]["manufacturer"] == "Insulet"
    pr = wire(cloud_ns, "GET", "/api/v1/profile.json", REQUESTS, base=base)
    assert pr.status == 200 and pr.json()[0]["store"]["Default"]["basal"]
    since = datetime.fromtimestamp((end - 3 * HOUR) / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    q = urlencode({"count": 5000, "find[created_at][$gte]": since})
    tr = wire(cloud_ns, "GET", f"/api/v1/treatments.json?{q}", REQUESTS, base=base)
    assert tr.status == 200 and [x["insulin"] for x in tr.json()] == [1.5]


def test_skill__readme_token_url_reads_as_a_bad_token(cloud_ns):
    """The README's URL gives `?token=T` + `/api/v1/entries.json&count=1` (cgm.py:38-50). Nightscout
    resolves an unknown `?token=` to the default roles (authorization/index.js: authorize()
    finds no subject, so no token is tried), which on a readable site still reads; so here.
    On a private site the same URL is refused, and on either it counts as a wrong guess."""
    base = public_tenant(cloud_ns)
    tok = cloud_ns.token("skill", ["readable"])
    garbled = f"/api/v1/entries.json?token={tok}/api/v1/entries.json&count=1"
    r = wire(cloud_ns, "GET", garbled, REQUESTS, base=base)
    assert r.status == 200, (r.status, r.body[:200])
    r = wire(cloud_ns, "GET", garbled, REQUESTS)  # fam-1: private
    assert r.status == 401 and b"not valid for this site" in r.body, (r.status, r.body[:200])
    for _ in range(28):  # 30 guesses a minute from one address, then 429, public or not
        wire(cloud_ns, "GET", garbled, REQUESTS, base=base)
    r = wire(cloud_ns, "GET", garbled, REQUESTS, base=base)
    assert r.status == 429, (r.status, r.body[:200])


# -- cli-anything-nightscout (jonwilliams84) ---------------------------------------------------

CLI = {"Content-Type": "application/json", "Accept": "application/json"}


def cli(ns, method: str, path: str, version: str = "v1", params: dict | None = None,
        data=None, token: str | None = None, secret: bool = True):
    """nightscout_backend.py:190-295."""
    p = dict(params or {})
    headers = dict(CLI)
    if version in ("v1", "v2"):
        if secret:
            headers["api-secret"] = SECRET_SHA1
        if token:
            p.setdefault("token", token)
    elif token and "." in token:
        headers["Authorization"] = f"Bearer {token}"
    elif token:
        p.setdefault("token", token)
    return ns.client.request(method, f"{ns.site_url.rstrip('/')}/api/{version}{path}",
                             headers=headers, params=p or None, json=data)


def test_cli__config_test_is_verifyauth_json(ns):
    """status.py:53-61 (`config test`): `/api/v1/verifyauth.json`. Nightscout serves it: its
    v1 router strips `.json|.svg|.csv|.txt|.png|.html|.tsv` from every path before routing
    (api/index.js:42-44, express-extension-to-accept.js), verifyauth included (:60)."""
    r = cli(ns, "GET", "/verifyauth.json", token=ns.read_token)
    assert r.status_code == 200, (r.status_code, r.text[:200])
    msg = r.json()["message"]
    assert msg["message"] == "OK" and msg["canRead"] is True, r.json()


def test_cli__status_and_entries(ns):
    """status.py:10-18, entries.py:89-216."""
    assert cli(ns, "GET", "/status.json").json()["status"] == "ok"
    t = now_ms() - 10 * MIN
    r = cli(ns, "POST", "/entries.json", data=[{
        "type": "sgv", "sgv": float(123), "date": t,
        "dateString": datetime.fromtimestamp(t / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "direction": "Flat", "device": "cli-anything-nightscout"}])
    assert r.status_code == 200, r.text
    latest = cli(ns, "GET", "/entries.json", params={"count": 1}).json()
    assert latest[0]["sgv"] == 123 and latest[0]["date"] == t
    cur = cli(ns, "GET", "/entries/current.json")
    assert cur.status_code == 200 and cur.json()[0]["sgv"] == 123
    day = datetime.fromtimestamp(t / 1000, UTC).strftime("%Y-%m-%d")
    r = cli(ns, "GET", "/entries.json", params={"count": 50, "find[type]": "sgv",
                                                "find[dateString][$gte]": day})
    assert r.status_code == 200 and len(r.json()) == 1, r.text
    one = cli(ns, "GET", f"/entries/{latest[0]['_id']}.json")
    assert one.status_code == 200 and one.json()[0]["sgv"] == 123
    d = cli(ns, "DELETE", f"/entries/{latest[0]['_id']}.json")
    assert d.status_code == 200, d.text
    assert cli(ns, "GET", "/entries.json", params={"count": 1}).json() == []


def test_cli__treatment_add_get_update_delete(ns):
    """treatments.py:110-160 (a one-item array), :500-558 (GET by id, merge, PUT, DELETE)."""
    r = cli(ns, "POST", "/treatments.json", data=[{
        "eventType": "BG Check", "enteredBy": "cli-anything-nightscout",
        "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "glucose": 104.0, "glucoseType": "Finger", "notes": "before lunch"}])
    assert r.status_code == 200, r.text
    tid = r.json()[0]["_id"]
    got = cli(ns, "GET", f"/treatments/{tid}.json")
    assert got.status_code == 200, got.text
    existing = got.json()
    existing = existing[0] if isinstance(existing, list) else existing
    assert existing["_id"] == tid
    merged = {**existing, "notes": "after lunch"}
    put = cli(ns, "PUT", "/treatments.json", data=merged)
    assert put.status_code == 200, put.text
    lst = cli(ns, "GET", "/treatments.json", params={"count": 50, "find[eventType]": "BG Check"})
    assert [x["notes"] for x in lst.json()] == ["after lunch"]
    assert cli(ns, "DELETE", f"/treatments/{tid}.json").status_code == 200
    assert cli(ns, "GET", "/treatments.json", params={"count": 5}).json() == []


def test_cli__profile_devicestatus_properties_food(ns):
    """profile.py:20-143, devicestatus.py, properties.py:60-102, food.py:20-139."""
    add_profile(ns)
    profs = cli(ns, "GET", "/profile.json").json()
    pid = profs[0]["_id"]
    put = cli(ns, "PUT", "/profile.json", data={**profs[0], "defaultProfile": "Default"})
    assert put.status_code == 200, put.text
    r = cli(ns, "POST", "/devicestatus.json", data={"device": "cli", "uploader": {"battery": 50},
                                                    "created_at": iso(now_ms())})
    assert r.status_code == 200, r.text
    ds = cli(ns, "GET", "/devicestatus.json", params={"count": 1}).json()
    assert ds[0]["uploader"]["battery"] == 50
    assert cli(ns, "DELETE", f"/devicestatus/{ds[0]['_id']}.json").status_code == 200
    p = cli(ns, "GET", "/properties/iob,cob,bgnow,delta,loop", version="v2")
    assert p.status_code == 200 and isinstance(p.json(), dict), p.text
    f = cli(ns, "POST", "/food", data={"type": "food", "name": "apple", "carbs": 15,
                                       "category": "fruit", "portion": 1, "unit": "pcs"})
    assert f.status_code == 200, f.text
    reg = cli(ns, "GET", "/food/regular")
    assert reg.status_code == 200 and reg.json()[0]["name"] == "apple"
    assert cli(ns, "GET", "/food/quickpicks").status_code == 200
    assert cli(ns, "DELETE", f"/profile/{pid}.json").status_code == 200


def test_cli__notifications_ack(ns):
    """notifications.py:23-55 (`alarm ack`): GET /api/v1/notifications/ack with level, group
    and `time` (minutes, which Nightscout reads as ms: notifications-api.js:22-31); the reply
    is read as text. Nightscout answers `OK` for `notifications:*:ack` (the secret, an admin)
    and silences the group's alarms; a read token may not (authorization/storage.js)."""
    import time as clock

    sockets = ns.app.state.nightscout_sockets
    r = cli(ns, "GET", "/notifications/ack", params={"level": 2, "group": "default", "time": 5})
    assert (r.status_code, r.text) == (200, "OK"), (r.status_code, r.text[:200])
    key = next(iter(sockets._silenced))[0]
    assert {lvl for site, _, lvl in sockets._silenced if site == key} == {1, 2}
    assert max(sockets._silenced.values()) - clock.time() < 1  # 5 ms, as Nightscout reads it
    r = cli(ns, "GET", "/notifications/ack", params={"level": 1, "group": "default"},
            token=ns.read_token, secret=False)
    assert r.status_code == 401, (r.status_code, r.text[:200])
    r = cli(ns, "GET", "/notifications/ack", version="v2", params={"level": "x"})
    assert (r.status_code, r.text) == (200, "OK")  # v2 copies v1's routes, as Nightscout
    assert 29 * 60 < max(sockets._silenced.values()) - clock.time() <= 30 * 60  # the default


def test_cli__adminnotifies(ns):
    """notifications.py:58-71: GET /adminnotifies read as a dict. Nightscout answers every
    credential 200 `{status: 200, message: {notifies, notifyCount}}` (adminnotifiesapi.js:10-
    30; `notifies` only for admins). (`notifications ack`, GET /notifications/ack?level=&group=
    &time=, is documented as not served.)"""
    a = cli(ns, "GET", "/adminnotifies")
    assert a.status_code == 200, (a.status_code, a.text[:200])
    assert isinstance(a.json(), dict)
    assert is_int(a.json()["message"]["notifyCount"])


def test_cli__v3_with_a_jwt(ns):
    """v3.py:65-247, status.py:21-38: a token with a `.` is sent as a Bearer."""
    upload_readings(ns, 3, first=130)
    jwt = ns.client.get(f"{ns.site_url}/api/v2/authorization/request/{ns.admin_token}"
                        ).json()["token"]
    v = cli(ns, "GET", "/version", version="v3", token=jwt)
    assert v.status_code == 200 and v.json()["result"]["apiVersion"], v.text
    lm = cli(ns, "GET", "/lastModified", version="v3", token=jwt)
    assert lm.status_code == 200 and "collections" in lm.json()["result"]
    lst = cli(ns, "GET", "/entries", version="v3", token=jwt,
              params={"limit": 100, "sort": "date"})
    assert [e["sgv"] for e in lst.json()["result"]] == [130, 131, 132]
    c = cli(ns, "POST", "/treatments", version="v3", token=jwt, data={
        "eventType": "Exercise", "date": now_ms(), "app": "cli", "notes": "run 5k",
        "duration": 30})
    assert c.status_code in (200, 201), c.text
    ident = c.json()["identifier"]
    s = cli(ns, "GET", "/treatments", version="v3", token=jwt, params={
        "limit": 100, "notes$re": "run", "eventType$re": "run"})
    assert s.status_code == 200 and s.json()["result"] == [], s.text  # AND of both $re
    s = cli(ns, "GET", "/treatments", version="v3", token=jwt, params={
        "limit": 100, "notes$re": "run", "eventType$eq": "Exercise"})
    assert [x["identifier"] for x in s.json()["result"]] == [ident]
    g = cli(ns, "GET", f"/treatments/{ident}", version="v3", token=jwt)
    assert g.status_code == 200 and g.json()["result"]["notes"] == "run 5k"
    pt = cli(ns, "PATCH", f"/treatments/{ident}", version="v3", token=jwt,
             data={"notes": "run 6k"})
    assert pt.status_code == 200, pt.text
    h = cli(ns, "GET", "/treatments/history/0", version="v3", token=jwt, params={"limit": 100})
    assert h.status_code == 200 and ident in [x["identifier"] for x in h.json()["result"]]
    d = cli(ns, "DELETE", f"/treatments/{ident}", version="v3", token=jwt)
    assert d.status_code == 200, d.text


# -- ecc1/nightscout (Go) ----------------------------------------------------------------------

GO = ["User-Agent: Go-http-client/1.1", "Accept-Encoding: gzip", "accept: application/json",
      "content-type: application/json"]


def go_query(pairs: dict) -> str:
    """url.Values.Encode: keys sorted, QueryEscape (space as +, `[`/`]`/`$`/`:` escaped)."""
    return "&".join(f"{quote(k, safe='')}={quote(str(v), safe='')}"
                    for k, v in sorted(pairs.items()))


def test_ecc1__gaps_then_single_entry_uploads(ns):
    """gaps.go:18-34 (the receiver's local zone in the RFC 3339 bound, on the uploads too:
    medtronic nightscout.go:196-203), then one POST per missing entry, exactly 200."""
    zone = timezone(timedelta(hours=-5))
    now = now_ms()
    since = datetime.fromtimestamp((now - 3 * HOUR) / 1000, zone).replace(microsecond=0)
    have = [now - 60 * MIN, now - 55 * MIN, now - 10 * MIN]
    for i, d in enumerate(have):
        e = {"type": "sgv", "date": d, "dateString": datetime.fromtimestamp(
            d / 1000, zone).strftime("%Y-%m-%dT%H:%M:%S-05:00"), "device": "openaps://rig",
            "sgv": 120 + i, "direction": "Flat"}
        r = wire(ns, "POST", "/api/v1/entries", [*GO, f"api-secret: {SECRET_SHA1}"],
                 json.dumps(e, separators=(",", ":")).encode())
        assert r.status == 200, (r.status, r.body[:200])  # anything else stops the upload
    q = go_query({"find[dateString][$gte]": since.isoformat(), "count": 360})
    assert "find%5BdateString%5D%5B%24gte%5D=" in q and "%3A" in q
    r = wire(ns, "GET", f"/api/v1/entries?{q}", [*GO, f"api-secret: {SECRET_SHA1}"])
    assert r.status == 200, (r.status, r.body[:200])
    assert sorted(e["date"] for e in r.json()) == have
    # a token instead: `token=` added to the query (nightscout.go:43-53), no api-secret
    tq = go_query({"count": 10, "token": ns.read_token})
    r = wire(ns, "GET", f"/api/v1/entries?{tq}", GO)
    assert r.status == 200 and len(r.json()) == 3


def test_ecc1__mbg_upload_and_trailing_slash_site(ns):
    """ResolveReference keeps the site's path only when it ends with `/` (a cloud tenant's
    URL must be typed as `https://HOST/t/TENANT/`); the edge root resolves either way."""
    base = ns.site_url.rstrip("/") + "/"
    t = now_ms() - 5 * MIN
    e = {"type": "mbg", "date": t, "dateString": iso(t), "device": "openaps://rig", "mbg": 140}
    r = wire(ns, "POST", "/api/v1/entries", [*GO, f"api-secret: {SECRET_SHA1}"],
             json.dumps(e).encode(), base=base)
    assert r.status == 200, (r.status, r.body[:200])
    r = wire(ns, "GET", "/api/v1/entries?count=10", [*GO, f"api-secret: {SECRET_SHA1}"],
             base=base)
    assert r.status == 200 and r.json()[0]["mbg"] == 140


def test_ecc1__xdrip_pebble_now(ns):
    """xdrip.go:8-22: `pebble` decoded as {status: [{now}]}, exactly one status."""
    upload_readings(ns, 2)
    r = wire(ns, "GET", f"/pebble?token={ns.read_token}", GO)
    assert r.status == 200, (r.status, r.body[:200])
    st = r.json()["status"]
    assert len(st) == 1 and is_int(st[0]["now"])


def test_ecc1__site_tokens_have_the_shape_it_accepts(ns):
    """nightscout.go:57-60: `^[a-z_0-9]{0,10}-[a-f0-9]{16}$` or the run stops."""
    import re
    for tok in (ns.read_token, ns.careportal_token, ns.token("openaps rig 2", ["readable"])):
        assert re.fullmatch(r"[a-z_0-9]{0,10}-[a-f0-9]{16}", tok), tok


# -- tconnectsync ------------------------------------------------------------------------------

TC = [f"api-secret: {SECRET_SHA1}", "Accept: application/json",
      "Content-Type: application/json", *REQUESTS[:2]]
TC_BY = quote("Pump (tconnectsync)")


def tc_send(ns, method: str, entity: str, doc) -> Reply:
    return wire(ns, method, f"/api/v1/{entity}?api_secret={SECRET}", TC,
                json.dumps(doc).encode(), base=ns.site_url.rstrip("/") + "/")


def test_tconnectsync__uploads_with_the_plain_secret_in_the_query(ns):
    zone = timezone(timedelta(hours=1))
    t = datetime.fromtimestamp((now_ms() - 2 * HOUR) // 1000, zone)
    bolus = {"eventType": "Combo Bolus", "created_at": t.strftime("%Y-%m-%d %H:%M:%S+01:00"),
             "carbs": 30, "insulin": 2.5, "notes": "Standard", "glucose": "142",
             "glucoseType": "Sensor", "enteredBy": "Pump (tconnectsync)", "pump_event_id": "7"}
    basal = {"eventType": "Temp Basal", "reason": "Control-IQ", "duration": None,
             "absolute": 0.6, "rate": 0.6, "created_at": (t + timedelta(minutes=5)).strftime(
                 "%Y-%m-%d %H:%M:%S+01:00"), "carbs": None, "insulin": None,
             "enteredBy": "Pump (tconnectsync)", "pump_event_id": "8"}
    for doc in (bolus, basal):
        r = tc_send(ns, "POST", "treatments", doc)
        assert r.status == 200, (r.status, r.body[:300])
    e = {"type": "sgv", "sgv": 131, "date": int(t.timestamp() * 1000),
         "dateString": t.strftime("%Y-%m-%dT%H:%M:%S+0100"), "device": "Pump (tconnectsync)",
         "pump_event_id": "9"}
    assert tc_send(ns, "POST", "entries", e).status == 200
    st = wire(ns, "GET", "/api/v1/status.json", TC[:1])
    assert st.status == 200 and st.json()["status"] == "ok"


def test_tconnectsync__last_uploaded_with_an_unescaped_plus(ns):
    """nightscout.py:67-134: the newest of its own, between arrow isoformat bounds whose `+`
    reaches the server as a space; None (nothing found) makes it upload the day again."""
    zone = timezone(timedelta(hours=1))
    t = datetime.fromtimestamp((now_ms() - 2 * HOUR) // 1000, zone)
    assert tc_send(ns, "POST", "treatments", {
        "eventType": "Combo Bolus", "created_at": t.strftime("%Y-%m-%d %H:%M:%S+01:00"),
        "carbs": 0, "insulin": 1.2, "enteredBy": "Pump (tconnectsync)"}).status == 200
    assert tc_send(ns, "POST", "entries", {
        "type": "sgv", "sgv": 131, "date": int(t.timestamp() * 1000),
        "dateString": t.strftime("%Y-%m-%dT%H:%M:%S+0100"),
        "device": "Pump (tconnectsync)"}).status == 200
    start = (t - timedelta(hours=1)).isoformat()
    end = (t + timedelta(hours=1)).isoformat()
    assert "+01:00" in start
    rng = f"&find[created_at][$gte]={start}&find[created_at][$lte]={end}"
    r = wire(ns, "GET", f"/api/v1/treatments?count=1&find[enteredBy]={TC_BY}"
             f"&find[eventType]=Combo%20Bolus{rng}&ts=1773586383.25", TC[:1] + REQUESTS)
    assert r.status == 200, (r.status, r.body[:300])
    assert [x["insulin"] for x in r.json()] == [1.2], r.body[:300]
    rng = f"&find[dateString][$gte]={start}&find[dateString][$lte]={end}"
    r = wire(ns, "GET", f"/api/v1/entries.json?count=1&find[device]={TC_BY}{rng}"
             "&ts=1773586383.25", TC[:1] + REQUESTS)
    assert r.status == 200, (r.status, r.body[:300])
    assert [x["sgv"] for x in r.json()] == [131], r.body[:300]
