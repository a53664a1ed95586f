"""The cloud's Nightscout API v1 per tenant: what uploaders, clocks and followers see, exactly."""

import asyncio
import hashlib
import json
import time
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from nightlink.edge.nightscout import entry_id
from tests.cloud.conftest import make_cloud
from tests.nightscout_uploads import iso, xdrip_entry

SECRET = "fam-one-upload-secret"
SECRET_SHA1 = hashlib.sha1(SECRET.encode()).hexdigest()
AUTH = {"api-secret": SECRET_SHA1}
TOKEN = "follower-clock-token-1"
MIN = 60_000
ENTRIES = "/t/fam-1/api/v1/entries"


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture
def ns(cloud_any):
    """Both backends, with fam-1's upload secret and a read token registered."""
    cloud_any.store.add_api_secret("fam-1", SECRET_SHA1)
    cloud_any.store.add_api_secret("fam-1", TOKEN, kind="token")
    return cloud_any


@pytest.fixture
def ns1(cloud):
    """SQLite only, for what does not depend on the backend."""
    cloud.store.add_api_secret("fam-1", SECRET_SHA1)
    cloud.store.add_api_secret("fam-1", TOKEN, kind="token")
    return cloud


def stored_sgvs(c, tenant="fam-1") -> list:
    return [e["sgv"] for e in c.store.tenant(tenant).entries(count=1000)]


def dead_letters(c) -> list[dict]:
    out = c.store.dead_letters()
    for d in out:
        d["payload"] = bytes(d["payload"]) if d["payload"] is not None else None
    return out


# -- upload and read back ----------------------------------------------------------------------


def test_upload__xdrip_array_read_back_field_by_field(ns):
    t0 = now_ms() - 20 * MIN
    sent = [xdrip_entry(t0 + i * 5 * MIN, sgv) for i, sgv in enumerate((131, 128, 126, 123))]
    r = ns.client.post(ENTRIES, json=sent, headers=AUTH)
    assert r.status_code == 200
    assert r.headers["X-Nightlink-Stored"] == "4"
    assert r.headers["X-Nightlink-Duplicates"] == "0"
    assert r.headers["X-Nightlink-Near-Duplicates"] == "0"
    assert r.headers["X-Nightlink-Rejected"] == "0"
    assert r.json() == [{**e, "_id": entry_id("sgv", e["date"])} for e in sent]

    cur = ns.client.get(f"{ENTRIES}/current.json", headers=AUTH)
    assert cur.status_code == 200
    assert cur.json() == [{**sent[-1], "_id": entry_id("sgv", sent[-1]["date"])}]

    r = ns.client.get(f"{ENTRIES}.json?find[date][$gte]={sent[1]['date']}&count=2",
                      headers=AUTH)
    got = r.json()
    assert [e["sgv"] for e in got] == [123, 126]  # newest first, count honoured
    for doc, src in zip(got, (sent[3], sent[2]), strict=True):
        for name in ("device", "date", "dateString", "sgv", "delta", "direction", "type",
                     "filtered", "unfiltered", "rssi", "noise", "sysTime"):
            assert doc[name] == src[name], name
        assert doc["_id"] == entry_id("sgv", src["date"])

    st = ns.client.get("/t/fam-1/api/v1/status.json", headers=AUTH).json()
    assert st["status"] == "ok"
    assert st["name"] == "Family one"
    assert st["apiEnabled"] is True
    assert st["settings"]["units"] == "mg/dl"
    assert st["settings"]["thresholds"] == {"bgHigh": 260, "bgTargetTop": 180,
                                            "bgTargetBottom": 70, "bgLow": 55}
    assert st["authorized"] == {"role": "uploader", "canRead": True, "canWrite": True}


def test_upload__one_object_not_array(ns):
    t = now_ms() - MIN
    r = ns.client.post(f"{ENTRIES}.json", json=xdrip_entry(t, 101), headers=AUTH)
    assert r.status_code == 200
    assert [e["sgv"] for e in r.json()] == [101]
    assert stored_sgvs(ns) == [101]


