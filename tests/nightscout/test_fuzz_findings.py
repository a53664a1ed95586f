"""Requests a fuzzing run found to break the rule that no input gives a 5xx, costs the server
more than it costs the sender, or stores something that makes a later read fail or lie.
Each runs on the edge and the cloud, and on PostgreSQL where the suite does."""

import asyncio
import os
import time

import pytest

from nightlink.nightscout.query import MAX_EXPANSION, expansion
from tests.nightscout.test_robustness import AUTH, every_read_works
from tests.support.nightscout import iso, now_ms
from tests.support.sockets import authorized

ON_POSTGRES = True


def _bearer(ns) -> dict:
    jwt = ns.client.get(f"{ns.root}/api/v2/authorization/request/{ns.admin_token}").json()
    return {"Authorization": f"Bearer {jwt['token']}"}


@pytest.mark.parametrize("pattern, low, high", [
    ("(?:x{3000}){3000}", 9_000_000, 10_000_000), ("x{100}y{100}", 200, 200),
    ("(x{2}(y{3}){4}){5}", 70, 70), ("[{}]{5}", 5, 5), (r"a\{3000\}", 1, 10),
    ("2024-0[1-9]-.*", 1, 12), ("^20[0-9]{2}-", 1, 10), ("x{,20000}", 20_000, 20_000),
    ("(?:a{100}|b{100}){100}", 20_000, 21_000),  # alternatives add up
    ("(?#[)(?:x{1000}){1000}(?#])", 1_000_000, 1_100_000),  # a comment hides nothing
])
def test_expansion__counts_what_compiling_expands(pattern, low, high):
    assert low <= expansion(pattern) <= high


@pytest.mark.parametrize("path, query", [
    ("/api/v1/entries.json", "find[dateString][$regex]=(?:x{3000}){3000}"),
    ("/api/v1/treatments.json", "find[notes]=/(?:x{65535}){65535}/"),
    ("/api/v3/entries", "dateString$re=(?:x{65535}){65535}"),
    ("/api/v1/slice/entries/dateString/sgv/(%3F:x{3000}){3000}/.*", ""),
    # each of 999 patterns under the limit, together 1,000 times over it (a review found it)
    ("/api/v1/slice/entries/dateString/sgv/2024/(%3F:a{100}){100}|(%3F:b{100}){100}{0..998}",
     ""),
    ("/api/v3/treatments", "&".join(f"notes$re=(?:x{{100}}){{100}}{i}" for i in range(10))),
])
def test_a_pattern_that_expands_to_millions_is_refused_before_it_is_compiled(ns, path, query):
    """19 characters, `(?:x{65535}){65535}`, took every gigabyte of the machine to compile;
    `(?:x{3000}){3000}` 3.4 s of the event loop and 2.4 GB."""
    headers = _bearer(ns) if path.startswith("/api/v3") else AUTH
    # The site runs in this process: its CPU time, which a busy machine does not stretch as it
    # does the wall clock, says whether the pattern was compiled (3.4 s for the smallest).
    cpu = time.process_time()
    r = ns.get(f"{path}?{query}" if query else path, headers=headers)
    assert r.status_code == 400, (r.status_code, r.text[:200])
    assert f"more than {MAX_EXPANSION:,} atoms" in r.text
    assert time.process_time() - cpu < 1.0
    ok = ns.get("/api/v1/entries.json?find[dateString][$regex]=^20[0-9]{2}-&count=5",
                headers=AUTH)
    assert ok.status_code == 200  # an ordinary counted repeat still reads


@pytest.mark.parametrize("query", [
    "find[dateString][$regex]=(%3Fx)(%3F:x{1000}) {1000}",
    "find[dateString][$regex]=(%3F:x{1000}) {1000}&find[dateString][$options]=x",
    "find[notes]=/(%3F:x{1000}) {1000}/x",
])
def test_a_verbose_pattern_is_refused(ns, query):
    """With the x flag, a space or a # comment hides a quantifier from the count: refused
    (no Nightscout client sends it)."""
    path = "/api/v1/treatments.json" if "notes" in query else "/api/v1/entries.json"
    r = ns.get(f"{path}?{query}", headers=AUTH)
    assert r.status_code == 400 and "verbose" in r.text, r.text[:200]


