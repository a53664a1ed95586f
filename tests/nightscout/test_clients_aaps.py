"""AndroidAPS against the cloud and the edge: its NSClient v3 (nssdk over API v3), its v3
websocket (socket.io /storage and /alarm) and its older NSClient (socket.io dbAdd/dbUpdate).

Requests as AndroidAPS sends them (nightscout/AndroidAPS):
- core/nssdk/.../networking/NightscoutRemoteService.kt and NSAuthInterceptor.kt: every v3 call
  carries `Date: <epoch ms>` and `Authorization: Bearer <jwt>` (empty before the first JWT);
  a 401/403 makes it fetch `/api/v2/authorization/request/<token>` at the host root; status
  must list `crud` on all six collections before it uploads; download pages are
  `?sort=date&date$gt=<ms>&limit=500`, then `/history/<ms>?limit=500` following the
  `ETag: W/"<ms>"` it parses.
- plugins/sync/.../nsclientV3/NSClientV3Plugin.kt and extensions/*: creates with `app: AAPS`,
  `date` and `utcOffset` and no `created_at`; PATCH without date/utcOffset; DELETE.
- nsclientV3/services/NSClientV3Service.kt: socket.io to `<url>/storage` and `<url>/alarm`,
  `subscribe` with the raw access token and collections (`foods` spelled so).
- nsclient/services/NSClientService.kt: `authorize` {client, history, status, from, secret},
  `dbAdd` answered with an array of documents, `dbUpdate` with {result: success}.
"""

import asyncio

import httpx

from tests.support.nightscout import MIN, SECRET_SHA1, now_ms
from tests.support.sockets import Recorder, namespace

ON_POSTGRES = True  # these flows also run against the cloud on PostgreSQL

COLLECTIONS = ["devicestatus", "entries", "food", "profile", "settings", "treatments"]


class Nssdk:
    """The requests of AndroidAPS's nssdk, JWT refresh included."""

    def __init__(self, ns):
        self.ns = ns
        self.base = ns.site_url.lower() + "/api/v3/"
        self.jwt = ""
        self.refreshed = 0

    def call(self, method: str, path: str, **kw) -> httpx.Response:
        for _ in range(2):
            headers = {"Date": str(now_ms()), "Authorization": f"Bearer {self.jwt}".strip(),
                       "Content-Type": "application/json; charset=UTF-8"}
            r = self.ns.client.request(method, self.base + path, headers=headers, **kw)
            if r.status_code not in (401, 403):
                return r
            auth = self.ns.client.get(
                f"{self.ns.root}/api/v2/authorization/request/{self.ns.admin_token}")
            assert auth.status_code == 200, auth.text
            self.jwt = auth.json()["token"]
            assert auth.json()["exp"] - auth.json()["iat"] == 8 * 3600
            self.refreshed += 1
        return r


def sgv(ms: int, value: float) -> dict:
    return {"type": "sgv", "sgv": float(value), "date": ms, "device": "DexcomG6",
            "direction": "Flat", "isReadOnly": False, "isValid": True, "noise": 1.0,
            "filtered": float(value), "unfiltered": 0.0, "units": "mg/dl", "utcOffset": 60,
            "app": "AAPS"}


def test_v3__startup_chain_status_then_last_modified(ns):
    api = Nssdk(ns)
    r = api.call("GET", "status")
    assert api.refreshed == 1 and r.status_code == 200
    result = r.json()["result"]
    assert result["apiPermissions"] == {c: "crud" for c in COLLECTIONS}  # isFull()
    for key in ("version", "apiVersion", "srvDate"):
        assert result[key]
    assert result["storage"]["storage"] in ("sqlite", "postgresql")
    ns.post("/api/v1/entries", headers={"api-secret": SECRET_SHA1},
            json={"type": "sgv", "sgv": 100, "date": now_ms() - MIN})
    lm = api.call("GET", "lastModified").json()["result"]
    assert lm["collections"]["entries"] > 0 and lm["srvDate"] > 0
    # a read-only token gets r only: AndroidAPS then shows "read only" and does not upload
    jwt = ns.client.get(f"{ns.root}/api/v2/authorization/request/{ns.read_token}").json()
    st = ns.client.get(ns.site_url + "/api/v3/status",
                       headers={"Authorization": f"Bearer {jwt['token']}"}).json()["result"]
    assert st["apiPermissions"] == {c: "r" for c in COLLECTIONS}