def test_upload__fills_datestring_id_and_delta(ns):
    t = now_ms() - 10 * MIN
    r = ns.client.post(ENTRIES, json=[{"type": "sgv", "date": t, "sgv": 100},
                                      {"type": "sgv", "date": t + 5 * MIN, "sgv": 110}],
                       headers=AUTH)
    first, second = r.json()
    assert first == {"type": "sgv", "date": t, "sgv": 100, "dateString": iso(t),
                     "_id": entry_id("sgv", t)}
    assert second["delta"] == 10.0
    # A later upload finds its predecessor in the store.
    r = ns.client.post(ENTRIES, json={"type": "sgv", "date": t + 8 * MIN, "sgv": 104},
                       headers=AUTH)
    assert r.json()[0]["delta"] == -10.0


def test_upload__publishes_stored_sgv_on_event_bus(ns1):
    t = now_ms() - MIN

    async def run():
        queue = ns1.client.app.state.events.subscribe("fam-1")
        await asyncio.to_thread(ns1.client.post, ENTRIES, headers=AUTH,
                                json=[xdrip_entry(t, 99),
                                      {"type": "mbg", "date": t, "mbg": 97}])
        msg = await asyncio.wait_for(queue.get(), 5)
        return msg, queue.qsize()

    msg, left = asyncio.run(run())
    assert msg == {"type": "entry", "data": {**xdrip_entry(t, 99), "_id": entry_id("sgv", t)}}
    assert left == 0  # the mbg entry is stored but not published as a reading


def test_upload__wrong_secret_401_nothing_stored(ns):
    bad = hashlib.sha1(b"not the secret").hexdigest()
    r = ns.client.post(ENTRIES, json=[xdrip_entry(now_ms(), 120)], headers={"api-secret": bad})
    assert r.status_code == 401
    assert r.json() == {"detail": "The api-secret is not valid for this site."}
    r = ns.client.post(ENTRIES, json=[xdrip_entry(now_ms(), 120)])
    assert r.status_code == 401
    assert stored_sgvs(ns) == []


def test_upload__read_token_cannot_write(ns):
    r = ns.client.post(f"{ENTRIES}?token={TOKEN}", json=[xdrip_entry(now_ms(), 120)])
    assert r.status_code == 401
    assert r.json() == {"detail": "Writing needs the api-secret of this site."}
    assert stored_sgvs(ns) == []
    assert ns.client.get(f"{ENTRIES}.json?token={TOKEN}").status_code == 200


def test_upload__uppercase_sha1_accepted(ns1):
    r = ns1.client.post(ENTRIES, json=[xdrip_entry(now_ms(), 120)],
                        headers={"api-secret": SECRET_SHA1.upper()})
    assert r.status_code == 200


def test_read__member_bearer_reads_caregiver_cannot_write(ns1):
    ns1.client.post(ENTRIES, json=[xdrip_entry(now_ms() - MIN, 120)], headers=AUTH)
    ns1.user("carer@example.org", tenant="fam-1", role="caregiver")
    ns1.user("stranger@example.org", tenant="fam-2", role="patient")
    r = ns1.client.get(f"{ENTRIES}.json", headers=ns1.auth("carer@example.org"))
    assert r.status_code == 200
    assert [e["sgv"] for e in r.json()] == [120]
    r = ns1.client.post(ENTRIES, json=[xdrip_entry(now_ms(), 121)],
                        headers=ns1.auth("carer@example.org"))
    assert r.status_code == 401
    r = ns1.client.get(f"{ENTRIES}.json", headers=ns1.auth("stranger@example.org"))
    assert r.status_code == 404  # not a member: as if the tenant did not exist


def test_read__patient_bearer_may_write(ns1):
    ns1.user("pat@example.org", tenant="fam-1", role="patient")
    r = ns1.client.post(ENTRIES, json=[xdrip_entry(now_ms(), 121)],
                        headers=ns1.auth("pat@example.org"))
    assert r.status_code == 200
    assert stored_sgvs(ns1) == [121]


def test_read__public_tenant_without_auth_but_not_writable(ns):
    ns.store.set_tenant("fam-2", public_read=True)
    data = ns.store.tenant("fam-2")
    data.add_entries([{"type": "sgv", "date": now_ms() - MIN, "sgv": 140}])
    r = ns.client.get("/t/fam-2/api/v1/entries.json")
    assert r.status_code == 200
    assert [e["sgv"] for e in r.json()] == [140]
    r = ns.client.post("/t/fam-2/api/v1/entries", json=[xdrip_entry(now_ms(), 99)])
    assert r.status_code == 401
    assert ns.client.get("/t/fam-1/api/v1/entries.json").status_code == 401
    st = ns.client.get("/t/fam-2/api/v1/status.json").json()
    assert st["authorized"] is None
    assert st["settings"]["authDefaultRoles"] == "readable"


