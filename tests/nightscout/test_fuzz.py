"""Fuzzing the Nightscout core with hypothesis: arbitrary upload bodies for every collection and
arbitrary find queries, on the cloud and the edge app; then bodies built to cost: random
nesting depth, numbers of thousands of digits, huge strings, invalid UTF-8, wrong or odd
Content-Type and Content-Encoding, gzip garbage and gzip bombs. No answer is a 5xx, a
refusal says why in one sentence, and after each upload every collection still reads."""

import gzip
import json
import time
import zlib

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.nightscout import SECRET, SECRET_SHA1

AUTH = {"api-secret": SECRET_SHA1, "Content-Type": "application/json"}
COLLECTIONS = ["entries", "treatments", "devicestatus", "profile", "food", "activity"]
FIELDS = ["date", "dateString", "sysTime", "created_at", "sgv", "mbg", "type", "eventType",
          "insulin", "carbs", "_id", "identifier", "device", "utcOffset", "store", "startDate",
          "mills", "duration", "notes", "eventTime", "timestamp", "syncIdentifier", "id"]
ODD_TEXT = st.sampled_from(["", "2024-05-01", "2024-05-01T12:00:00+0100", "10000-01-01",
                            "-1", "1e400", "NaN", "\ud83d", "1714564800000.5", "sgv",
                            "0" * 24, "x" * 300, "/re/i", "true", "null"])
scalars = (st.none() | st.booleans() | st.integers(min_value=-10**30, max_value=10**30)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20) | ODD_TEXT)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
docs = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=10), values, max_size=10)
bodies = docs | st.lists(docs, max_size=5) | values