def test_v3__sgv_upload_dedup_patch_delete_and_history(ns):
    api = Nssdk(ns)
    t = now_ms() - 20 * MIN
    first = api.call("POST", "entries", json=sgv(t, 112))
    assert first.status_code == 201
    ident = first.json()["identifier"]
    assert first.json()["lastModified"] > 0
    again = api.call("POST", "entries", json=sgv(t, 112))  # a retried upload
    assert again.status_code == 200 and again.json()["isDeduplication"] is True
    assert again.json()["identifier"] == ident
    assert ns.count("entries") == 1
    body = {k: v for k, v in sgv(t, 115).items() if k not in ("date", "utcOffset")}
    assert api.call("PATCH", f"entries/{ident}", json={**body, "identifier": ident}
                    ).status_code == 200
    assert ns.docs.get("entries", ident).doc["sgv"] == 115
    # history from before: the entry, then after the cursor nothing
    page = api.call("GET", f"entries/history/{t - 60_000}?limit=500")
    etag = page.headers["ETag"]
    assert etag.startswith('W/"') and etag.endswith('"')
    cursor = int(etag[3:-1])  # how AndroidAPS reads it
    assert [d["identifier"] for d in page.json()["result"]] == [ident]
    empty = api.call("GET", f"entries/history/{cursor}?limit=500")
    assert empty.json()["result"] == [] and "ETag" not in empty.headers
    assert api.call("DELETE", f"entries/{ident}").status_code == 200
    gone = api.call("GET", f"entries/history/{cursor}?limit=500").json()["result"]
    assert [(d["identifier"], d["isValid"]) for d in gone] == [(ident, False)]
    assert api.call("GET", f"entries/{ident}").status_code == 410


def test_v3__first_load_pages_ascending_by_date(ns):
    api = Nssdk(ns)
    t = now_ms() - 3 * 60 * MIN
    ns.post("/api/v1/entries", headers={"api-secret": SECRET_SHA1},
            json=[{"type": "sgv", "sgv": 100 + i, "date": t + i * 5 * MIN} for i in range(30)])
    seen, since = [], t - 1
    while True:
        page = api.call("GET", f"entries?sort=date&date$gt={since}&limit=7").json()["result"]
        if not page:
            break
        dates = [d["date"] for d in page]
        assert dates == sorted(dates)  # AndroidAPS keeps only rising dates within a page
        seen += dates
        since = dates[-1]
    assert len(seen) == 30 and len(set(seen)) == 30


def test_v3__treatments_without_created_at_then_queried_by_created_at(ns):
    api = Nssdk(ns)
    t = now_ms() - 10 * MIN
    bolus = {"date": t, "utcOffset": 60, "eventType": "Correction Bolus", "insulin": 1.25,
             "type": "SMB", "isBasalInsulin": False, "isValid": True, "isReadOnly": False,
             "pumpId": 4711, "pumpType": "OMNIPOD_DASH", "pumpSerial": "123", "app": "AAPS"}
    r = api.call("POST", "treatments", json=bolus)
    assert r.status_code == 201
    from tests.support.nightscout import iso

    since = iso(t - MIN).replace(":", "%3A")
    got = api.call("GET", f"treatments?sort=created_at&created_at$gt={since}&limit=500")
    [doc] = got.json()["result"]
    assert doc["created_at"] == iso(t) and doc["insulin"] == 1.25 and doc["pumpId"] == 4711
    assert api.call("POST", "treatments", json=bolus).json()["isDeduplication"] is True
    # the v1 view of the same treatment
    [v1] = ns.get("/api/v1/treatments.json", headers={"api-secret": SECRET_SHA1}).json()
    assert v1["created_at"] == iso(t) and v1["eventType"] == "Correction Bolus"