def test_digits_that_are_not_decimal_are_refused_or_ignored_not_a_5xx(ns):
    """'²' is a digit to str.isdigit() but not to int(): each of these was a 500."""
    ns.post("/api/v1/profile", headers=AUTH, json=[{
        "defaultProfile": "Default", "startDate": iso(now_ms() - 3_600_000),
        "store": {"Default": {"basal": [{"time": "00:00", "value": 0.8}]}}}])
    for method, path in [
            ("get", "/api/v1/entries.json?find[sgv][$in][%C2%B2]=1"),
            ("get", "/api/v1/entries.json?find[$or][%C2%B2][sgv]=1"),
            ("delete", "/api/v1/entries.json?find[$or][%C2%B2][sgv]=1"),
            ("get", "/api/v1/profile.json?find[store.Default.basal.%C2%B2.value]=1")]:
        r = getattr(ns, method)(path, headers=AUTH)
        assert r.status_code < 500, (path, r.status_code, r.text[:200])
    r = ns.get("/api/v3/devicestatus?openaps.iob.%C2%B3=1", headers=_bearer(ns))
    assert r.status_code < 500, r.text[:200]
    r = ns.delete("/api/v2/authorization/subjects/%C2%B2", headers=_bearer(ns))
    assert r.status_code < 500, r.text[:200]
    every_read_works(ns)


@pytest.mark.parametrize("coll", ["devicestatus", "food"])
def test_an_id_equal_to_another_documents_identifier_names_that_document(ns, coll):
    """A client's identifier is any text, so it can be what another client sends as `_id`.
    The unique identifier index refused the second document, the database error became a
    503 and the whole upload was lost; then (a review found) storing it beside made the key
    name two documents, and a v3 client's GET or DELETE by its identifier reached the other
    one. The key names one document, as treatments already did: the second write updates it."""
    t = now_ms() - 60_000
    same = "5f0c0ffee0ddba11deadbeef"
    body = {"devicestatus": {"device": "a", "created_at": iso(t)},
            "food": {"name": "apple", "carbs": 12}}[coll]
    h = _bearer(ns)
    r = ns.post(f"/api/v3/{coll}", headers=h, json={**body, "identifier": same, "date": t})
    assert r.status_code in (200, 201), r.text[:200]
    other = {**body, "_id": same, "date": t}
    other.update({"device": "b"} if coll == "devicestatus" else {"name": "pear"})
    readings = [{"type": "sgv", "sgv": 100 + k, "date": t - k * 300_000} for k in range(5)]
    r = ns.post(f"/api/v1/{coll}", headers=AUTH, json=[other])
    assert r.status_code == 200, r.text[:200]
    assert ns.post("/api/v1/entries", headers=AUTH, json=readings).status_code == 200
    assert ns.count(coll) == 1 and ns.count("entries") == 5
    got = ns.get(f"/api/v3/{coll}/{same}", headers=h)
    assert got.status_code == 200
    assert got.json()["result"].get("device", got.json()["result"].get("name")) in ("b", "pear")
    every_read_works(ns)


def test_an_entry_whose_identifier_is_another_entrys_id_is_stored(ns):
    """An entry's `_id` is its (type, date)'s; one uploader's identifier may be another
    reading's: both readings are kept (the second was a 503 with the upload lost)."""
    from nightlink.nightscout.documents import entry_oid

    t = now_ms() - 30 * 60_000
    r = ns.post("/api/v1/entries", headers=AUTH, json=[
        {"type": "sgv", "sgv": 100, "date": t, "identifier": entry_oid("sgv", t + 300_000)}])
    assert r.status_code == 200
    r = ns.post("/api/v1/entries", headers=AUTH, json=[{"type": "sgv", "sgv": 110,
                                                        "date": t + 300_000}])
    assert r.status_code == 200, r.text[:200]
    assert ns.count("entries") == 2
    every_read_works(ns)