@pytest.fixture(scope="module", params=["cloud", "edge"])
def app_client(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(request.param)
    if request.param == "cloud":
        from nightlink.cloud.app import create_app
        from nightlink.cloud.config import Settings

        app = create_app(Settings(env="test", database_url=f"sqlite:///{tmp / 'c.db'}",
                                  jwt_secret="x" + "0123456789abcdef" * 3))
        app.state.store.create_tenant("fam-1", "One")
        app.state.store.set_api_secret("fam-1", SECRET)
        close = app.state.store.close
    else:
        from nightlink.edge.node.nightscout_site import create_app
        from nightlink.edge.store import EdgeStore

        store = EdgeStore(tmp / "e.db")
        app = create_app(store, SECRET)
        close = store.close
    app.state.nightscout.failures.limit = 10**9
    app.state.nightscout.uploads = None  # hundreds of writes a minute here (test_limits.py)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client
    close()


def _reads_work(client) -> None:
    for coll in COLLECTIONS:
        r = client.get(f"/api/v1/{coll}.json?count=50", headers=AUTH)
        assert r.status_code == 200, (coll, r.text[:300])
    assert client.get("/api/v2/properties", headers=AUTH).status_code == 200
    assert client.get("/pebble?count=3", headers=AUTH).status_code == 200


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(coll=st.sampled_from(COLLECTIONS), body=bodies, method=st.sampled_from(["POST", "PUT"]))
def test_fuzz__uploads(app_client, coll, body, method):
    text = json.dumps(body, allow_nan=True).replace("Infinity", "1e400")
    r = app_client.request(method, f"/api/v1/{coll}", content=text.encode("utf-8",
                                                                          "surrogatepass"),
                           headers=AUTH)
    assert r.status_code < 500, (coll, text[:300], r.text[:300])
    _reads_work(app_client)


QUERY_TEXT = ODD_TEXT.filter(lambda v: v != "\ud83d")  # a URL cannot carry a lone surrogate
keys = st.lists(st.sampled_from(FIELDS + ["$or", "$and", "0", "1", ""]) | st.text(max_size=6),
                min_size=1, max_size=4)
ops = st.sampled_from(["", "$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin",
                       "$exists", "$regex", "$where", "$options", "[]"])


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(coll=st.sampled_from(COLLECTIONS + ["profiles"]),
       conditions=st.lists(st.tuples(keys, ops, QUERY_TEXT | st.text(max_size=12)), max_size=5),
       count=st.none() | QUERY_TEXT | st.integers(-10**6, 10**25).map(str),
       delete=st.booleans())
def test_fuzz__find_queries(app_client, coll, conditions, count, delete):
    params = []
    for path, op, value in conditions:
        key = "find" + "".join(f"[{p}]" for p in path) + (f"[{op}]" if op else "")
        params.append((key, value))
    if count is not None:
        params.append(("count", count))
    method = "DELETE" if delete and coll != "profiles" else "GET"
    r = app_client.request(method, f"/api/v1/{coll}.json", params=params, headers=AUTH)
    assert r.status_code < 500, (coll, params, r.text[:300])
    if r.status_code == 400:
        assert r.json()["description"].endswith(".")


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(coll=st.sampled_from(["entries", "treatments", "devicestatus", "profile", "food",
                             "settings"]),
       params=st.lists(st.tuples(st.sampled_from(FIELDS + ["sort", "sort$desc", "limit", "skip",
                                                           "fields"]).flatmap(
           lambda f: st.sampled_from([f, f + "$gt", f + "$in", f + "$re", f + "$x"])),
           QUERY_TEXT | st.text(max_size=8)), max_size=4),
       body=docs)
def test_fuzz__api_v3(app_client, coll, params, body):
    jwt = app_client.get("/api/v2/authorization/request/x").status_code  # 401: no such token
    assert jwt == 401
    token = _admin_jwt(app_client)
    h = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    assert app_client.get(f"/api/v3/{coll}", params=params, headers=h).status_code < 500
    text = json.dumps(body, allow_nan=True).replace("Infinity", "1e400")
    r = app_client.post(f"/api/v3/{coll}", content=text.encode("utf-8", "surrogatepass"),
                        headers=h)
    assert r.status_code < 500, (coll, text[:300], r.text[:300])
    assert app_client.get(f"/api/v3/{coll}/history/1", headers=h).status_code == 200


_TOKENS: dict = {}


def _admin_jwt(client) -> str:
    key = id(client)
    if key not in _TOKENS:
        r = client.post("/api/v2/authorization/subjects", headers=AUTH,
                        json={"name": "fuzz", "roles": ["admin"]})
        token = r.json()["accessToken"]
        _TOKENS[key] = client.get(f"/api/v2/authorization/request/{token}").json()["token"]
    return _TOKENS[key]


# -- bodies built to cost ---------------------------------------------------------------------

LEAVES = st.sampled_from(["1", '"x"', "null", "true", "{}", "[]", "-0.0", '"\\ud83d"'])
DIGITS = st.sampled_from([1, 16, 17, 19, 20, 39, 40, 41, 308, 309, 400, 4300, 4301, 6000]) \
    | st.integers(1, 6000)


@st.composite
def nesting(draw) -> str:
    """Arrays and objects nested 1 to 3,000 deep (deeper than Python's recursion limit)."""
    depth = draw(st.sampled_from([1, 30, 31, 32, 33, 64, 999, 1000, 3000]) | st.integers(1, 3000))
    shape = draw(st.sampled_from(["[", '{"k":', "mixed"]))
    opens = [("[" if i % 2 else '{"k":') if shape == "mixed" else shape for i in range(depth)]
    closes = "".join("]" if o == "[" else "}" for o in reversed(opens))
    return "".join(opens) + draw(LEAVES) + closes


@st.composite
def big_number(draw) -> str:
    """Half of them integers (those past 64 bits are converted to floats), half with a
    fraction or an exponent."""
    digits = "9" * draw(DIGITS)
    if draw(st.booleans()):
        digits += draw(st.sampled_from([".5", "." + "3" * 45, ".0"]))
        digits += draw(st.sampled_from(["", "e400", "e-400", "E+99999999", "e0", "e308"]))
    return draw(st.sampled_from(["", "-"])) + digits


HUGE_STRING = st.sampled_from([0, 1000, 70_000, 600_000, 9 * 1024 * 1024]).map(
    lambda n: '"' + "x" * n + '"')
FRAGMENTS = nesting() | big_number() | HUGE_STRING | LEAVES
COSTLY_FIELDS = ["date", "sgv", "mbg", "created_at", "insulin", "carbs", "duration",
                 "utcOffset", "mills", "startDate", "device", "eventType", "store", "x"]


@st.composite
def costly_text(draw) -> str:
    """A document (or an array of them) with costly fragments in fields the core reads."""
    fields = draw(st.lists(st.tuples(st.sampled_from(COSTLY_FIELDS), FRAGMENTS), max_size=3))
    doc = "{" + ",".join(f'"{k}":{v}' for k, v in fields) + "}"
    return draw(st.sampled_from(["{}", "[{}]", "[{},{}]"])).replace("{}", doc)


def _gzip_garbage(data: bytes) -> bytes:
    return b"\x1f\x8b\x08\x00" + data


RAW = st.binary(max_size=64) | st.sampled_from([
    b"\xff\xfe[1]", b"\xef\xbb\xbf[]", b'[{"notes":"\xc3\x28"}]', b'{"a":"\xed\xa0\x80"}',
    b"", b" ", b"\x00", "[{}]".encode("utf-16"), b"a=1&b=2"])
ENCODINGS = st.sampled_from([("", None), ("gzip", gzip.compress), ("x-gzip", gzip.compress),
                             ("deflate", zlib.compress), ("gzip", _gzip_garbage),
                             ("gzip", lambda b: gzip.compress(b)[:-9]), ("br", None),
                             ("gzip, deflate", gzip.compress), ("identity", None)])
CONTENT_TYPES = st.sampled_from(["application/json", "application/json; charset=utf-8",
                                 "text/plain", "application/x-www-form-urlencoded",
                                 "multipart/form-data; boundary=x", "", "application/xml"])
TARGETS = st.sampled_from([("POST", "/api/v1/{c}"), ("PUT", "/api/v1/{c}"),
                           ("POST", "/api/v2/{c}"), ("POST", "/api/v3/{c}"),
                           ("PUT", "/api/v3/{c}/fuzz-doc"), ("PATCH", "/api/v3/{c}/fuzz-doc")])
BOMB = gzip.compress(b"0" * (10 * 1024 * 1024), 9)


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(coll=st.sampled_from(COLLECTIONS), target=TARGETS,
       body=costly_text().map(lambda t: t.encode("utf-8", "surrogatepass")) | RAW,
       encoding=ENCODINGS, content_type=CONTENT_TYPES, bomb=st.booleans())
def test_fuzz__costly_bodies(app_client, coll, target, body, encoding, content_type, bomb):
    method, path = target
    v3 = path.startswith("/api/v3")
    coll = "settings" if v3 and coll == "activity" else coll
    name, compress = encoding
    if bomb and name == "gzip":
        body, compress = BOMB, None
    headers = {"Authorization": f"Bearer {_admin_jwt(app_client)}"} if v3 else \
        {"api-secret": SECRET_SHA1}
    if content_type:
        headers["Content-Type"] = content_type
    if name:
        headers["Content-Encoding"] = name
    sent = compress(body) if compress else body
    started = time.monotonic()
    r = app_client.request(method, path.format(c=coll), content=sent, headers=headers)
    assert r.status_code < 500, (method, path, name, body[:200], r.text[:300])
    assert time.monotonic() - started < 10, (method, path, name, body[:200])
    if r.status_code in (400, 413, 415) and not v3:
        description = r.json()["description"]
        assert description.endswith("."), description
    if bomb and name == "gzip" and not v3:
        assert r.status_code in (405, 413), r.text[:300]  # 405: no such route for the method
    _reads_work(app_client)
    _v3_reads_work(app_client)


def _v3_reads_work(client) -> None:
    h = {"Authorization": f"Bearer {_admin_jwt(client)}"}
    for coll in ["entries", "treatments", "devicestatus", "profile", "food", "settings"]:
        for path in (f"/api/v3/{coll}?limit=100", f"/api/v3/{coll}/history/1"):
            r = client.get(path, headers=h)
            assert r.status_code == 200, (path, r.text[:300])