def test_cross_tenant__secret_of_one_tenant_cannot_read_or_write_another(ns):
    ns.store.tenant("fam-2").add_entries([{"type": "sgv", "date": now_ms() - MIN, "sgv": 140}])
    r = ns.client.get("/t/fam-2/api/v1/entries.json", headers=AUTH)
    assert r.status_code == 401
    r = ns.client.get(f"/t/fam-2/api/v1/entries.json?token={TOKEN}")
    assert r.status_code == 401
    r = ns.client.post("/t/fam-2/api/v1/entries", json=[xdrip_entry(now_ms(), 99)],
                       headers=AUTH)
    assert r.status_code == 401
    r = ns.client.post("/t/fam-2/api/v1/treatments", json=[{"eventType": "Note"}],
                       headers=AUTH)
    assert r.status_code == 401
    assert stored_sgvs(ns, "fam-2") == [140]
    assert ns.store.tenant("fam-2").treatments() == []
    assert ns.client.get("/t/nobody/api/v1/entries.json", headers=AUTH).status_code == 404


def test_host_header__tenant_domain_names_the_tenant(tmp_path):
    c = make_cloud(f"sqlite:///{tmp_path / 'cloud.db'}", tenant_domain="ns.example")
    try:
        c.store.create_tenant("fam-1", "Family one")
        c.store.create_tenant("fam-2", "Family two")
        c.store.add_api_secret("fam-1", SECRET_SHA1)
        t = now_ms() - MIN
        r = c.client.post("/api/v1/entries", json=[xdrip_entry(t, 111)],
                          headers={**AUTH, "Host": "fam-1.ns.example"})
        assert r.status_code == 200
        r = c.client.get("/api/v1/entries.json", headers={**AUTH, "Host": "fam-1.ns.example"})
        assert [e["sgv"] for e in r.json()] == [111]
        r = c.client.get("/api/v1/entries.json", headers={**AUTH, "Host": "fam-2.ns.example"})
        assert r.status_code == 401
        r = c.client.get("/pebble", headers={**AUTH, "Host": "fam-1.ns.example:443"})
        assert r.json()["bgs"][0]["sgv"] == "111"
        st = c.client.get("/api/v1/status.json", headers={**AUTH, "Host": "fam-1.ns.example"})
        assert st.json()["settings"]["baseURL"] == "http://fam-1.ns.example"
    finally:
        c.client.close()
        c.store.close()


# -- duplicates, errors, dead letters --------------------------------------------------------------


def test_upload__duplicate_date_type_stored_once(ns):
    t = now_ms() - MIN
    ns.client.post(ENTRIES, json=[xdrip_entry(t, 120)], headers=AUTH)
    r = ns.client.post(ENTRIES, json=[xdrip_entry(t, 120), xdrip_entry(t, 125)], headers=AUTH)
    assert r.status_code == 200
    assert r.json() == []
    assert r.headers["X-Nightlink-Duplicates"] == "2"
    assert r.headers["X-Nightlink-Stored"] == "0"
    assert stored_sgvs(ns) == [120]


def test_upload__near_duplicate_detected(ns):
    t = now_ms() - 5 * MIN
    ns.client.post(ENTRIES, json=[xdrip_entry(t, 120)], headers=AUTH)
    r = ns.client.post(ENTRIES, json=[xdrip_entry(t + 15_000, 120, device="Juggluco"),
                                      xdrip_entry(t - 59_999, 120, device="other")],
                       headers=AUTH)
    assert r.status_code == 200
    assert r.json() == []
    assert r.headers["X-Nightlink-Near-Duplicates"] == "2"
    assert r.headers["X-Nightlink-Duplicates"] == "0"
    assert [e["date"] for e in ns.store.tenant("fam-1").entries()] == [t]