def test_a_v3_put_cannot_move_a_document_by_its_date_string(ns):
    """`date` is immutable in API v3; a PUT giving only `dateString` moved the entry while its
    deduplication key stayed at the old time: a v1 upload at the new time was stored beside
    it, and one at the old time moved it back."""
    h = _bearer(ns)
    t = now_ms() - 30 * 60_000
    r = ns.post("/api/v3/entries", headers=h, json={
        "identifier": "v3-one", "type": "sgv", "sgv": 100, "date": t, "dateString": iso(t)})
    assert r.status_code in (200, 201), r.text[:200]
    moved = iso(t + 25 * 60_000)
    r = ns.put("/api/v3/entries/v3-one", headers=h,
               json={"type": "sgv", "sgv": 111, "dateString": moved})
    assert r.status_code == 400 and "date cannot be modified" in r.text
    r = ns.put("/api/v3/entries/v3-one", headers=h,
               json={"type": "sgv", "sgv": 111, "date": t, "dateString": iso(t)})
    assert r.status_code == 200, r.text[:200]
    assert ns.post("/api/v1/entries", headers=AUTH, json=[
        {"type": "sgv", "sgv": 120, "date": t + 25 * 60_000}]).status_code == 200
    assert ns.count("entries") == 2
    every_read_works(ns)


def test_a_v3_put_of_a_treatment_with_its_own_date_is_taken(ns):
    """A treatment's stored time comes from `created_at` (whole seconds) before its `date`
    (with milliseconds); a v3 PUT re-sending that `date` moved nothing and was refused by the
    first version of the check above (a review found it)."""
    whole = now_ms() // 1000 * 1000 - 10 * 60_000
    t = whole + 123
    r = ns.post("/api/v1/treatments", headers=AUTH, json=[{
        "eventType": "Note", "notes": "a", "created_at": iso(whole), "date": t,
        "identifier": "aaps-1"}])
    assert r.status_code == 200, r.text[:200]
    r = ns.put("/api/v3/treatments/aaps-1", headers=_bearer(ns),
               json={"eventType": "Note", "notes": "b", "date": t})
    assert r.status_code == 200, r.text[:200]


def test_a_socket_update_that_moves_an_entry_keeps_its_key_with_it(ns):
    """AndroidAPS's older NSClient (socket.io dbUpdate) may change a reading's date; its
    deduplication key (type and date) follows, so a later upload at the new time updates it
    rather than being stored beside it, one at the old time is a new reading rather than
    moving it back, and a move onto another reading's time is refused."""
    t = now_ms() - 60 * 60_000
    ns.post("/api/v1/entries", headers=AUTH, json=[
        {"type": "sgv", "sgv": 100, "date": t}, {"type": "sgv", "sgv": 140, "date": t + 600_000}])
    ids = {d["sgv"]: d["_id"] for d in ns.get("/api/v1/entries.json?find[date][$gte]=0",
                                               headers=AUTH).json()}
    first, second = ids[100], ids[140]

    async def run():
        rec, main, said = await authorized(ns, ns.admin_token)
        assert said["write"] is True
        done = await rec.call("dbUpdate", {"collection": "entries", "_id": first,
                                           "data": {"date": t + 300_000}}, main)
        assert done == {"result": "success"}
        # onto the other reading's time: refused (dead-lettered), both kept as they were
        await rec.call("dbUpdate", {"collection": "entries", "_id": second,
                                    "data": {"date": t + 300_000}}, main)
        await rec.close()

    asyncio.run(run())
    assert ns.post("/api/v1/entries", headers=AUTH, json=[
        {"type": "sgv", "sgv": 105, "date": t + 300_000}]).status_code == 200
    assert ns.count("entries") == 2
    assert ns.post("/api/v1/entries", headers=AUTH, json=[
        {"type": "sgv", "sgv": 99, "date": t}]).status_code == 200
    assert ns.count("entries") == 3
    by_id = {d["_id"]: d for d in ns.get("/api/v1/entries.json?find[date][$gte]=0",
                                          headers=AUTH).json()}
    assert by_id[first]["sgv"] == 105 and by_id[first]["date"] == t + 300_000
    assert by_id[second]["sgv"] == 140 and by_id[second]["date"] == t + 600_000
    every_read_works(ns)