def test_v3__device_status_and_profile_store(ns):
    api = Nssdk(ns)
    t = now_ms() - MIN
    status = {"date": t, "device": "openaps://samsung SM-G970F", "app": "AAPS",
              "pump": {"clock": "2026-01-01T00:00:00Z", "reservoir": 80.5,
                       "battery": {"percent": 60}, "status": {"status": "normal"}},
              "openaps": {"suggested": {"bg": 120, "COB": 12}, "iob": {"iob": 1.2}},
              "uploaderBattery": 77, "isCharging": True, "uploader": {}}
    r = api.call("POST", "devicestatus", json=status)
    assert r.status_code == 201 and r.json()["identifier"]
    got = api.call("GET", f"devicestatus/history/{t - 60_000}").json()["result"]
    assert got[0]["pump"]["reservoir"] == 80.5 and got[0]["created_at"].endswith("Z")
    created = "2025-09-22T10:15:30.1230000Z"  # seven fractional digits, compared as text
    store = {"defaultProfile": "Default", "date": t, "created_at": created,
             "startDate": created, "app": "AAPS", "store": {"Default": {
                 "dia": 5, "carbratio": [{"time": "00:00", "value": 10}],
                 "sens": [{"time": "00:00", "value": 50}], "basal": [{"time": "00:00",
                                                                       "value": 0.8}],
                 "target_low": [{"time": "00:00", "value": 100}],
                 "target_high": [{"time": "00:00", "value": 110}], "units": "mg/dl",
                 "timezone": "Europe/Berlin"}}}
    assert api.call("POST", "profile", json=store).status_code == 201
    [latest] = api.call("GET", "profile?sort$desc=date&limit=1").json()["result"]
    assert latest["created_at"] == created and latest["store"]["Default"]["dia"] == 5
    assert api.call("GET", "food?limit=1000").status_code == 200


def test_v3__expired_or_foreign_jwt_is_refused_so_aaps_refreshes(ns):
    from nightlink.nightscout.auth import issue_jwt

    old = issue_jwt(ns.app.state.nightscout.directory.jwt_secret, "x", ns.admin_token,
                    now=now_ms() / 1000 - 9 * 3600)
    r = ns.client.get(ns.site_url + "/api/v3/status",
                      headers={"Authorization": f"Bearer {old['token']}"})
    assert r.status_code == 401
    bad = ns.client.get(f"{ns.root}/api/v2/authorization/request/nope-0123456789abcdef")
    assert bad.status_code == 401


def test_v3__sees_what_v1_uploaders_wrote(ns):
    """AndroidAPS downloads through history: xDrip+'s v1 uploads must appear there."""
    api = Nssdk(ns)
    api.call("GET", "status")
    start = now_ms()
    ns.post("/api/v1/entries", headers={"api-secret": SECRET_SHA1},
            json={"type": "sgv", "sgv": 140, "date": start - MIN, "device": "xDrip-G7"})
    page = api.call("GET", f"entries/history/{start - 1}?limit=500").json()["result"]
    assert [d["sgv"] for d in page] == [140] and page[0]["srvModified"] >= start