@pytest.mark.parametrize("offset_ms, sgv", [(60_000, 120), (-60_000, 120), (15_000, 121)],
                         ids=["one-minute-later", "one-minute-earlier", "other-value"])
def test_upload__near_duplicate_not_flagged(ns1, offset_ms, sgv):
    t = now_ms() - 5 * MIN
    ns1.client.post(ENTRIES, json=[xdrip_entry(t, 120)], headers=AUTH)
    r = ns1.client.post(ENTRIES, json=[xdrip_entry(t + offset_ms, sgv)], headers=AUTH)
    assert r.headers["X-Nightlink-Near-Duplicates"] == "0"
    assert len(r.json()) == 1


def test_upload__near_duplicate_within_one_batch(ns):
    t = now_ms() - MIN
    r = ns.client.post(ENTRIES, json=[xdrip_entry(t, 130), xdrip_entry(t - 20_000, 130)],
                       headers=AUTH)
    assert r.headers["X-Nightlink-Near-Duplicates"] == "1"
    assert [e["date"] for e in r.json()] == [t - 20_000]  # oldest first: the earlier is kept


def test_upload__sensor_error_kept_as_error_not_glucose(ns):
    t = now_ms() - 10 * MIN
    r = ns.client.post(ENTRIES, json=[{"type": "sgv", "date": t, "sgv": 100},
                                      {"type": "sgv", "date": t + 5 * MIN, "sgv": 5}],
                       headers=AUTH)
    assert r.status_code == 200
    err = r.json()[1]
    assert err["sgv"] == 5
    assert err["sensorError"] == "sensor not calibrated"
    assert "delta" not in err  # an error code has no rate of change
    (cur,) = ns.client.get(f"{ENTRIES}/current", headers=AUTH).json()
    assert cur["sensorError"] == "sensor not calibrated"
    # The next reading's delta skips the error and uses the last glucose.
    r = ns.client.post(ENTRIES, json={"type": "sgv", "date": t + 8 * MIN, "sgv": 116},
                       headers=AUTH)
    assert r.json()[0]["delta"] == 10.0


def test_pebble__sensor_error_has_no_delta(ns1):
    t = now_ms() - 10 * MIN
    ns1.client.post(ENTRIES, json=[{"type": "sgv", "date": t, "sgv": 100},
                                   {"type": "sgv", "date": t + 5 * MIN, "sgv": 5}],
                    headers=AUTH)
    (bg,) = ns1.client.get("/t/fam-1/pebble", headers=AUTH).json()["bgs"]
    assert bg == {"sgv": "5", "trend": 8, "datetime": t + 5 * MIN, "bgdelta": 0}


