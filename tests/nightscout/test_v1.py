"""API v1 as cgm-remote-monitor serves it, on the cloud and the edge: uploads read back field by
field, deduplication, the find grammar, count, formats, auth forms, status, verifyauth, pebble.

Client-specific traffic is in test_clients_*.py; this module holds the behaviour every client
relies on.
"""

import gzip
import hashlib
import json

import pytest

from nightlink.nightscout.documents import entry_oid
from tests.nightscout_uploads import xdrip_entry
from tests.support.nightscout import MIN, SECRET, SECRET_SHA1, SECRET_SHA512, iso, now_ms

AUTH = {"api-secret": SECRET_SHA1}
JSON = {**AUTH, "Accept": "application/json"}


def sgvs(ns, count=100) -> list:
    return [r.doc["sgv"] for r in ns.docs.latest("entries", kind="sgv", count=count)]


# -- upload and read back ----------------------------------------------------------------------


def test_upload__xdrip_array_read_back_field_by_field(ns):
    t0 = now_ms() - 20 * MIN
    sent = [xdrip_entry(t0 + i * 5 * MIN, sgv) for i, sgv in enumerate((131, 128, 126, 123))]
    r = ns.post("/api/v1/entries", json=sent, headers=AUTH)
    assert r.status_code == 200
    assert (r.headers["X-Nightlink-Stored"], r.headers["X-Nightlink-Duplicates"],
            r.headers["X-Nightlink-Near-Duplicates"], r.headers["X-Nightlink-Rejected"]) == (
        "4", "0", "0", "0")
    got = r.json()
    assert [d["_id"] for d in got] == [entry_oid("sgv", e["date"]) for e in sent]
    for doc, src in zip(got, sent, strict=True):
        assert {k: doc[k] for k in src} == src  # every field kept as sent
        assert doc["utcOffset"] == 0
    cur = ns.get("/api/v1/entries/current.json", headers=AUTH).json()
    assert [d["sgv"] for d in cur] == [123] and cur[0]["_id"] == got[-1]["_id"]
    r = ns.get(f"/api/v1/entries.json?find[date][$gte]={sent[1]['date']}&count=2", headers=AUTH)
    assert [e["sgv"] for e in r.json()] == [123, 126]  # newest first, count honoured


def test_upload__one_object_not_array(ns):
    r = ns.post("/api/v1/entries.json", json=xdrip_entry(now_ms() - MIN, 101), headers=AUTH)
    assert r.status_code == 200 and [e["sgv"] for e in r.json()] == [101]
    assert sgvs(ns) == [101]


def test_upload__normalised_as_nightscout_does(ns):
    """sysTime and dateString in UTC, utcOffset from the uploader's offset, numeric strings,
    fractional ms, an entry without type, mg/dL with decimals."""
    t = now_ms() - 30 * MIN
    local = "2026-01-01T01:00:00.000+0100"  # xDrip+ writes the offset without a colon
    r = ns.post("/api/v1/entries", headers=AUTH, json=[
        {"sgv": "142", "date": t + 0.4, "dateString": local, "device": "x"},
        {"type": "mbg", "mbg": 111.6, "date": t + 5 * MIN},
        {"sgv": 99, "date": str(t + 10 * MIN)},
    ])
    a, b, c = r.json()
    assert (a["type"], a["sgv"], a["date"], a["utcOffset"]) == ("sgv", 142, t, 60)
    assert a["dateString"] == a["sysTime"] == iso(t)
    assert (b["mbg"], b["type"]) == (111.6, "mbg")
    assert (c["sgv"], c["date"], c["type"]) == (99, t + 10 * MIN, "sgv")


def test_upload__fills_delta_from_the_previous_reading(ns):
    t = now_ms() - 10 * MIN
    r = ns.post("/api/v1/entries", json=[{"type": "sgv", "date": t + 5 * MIN, "sgv": 110},
                                         {"type": "sgv", "date": t, "sgv": 100}], headers=AUTH)
    later, first = r.json()  # the reply keeps the request's order
    assert "delta" not in first and later["delta"] == 10.0
    r = ns.post("/api/v1/entries", json={"type": "sgv", "date": t + 8 * MIN, "sgv": 104},
                headers=AUTH)
    assert r.json()[0]["delta"] == -10.0