def test_socket_writes_get_the_checks_an_http_body_gets(ns):
    """Over socket.io a half emoji failed to store with no answer (AndroidAPS resends
    forever), and a field nested 70 deep was stored and then read back as {}: the reading
    vanished from every app."""
    t = now_ms() - 2 * 60_000
    ns.post("/api/v1/entries", headers=AUTH, json=[{"type": "sgv", "sgv": 120, "date": t}])
    oid = ns.get("/api/v1/entries/current.json", headers=AUTH).json()[0]["_id"]
    deep: object = 1
    for _ in range(70):
        deep = {"k": deep}

    async def run():
        rec, main, said = await authorized(ns, ns.admin_token)
        assert said["write"] is True
        half = await rec.call("dbAdd", {"collection": "treatments", "data": {
            "eventType": "Note", "notes": "half \ud83d", "created_at": iso(t)}}, main)
        assert isinstance(half, list) and half[0]["notes"] == "half \ufffd"
        said = await rec.call("dbAdd", {"collection": "entries", "data": {
            "type": "sgv", "sgv": 130, "date": t + 60_000, "x": deep}}, main)
        assert "nested deeper" in said["result"]
        said = await rec.call("dbUpdate", {"collection": "entries", "_id": oid,
                                           "data": {"x": deep}}, main)
        assert "nested deeper" in said["result"]
        await rec.close()

    asyncio.run(run())
    current = ns.get("/api/v1/entries/current.json", headers=AUTH).json()
    assert current[0]["_id"] == oid and current[0]["sgv"] == 120
    every_read_works(ns)


def test_a_nul_character_in_an_address_or_a_field_is_not_a_503(ns):
    """PostgreSQL's text holds no NUL: each of these failed the statement and answered 503
    with Retry-After, as if the database were down, so clients retried forever."""
    h = _bearer(ns)
    for path in ("/api/v1/entries.json?find[_id]=%00", "/api/v1/entries.json?find[type]=%00",
                 "/api/v1/treatments.json?find[eventType]=a%00", "/api/v1/entries/sgv%00.json",
                 "/api/v1/treatments/%00", "/api/v1/slice/entries/dateString/sgv%00/.*/.*"):
        r = ns.get(path, headers=AUTH)
        assert r.status_code < 500, (path, r.status_code, r.text[:200])
    assert ns.delete("/api/v1/treatments/%00", headers=AUTH).status_code < 500
    for path in ("/api/v3/entries/%00", "/api/v3/entries?identifier=%00"):
        r = ns.get(path, headers=h)
        assert r.status_code < 500, (path, r.status_code, r.text[:200])
    r = ns.put("/api/v3/treatments/%00", headers=h, json={
        "eventType": "Note", "date": now_ms(), "notes": "x"})
    assert r.status_code < 500, r.text[:200]
    if ns.kind != "edge":
        r = ns.client.get(f"{ns.root}/t/%00/api/v1/entries.json")
        assert r.status_code < 500, r.text[:200]
    every_read_works(ns)


def test_a_very_long_trio_id_is_stored_not_a_503(ns):
    """Trio's `id` goes into an indexed key; 3,000 characters overflowed PostgreSQL's index
    entry and the whole upload was lost. A repeat of the same one still deduplicates."""
    t = now_ms() - 5 * 60_000
    long_id = os.urandom(1500).hex()  # random: a repeated text compresses under the limit
    doc = {"eventType": "Note", "created_at": iso(t), "id": long_id, "notes": "x"}
    for _ in range(2):
        r = ns.post("/api/v1/treatments", headers=AUTH, json=[doc])
        assert r.status_code == 200, r.text[:200]
    assert ns.count("treatments") == 1
    every_read_works(ns)


def test_a_subjects_notes_are_text(ns):
    """An object as a v2 subject's notes was stored as Python's text of it ("{'x': 1}")."""
    h = _bearer(ns)
    r = ns.post("/api/v2/authorization/subjects", headers=h,
                json={"name": "odd", "roles": ["readable"], "notes": {"x": 1}})
    assert r.status_code == 400 and "notes must be text" in r.text
    r = ns.post("/api/v2/authorization/subjects", headers=h,
                json={"name": "fine", "roles": ["readable"], "notes": "the clock"})
    assert r.status_code == 200, r.text[:200]


