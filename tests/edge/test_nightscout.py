"""The edge's local Nightscout endpoint, on a real SQLite store and over real HTTP."""

import contextlib
import hashlib
import json
import threading
import time
import warnings
from datetime import UTC, datetime
from email.utils import format_datetime

import httpx
import pytest
import uvicorn

from nightlink.edge import nightscout as ns
from nightlink.edge.store import EdgeStore
from tests.nightscout_uploads import iso, xdrip_entry

with warnings.catch_warnings():
    # starlette asks for httpx2 instead of httpx; the TestClient works the same with either.
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

SECRET = "bedside-secret-2026"
SECRET_SHA1 = hashlib.sha1(SECRET.encode()).hexdigest()
AUTH = {"api-secret": SECRET_SHA1}
MIN = 60_000


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture
def store(tmp_path):
    s = EdgeStore(tmp_path / "edge.db")
    yield s
    s.close()


@pytest.fixture
def client(store):
    with TestClient(ns.create_app(store, SECRET)) as c:
        yield c


@contextlib.contextmanager
def serve(app):
    """Run an ASGI app under a real uvicorn server on a free loopback port; yield its URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start within 10 s")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


# -- create_app ---------------------------------------------------------------------------------


@pytest.mark.parametrize("secret", ["", "changeme", "short-secr"])
def test_create_app__refuses_short_secret(store, secret):
    with pytest.raises(ValueError, match="API secret"):
        ns.create_app(store, secret)


def test_create_app__short_secret_allowed_in_development(store):
    app = ns.create_app(store, "changeme", development=True)
    with TestClient(app) as c:
        r = c.get("/api/v1/verifyauth", headers={"api-secret": ns.api_secret_hash("changeme")})
    assert r.json()["message"]["canWrite"] is True


def test_create_app__empty_secret_refused_even_in_development(store):
    with pytest.raises(ValueError, match="must not be empty"):
        ns.create_app(store, "", development=True)


# -- upload and read back -----------------------------------------------------------------------


def test_upload__xdrip_array_read_back_field_by_field(client):
    t0 = now_ms() - 20 * MIN
    sent = [xdrip_entry(t0 + i * 5 * MIN, sgv) for i, sgv in enumerate((131, 128, 126, 123))]
    r = client.post("/api/v1/entries", json=sent, headers=AUTH)
    assert r.status_code == 200
    assert r.headers[ns.HEADER_STORED] == "4"
    assert r.headers[ns.HEADER_REJECTED] == "0"
    stored = r.json()
    assert [e["date"] for e in stored] == [e["date"] for e in sent]

    cur = client.get("/api/v1/entries/current.json", headers=AUTH)
    assert cur.status_code == 200
    (latest,) = cur.json()
    expected = {**sent[-1], "_id": ns.entry_id("sgv", sent[-1]["date"])}
    assert latest == expected
    assert len(latest["_id"]) == 24 and int(latest["_id"], 16) >= 0

    r = client.get(f"/api/v1/entries.json?find[date][$gte]={sent[1]['date']}&count=2",
                   headers=AUTH)
    got = r.json()
    assert [e["sgv"] for e in got] == [123, 126]  # newest first, count honoured
    for doc, src in zip(got, (sent[3], sent[2]), strict=True):
        for field in ("device", "date", "dateString", "sgv", "delta", "direction", "type",
                      "filtered", "unfiltered", "rssi", "noise", "sysTime"):
            assert doc[field] == src[field], field


def test_upload__one_object_not_array(client):
    e = xdrip_entry(now_ms() - MIN, 99)
    r = client.post("/api/v1/entries.json", json=e, headers=AUTH)
    assert r.status_code == 200
    assert [d["sgv"] for d in r.json()] == [99]


def test_upload__fills_datestring_id_and_delta(client):
    t0 = now_ms() - 10 * MIN
    first = {"type": "sgv", "date": t0, "sgv": 100}
    second = {"type": "sgv", "date": t0 + 5 * MIN, "sgv": 110}
    r = client.post("/api/v1/entries", json=[second, first], headers=AUTH)
    docs = {d["date"]: d for d in r.json()}
    assert docs[t0]["dateString"] == iso(t0)
    assert docs[t0]["_id"] == ns.entry_id("sgv", t0)
    assert "delta" not in docs[t0]
    assert docs[t0 + 5 * MIN]["delta"] == 10.0  # mg/dL per 5 minutes


@pytest.mark.parametrize("headers", [{}, {"api-secret": "0" * 40},
                                     {"api-secret": hashlib.sha1(b"other").hexdigest()},
                                     {"api-secret": SECRET}])
def test_upload__wrong_secret_401_nothing_stored(client, store, headers):
    r = client.post("/api/v1/entries", json=[xdrip_entry(now_ms(), 120)], headers=headers)
    assert r.status_code == 401
    assert "api-secret" in r.json()["message"]
    assert store.entries(count=100) == []


def test_upload__read_token_cannot_write(client, store):
    token = ns.access_token(SECRET)
    r = client.post(f"/api/v1/entries?token={token}", json=[xdrip_entry(now_ms(), 120)])
    assert r.status_code == 401
    assert store.entries() == []


def test_upload__uppercase_sha1_accepted(client):
    r = client.post("/api/v1/entries", json=[xdrip_entry(now_ms(), 120)],
                    headers={"api-secret": SECRET_SHA1.upper()})
    assert r.status_code == 200


def test_upload__duplicate_date_type_stored_once(client, store):
    e = xdrip_entry(now_ms() - MIN, 140)
    assert client.post("/api/v1/entries", json=[e, e], headers=AUTH).headers[
        ns.HEADER_DUPLICATES] == "1"
    r = client.post("/api/v1/entries", json=[e], headers=AUTH)
    assert r.json() == []
    assert r.headers[ns.HEADER_DUPLICATES] == "1"
    assert len(store.entries(count=100)) == 1


def test_upload__near_duplicate_detected(client, store, caplog):
    t = now_ms() - 10 * MIN
    client.post("/api/v1/entries", json=[xdrip_entry(t, 150)], headers=AUTH)
    resent = {**xdrip_entry(t + 20_000, 150), "device": "Juggluco"}
    with caplog.at_level("INFO", logger="nightlink.edge.nightscout"):
        r = client.post("/api/v1/entries", json=[resent], headers=AUTH)
    assert r.status_code == 200
    assert r.json() == []
    assert r.headers[ns.HEADER_NEAR_DUPLICATES] == "1"
    assert any("near-duplicate" in m for m in caplog.messages)
    assert len(store.entries(count=100)) == 1


@pytest.mark.parametrize("case, offset_s, sgv", [("other value", 20, 151),
                                                 ("a minute apart", 60, 150),
                                                 ("earlier a minute apart", -60, 150)])
def test_upload__near_duplicate_not_flagged(client, store, case, offset_s, sgv):
    t = now_ms() - 10 * MIN
    client.post("/api/v1/entries", json=[xdrip_entry(t, 150)], headers=AUTH)
    r = client.post("/api/v1/entries", json=[xdrip_entry(t + offset_s * 1000, sgv)],
                    headers=AUTH)
    assert r.headers[ns.HEADER_NEAR_DUPLICATES] == "0", case
    assert len(store.entries(count=100)) == 2


def test_upload__near_duplicate_within_one_batch(client, store):
    t = now_ms() - 10 * MIN
    r = client.post("/api/v1/entries", json=[xdrip_entry(t, 88), xdrip_entry(t - 15_000, 88)],
                    headers=AUTH)
    assert r.headers[ns.HEADER_NEAR_DUPLICATES] == "1"
    assert [e["date"] for e in store.entries()] == [t - 15_000]


def test_upload__sensor_error_kept_as_error_not_glucose(client, store):
    t = now_ms() - MIN
    r = client.post("/api/v1/entries", json=[xdrip_entry(t, 5)], headers=AUTH)
    (doc,) = r.json()
    assert doc["sgv"] == 5
    assert doc["sensorError"] == "sensor not calibrated"
    (cur,) = client.get("/api/v1/entries/current", headers=AUTH).json()
    assert cur["sensorError"] == "sensor not calibrated"
    from nightlink.edge.cgm_sources import readings_from_store

    (g,) = readings_from_store(store, t)
    assert g.sgv is None and g.error_code == 5


@pytest.mark.parametrize("make, reason", [
    (lambda t: {"date": t, "sgv": 100}, "type must be one of sgv, mbg, cal, not None."),
    (lambda t: {"type": "sgv", "sgv": 100}, "date (ms since the epoch) is required."),
    (lambda t: {"type": "sgv", "date": "yesterday", "sgv": 100}, "date must be a number"),
    (lambda t: {"type": "sgv", "date": t // 1000, "sgv": 100}, "looks like seconds"),
    (lambda t: {"type": "sgv", "date": t + 2 * 86_400_000, "sgv": 100}, "in the future"),
    (lambda t: {"type": "sgv", "date": t}, "sgv is required"),
    (lambda t: {"type": "sgv", "date": t, "sgv": 1001}, "outside 0..1000"),
    (lambda t: {"type": "sgv", "date": t, "sgv": -3}, "outside 0..1000"),
    (lambda t: {"type": "sgv", "date": t, "sgv": 100.5}, "whole number"),
    (lambda t: {"type": "sgv", "date": t, "sgv": True}, "sgv must be a number"),
    (lambda t: {"type": "mbg", "date": t, "mbg": "high"}, "mbg must be a number"),
    (lambda t: "not an object", "must be a JSON object, not str."),
], ids=["no-type", "no-date", "text-date", "seconds", "future", "no-sgv", "sgv-high",
        "sgv-negative", "sgv-fraction", "sgv-bool", "mbg-text", "not-object"])
def test_upload__malformed_item_dead_lettered_others_stored(client, store, make, reason):
    t = now_ms() - MIN
    item = make(t - MIN)
    r = client.post("/api/v1/entries", json=[xdrip_entry(t, 120), item], headers=AUTH)
    assert r.status_code == 200
    assert r.headers[ns.HEADER_REJECTED] == "1"
    assert [d["sgv"] for d in r.json()] == [120]
    (dead,) = store.dead_letters()
    assert dead["source"] == "nightscout-upload"
    assert dead["reason"].startswith("entry 1: ")
    assert reason in dead["reason"]
    assert json.loads(dead["payload"]) == item
    assert [e["sgv"] for e in store.entries()] == [120]


def test_upload__body_not_json_400_and_dead_letter(client, store):
    r = client.post("/api/v1/entries", content=b"{not json", headers={**AUTH,
                    "content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["message"].startswith("The upload is not valid JSON")
    (dead,) = store.dead_letters()
    assert dead["payload"] == b"{not json"


def test_upload__nan_read_as_null(client):
    t = now_ms() - MIN
    body = f'[{{"type": "sgv", "date": {t}, "sgv": 100, "delta": NaN}},' \
           f' {{"type": "sgv", "date": {t - 5 * MIN}, "sgv": NaN}}]'
    r = client.post("/api/v1/entries", content=body.encode(),
                    headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 200
    assert r.headers[ns.HEADER_REJECTED] == "1"
    assert r.json()[0]["delta"] is None
    assert client.get("/api/v1/entries.json", headers=AUTH).json()[0]["sgv"] == 100


def test_upload__mbg_and_cal_stored(client, store):
    t = now_ms() - MIN
    r = client.post("/api/v1/entries", json=[
        {"type": "mbg", "date": t, "mbg": 97, "device": "meter"},
        {"type": "cal", "date": t, "slope": 850.0, "intercept": 32000.0, "scale": 1},
    ], headers=AUTH)
    assert r.headers[ns.HEADER_STORED] == "2"
    assert [e["mbg"] for e in client.get("/api/v1/entries/mbg.json", headers=AUTH).json()] == [97]
    assert client.get("/api/v1/entries/sgv.json", headers=AUTH).json() == []
    assert len(client.get("/api/v1/entries.json", headers=AUTH).json()) == 2


# -- reads ----------------------------------------------------------------------------------------


@pytest.fixture
def day(client):
    """A day of five-minute readings, the newest one minute ago."""
    t_end = now_ms() - MIN
    sent = [xdrip_entry(t_end - i * 5 * MIN, 100 + i % 50) for i in range(288)]
    assert client.post("/api/v1/entries", json=sent, headers=AUTH).headers[
        ns.HEADER_STORED] == "288"
    return t_end


def test_entries__default_count_10_newest_first(client, day):
    got = client.get("/api/v1/entries", headers=AUTH).json()
    dates = [e["date"] for e in got]
    assert len(got) == 10 and dates == sorted(dates, reverse=True) and dates[0] == day


@pytest.mark.parametrize("query, expected", [
    ("find[date][$gt]={t}&count=288", 0),
    ("find[date][$gte]={t}&count=288", 1),
    ("find[date][$lt]={t}&count=288", 287),
    ("find[date][$lte]={t}&count=288", 288),
    ("find[date][$gte]={h}&find[date][$lt]={t}&count=288", 12),
    ("find[type]=sgv&count=300", 288),
    ("find[type]=mbg", 0),
    ("find[sgv][$gte]=140&count=288", 50),
    ("find[date][$eq]={t}", 1),
])
def test_entries__find(client, day, query, expected):
    q = query.format(t=day, h=day - 60 * MIN)
    assert len(client.get(f"/api/v1/entries.json?{q}", headers=AUTH).json()) == expected


def test_entries__find_datestring(client, day):
    q = f"find[dateString][$gte]={iso(day - 30 * MIN)}&count=100"
    assert len(client.get(f"/api/v1/entries/sgv.json?{q}", headers=AUTH).json()) == 7


@pytest.mark.parametrize("query", ["count=abc", "count=0", "find[date][$regex]=1",
                                   "find[foo]=1", "find[date][$gt]=soon"])
def test_entries__bad_query_400(client, query):
    r = client.get(f"/api/v1/entries.json?{query}", headers=AUTH)
    assert r.status_code == 400
    assert r.json()["message"].endswith(".")


def test_entries__unknown_type_404(client):
    assert client.get("/api/v1/entries/treatments.json", headers=AUTH).status_code == 404


@pytest.mark.parametrize("path", ["/api/v1/entries.json", "/api/v1/entries",
                                  "/api/v1/entries/current.json", "/api/v1/entries/sgv.json",
                                  "/api/v1/status.json"])
def test_reads__need_auth(client, day, path):
    assert client.get(path).status_code == 401
    assert client.get(path, params={"token": "edge-0000000000000000"}).status_code == 401
    assert client.get(path, params={"token": ns.access_token(SECRET)}).status_code == 200
    assert client.get(path, headers=AUTH).status_code == 200


def test_entries__if_modified_since_304(client, store):
    client.post("/api/v1/entries", json=[xdrip_entry(now_ms() - MIN, 120)], headers=AUTH)
    # Age the row so that the Last-Modified header is final (not the current second).
    store.db.execute("UPDATE entries SET created_at = created_at - 5")
    r = client.get("/api/v1/entries.json", headers=AUTH)
    last = r.headers["Last-Modified"]
    r = client.get("/api/v1/entries.json", headers={**AUTH, "If-Modified-Since": last})
    assert r.status_code == 304
    r = client.get("/api/v1/entries/current.json", headers={**AUTH, "If-Modified-Since": last})
    assert r.status_code == 304
    older = format_datetime(datetime.fromtimestamp(time.time() - 3600, tz=UTC), usegmt=True)
    assert client.get("/api/v1/entries.json",
                      headers={**AUTH, "If-Modified-Since": older}).status_code == 200
    # A new reading makes the next conditional request return data again.
    client.post("/api/v1/entries", json=[xdrip_entry(now_ms(), 125)], headers=AUTH)
    r = client.get("/api/v1/entries.json", headers={**AUTH, "If-Modified-Since": last})
    assert r.status_code == 200 and r.json()[0]["sgv"] == 125


def test_entries__last_modified_of_this_second_is_held_back(client):
    client.post("/api/v1/entries", json=[xdrip_entry(now_ms() - MIN, 120)], headers=AUTH)
    r = client.get("/api/v1/entries.json", headers=AUTH)
    last = r.headers["Last-Modified"]
    client.post("/api/v1/entries", json=[xdrip_entry(now_ms(), 121)], headers=AUTH)
    r = client.get("/api/v1/entries.json", headers={**AUTH, "If-Modified-Since": last})
    assert r.status_code == 200 and r.json()[0]["sgv"] == 121


def test_status__fields(client):
    before = now_ms()
    r = client.get("/api/v1/status.json", headers=AUTH)
    s = r.json()
    assert s["status"] == "ok"
    assert s["name"] == "Nightlink edge"
    assert s["version"]
    assert s["apiEnabled"] is True
    assert before <= s["serverTimeEpoch"] <= now_ms()
    parsed = datetime.fromisoformat(s["serverTime"].replace("Z", "+00:00"))
    assert abs(parsed.timestamp() * 1000 - s["serverTimeEpoch"]) < 1
    assert s["settings"]["units"] == "mg/dl"
    assert s["settings"]["thresholds"] == {"bgHigh": 260, "bgTargetTop": 180,
                                           "bgTargetBottom": 70, "bgLow": 55}
    assert s["authorized"] == {"canRead": True, "canWrite": True}


@pytest.mark.parametrize("cred, can_read, can_write, message", [
    ({"headers": AUTH}, True, True, "OK"),
    ({"params": {"token": ns.access_token(SECRET)}}, True, False, "OK"),
    ({}, False, False, "UNAUTHORIZED"),
    ({"headers": {"api-secret": "nope"}}, False, False, "UNAUTHORIZED"),
])
def test_verifyauth__reports_access(client, cred, can_read, can_write, message):
    r = client.get("/api/v1/verifyauth", **cred)
    assert r.status_code == 200
    m = r.json()["message"]
    assert (m["canRead"], m["canWrite"], m["message"]) == (can_read, can_write, message)


def test_access_token__derived_from_secret():
    assert ns.access_token(SECRET) == ns.access_token(SECRET)
    assert ns.access_token(SECRET) != ns.access_token(SECRET + "x")
    assert ns.access_token(SECRET).startswith("edge-") and len(ns.access_token(SECRET)) == 21


# -- over a real HTTP server ----------------------------------------------------------------------


def test_real_server__xdrip_upload_and_read(store):
    t0 = now_ms() - 15 * MIN
    sent = [xdrip_entry(t0 + i * 5 * MIN, 90 + i) for i in range(3)]
    with serve(ns.create_app(store, SECRET)) as url, httpx.Client(base_url=url) as http:
        r = http.post("/api/v1/entries", content=json.dumps(sent),
                      headers={**AUTH, "content-type": "application/json"})
        assert r.status_code == 200 and r.headers[ns.HEADER_STORED] == "3"
        assert http.post("/api/v1/entries", json=sent[:1]).status_code == 401
        r = http.get("/api/v1/entries/current.json", params={"token": ns.access_token(SECRET)})
        assert r.status_code == 200
        assert r.json()[0]["sgv"] == 92 and r.json()[0]["dateString"] == sent[-1]["dateString"]
        last = r.headers["Last-Modified"]
    assert len(store.entries()) == 3
    assert last.endswith("GMT")