@pytest.mark.parametrize("make, reason", [
    (lambda t: {"date": t, "sgv": 100}, "type must be one of sgv, mbg, cal, not None."),
    (lambda t: {"type": "sgv", "sgv": 100}, "date (ms since the epoch) is required."),
    (lambda t: {"type": "sgv", "date": t // 1000, "sgv": 100}, "looks like seconds"),
    (lambda t: {"type": "sgv", "date": t}, "sgv is required"),
    (lambda t: {"type": "sgv", "date": t, "sgv": 1001}, "outside 0..1000"),
    (lambda t: "not an object", "must be a JSON object, not str."),
], ids=["no-type", "no-date", "seconds", "no-sgv", "sgv-high", "not-object"])
def test_upload__malformed_item_dead_lettered_others_stored(ns, make, reason):
    t = now_ms() - MIN
    item = make(t - 5 * MIN)
    r = ns.client.post(ENTRIES, json=[xdrip_entry(t, 120), item], headers=AUTH)
    assert r.status_code == 200
    assert r.headers["X-Nightlink-Rejected"] == "1"
    assert [d["sgv"] for d in r.json()] == [120]
    (dead,) = dead_letters(ns)
    assert dead["topic"] == "http:/t/fam-1/api/v1/entries"
    assert dead["tenant_id"] == "fam-1"
    assert dead["reason"].startswith("entry 1: ")
    assert reason in dead["reason"]
    assert json.loads(dead["payload"]) == item
    assert stored_sgvs(ns) == [120]


def test_upload__body_not_json_400_and_dead_letter(ns):
    r = ns.client.post(ENTRIES, content=b"{not json",
                       headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["detail"].startswith("The upload is not valid JSON")
    (dead,) = dead_letters(ns)
    assert dead["payload"] == b"{not json"
    assert dead["reason"].startswith("body is not JSON")


def test_upload__mbg_and_cal_read_by_type(ns1):
    t = now_ms() - MIN
    r = ns1.client.post(ENTRIES, json=[
        {"type": "mbg", "date": t, "mbg": 97, "device": "meter"},
        {"type": "cal", "date": t, "slope": 850.0, "intercept": 32000.0, "scale": 1},
    ], headers=AUTH)
    assert r.headers["X-Nightlink-Stored"] == "2"
    mbg = ns1.client.get(f"{ENTRIES}/mbg.json", headers=AUTH).json()
    assert [e["mbg"] for e in mbg] == [97]
    assert ns1.client.get(f"{ENTRIES}/sgv.json", headers=AUTH).json() == []
    assert [e["type"] for e in ns1.client.get(f"{ENTRIES}/cal", headers=AUTH).json()] == ["cal"]
    assert ns1.client.get(f"{ENTRIES}/current.json", headers=AUTH).json() == []


# -- queries -------------------------------------------------------------------------------------


@pytest.fixture
def day(ns1):
    """Twelve readings five minutes apart, the newest a minute ago, sgv 100..111."""
    t0 = now_ms() - MIN - 11 * 5 * MIN
    docs = [xdrip_entry(t0 + i * 5 * MIN, 100 + i, direction="Flat" if i % 2 else "SingleUp")
            for i in range(12)]
    ns1.client.post(ENTRIES, json=docs, headers=AUTH)
    return docs


def test_entries__default_count_10_newest_first(ns1, day):
    got = ns1.client.get(f"{ENTRIES}.json", headers=AUTH).json()
    assert [e["sgv"] for e in got] == list(range(111, 101, -1))
    assert len(ns1.client.get(f"{ENTRIES}?count=12", headers=AUTH).json()) == 12


@pytest.mark.parametrize("query, expected", [
    ("find[sgv][$gte]=109", [111, 110, 109]),
    ("find[sgv][$lt]=102", [101, 100]),
    ("find[sgv]=105", [105]),
    ("find[sgv][$ne]=111&count=2", [110, 109]),
    ("find[direction]=SingleUp&find[sgv][$gt]=105", [110, 108, 106]),
    ("find[type][$eq]=sgv&count=1", [111]),
    ("find[device]=other", []),
])
def test_entries__find(ns1, day, query, expected):
    got = ns1.client.get(f"{ENTRIES}.json?{query}", headers=AUTH).json()
    assert [e["sgv"] for e in got] == expected


def test_entries__find_date_and_datestring(ns1, day):
    since = day[9]["date"]
    got = ns1.client.get(f"{ENTRIES}/sgv.json?find[date][$gte]={since}", headers=AUTH).json()
    assert [e["sgv"] for e in got] == [111, 110, 109]
    got = ns1.client.get(f"{ENTRIES}.json?find[dateString][$gt]={iso(since)}",
                         headers=AUTH).json()
    assert [e["sgv"] for e in got] == [111, 110]


@pytest.mark.parametrize("query, message", [
    ("find[noise][$gte]=1", "Entries cannot be filtered on 'noise'; use find[date], "
                            "find[dateString], find[sgv], find[type], find[device] or "
                            "find[direction]."),
    ("find[sgv][$regex]=1", "The query find[sgv][$regex] is not supported; use one of $gte, "
                            "$gt, $lte, $lt, $eq, $ne as the operator."),
    ("find[sgv][$gte]=high", "find[sgv][$gte]=high is not a number."),
    ("find[dateString][$gte]=yesterday", "find[dateString][$gte]=yesterday is not an ISO "
                                         "8601 time."),
    ("count=lots", "count=lots is not a whole number."),
    ("count=0", "count must be between 1 and 100000, not 0."),
])
def test_entries__bad_query_400(ns1, query, message):
    r = ns1.client.get(f"{ENTRIES}.json?{query}", headers=AUTH)
    assert r.status_code == 400
    assert r.json() == {"detail": message}


def test_entries__unknown_type_404(ns1):
    r = ns1.client.get(f"{ENTRIES}/bolus.json", headers=AUTH)
    assert r.status_code == 404
    assert r.json() == {"detail": "There is no entries route 'bolus.json'; use current, sgv, "
                                  "mbg or cal."}


def test_entries__if_modified_since_304(ns):
    ns.client.post(ENTRIES, json=[xdrip_entry(now_ms() - MIN, 120)], headers=AUTH)
    changed = ns.store.tenant("fam-1").last_modified()
    r = ns.client.get(f"{ENTRIES}.json", headers=AUTH)
    assert r.status_code == 200
    assert r.headers["Last-Modified"] == format_datetime(
        datetime.fromtimestamp(int(changed) - 1, tz=UTC), usegmt=True)  # this second held back
    later = format_datetime(datetime.fromtimestamp(int(changed), tz=UTC), usegmt=True)
    r = ns.client.get(f"{ENTRIES}/current.json", headers={**AUTH, "If-Modified-Since": later})
    assert r.status_code == 304
    assert r.content == b""
    # What the client was told earlier is older than the change: the data comes.
    r = ns.client.get(f"{ENTRIES}.json", headers={**AUTH, "If-Modified-Since": format_datetime(
        datetime.fromtimestamp(int(changed) - 1, tz=UTC), usegmt=True)})
    assert r.status_code == 200
    assert [e["sgv"] for e in r.json()] == [120]


def test_entries__empty_tenant_no_last_modified(ns1):
    r = ns1.client.get(f"{ENTRIES}.json", headers={**AUTH, "If-Modified-Since":
                                                   "Mon, 01 Jan 2024 00:00:00 GMT"})
    assert r.status_code == 200
    assert r.json() == []
    assert "Last-Modified" not in r.headers


# -- treatments, devicestatus, profile -------------------------------------------------------------


def test_treatments__dedup_on_identifier_else_created_at_and_event_type(ns):
    url = "/t/fam-1/api/v1/treatments"
    t = (now_ms() - 30 * MIN) // 1000 * 1000
    bolus = {"eventType": "Correction Bolus", "created_at": iso(t), "insulin": 1.5,
             "enteredBy": "xdrip"}
    r = ns.client.post(url, json=[bolus], headers=AUTH)
    assert r.status_code == 200
    (doc,) = r.json()
    assert doc["created_at"] == iso(t)
    assert doc["insulin"] == 1.5
    assert len(doc["identifier"]) == 24 and len(doc["_id"]) == 24
    assert "created_at_ms" not in doc
    # The same time written with an offset, same eventType: not stored again.
    local = datetime.fromtimestamp(t / 1000, tz=UTC).astimezone().isoformat()
    r = ns.client.post(url, json={**bolus, "created_at": local}, headers=AUTH)
    assert r.json() == []
    assert r.headers["X-Nightlink-Duplicates"] == "1"
    # Another eventType at the same time is another treatment.
    carbs = {"eventType": "Meal Bolus", "created_at": iso(t), "carbs": "20"}
    assert ns.client.post(url, json=carbs, headers=AUTH).json()[0]["carbs"] == 20
    # An identifier wins over the time: the same identifier is the same treatment.
    note = {"eventType": "Note", "created_at": iso(t + MIN), "notes": "walk",
            "identifier": "aaps-1"}
    assert len(ns.client.post(url, json=note, headers=AUTH).json()) == 1
    moved = {**note, "created_at": iso(t + 2 * MIN)}
    assert ns.client.post(url, json=moved, headers=AUTH).json() == []

    got = ns.client.get(f"{url}.json?find[created_at][$gte]={iso(t + MIN)}&count=5",
                        headers=AUTH).json()
    assert [d["eventType"] for d in got] == ["Note"]
    assert got[0]["identifier"] == "aaps-1"
    got = ns.client.get(f"{url}?count=2", headers=AUTH).json()
    assert len(got) == 2 and got[0]["eventType"] == "Note"  # newest first
    got = ns.client.get(url, headers=AUTH).json()
    assert sorted(d["eventType"] for d in got) == ["Correction Bolus", "Meal Bolus", "Note"]


def test_treatments__bad_item_dead_lettered(ns1):
    url = "/t/fam-1/api/v1/treatments"
    r = ns1.client.post(url, json=[{"eventType": "Note", "created_at": "soon"},
                                   {"eventType": "Note", "insulin": "lots"},
                                   {"eventType": "Site Change"}], headers=AUTH)
    assert r.headers["X-Nightlink-Rejected"] == "2"
    assert [d["eventType"] for d in r.json()] == ["Site Change"]
    reasons = sorted(d["reason"] for d in dead_letters(ns1))
    assert reasons == ["treatments 0: created_at 'soon' is not an ISO 8601 time.",
                       "treatments 1: insulin must be a number, not 'lots'."]
    assert {d["topic"] for d in dead_letters(ns1)} == {"http:/t/fam-1/api/v1/treatments"}


def test_treatments__unsupported_find_400(ns1):
    r = ns1.client.get("/t/fam-1/api/v1/treatments?find[eventType]=Note", headers=AUTH)
    assert r.status_code == 400
    assert "find[created_at][$gte]" in r.json()["detail"]


def test_devicestatus__post_and_read_newest_first(ns):
    url = "/t/fam-1/api/v1/devicestatus"
    t = now_ms() - 10 * MIN
    sent = [{"device": "xDrip-phone", "created_at": iso(t + i * MIN),
             "uploader": {"battery": 80 - i}} for i in range(3)]
    r = ns.client.post(url, json=sent, headers=AUTH)
    assert r.status_code == 200
    assert r.headers["X-Nightlink-Stored"] == "3"
    got = ns.client.get(f"{url}.json?count=2", headers=AUTH).json()
    assert [d["uploader"]["battery"] for d in got] == [78, 79]
    assert [d["created_at"] for d in got] == [iso(t + 2 * MIN), iso(t + MIN)]
    assert all(d["device"] == "xDrip-phone" and len(d["_id"]) == 24 for d in got)
    assert ns.client.get(f"{url}?token={TOKEN}").status_code == 200
    assert ns.client.post(f"{url}?token={TOKEN}", json=sent[0]).status_code == 401


def test_profile__post_and_read(ns):
    url = "/t/fam-1/api/v1/profile"
    assert ns.client.get(f"{url}/current", headers=AUTH).status_code == 404
    old = {"defaultProfile": "Default", "startDate": "2024-01-01T00:00:00.000Z",
           "units": "mg/dl", "store": {"Default": {"dia": 4, "carbratio": [
               {"time": "00:00", "value": 10}]}}}
    new = {**old, "startDate": "2024-06-01T00:00:00.000Z", "defaultProfile": "Summer"}
    assert ns.client.post(url, json=new, headers=AUTH).status_code == 200
    assert ns.client.post(f"{url}.json", json=old, headers=AUTH).status_code == 200
    got = ns.client.get(f"{url}.json", headers=AUTH).json()
    assert [p["defaultProfile"] for p in got] == ["Summer", "Default"]
    assert got[1]["store"] == old["store"]
    cur = ns.client.get(f"{url}/current", headers=AUTH).json()
    assert cur["defaultProfile"] == "Summer"
    assert cur["mills"] == 1717200000000
    r = ns.client.post(url, json={"store": "none"}, headers=AUTH)
    assert r.json() == [] and r.headers["X-Nightlink-Rejected"] == "1"


# -- status, verifyauth, pebble --------------------------------------------------------------------


def test_status__fields(ns1):
    ns1.store.set_tenant("fam-1", units="mmol/L")
    before = now_ms()
    r = ns1.client.get(f"/t/fam-1/api/v1/status?token={TOKEN}")
    assert r.status_code == 200
    st = r.json()
    assert set(st) == {"status", "name", "version", "serverTime", "serverTimeEpoch",
                       "apiEnabled", "careportalEnabled", "boluscalcEnabled", "settings",
                       "extendedSettings", "authorized"}
    assert before <= st["serverTimeEpoch"] <= now_ms()
    assert st["serverTime"] == iso(st["serverTimeEpoch"])
    assert st["version"] == "0.1.0"
    assert st["careportalEnabled"] is True and st["boluscalcEnabled"] is False
    s = st["settings"]
    assert s["units"] == "mmol"
    assert s["alarmTimeagoWarnMins"] == 15 and s["alarmTimeagoUrgentMins"] == 30
    assert s["authDefaultRoles"] == "denied"
    assert s["baseURL"] == "http://127.0.0.1:8000/t/fam-1"
    assert st["authorized"] == {"role": "reader", "canRead": True, "canWrite": False}
    assert ns1.client.get("/t/fam-1/api/v1/status.json").status_code == 401


@pytest.mark.parametrize("cred, expected", [
    ("secret", (True, True, True, "OK", "FOUND", "ROLE")),
    ("token", (True, False, False, "OK", "FOUND", "ROLE")),
    ("wrong", (False, False, False, "UNAUTHORIZED", "NOTFOUND", "DEFAULT")),
    ("none", (False, False, False, "UNAUTHORIZED", "NOTFOUND", "DEFAULT")),
    ("public", (True, False, False, "UNAUTHORIZED", "NOTFOUND", "DEFAULT")),
])
def test_verifyauth__reports_access(ns1, cred, expected):
    url, headers = "/t/fam-1/api/v1/verifyauth", {}
    if cred == "secret":
        headers = AUTH
    elif cred == "token":
        url += f"?token={TOKEN}"
    elif cred == "wrong":
        headers = {"api-secret": "0" * 40}
    elif cred == "public":
        ns1.store.set_tenant("fam-1", public_read=True)
    r = ns1.client.get(url, headers=headers)
    assert r.status_code == 200
    keys = ("canRead", "canWrite", "isAdmin", "message", "rolefound", "permissions")
    assert r.json() == {"status": 200, "message": dict(zip(keys, expected, strict=True))}


def test_pebble__fields(ns):
    t = now_ms() - 11 * MIN
    ns.client.post(ENTRIES, json=[
        {"type": "sgv", "date": t, "sgv": 100, "direction": "Flat"},
        {"type": "sgv", "date": t + 5 * MIN, "sgv": 108, "direction": "FortyFiveUp"},
        {"type": "sgv", "date": t + 10 * MIN, "sgv": 120, "direction": "SingleUp",
         "delta": 12.4},
    ], headers=AUTH)
    ns.client.post("/t/fam-1/api/v1/devicestatus", json=[
        {"device": "phone", "created_at": iso(t), "uploader": {"battery": 64}},
        {"device": "pump", "created_at": iso(t + MIN), "pump": {"reservoir": 80}},
    ], headers=AUTH)
    before = now_ms()
    got = ns.client.get("/t/fam-1/pebble?count=2", headers=AUTH).json()
    assert before <= got["status"][0]["now"] <= now_ms()
    assert got == {
        "status": [{"now": got["status"][0]["now"]}],
        "bgs": [
            {"sgv": "120", "trend": 2, "direction": "SingleUp", "datetime": t + 10 * MIN,
             "bgdelta": 12, "battery": "64"},
            {"sgv": "108", "trend": 3, "direction": "FortyFiveUp", "datetime": t + 5 * MIN},
        ],
        "cals": [],
    }
    mmol = ns.client.get(f"/t/fam-1/pebble?units=mmol&token={TOKEN}").json()
    assert mmol["bgs"] == [{"sgv": "6.7", "trend": 2, "direction": "SingleUp",
                            "datetime": t + 10 * MIN, "bgdelta": "0.7", "battery": "64"}]


def test_pebble__empty_and_needs_auth(ns1):
    got = ns1.client.get("/t/fam-1/pebble", headers=AUTH).json()
    assert got["bgs"] == [] and got["cals"] == []
    assert ns1.client.get("/t/fam-1/pebble").status_code == 401


def test_openapi__nightscout_routes_documented(ns1):
    paths = ns1.client.get("/openapi.json").json()["paths"]
    entries = paths["/t/{tenant}/api/v1/entries"]
    assert entries["get"]["summary"].startswith("Entries newest first")
    assert set(entries["get"]["responses"]) >= {"200", "304", "400", "401"}
    assert "X-Nightlink-Near-Duplicates" in entries["post"]["responses"]["200"]["headers"]
    assert "/t/{tenant}/api/v1/entries.json" not in paths  # aliases stay out of the schema
    for path in ("/t/{tenant}/api/v1/status.json", "/t/{tenant}/api/v1/verifyauth",
                 "/t/{tenant}/pebble", "/t/{tenant}/api/v1/treatments"):
        assert path in paths