def test_upload__resent_duplicates_answer_with_the_stored_documents(ns):
    """Loop re-sends a batch after a timeout and maps `_id`s back by position: the reply has
    one document per item, in order, also for the ones already stored."""
    t = now_ms() - 10 * MIN
    batch = [{"type": "sgv", "date": t, "sgv": 100, "device": "loop://iPhone"},
             {"type": "sgv", "date": t + 5 * MIN, "sgv": 104, "device": "loop://iPhone"}]
    first = ns.post("/api/v1/entries", json=batch, headers=AUTH).json()
    again = ns.post("/api/v1/entries", json=batch, headers=AUTH)
    assert again.headers["X-Nightlink-Stored"] == "0"
    assert again.headers["X-Nightlink-Duplicates"] == "2"
    assert [d["_id"] for d in again.json()] == [d["_id"] for d in first]
    assert ns.count("entries") == 2


def test_upload__same_reading_shifted_or_from_another_device_is_a_near_duplicate(ns):
    t = now_ms() - 10 * MIN
    ns.post("/api/v1/entries", json=xdrip_entry(t, 120), headers=AUTH)
    r = ns.post("/api/v1/entries", headers=AUTH, json=[
        xdrip_entry(t + 20_000, 120, device="share2"),  # the same reading, 20 s later
        xdrip_entry(t + 60_000, 120),  # a minute apart: one-minute sensors repeat values
        xdrip_entry(t + 30_000, 121),  # another value
    ])
    assert r.headers["X-Nightlink-Near-Duplicates"] == "1"
    assert r.json()[0]["_id"] == entry_oid("sgv", t)  # the stored reading answers
    assert sorted(sgvs(ns)) == [120, 120, 121]


def test_upload__sensor_error_kept_as_error_not_glucose(ns):
    t = now_ms() - MIN
    doc = ns.post("/api/v1/entries", json={"type": "sgv", "date": t, "sgv": 5},
                  headers=AUTH).json()[0]
    assert doc["sgv"] == 5 and doc["sensorError"] == "sensor not calibrated"
    peb = ns.get("/pebble", headers=AUTH).json()
    assert peb["bgs"][0]["sgv"] == "5" and peb["bgs"][0]["bgdelta"] == 0


