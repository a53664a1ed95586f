"""xDrip+ against the cloud and the edge: its uploader and its Nightscout follower.

Requests as xDrip+ sends them (NightscoutFoundation/xDrip, app/src/main/java/com/
eveningoutpost/dexdrip/):
- uploader, utilitymodels/NightscoutUploader.java (doRESTUploadTo, postDeviceStatus,
  postTreatments, doRESTtreatmentDownload, doStatusUpdate): paths relative to the URL the user
  enters (`https://SECRET@host/api/v1/`), header `api-secret: sha1(secret)`; entries as one
  array with `dateString`/`sysTime` in local time `+hhmm`; device status one object without a
  time; each treatment one PUT with a 24-hex `_id` derived from its uuid; deletion looks the
  uuid up with `find%5Buuid%5D` then DELETEs by `_id`; gzip bodies once a reply looks like
  Express (utils/framework/GzipRequestInterceptor.java).
- follower, cgm/nsfollow/NightscoutFollow.java: absolute paths from the host root (the URL's
  path is dropped), `find[date][$gt]` with raw brackets and an `rr` cache-buster.
xDrip+ has no API v3 follower and no socket.io client (no `api/v3` or `io.socket` in its
source).
"""

import gzip
import json
import uuid

from tests.support.nightscout import MIN, SECRET_SHA1, now_ms

ON_POSTGRES = True  # these flows also run against the cloud on PostgreSQL

UA = {"User-Agent": "xDrip+ 2026.08.08"}
AUTH = {"api-secret": SECRET_SHA1, "Content-Type": "application/json; charset=utf-8"}


def local_time(ms: int) -> str:
    """xDrip+'s dateString/sysTime: local time, ms, offset without a colon (here +0100)."""
    from datetime import UTC, datetime, timedelta, timezone

    dt = datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone(timezone(timedelta(hours=1)))
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}+0100"


def bg(ms: int, sgv: int, delta: float = -1.234) -> dict:
    return {"device": "xDrip-DexcomG6", "date": ms, "dateString": local_time(ms), "sgv": sgv,
            "delta": delta, "direction": "Flat", "type": "sgv", "filtered": sgv * 1000.0,
            "unfiltered": sgv * 1000.0 + 2000, "rssi": 100, "noise": 1,
            "sysTime": local_time(ms)}


def uuid_to_id(u: str) -> str:
    """xDrip+'s treatment `_id`: the uuid without dashes, first 24 hex digits."""
    return u.replace("-", "")[:24]


def uploader(ns) -> str:
    return ns.site_url + "/api/v1/"


def test_uploader__entries_meter_and_calibration_batch(ns):
    t = now_ms() - 15 * MIN
    batch = [bg(t, 120), bg(t + 5 * MIN, 118),
             {"device": "xDrip-DexcomG6", "type": "mbg", "date": t + 6 * MIN,
              "dateString": local_time(t + 6 * MIN), "mbg": 121.0,
              "sysTime": local_time(t + 6 * MIN)},
             {"device": "xDrip-DexcomG6", "type": "cal", "date": t + 6 * MIN,
              "dateString": local_time(t + 6 * MIN), "sysTime": local_time(t + 6 * MIN),
              "slope": 850.3, "intercept": 31000.0, "scale": 1}]
    r = ns.client.post(uploader(ns) + "entries", content=json.dumps(batch), headers=AUTH)
    assert 200 <= r.status_code < 300
    assert ns.count("entries") == 4
    # xDrip+ re-sends the same queue after a failure or a timeout: nothing doubles
    r = ns.client.post(uploader(ns) + "entries", content=json.dumps(batch), headers=AUTH)
    assert r.status_code == 200 and ns.count("entries") == 4
    stored = ns.docs.latest("entries", kind="sgv", count=1)[0].doc
    assert stored["utcOffset"] == 60 and stored["dateString"].endswith("Z")
    assert stored["filtered"] == 118000 and stored["delta"] == -1.234


def test_uploader__gzip_chunked_body(ns):
    t = now_ms() - 5 * MIN
    body = gzip.compress(json.dumps([bg(t, 133)]).encode())

    def chunks():
        yield body[:10]
        yield body[10:]

    r = ns.client.post(uploader(ns) + "entries", content=chunks(),
                       headers={**AUTH, "Content-Encoding": "gzip"})
    assert r.status_code == 200 and ns.count("entries") == 1