def test_websocket_v3__storage_and_alarm(ns):
    async def run():
        rec = Recorder()
        storage, alarm = namespace(ns, "/storage"), namespace(ns, "/alarm")
        await rec.connect(ns.root, [storage, alarm])
        ack = await rec.call("subscribe", {"accessToken": ns.admin_token, "collections": [
            "devicestatus", "entries", "profile", "treatments", "foods", "settings"]}, storage)
        assert ack["success"] is True and "entries" in ack["collections"]
        assert (await rec.call("subscribe", {"accessToken": ns.admin_token}, alarm))[
            "success"] is True
        t = now_ms() - MIN
        r = await asyncio.to_thread(ns.post, "/api/v1/entries", headers={
            "api-secret": SECRET_SHA1}, json={"type": "sgv", "sgv": 99, "date": t})
        assert r.status_code == 200
        created = await rec.next(storage, "create")
        assert created["colName"] == "entries" and created["doc"]["sgv"] == 99
        assert created["doc"]["srvModified"] > 0 and created["doc"]["identifier"]
        ident = created["doc"]["identifier"]
        jwt = (await asyncio.to_thread(
            ns.client.get, f"{ns.root}/api/v2/authorization/request/{ns.admin_token}")).json()
        await asyncio.to_thread(ns.client.delete, f"{ns.site_url}/api/v3/entries/{ident}",
                                headers={"Authorization": f"Bearer {jwt['token']}"})
        assert await rec.next(storage, "delete") == {"colName": "entries", "identifier": ident}
        hub = ns.app.state.nightscout.hub
        site_key = "fam-1" if ns.kind == "cloud" else "local"
        hub.alarm(site_key, 2, "Urgent low", "BG Now: 50 mg/dl", event="low")
        urgent = await rec.next(alarm, "urgent_alarm")
        assert (urgent["level"], urgent["title"], urgent["eventName"]) == (2, "Urgent low",
                                                                             "low")
        await rec.sio.emit("ack", (2, "default", 60_000), namespace=alarm)
        clear = await rec.next(alarm, "clear_alarm")
        assert clear["clear"] is True and clear["group"] == "default"
        await rec.close()

    asyncio.run(run())


def test_websocket_v3__refuses_a_bad_token(ns):
    async def run():
        rec = Recorder()
        storage = namespace(ns, "/storage")
        await rec.connect(ns.root, [storage])
        ack = await rec.call("subscribe", {"accessToken": "aaps-0000000000000000"}, storage)
        await rec.close()
        return ack

    assert asyncio.run(run()) == {"success": False, "message": "Missing or bad accessToken"}


def test_websocket_v1__authorize_data_update_db_add_and_update(ns):
    async def run():
        rec = Recorder()
        main = namespace(ns, "")
        t = now_ms() - 10 * MIN
        await asyncio.to_thread(ns.post, "/api/v1/entries", headers={"api-secret": SECRET_SHA1},
                                json=[{"type": "sgv", "sgv": 101, "date": t}])
        await rec.connect(ns.root, [main])
        ack = await rec.call("authorize", {"client": "Android_AAPS", "history": 48,
                                           "status": True, "from": 0, "secret": SECRET_SHA1},
                             main)
        assert ack == {"read": True, "write": True, "write_treatment": True}
        full = await rec.next(main, "dataUpdate")
        assert [s["mgdl"] for s in full["sgvs"]] == [101] and "delta" not in full
        assert full["status"]["versionNum"] >= 150000
        added = await rec.call("dbAdd", {"collection": "treatments", "data": {
            "eventType": "Meal Bolus", "insulin": 2.0, "created_at": "2026-01-01T00:00:00.000Z",
            "date": 1767225600000, "isSMB": False, "pumpId": 7}}, main)
        assert isinstance(added, list) and added[0]["_id"]
        delta = await rec.next(main, "dataUpdate")
        assert delta["delta"] is True and delta["treatments"][0]["insulin"] == 2
        done = await rec.call("dbUpdate", {"collection": "treatments", "_id": added[0]["_id"],
                                           "data": {"notes": "edited"}}, main)
        assert done == {"result": "success"}
        update = await rec.next(main, "dataUpdate")
        assert update["treatments"][0]["action"] == "update"
        assert update["treatments"][0]["notes"] == "edited"
        await rec.close()

    asyncio.run(run())
