"""Desk clocks, Nightscout Reporter and the bridges against the cloud and the edge.

- nightscout-clock (ktomy/nightscout-clock, src/BGSourceNightscout.cpp): host root only (its
  settings hold scheme, host and port), `GET /api/v1/entries?find[date][$gt]=…&find[date]
  [$lte]=…&count=30` with raw brackets, no `.json`, `Accept: application/json` and the
  api-secret header; reads sgv, numeric date, trend or direction. Its settings page reads
  status.json's thresholds from the browser, cross-origin.
- M5_NightscoutMon (mlukasek/M5_NightscoutMon, readNightscout()): appends to the URL, token in
  the query only, `entries.json?find[type][$eq]=sgv&count=10` (index 0 must be the newest),
  then `/api/v2/properties/iob,cob,delta,loop,basal` with iob.iob, cob.cob, delta.mgdl,
  loop.display and basal.current.* as numbers.
- Nightscout Reporter (zreptil/nightscout-reporter-angular, src/app/_model/nightscout/
  url-data.ts, data.service.ts): a browser app from another origin, token in the query,
  `status === "ok"`, profile.json with count 1000000, created_at ranges on treatments, device
  status and activity, `$regex` for site changes, exactly `count` entries back, and one query
  with a stray `%27` in its source.
- nightscout-connect (nightscout/nightscout-connect, lib/outputs/nightscout.js): `API-SECRET`
  header (capitals), `GET /api/v1/entries.json?count=1` for its bookmark, POST arrays and reads
  `[0].dateString` from the reply; Glooko treatments carry `eventTime`.
- nightscout-librelink-up (src/nightscout/apiv1.ts): axios, so `Accept: application/json,
  text/plain, */*`, on `GET /api/v1/entries?count=1` without `.json`; JSON must come back.
- share2nightscout-bridge (index.js): POSTs the newest reading every 2.5 minutes whether or
  not it is stored; a base URL ending in / makes `//api/v1/entries.json`.
"""

from tests.support.nightscout import MIN, SECRET_SHA1, iso, now_ms


def seed(ns, n=12, start=None, step=5 * MIN, device="share2") -> int:
    t = start or now_ms() - n * step
    ns.post("/api/v1/entries", headers={"api-secret": SECRET_SHA1}, json=[
        {"type": "sgv", "sgv": 100 + i, "date": t + i * step, "dateString": iso(t + i * step),
         "direction": "Flat", "trend": 4, "device": device, "delta": 1} for i in range(n)])
    return t