def test_uploader__device_status_without_a_time(ns):
    for body in ({"device": "Google Pixel 8", "uploader": {"battery": 83, "type": "PHONE"}},
                 {"device": "G6 Transmitter", "uploader": {
                     "battery": "50 days (voltage: 285/275)", "days": 50, "voltagea": 285,
                     "type": "DEXCOM_TRANSMITTER", "lastQueried": now_ms()}}):
        r = ns.client.post(uploader(ns) + "devicestatus", content=json.dumps(body), headers=AUTH)
        assert r.status_code == 200
    got = ns.client.get(ns.root + "/api/v1/devicestatus.json?count=1",
                        headers={"api-secret": SECRET_SHA1}).json()
    assert got[0]["device"] == "G6 Transmitter" and got[0]["created_at"].endswith("Z")


def test_uploader__treatment_put_upsert_then_delete_by_uuid(ns):
    u = str(uuid.uuid4())
    t = now_ms() - 30 * MIN
    from tests.support.nightscout import iso_s

    doc = {"timestamp": t, "eventType": "<none>", "enteredBy": "xdrip", "uuid": u,
           "carbs": 20.0, "insulin": 0.0, "created_at": iso_s(t), "sysTime": local_time(t),
           "_id": uuid_to_id(u)}
    r = ns.client.put(uploader(ns) + "treatments", content=json.dumps(doc), headers=AUTH)
    assert r.status_code == 200
    doc["carbs"] = 25.0  # edited on the phone: the same PUT again
    assert ns.client.put(uploader(ns) + "treatments", content=json.dumps(doc),
                         headers=AUTH).status_code == 200
    assert ns.count("treatments") == 1
    # the follower-side download: `_id` and created_at on every item
    got = ns.client.get(uploader(ns) + "treatments", headers={
        "api-secret": SECRET_SHA1, "BROKEN-If-Modified-Since": "Sat, 01 Jan 2000 00:00:00 GMT"})
    [item] = got.json()
    assert (item["_id"], item["carbs"], item["uuid"]) == (uuid_to_id(u), 25, u)
    assert "insulin" not in item  # zero insulin is not kept, as Nightscout does
    # deletion: look the uuid up (brackets percent-encoded), then DELETE by _id
    look = ns.client.get(uploader(ns) + "treatments.json?find%5Buuid%5D=" + u,
                         headers={"api-secret": SECRET_SHA1})
    assert [x["_id"] for x in look.json()] == [uuid_to_id(u)]
    r = ns.client.delete(uploader(ns) + "treatments/" + look.json()[0]["_id"],
                         headers={"api-secret": SECRET_SHA1})
    assert r.status_code == 200 and r.json()["deletedCount"] == 1
    assert ns.count("treatments") == 0


def test_uploader__status_version_not_0_6_to_0_8(ns):
    st = ns.client.get(uploader(ns) + "status.json", headers={"api-secret": SECRET_SHA1}).json()
    assert isinstance(st["version"], str) and not st["version"].startswith(("0.6", "0.7", "0.8"))


def test_follower__entries_from_the_host_root_with_raw_brackets(ns):
    t = now_ms() - 60 * MIN
    ns.client.post(uploader(ns) + "entries", headers=AUTH,
                   content=json.dumps([bg(t + i * 5 * MIN, 100 + i) for i in range(12)]))
    h = {"api-secret": SECRET_SHA1, **UA}
    first = ns.client.get(f"{ns.root}/api/v1/entries.json?count=10&rr={now_ms()}", headers=h)
    assert first.status_code == 200 and len(first.json()) == 10
    last = first.json()[0]["date"]
    assert last == t + 55 * MIN
    r = ns.client.get(f"{ns.root}/api/v1/entries.json?count=2880&find[date][$gt]="
                      f"{t + 40 * MIN}&rr={now_ms()}", headers=h)
    assert [e["sgv"] for e in r.json()] == [111, 110, 109]
    for e in r.json():  # what the follower reads from each item
        assert isinstance(e["sgv"], int) and isinstance(e["date"], int)
        assert isinstance(e["filtered"], int | float) and e["type"] == "sgv"


def test_follower__treatments_and_device_status(ns):
    h = {"api-secret": SECRET_SHA1}
    ns.client.post(uploader(ns) + "treatments", headers=AUTH, content=json.dumps(
        [{"eventType": "Meal Bolus", "carbs": 30, "insulin": 3.5, "enteredBy": "loop"}]))
    ns.client.post(uploader(ns) + "devicestatus", headers=AUTH, content=json.dumps(
        {"device": "openaps://phone", "uploader": {"battery": 55},
         "pump": {"battery": {"percent": 70}, "reservoir": 112.5}, "isCharging": False}))
    [t] = ns.client.get(f"{ns.root}/api/v1/treatments", headers=h).json()
    assert t["_id"] and t["created_at"].endswith("Z") and t["insulin"] == 3.5
    [s] = ns.client.get(f"{ns.root}/api/v1/devicestatus.json?count=1", headers=h).json()
    assert s["uploader"]["battery"] == 55 and s["pump"]["battery"]["percent"] == 70
    assert s["pump"]["reservoir"] == 112.5