@pytest.mark.parametrize("item, reason", [
    ({"type": "sgv", "sgv": 100}, "needs its time"),
    ({"type": "sgv", "date": 1_000_000_000, "sgv": 100}, "before the year 2000"),
    ({"type": "sgv", "date": 10**13, "sgv": 100}, "more than a day in the future"),
    ({"type": "sgv", "date": "soon", "sgv": 100}, "not an ISO 8601 time"),
    ({"type": "sgv", "date": float("inf"), "sgv": 100}, "needs its time"),  # sent as 1e400
    ({"type": "sgv", "date": 10**30, "sgv": 100}, "outside 1970-01-01 to 9999-12-31"),
    ({"type": "sgv", "dateString": "10000-01-01T00:00:00Z", "sgv": 100}, "not an ISO 8601"),
    ({"type": "sgv", "date": None}, "needs its time"),
    ({"type": "sgv", "date": 1_760_000_000_000, "sgv": "high"}, "sgv must be a number"),
    ({"type": "sgv", "date": 1_760_000_000_000, "sgv": 5000}, "outside 0..1000"),
    ({"date": 1_760_000_000_000}, "type is missing"),
    ("text", "must be a JSON object"),
])
def test_upload__invalid_item_dead_lettered_the_others_stored(ns, item, reason):
    good = xdrip_entry(now_ms() - MIN, 111)
    body = json.dumps([good, item]).replace("Infinity", "1e400")
    r = ns.post("/api/v1/entries", content=body,
                headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 200 and r.headers["X-Nightlink-Rejected"] == "1"
    assert r.json()[0]["sgv"] == 111 and reason in r.json()[1]["error"]
    assert sgvs(ns) == [111]
    [dead] = ns.dead_letters()
    assert "entries item 1" in dead["reason"] and reason in dead["reason"]
    assert ns.get("/api/v1/entries.json", headers=AUTH).status_code == 200


@pytest.mark.parametrize("when", [{"created_at": 1_795_906_800}, {"date": 1_796_025_600},
                                  {"created_at": "1796025600"}, {"date": 86_400_000}])
def test_upload__a_treatment_timed_in_seconds_or_before_2000_is_refused(ns, when):
    """Stored, it sat in 1970: in no date range, app, report or carb hold, and two of them
    shared one time and replaced each other. Entries are refused the same way."""
    good = {"eventType": "Carb Correction", "carbs": 12, "created_at": iso(now_ms() - MIN)}
    r = ns.post("/api/v1/treatments", json=[good, {"eventType": "Carb Correction",
                                                   "carbs": 14, **when}], headers=AUTH)
    assert r.status_code == 200 and r.headers["X-Nightlink-Rejected"] == "1"
    assert "before the year 2000" in r.json()[1]["error"]
    if when != {"date": 86_400_000}:
        assert "(it looks like seconds, not ms)" in r.json()[1]["error"]
    got = ns.get("/api/v1/treatments.json", headers=AUTH).json()
    assert [t["carbs"] for t in got] == [12]


@pytest.mark.parametrize("body, status", [
    (b"{not json", 400), (b"[" * 100 + b"]" * 100, 400), (b'{"date": ' + b"9" * 5000 + b"}", 400),
    (b"", 400), (b"\xff\xfe", 400),
])
def test_upload__unusable_body_is_a_400_with_a_sentence(ns, body, status):
    r = ns.post("/api/v1/entries", content=body,
                headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == status and r.json()["status"] == status
    assert r.json()["description"].endswith(".")
    assert ns.count("entries") == 0


def test_upload__gzip_body_as_xdrip_sends_it_once_the_server_looks_like_express(ns):
    t = now_ms() - MIN
    body = gzip.compress(json.dumps([xdrip_entry(t, 133)]).encode())
    r = ns.post("/api/v1/entries", content=body, headers={
        **AUTH, "Content-Type": "application/json; charset=utf-8", "Content-Encoding": "gzip"})
    assert r.status_code == 200 and sgvs(ns) == [133]
    bomb = gzip.compress(b"[" + b" " * (20 * 1024 * 1024) + b"]")
    r = ns.post("/api/v1/entries", content=bomb,
                headers={**AUTH, "Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert r.status_code == 413


def test_upload__text_that_storage_could_not_take_is_made_safe(ns):
    """Half an emoji (a lone surrogate) and non-finite numbers once broke every later read."""
    body = ('[{"type":"sgv","sgv":100,"date":' + str(now_ms() - MIN)
            + ',"device":"a\\ud83d b","noise":1e400}]').encode()
    r = ns.post("/api/v1/entries", content=body, headers={**AUTH,
                                                          "Content-Type": "application/json"})
    assert r.status_code == 200
    doc = ns.get("/api/v1/entries.json", headers=AUTH).json()[0]
    assert doc["device"] == "a\ufffd b" and doc["noise"] is None


# -- reading -------------------------------------------------------------------------------------


@pytest.fixture
def day(ns):
    """A day of readings every 5 minutes, newest 1 minute ago, plus an mbg and a cal."""
    end = now_ms() - MIN
    items = [{"type": "sgv", "date": end - i * 5 * MIN, "sgv": 100 + i % 50, "device": "g6",
              "direction": "Flat"} for i in range(288)]
    items += [{"type": "mbg", "date": end - 7 * MIN, "mbg": 105},
              {"type": "cal", "date": end - 7 * MIN, "slope": 850, "intercept": 3000,
               "scale": 1}]
    assert ns.post("/api/v1/entries", json=items, headers=AUTH).status_code == 200
    return end


def test_entries__default_count_10_newest_first(ns, day):
    got = ns.get("/api/v1/entries.json", headers=AUTH).json()
    assert len(got) == 10 and got[0]["date"] == day
    assert [g["date"] for g in got] == sorted((g["date"] for g in got), reverse=True)


@pytest.mark.parametrize("query, expected", [
    ("count=3&find[sgv][$gte]=148", [148, 149, 148]),
    ("count=2&find[sgv]=100", [100, 100]),
    ("count=2&find[sgv][$in][]=101&find[sgv][$in][]=102", [101, 102]),
    ("count=2&find[sgv][$in][0]=101&find[sgv][$in][1]=102", [101, 102]),
    ("count=1&find[type]=mbg", [None]),
    ("count=3&find[sgv][$lt]=103&find[sgv][$ne]=100", [101, 102, 101]),
    ("count=2&find[device][$regex]=^G&find[device][$options]=i&find[sgv][$gt]=140",
     [141, 142]),
    ("count=2&find[direction][$nin][]=Flat", [None, None]),  # $nin matches a missing field
    ("count=3&find[delta][$exists]=false", [None, None, 137]),  # the oldest has no predecessor
    ("count=2&find[$or][0][sgv]=120&find[$or][1][sgv]=130", [120, 130]),
    ("count=3&find[delta][$not][$exists]=true", [None, None, 137]),  # MongoDB's $not
    ("count=3&find[sgv][$not][$gte]=101&find[type]=sgv", [100, 100, 100]),
    ("count=2&find[sgv][$not][$lt]=149&find[sgv][$exists]=true", [149, 149]),
])
def test_entries__find_operators(ns, day, query, expected):
    got = ns.get(f"/api/v1/entries.json?{query}", headers=AUTH).json()
    assert [g.get("sgv") for g in got] == expected


def test_entries__find_time_in_every_form(ns, day):
    lo = day - 60 * MIN
    for value in (str(lo), f"{lo}.0", iso(lo), iso(lo).replace("Z", "+00:00"),
                  iso(lo).replace(".000Z", "Z")):
        got = ns.get("/api/v1/entries/sgv.json", params={"find[date][$gte]": value,
                                                         "count": "1000"}, headers=AUTH).json()
        assert len(got) == 13, value
    # Spike sends epoch ms to dateString; Loop ISO seconds; the reply is the same.
    a = ns.get(f"/api/v1/entries/sgv.json?find[dateString][$gte]={lo}&count=100",
               headers=AUTH).json()
    b = ns.get(f"/api/v1/entries/sgv.json?find[dateString][$gte]={iso(lo)}&count=100",
               headers=AUTH).json()
    assert len(a) == len(b) == 13


def test_entries__default_window_is_four_days(ns):
    now = now_ms()
    old = [{"type": "sgv", "date": now - 5 * 24 * 60 * MIN, "sgv": 90}]
    ns.post("/api/v1/entries", json=old + [{"type": "sgv", "date": now - MIN, "sgv": 91}],
            headers=AUTH)
    assert [e["sgv"] for e in ns.get("/api/v1/entries.json?count=all",
                                     headers=AUTH).json()] == [91]
    got = ns.get(f"/api/v1/entries.json?count=10&find[date][$gte]={now - 6 * 24 * 60 * MIN}",
                 headers=AUTH).json()
    assert [e["sgv"] for e in got] == [91, 90]


@pytest.mark.parametrize("count, n", [("0", 288), ("all", 288), ("5", 5), ("5.9", 5),
                                      ("99999999999999999999", 288), ("abc", 10), ("-3", 3)])
def test_entries__count_as_nightscout_reads_it(ns, day, count, n):
    got = ns.get(f"/api/v1/entries/sgv.json?count={count}", headers=AUTH).json()
    assert len(got) == n


@pytest.mark.parametrize("query", [
    "find[date][$where]=1", "find[$where]=1", "find[sgv][$regex]=(", "find[date][$gte]=soon",
    "find[a][b][c][d][e][f][g][h][i]=1", "find[sgv][$not]=5", "find[sgv][$not][x]=5",
    "find[sgv][$not][$where]=1",
])
def test_entries__bad_query_400_with_a_sentence(ns, day, query):
    r = ns.get(f"/api/v1/entries.json?{query}", headers=AUTH)
    assert r.status_code == 400 and r.json()["description"].endswith(".")


@pytest.mark.parametrize("query", ["find[sgv][$gte]=" + "9" * 400, "find[date][$gte]=" + "9" * 40,
                                   "find[sgv]=1e999", "count=" + "9" * 5000])
def test_entries__huge_numbers_never_500(ns, day, query):
    r = ns.get(f"/api/v1/entries.json?{query}", headers=AUTH)
    assert r.status_code in (200, 400)


def test_entries__by_type_and_by_id(ns, day):
    [mbg] = ns.get("/api/v1/entries/mbg.json", headers=AUTH).json()
    assert mbg["mbg"] == 105
    [cal] = ns.get("/api/v1/entries/cal.json?count=5", headers=AUTH).json()
    assert cal["slope"] == 850
    assert ns.get(f"/api/v1/entries/{mbg['_id']}", headers=JSON).json() == [mbg]
    assert ns.get("/api/v1/entries/" + "0" * 24, headers=JSON).status_code == 404


def test_entries__formats_as_nightscout_negotiates_them(ns, day):
    text = ns.get("/api/v1/entries?count=2", headers=AUTH)
    assert text.headers["content-type"].startswith("text/plain")
    first = text.text.split("\r\n")[0].split("\t")
    assert first[0] == json.dumps(iso(day)) and first[1] == str(day) and first[4] == '"g6"'
    assert ns.get("/api/v1/entries?count=2", headers=JSON).json()[0]["date"] == day
    csv = ns.get("/api/v1/entries.csv?count=2", headers=AUTH)
    assert csv.headers["content-type"].startswith("text/csv") and "," in csv.text
    # a meter's entry: no sgv field (an empty cell), its null direction written "" as
    # cgm-remote-monitor's replacer writes a null
    posted = ns.post("/api/v1/entries", headers=AUTH, json=[{
        "type": "mbg", "mbg": 120, "date": day + 60_000, "dateString": iso(day + 60_000),
        "direction": None, "device": "meter"}])
    assert posted.status_code == 200, posted.text
    line = ns.get("/api/v1/entries.txt?find[type]=mbg&count=1", headers=AUTH).text
    assert line.split("\t")[2:] == ["", '""', '"meter"'], line


@pytest.mark.parametrize(("accept", "fmt"), [
    (None, "txt"), ("*/*", "txt"), ("text/plain", "txt"),
    ("application/json, text/plain, */*", "json"),  # axios's default (nightscout-librelink-up)
    ("text/plain;q=0.5, application/json", "json"), ("application/*", "json"),
    ("text/csv, application/json", "csv"), ("application/json;q=0, */*", "txt"),
    ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "txt"),
    ("application/xml", "json"), ("*/*;q=0", "json"), ("json", "json")])  # none: Nightscout's
    # entries fall back to JSON
def test_entries__accept_ranked_by_q_specificity_then_the_clients_order(ns, day, accept, fmt):
    """Express's res.format, as cgm-remote-monitor answers: the client's first listed type
    wins a tie; `*/*` alone gives Nightscout's first format, tab-separated text. The newest
    reading (`/entries/current`) is negotiated the same way."""
    headers = dict(AUTH) if accept is None else {**AUTH, "Accept": accept}
    media = {"txt": "text/plain", "json": "application/json", "csv": "text/csv"}[fmt]
    for url in ("/api/v1/entries?count=2", "/api/v1/entries/current",
                "/api/v1/entries/sgv?count=2"):
        r = ns.get(url, headers=headers)
        assert r.status_code == 200 and r.headers["content-type"].startswith(media), (url, accept)
        assert "Accept" in r.headers["vary"]  # what a cache must keep apart
        if fmt == "json":
            assert r.json()[0]["date"] == day
        else:
            assert r.text.split("\r\n")[0].split("\t" if fmt == "txt" else ",")[1] == str(day)


def test_status__axios_and_curl_get_what_nightscout_gives_them(ns):
    axios = {**AUTH, "Accept": "application/json, text/plain, */*"}
    assert ns.get("/api/v1/status", headers=axios).json()["status"] == "ok"
    assert ns.get("/api/v1/status", headers={**AUTH, "Accept": "*/*"}).text == \
        "<h1>STATUS OK</h1>"


def _ims(ns, last):
    return ns.get("/api/v1/entries.json", headers={**AUTH, "If-Modified-Since": last}).status_code


def test_entries__if_modified_since_304(ns, day):
    import time

    # Last-Modified has whole seconds: a change is promised unchanged only once its second is
    # over (the day's stamps may run a little ahead of the clock after a burst of writes).
    time.sleep(1.5)
    last = ns.get("/api/v1/entries.json", headers=AUTH).headers["Last-Modified"]
    assert _ims(ns, last) == 304
    r = ns.post("/api/v1/entries", json={"type": "sgv", "date": now_ms(), "sgv": 151},
                headers=AUTH)
    assert r.status_code == 200, r.text
    assert _ims(ns, last) == 200


def test_entries__a_change_in_the_same_second_is_not_hidden_by_304(ns, day):
    """A client that read Last-Modified and polls again within the same second, after a
    change in that second, gets the change (a 304 there would hide it until the next one)."""
    for _ in range(3):
        last = ns.get("/api/v1/entries.json", headers=AUTH).headers["Last-Modified"]
        r = ns.post("/api/v1/entries", json={"type": "sgv", "date": now_ms(), "sgv": 152},
                    headers=AUTH)
        assert r.status_code == 200, r.text
        assert _ims(ns, last) == 200


# -- auth forms --------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["sha1", "SHA1", "sha512", "secret-query", "token-query",
                                 "token-header", "token=-header", "token-sha1-header"])
def test_auth__every_form_nightscout_accepts(ns, how):
    t = ns.read_token
    headers, params = {
        "sha1": ({"api-secret": SECRET_SHA1}, {}),
        "SHA1": ({"api-secret": SECRET_SHA1.upper()}, {}),
        "sha512": ({"api-secret": SECRET_SHA512}, {}),
        "secret-query": ({}, {"secret": SECRET_SHA1}),
        "token-query": ({}, {"token": t}),
        "token-header": ({"api-secret": t}, {}),
        "token=-header": ({"api-secret": f"token={t}"}, {}),
        "token-sha1-header": ({"api-secret": hashlib.sha1(t.encode()).hexdigest()}, {}),
    }[how]
    assert ns.get("/api/v1/entries.json", headers=headers, params=params).status_code == 200
    write = ns.post("/api/v1/entries", headers=headers, params=params,
                    json={"type": "sgv", "date": now_ms(), "sgv": 100})
    assert write.status_code == (200 if how in ("sha1", "SHA1", "sha512", "secret-query")
                                 else 401)


@pytest.mark.parametrize("headers, params", [
    ({"api-secret": hashlib.sha1(b"wrong").hexdigest()}, {}), ({"api-secret": SECRET}, {}),
    ({}, {"token": "clock-0123456789abcdef0123"}), ({}, {}),
])
def test_auth__refused_in_nightscout_shape_and_nothing_stored(ns, headers, params):
    r = ns.post("/api/v1/entries", headers=headers, params=params,
                json={"type": "sgv", "date": now_ms(), "sgv": 100})
    assert r.status_code == 401
    assert r.json()["status"] == 401 and r.json()["message"] == "Unauthorized"
    assert ns.count("entries") == 0


def test_auth__writes_need_the_permission_of_the_role(ns):
    t = now_ms()
    care = {"token": ns.careportal_token}
    assert ns.post("/api/v1/treatments", params=care,
                   json={"eventType": "Note", "notes": "x"}).status_code == 200
    assert ns.post("/api/v1/entries", params=care,
                   json={"type": "sgv", "date": t, "sgv": 100}).status_code == 401


def test_experiments_test__admin_only(ns):
    assert ns.get("/api/v1/experiments/test", headers=AUTH).json() == {"status": "ok"}
    assert ns.get("/api/v1/experiments/test", params={"token": ns.admin_token}).status_code == 200
    assert ns.get("/api/v1/experiments/test", params={"token": ns.read_token}).status_code == 401
    assert ns.get("/api/v1/experiments/test").status_code == 401


@pytest.mark.parametrize("cred, read, write, message", [
    ("secret", True, True, "OK"), ("token", True, False, "OK"), ("none", False, False,
                                                                   "UNAUTHORIZED"),
    ("wrong", False, False, "UNAUTHORIZED"),
])
def test_verifyauth__always_200_saying_what_the_credential_may_do(ns, cred, read, write, message):
    headers, params = {"secret": (AUTH, {}), "token": ({}, {"token": ns.read_token}),
                       "none": ({}, {}), "wrong": ({"api-secret": "0" * 40}, {})}[cred]
    r = ns.get("/api/v1/verifyauth", headers=headers, params=params)
    assert r.status_code == 200
    m = r.json()["message"]
    assert (m["canRead"], m["canWrite"], m["message"]) == (read, write, message)


def test_status__fields_clients_read(ns):
    st = ns.get("/api/v1/status.json", headers=AUTH).json()
    assert st["status"] == "ok" and st["apiEnabled"] is True
    assert st["version"].startswith("15.") and st["versionNum"] >= 150000
    s = st["settings"]
    assert s["units"] == "mg/dl" and s["thresholds"] == {
        "bgHigh": 250, "bgTargetTop": 180, "bgTargetBottom": 70, "bgLow": 54}
    assert s["authDefaultRoles"] == "denied" and "careportal" in s["enable"]
    assert ns.get("/api/v1/status", headers=AUTH).text == "<h1>STATUS OK</h1>"
    assert ns.get("/api/v1/status.txt", headers=AUTH).text == "STATUS OK"
    assert ns.get("/api/v1/status.json").status_code == 401


def test_pebble__fields(ns):
    t = now_ms() - 6 * MIN
    ns.post("/api/v1/entries", headers=AUTH, json=[
        {"type": "sgv", "date": t, "sgv": 100, "direction": "Flat"},
        {"type": "sgv", "date": t + 5 * MIN, "sgv": 108, "direction": "FortyFiveUp"}])
    ns.post("/api/v1/devicestatus", headers=AUTH,
            json={"device": "phone", "uploader": {"battery": 77}})
    p = ns.get("/pebble", headers=AUTH).json()
    assert p["status"][0]["now"] > t
    assert p["bgs"] == [{"sgv": "108", "trend": 3, "direction": "FortyFiveUp",
                         "datetime": t + 5 * MIN, "bgdelta": 8, "battery": "77",
                         "iob": 0, "cob": 0}]  # Nightscout: 0 with nothing on board
    mmol = ns.get("/pebble?units=mmol&count=2", headers=AUTH).json()["bgs"]
    assert [b["sgv"] for b in mmol] == ["6.0", "5.6"] and mmol[0]["bgdelta"] == "0.4"


def test_cors__browser_apps_may_read(ns):
    r = ns.client.options(f"{ns.site_url}/api/v1/entries.json",
                          headers={"Origin": "https://nightrep.zreptil.de",
                                   "Access-Control-Request-Method": "GET"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"
    got = ns.get("/api/v1/status.json", params={"token": ns.read_token},
                 headers={"Origin": "https://nightrep.zreptil.de"})
    assert got.headers["access-control-allow-origin"] == "*"


def test_paths__double_slash_and_v2_copy_of_v1(ns):
    assert ns.client.get(f"{ns.site_url}//api/v1/status.json", headers=AUTH).status_code == 200
    assert ns.get("/api/v2/entries.json", headers=AUTH).status_code == 200
    assert ns.get("/api/versions").json()[2] == {"version": "3.0.3-alpha", "url": "/api/v3"}


def test_polled_replies__kept_only_while_nothing_changed_and_the_credential_holds(ns):
    """Clocks poll the same URL every minute; the answer is kept until the collection
    changes (also by another process writing straight to the database), and the credential
    is checked on every poll."""
    t = now_ms() - MIN
    ns.post("/api/v1/entries", json={"type": "sgv", "date": t, "sgv": 100}, headers=AUTH)
    url = f"/api/v1/entries/current.json?token={ns.read_token}"
    assert ns.get(url).json()[0]["sgv"] == 100
    assert ns.get(url).json()[0]["sgv"] == 100  # from the kept reply
    from nightlink.nightscout.documents import normalize

    ns.docs.put([normalize("entries", {"type": "sgv", "date": t + 1000, "sgv": 150}, now_ms())])
    assert ns.get(url).json()[0]["sgv"] == 150
    [subject] = [s for s in ns.subjects.list() if s.name == "clock"]
    ns.subjects.revoke(subject.id)
    ns.app.state.nightscout.forget()
    assert ns.get(url).status_code == 401


def test_mills__always_the_documents_own_time(ns):
    """Entries and treatments carry `mills` in API v1 as Nightscout's cache serves them, and
    queries see the same value: a treatment read, moved and PUT back (with the `mills` it was
    read with) answers its new time; an uploader's odd `mills` is not served back; a
    `find[mills]` bound reaches past the 4 days Nightscout reads without a time."""
    t = (now_ms() - 10 * MIN) // 1000 * 1000
    assert ns.post("/api/v1/treatments", headers=AUTH, json=[
        {"eventType": "Note", "notes": "moved", "created_at": iso(t)}]).status_code == 200
    [doc] = ns.get("/api/v1/treatments", headers=AUTH).json()
    assert doc["mills"] == t
    moved = {**doc, "created_at": iso(t - 60 * MIN)}
    assert ns.put("/api/v1/treatments", headers=AUTH, json=moved).status_code == 200
    [doc] = ns.get("/api/v1/treatments", headers=AUTH).json()
    assert doc["mills"] == t - 60 * MIN
    assert [d["notes"] for d in ns.get(f"/api/v1/treatments?find[mills]={t - 60 * MIN}",
                                       headers=AUTH).json()] == ["moved"]
    assert ns.get(f"/api/v1/treatments?find[mills]={t}", headers=AUTH).json() == []
    old = now_ms() - 10 * 24 * 60 * MIN
    assert ns.post("/api/v1/entries", headers=AUTH, json=[
        {"type": "sgv", "sgv": 101, "date": t, "mills": "Infinity"},
        {"type": "sgv", "sgv": 102, "date": old}]).status_code == 200
    [e] = ns.get("/api/v1/entries.json?count=1", headers=AUTH).json()
    assert (e["sgv"], e["mills"]) == (101, t)
    got = ns.get(f"/api/v1/entries.json?find[mills][$gte]={old - MIN}&find[mills][$lt]={t}",
                 headers=AUTH).json()
    assert [(e["sgv"], e["mills"]) for e in got] == [(102, old)]


def test_entries__text_formats_never_hand_a_spreadsheet_a_formula(ns, day):
    """The quotes of Nightscout's text formats do not stop a spreadsheet running
    `"=HYPERLINK(…)"` from a device name an uploader wrote."""
    posted = ns.post("/api/v1/entries", headers=AUTH, json=[{
        "type": "sgv", "sgv": 99, "date": day + 120_000, "dateString": iso(day + 120_000),
        "direction": "Flat", "device": '=HYPERLINK("http://evil.example","x")'}])
    assert posted.status_code == 200, posted.text
    for ext, sep in (("csv", ","), ("tsv", "\t"), ("txt", "\t")):
        text = ns.get(f"/api/v1/entries.{ext}?find[sgv]=99&count=1", headers=AUTH).text
        assert text.endswith(sep + '"\'=HYPERLINK(\\"http://evil.example\\",\\"x\\")"'), text
    assert ns.get("/api/v1/entries.json?find[sgv]=99&count=1",
                  headers=AUTH).json()[0]["device"].startswith("=HYPERLINK")  # JSON as stored