@pytest.mark.parametrize("module, name, path, query", [
    ("api_v1", "parse_find", "/api/v1/entries.json", "find[dateString][$regex]=^20[0-9]{2}-"),
    ("api_v1", "parse_find", "/api/v1/treatments.json", "find[notes]=/x{2}/"),
    ("api_v3", "parse_v3", "/api/v3/entries", "dateString$re=^20[0-9]{2}-"),
])
def test_a_query_is_parsed_off_the_event_loop(ns, monkeypatch, module, name, path, query):
    """Compiling a query's patterns takes up to some tens of milliseconds within the budget:
    on the event loop that stalled every other request and socket of the server."""
    import importlib

    target = importlib.import_module(f"nightlink.nightscout.{module}")
    real, where = getattr(target, name), []

    def spy(*args, **kw):
        try:
            asyncio.get_running_loop()
            where.append("event loop")
        except RuntimeError:
            where.append("worker thread")
        return real(*args, **kw)

    monkeypatch.setattr(target, name, spy)
    headers = _bearer(ns) if path.startswith("/api/v3") else AUTH
    r = ns.get(f"{path}?{query}", headers=headers)
    assert r.status_code == 200, r.text[:200]
    assert where and set(where) == {"worker thread"}


@pytest.mark.parametrize("roles", [["readable", "careportal"], ["oref0rig"]])
def test_a_token_that_may_not_update_cannot_rewrite_a_stored_treatment(ns, roles):
    """A token that may read and add treatments, not update them, rewrote a past bolus by
    posting its `_id` with another dose (over HTTP and the socket's dbAdd), where API v3
    refuses it: apps read insulin on board from these. Its upload is answered with what is
    stored; one that may update still changes it."""
    t = now_ms() - 30 * 60_000
    [stored] = ns.post("/api/v1/treatments", headers=AUTH, json=[{
        "eventType": "Correction Bolus", "insulin": 2.5, "created_at": iso(t)}]).json()
    token = ns.token("follower", roles)
    forged = {**stored, "insulin": 25, "notes": "rewritten"}
    r = ns.post(f"/api/v1/treatments?token={token}", json=[forged])
    assert r.status_code == 200 and r.json()[0]["insulin"] == 2.5, r.text

    async def run():
        rec, main, said = await authorized(ns, token)
        assert said["write_treatment"] is False
        got = await rec.call("dbAdd", {"collection": "treatments", "data": forged}, main)
        assert got[0]["insulin"] == 2.5, got
        await rec.close()

    asyncio.run(run())
    [now] = ns.get(f"/api/v1/treatments.json?find[_id]={stored['_id']}", headers=AUTH).json()
    assert now["insulin"] == 2.5 and "notes" not in now
    new = ns.post(f"/api/v1/treatments?token={token}", json=[{
        "eventType": "Carb Correction", "carbs": 15, "created_at": iso(t + 60_000)}])
    assert new.status_code == 200 and new.json()[0]["carbs"] == 15  # adding still works
    ns.post("/api/v1/treatments", headers=AUTH, json=[{**stored, "insulin": 3.0}])
    [now] = ns.get(f"/api/v1/treatments.json?find[_id]={stored['_id']}", headers=AUTH).json()
    assert now["insulin"] == 3.0  # the API secret may update


def test_a_subjects_name_is_one_line(ns):
    """A subject's name reaches the sharing page, the CLI's lists and the token itself."""
    r = ns.post("/api/v2/authorization/subjects", headers=_bearer(ns),
                json={"name": "clock\nin the hall", "roles": ["readable"]})
    assert r.status_code == 400 and "without control characters" in r.text, r.text
    ok = ns.post("/api/v2/authorization/subjects", headers=_bearer(ns),
                 json={"name": "clock in the hall", "roles": ["readable"]})
    assert ok.status_code == 200, ok.text