def test_nightscout_clock__window_query_without_json_extension(ns):
    t = seed(ns)
    r = ns.client.get(f"{ns.root}/api/v1/entries?find[date][$gt]={t + 5 * MIN}"
                      f"&find[date][$lte]={t + 20 * MIN}&count=30",
                      headers={"Accept": "application/json", "api-secret": SECRET_SHA1,
                               "User-Agent": "ESP32HTTPClient"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    got = r.json()
    assert [e["sgv"] for e in got] == [104, 103, 102]
    assert all(isinstance(e["date"], int) and e["trend"] == 4 for e in got)
    status = ns.client.get(f"{ns.root}/api/v1/status.json", params={"token": ns.read_token},
                           headers={"Origin": "http://192.168.1.50"})
    assert status.headers["access-control-allow-origin"] == "*"
    assert status.json()["settings"]["thresholds"]["bgTargetBottom"] == 70


def test_m5_nightscoutmon__entries_then_properties(ns):
    seed(ns)
    now = now_ms()
    h = {"api-secret": SECRET_SHA1}
    ns.post("/api/v1/treatments", headers=h, json=[
        {"eventType": "Correction Bolus", "insulin": 2, "created_at": iso(now - 30 * MIN)},
        {"eventType": "Carb Correction", "carbs": 30, "created_at": iso(now - 40 * MIN)},
        {"eventType": "Temp Basal", "absolute": 0.95, "duration": 60,
         "created_at": iso(now - 10 * MIN)}])
    ns.post("/api/v1/profile", headers=h, json={
        "defaultProfile": "Default", "startDate": iso(now - 24 * 60 * MIN), "store": {
            "Default": {"dia": 4, "carbs_hr": 30, "sens": [{"time": "00:00", "value": 40}],
                        "carbratio": [{"time": "00:00", "value": 10}], "timezone": "UTC",
                        "basal": [{"time": "00:00", "value": 0.8}]}}})
    r = ns.get(f"/api/v1/entries.json?find[type][$eq]=sgv&count=10&token={ns.read_token}")
    got = r.json()
    assert len(got) == 10 and got[0]["date"] > got[1]["date"]
    assert isinstance(got[0]["sgv"], int) and r.headers.get("location") is None
    p = ns.get(f"/api/v2/properties/iob,cob,delta,loop,basal?token={ns.read_token}").json()
    assert set(p) == {"iob", "cob", "delta", "loop", "basal"}
    assert 1.0 < p["iob"]["iob"] < 2 and p["iob"]["displayLine"].startswith("IOB: ")
    assert isinstance(p["iob"]["display"], str)
    assert p["cob"]["cob"] == 20 and isinstance(p["cob"]["display"], int | float)
    assert p["delta"]["mgdl"] == 1 and isinstance(p["delta"]["interpolated"], bool)
    assert p["basal"]["display"] == "T: 0.950U"
    assert p["basal"]["current"]["basal"] == 0.8 and p["basal"]["current"]["totalbasal"] == 0.95
    assert set(p["loop"]["display"]) == {"symbol", "code", "label"}


def test_reporter__browser_reads_with_a_token(ns):
    t = seed(ns, n=30)
    h = {"Origin": "https://nightrep.zreptil.de",
         "Accept": "application/json, text/plain, */*"}
    tok = ns.read_token
    w = {"api-secret": SECRET_SHA1}
    ns.post("/api/v1/treatments", headers=w, json=[
        {"eventType": "Site Change", "created_at": iso(t + MIN)},
        {"eventType": "Profile Switch", "created_at": iso(t + 2 * MIN), "profile": "Default",
         "profileJson": "{\"dia\":4}", "duration": 0},
        {"eventType": "Temp Basal", "created_at": iso(t + 3 * MIN), "absolute": 0.5,
         "duration": 30, "units": "mg/dl"}])
    ns.post("/api/v1/devicestatus", headers=w,
            json={"device": "loop://iPhone", "created_at": iso(t + 4 * MIN),
                  "loop": {"iob": {"iob": 1}}})
    ns.post("/api/v1/activity", headers=w,
            json=[{"created_at": iso(t + 5 * MIN), "type": "steps-total", "steps": 1200}])
    status = ns.get(f"/api/v1/status.json?token={tok}", headers=h)
    assert status.json()["status"] == "ok"
    assert status.headers["access-control-allow-origin"] == "*"
    profiles = ns.get(f"/api/v1/profile.json?token={tok}&count=1000000", headers=h)
    assert profiles.status_code == 200 and isinstance(profiles.json(), list)
    lo, hi = iso(t - MIN), iso(t + 60 * MIN)
    day = ns.get(f"/api/v1/entries.json?token={tok}&find[date][$gte]={t}"
                 f"&find[date][$lte]={t + 29 * 5 * MIN}&count=100000", headers=h).json()
    assert len(day) == 30
    treat = ns.get(f"/api/v1/treatments.json?token={tok}&find[created_at][$gte]={lo}"
                   f"&find[created_at][$lte]={hi}&count=100000", headers=h).json()
    assert len(treat) == 3 and all(isinstance(x.get("units", ""), str) for x in treat)
    switches = ns.get(f"/api/v1/treatments.json?token={tok}&find[created_at][$gte]={lo}"
                      "&find[eventType]=Profile%20Switch", headers=h).json()
    assert [x["profile"] for x in switches] == ["Default"]
    typo = ns.get(f"/api/v1/treatments.json?token={tok}&find[created_at][$lt]={hi}"
                  f"&find[created_at][$gt]={lo}&count=100&find[eventType][$eq]=Temp%20Basal%27",
                  headers=h)
    assert typo.status_code == 200 and typo.json() == []  # matches nothing, as on Nightscout
    changes = ns.get(f"/api/v1/treatments.json?token={tok}&find[created_at][$lte]={hi}"
                     f"&find[created_at][$gte]={lo}&find[eventType][$regex]=Change",
                     headers=h).json()
    assert [x["eventType"] for x in changes] == ["Site Change"]
    ds = ns.get(f"/api/v1/devicestatus.json?token={tok}&find[created_at][$gte]={lo}"
                f"&find[created_at][$lte]={hi}&count=100000", headers=h).json()
    assert ds[0]["loop"]["iob"]["iob"] == 1
    act = ns.get(f"/api/v1/activity.json?token={tok}&find[created_at][$gte]={lo}"
                 f"&find[created_at][$lte]={hi}&count=100000", headers=h).json()
    assert act[0]["steps"] == 1200
    assert len(ns.get(f"/api/v1/entries.json?token={tok}&count=20", headers=h).json()) == 20
    assert len(ns.get(f"/api/v1/entries.json?token={tok}&find[date][$lte]={t + 2 * 5 * MIN}"
                      "&count=2", headers=h).json()) == 2


def test_nightscout_connect__bookmark_then_batches(ns):
    h = {"API-SECRET": SECRET_SHA1, "Accept": "application/json, text/plain, */*",
         "User-Agent": "axios/1.21.1"}
    assert ns.get("/api/v1/entries.json?count=1", headers=h).json() == []
    t = now_ms() - 15 * MIN
    batch = [{"type": "sgv", "device": "nightscout-connect-librelinkup", "dateString": iso(ms),
              "date": ms, "direction": "Flat", "sgv": 111} for ms in (t, t + 5 * MIN)]
    r = ns.post("/api/v1/entries.json", headers=h, json=batch)
    assert len(r.json()) == 2 and r.json()[0]["dateString"] == iso(t)
    bookmark = ns.get("/api/v1/entries.json?count=1", headers=h).json()[0]["dateString"]
    assert bookmark == iso(t + 5 * MIN)
    glooko = [{"eventType": "Meal Bolus", "eventTime": iso(t), "insulin": 4, "carbs": 40,
               "preBolus": 0, "notes": "{\"src\":\"glooko\"}"}]
    r = ns.post("/api/v1/treatments.json", headers=h, json=glooko)
    assert len(r.json()) == 1 and r.json()[0]["created_at"] == iso(t)
    assert "eventTime" not in r.json()[0]
    # reading from a site as its source: anonymous verifyauth, then find[dateString][$gt]
    assert ns.get("/api/v1/verifyauth").json()["message"]["canRead"] is False
    got = ns.get(f"/api/v1/entries.json?find%5BdateString%5D%5B$gt%5D={iso(t)}&count=6",
                 headers={"Authorization": f"Bearer {_jwt(ns)}"}).json()
    assert [e["date"] for e in got] == [t + 5 * MIN]


def test_librelink_up__axios_uploader_reads_its_last_entry_as_json(ns):
    """nightscout-librelink-up (timoschlueter/nightscout-librelink-up, src/nightscout/
    apiv1.ts lastEntry) and other axios uploaders: `GET /api/v1/entries?count=1` without
    `.json`, axios's default Accept, the SHA-1 api-secret; `.pop().date` of the reply must be
    there (text would throw before anything is uploaded)."""
    h = {"api-secret": SECRET_SHA1, "Accept": "application/json, text/plain, */*",
         "User-Agent": "axios/1.13.2"}
    assert ns.get("/api/v1/entries?count=1", headers=h).json() == []
    t = seed(ns, n=3, device="nightscout-librelink-up")
    last = ns.get("/api/v1/entries?count=1", headers=h).json()
    assert [e["date"] for e in last] == [t + 10 * MIN]
    r = ns.post("/api/v1/entries", headers={**h, "Content-Type": "application/json"}, json=[
        {"type": "sgv", "sgv": 120, "direction": "Flat", "device": "nightscout-librelink-up",
         "date": t + 15 * MIN, "dateString": iso(t + 15 * MIN)}])
    assert r.status_code == 200 and ns.count("entries") == 4


def _jwt(ns) -> str:
    return ns.client.get(f"{ns.root}/api/v2/authorization/request/{ns.read_token}"
                         ).json()["token"]


def test_share2nightscout_bridge__reposts_deduplicated(ns):
    t = now_ms() - 4 * MIN
    reading = [{"sgv": 142, "date": t, "dateString": iso(t), "trend": 3,
                "direction": "FortyFiveUp", "device": "share2", "type": "sgv"}]
    h = {"api-secret": SECRET_SHA1, "Content-Type": "application/json",
         "Accept": "application/json", "Connection": "close"}
    for _ in range(3):  # every SHARE_INTERVAL, stored or not
        r = ns.client.post(ns.site_url + "//api/v1/entries.json", json=reading, headers=h)
        assert r.status_code == 200
    assert ns.count("entries") == 1
