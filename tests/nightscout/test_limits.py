"""What one request may cost, on the cloud and the edge served by uvicorn: bodies over the cap
are refused while they arrive (a declared length before a byte is read, a chunked body the
moment it crosses the cap, a gzip bomb without inflating it whole), JSON too deep, too long
or with numbers of too many digits is a 400 with one sentence, and writes of one site are
paced by a token bucket (a short queue, then 429 with Retry-After) while reads are not."""

import asyncio
import gzip
import json
import socket
import threading
import time
import tracemalloc
from dataclasses import replace
from urllib.parse import urlsplit

import httpx
import pytest
import socketio

from nightlink.edge.store import SITE
from nightlink.nightscout import jsonsafe
from nightlink.nightscout.limits import Limits, UploadLimit
from nightlink.sql import DatabaseError
from tests.support.nightscout import SECRET_SHA1, now_ms
from tests.support.sockets import Recorder, namespace

AUTH = {"api-secret": SECRET_SHA1, "Content-Type": "application/json"}
CAP = jsonsafe.MAX_BODY_BYTES


def _raw(url: str, method: str, headers: dict, body_chunks=(), timeout: float = 10.0) -> bytes:
    """Send a request's head (and body chunks) on a plain socket; the server's whole answer.
    Chunks the server no longer reads (it answered and closed) are not an error."""
    parts = urlsplit(url)
    lines = [f"{method} {parts.path} HTTP/1.1", f"Host: {parts.hostname}:{parts.port}",
             *(f"{k}: {v}" for k, v in headers.items())]
    head = "\r\n".join(lines) + "\r\n\r\n"
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(head.encode("latin-1"))
        try:
            for chunk in body_chunks:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = b""
        while b"\r\n\r\n" not in answer or not _complete(answer):
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            answer += data
        return answer


def _complete(answer: bytes) -> bool:
    head, _, body = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def _status_and_json(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


# -- body size --------------------------------------------------------------------------------


def test_a_declared_length_over_the_cap__refused_before_the_body_is_sent(ns):
    """No body follows the head: a server that waited for it would time out the test."""
    answer = _raw(ns.site_url + "/api/v1/treatments", "POST",
                  {"api-secret": SECRET_SHA1, "Content-Type": "application/json",
                   "Content-Length": str(100 * 1024 * 1024)})
    status, body = _status_and_json(answer)
    assert status == 413
    assert body["description"] == f"The body is larger than {CAP} bytes."


def test_a_chunked_body__refused_once_it_crosses_the_cap(ns):
    """The body never ends (no last chunk) and nothing is sent after the chunk that crosses
    the cap: the answer must come then."""
    piece = b"[" + b" " * (256 * 1024 - 1)
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    chunks = [chunk] * (CAP // len(piece) + 1)
    answer = _raw(ns.site_url + "/api/v1/entries", "POST",
                  {"api-secret": SECRET_SHA1, "Content-Type": "application/json",
                   "Transfer-Encoding": "chunked"}, chunks)
    status, body = _status_and_json(answer)
    assert status == 413 and "larger than" in body["description"]
    assert ns.get("/api/v1/entries.json", headers=AUTH).status_code == 200


def test_the_nightlink_api__has_a_smaller_cap(cloud_ns):
    answer = _raw(cloud_ns.root + "/api/nl/v1/auth/login", "POST",
                  {"Content-Type": "application/json", "Content-Length": str(2 * 1024 * 1024)})
    status, body = _status_and_json(answer)
    assert status == 413 and body == {"detail": "The body is larger than 1048576 bytes."}


def test_a_gzip_bomb__refused_without_being_inflated_whole(ns):
    bomb = gzip.compress(b"0" * (10 * 1024 * 1024), 9)
    assert len(bomb) < 20_000
    r = ns.post("/api/v1/entries", content=bomb, headers={**AUTH, "Content-Encoding": "gzip"})
    assert r.status_code == 413
    assert r.json()["description"] == f"The body is larger than {CAP} bytes once decompressed."
    batch = [{"type": "sgv", "sgv": 100 + i % 50, "date": now_ms() - i * 300_000}
             for i in range(288)]
    r = ns.post("/api/v1/entries", content=gzip.compress(json.dumps(batch).encode()),
                headers={**AUTH, "Content-Encoding": "gzip"})
    assert r.status_code == 200 and len(r.json()) == 288


def test_decompress__holds_at_most_the_cap_in_memory():
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024), 9)
    tracemalloc.start()
    try:
        with pytest.raises(jsonsafe.BodyError) as refused:
            jsonsafe.decompress(bomb, "gzip", 1024 * 1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert refused.value.status == 413
    assert peak < 3 * 1024 * 1024, peak
    with pytest.raises(jsonsafe.BodyError, match="cut short"):
        jsonsafe.decompress(gzip.compress(b"[1, 2, 3]")[:-12], "gzip")


# -- JSON shape -------------------------------------------------------------------------------


@pytest.mark.parametrize("value, sentence", [
    ("9" * 5000, "more than 40 digits"),
    ("9" * 400, "more than 40 digits"),
    ("-" + "9" * 41, "more than 40 digits"),
    ("0." + "1" * 400, "more than 40 digits"),
    ("1" + "0" * 400 + "e-400", "more than 40 digits"),
    ("[" * 50_000 + "]" * 50_000, "nested deeper than 32 levels"),
    ("[" * 31 + "]" * 31, "nested deeper than 32 levels"),  # 33 with the array and object
    ("[" + ",".join(["1"] * 20_001) + "]", "at most 20000 values, not 20001"),
])
def test_json_beyond_the_limits__400_with_one_sentence(ns, value, sentence):
    t = now_ms()
    for path, body in (("/api/v1/entries", f'[{{"type":"sgv","sgv":100,"date":{t},"x":{value}}}]'),
                       ("/api/v1/treatments", f'[{{"eventType":"Note","x":{value}}}]'),
                       ("/api/v2/treatments", f'[{{"eventType":"Note","x":{value}}}]'),
                       ("/api/v1/devicestatus", f'[{{"device":"x","x":{value}}}]')):
        r = ns.post(path, content=body, headers=AUTH)
        assert r.status_code == 400, (path, r.text[:200])
        description = r.json()["description"]
        assert sentence in description and description.endswith("."), description
        assert ". " not in description, description
    jwt = ns.client.get(f"{ns.root}/api/v2/authorization/request/{ns.admin_token}").json()
    r = ns.post("/api/v3/treatments",
                content=f'{{"date":{t},"app":"AAPS","eventType":"Note","x":[{value}]}}',
                headers={"Authorization": f"Bearer {jwt['token']}",
                         "Content-Type": "application/json"})
    assert r.status_code == 400
    assert ns.count("treatments") == ns.count("entries") == 0


def test_json_at_the_limits__accepted(ns):
    t = now_ms()
    nested = "[" * 30 + "1" + "]" * 30  # 32 levels with the array and the object around it
    body = (f'[{{"eventType":"Note","created_at":{t},"insulin":{"1" * 40},'
            f'"carbs":0.{"5" * 39},"x":{nested}}}]')
    r = ns.post("/api/v1/treatments", content=body, headers=AUTH)
    assert r.status_code == 200, r.text[:300]
    stored = ns.get("/api/v1/treatments.json", headers=AUTH).json()[0]
    assert stored["insulin"] == float("1" * 40) and stored["carbs"] == 0.5555555555555556
    longest = "[" + ",".join(["7"] * jsonsafe.MAX_ARRAY_ITEMS) + "]"
    assert jsonsafe.loads(f'{{"x":{longest}}}')["x"] == [7] * jsonsafe.MAX_ARRAY_ITEMS


# -- upload rate -------------------------------------------------------------------------------


def test_upload_limit__burst_then_a_short_queue_then_refusal():
    limit = UploadLimit(rate_per_min=60, burst=3, queue_s=2)
    assert [limit.reserve("a", now=100.0) for _ in range(3)] == [0, 0, 0]
    assert limit.reserve("a", now=100.0) == pytest.approx(1.0)
    assert limit.reserve("a", now=100.0) == pytest.approx(2.0)
    assert limit.reserve("a", now=100.0) is None  # a third second in the queue: refused
    assert limit.retry_after("a", now=100.0) == 3
    assert limit.reserve("b", now=100.0) == 0  # sites have their own buckets
    assert limit.reserve("a", now=103.0) == 0  # refilled one a second
    assert limit.reserve("a", now=1000.0) == 0 and limit.retry_after("a", now=1000.0) == 1


def test_default_limits__an_aaps_day_offline_is_paced_never_refused():
    """AndroidAPS's NSClient v3 sends one document per request, the next when the previous
    is answered, and counts a 4xx to a create as done: after a day offline (about 1,440
    writes: sensor glucose, devicestatus, temp basals, SMBs) none may be refused."""
    defaults = Limits()
    limit = UploadLimit.of(defaults)
    now, waited, refused = 0.0, 0.0, 0
    for _ in range(1440):
        wait = limit.reserve("aaps", now=now)
        if wait is None:
            refused += 1
            continue
        waited += wait
        now += wait + 0.05  # 50 ms to store and answer
    assert refused == 0
    assert defaults.upload_burst <= 1440 and 12 * 60 < now < 16 * 60  # about 14 minutes


@pytest.fixture(autouse=True)
def _uploads_restored(request):
    """A test that sets a site's upload limit gives the site back as it found it (the
    conformance sites run without one: they replay apps' requests back to back)."""
    if "ns" not in request.fixturenames and "cloud_ns" not in request.fixturenames:
        yield
        return
    site = request.getfixturevalue("cloud_ns" if "cloud_ns" in request.fixturenames else "ns")
    before = site.app.state.nightscout.uploads
    yield
    site.app.state.nightscout.uploads = before


@pytest.fixture
def limited(ns):
    """The site with 3 writes at once, one every 10 seconds after that, and no queue (slow
    enough that a loaded machine's slow writes never refill a turn within a test)."""
    ns.app.state.nightscout.uploads = UploadLimit(rate_per_min=6, burst=3, queue_s=0)
    return ns


def _note(ns, i: int, headers: dict = AUTH) -> httpx.Response:
    # A minute apart: `now_ms() - i` gave two notes the same created_at when the clock moved
    # on by a millisecond between them, and Nightscout's dedup (created_at, eventType) kept one.
    return ns.post("/api/v1/treatments", headers=headers,
                   json=[{"eventType": "Note", "notes": str(i),
                          "created_at": _NOTES_AT - i * 60_000}])


_NOTES_AT = now_ms() - 3_600_000


def test_writes_past_the_burst__429_with_retry_after_and_reads_go_on(limited):
    ns = limited
    assert [_note(ns, i).status_code for i in range(3)] == [200, 200, 200]
    r = _note(ns, 3)
    assert r.status_code == 429
    assert 1 <= int(r.headers["retry-after"]) <= 10
    assert r.json()["message"] == "Too Many Requests"
    assert r.json()["description"] == (f"This site uploads faster than 6 writes a minute; "
                                       f"try again in {r.headers['retry-after']} s.")
    for _ in range(20):
        assert ns.get("/api/v1/treatments.json", headers=AUTH).status_code == 200
    assert ns.count("treatments") == 3


def test_a_bridge_re_sending_what_is_stored__takes_no_turn(limited):
    """Home-Assistant-Carelink re-sends the last day every minute, one document per POST; its
    new reading must not queue behind hundreds of duplicates (Nightscout has no limit)."""
    ns = limited
    assert _note(ns, 0).status_code == 200  # one turn: 2 left
    for _ in range(20):
        r = _note(ns, 0)  # the same note again: stored once, the turn given back
        assert r.status_code == 200 and r.headers["X-Nightlink-Stored"] == "0", r.headers
    assert [_note(ns, i).status_code for i in range(1, 4)] == [200, 200, 429]
    assert ns.count("treatments") == 3


def test_writes_storing_nothing_because_refused__still_take_their_turn(limited):
    """Neither refused documents (each a dead letter) beside a duplicate, nor a big batch of
    duplicates (its deduplication is work) get the turn back."""
    ns = limited
    assert _note(ns, 0).status_code == 200
    bad = [{"eventType": {"no": "text"}}] * 50
    r = ns.post("/api/v1/treatments", headers=AUTH, json=[*bad, {
        "eventType": "Note", "notes": "0", "created_at": _NOTES_AT}])
    assert (r.headers.get("X-Nightlink-Stored"), r.headers.get("X-Nightlink-Rejected"),
            r.headers.get("X-Nightlink-Duplicates")) == ("0", "50", "1"), r.headers
    r = ns.post("/api/v1/entries", headers=AUTH, json=[{"type": "sgv", "sgv": "high"}])
    assert r.headers.get("X-Nightlink-Stored") == "0", (r.status_code, r.headers)
    assert _note(ns, 1).status_code == 429


def test_a_big_batch_of_duplicates__keeps_its_turn(ns):
    ns.app.state.nightscout.uploads = UploadLimit(rate_per_min=6, burst=2, queue_s=0)
    batch = [{"eventType": "Note", "notes": str(i), "created_at": _NOTES_AT - i * 60_000}
             for i in range(11)]
    assert ns.post("/api/v1/treatments", headers=AUTH, json=batch).status_code == 200
    again = ns.post("/api/v1/treatments", headers=AUTH, json=batch)
    assert again.headers["X-Nightlink-Duplicates"] == "11"
    assert _note(ns, 20).status_code == 429


def test_a_read_only_token__takes_no_turn(limited):
    ns = limited
    for i in range(10):
        r = ns.post(f"/api/v1/treatments?token={ns.read_token}",
                    json=[{"eventType": "Note", "notes": str(i)}])
        assert r.status_code == 401
    assert [_note(ns, i).status_code for i in range(3)] == [200, 200, 200]


def test_a_tenant_past_its_limit__does_not_slow_another(cloud_ns):
    ns = cloud_ns
    ns.app.state.nightscout.uploads = UploadLimit(rate_per_min=6, burst=2, queue_s=0)
    assert [_note(ns, i).status_code for i in range(3)] == [200, 200, 429]
    other = {"api-secret": ns.other_sha1, "Content-Type": "application/json"}
    r = ns.post(f"{ns.root}/t/fam-2/api/v1/treatments", headers=other,
                json=[{"eventType": "Note", "notes": "other"}])
    assert r.status_code == 200


def test_a_sequential_uploader_past_the_burst__waits_its_turn(ns):
    ns.app.state.nightscout.uploads = UploadLimit(rate_per_min=240, burst=1, queue_s=2)
    started = time.monotonic()
    assert [_note(ns, i).status_code for i in range(3)] == [200, 200, 200]
    assert time.monotonic() - started >= 0.45  # two turns of 0.25 s


def test_a_concurrent_flood__queued_up_to_the_limit_then_refused(ns):
    """Default rate, a 3 s queue, the burst already used: of 30 writes at once about 3 wait
    their turn (a second apart) and the rest are refused at once."""
    uploads = UploadLimit.of(replace(Limits(), upload_queue_s=3.0))  # the default rate
    ns.app.state.nightscout.uploads = uploads
    key = "fam-1" if ns.kind == "cloud" else SITE
    while uploads.reserve(key) == 0:
        pass
    statuses = []
    lock = threading.Lock()

    def write(i):
        r = _note(ns, i)
        with lock:
            statuses.append(r.status_code)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(statuses) == 30 and set(statuses) <= {200, 429}, statuses
    assert 1 <= statuses.count(200) <= 3 and statuses.count(429) >= 27


def test_failed_credentials__a_read_token_does_not_reset_the_count(ns):
    """Past 30 wrong credentials a minute an address gets 429; signing in right with a read
    token between guesses does not clear the count (only the API secret does)."""
    wrong = {"api-secret": "0" * 40}
    assert {ns.get("/api/v1/entries.json", headers=wrong).status_code for _ in range(29)} == {401}
    assert ns.get(f"/api/v1/entries.json?token={ns.read_token}").status_code == 200
    assert ns.get("/api/v1/entries.json", headers=wrong).status_code == 401
    r = ns.get("/api/v1/entries.json", headers=wrong)
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    ns.app.state.nightscout.failures.succeeded("127.0.0.1")  # as the secret would
    assert ns.get("/api/v1/entries.json", headers=AUTH).status_code == 200


def test_failed_credentials__the_jwt_exchange_is_limited_too(ns):
    """Exchanging access tokens for JWTs is guessing too: past 30 wrong tokens a minute the
    exchange answers 429, even for a right token, until the API secret clears the count."""
    exchange = f"{ns.root}/api/v2/authorization/request/"
    assert {ns.client.get(f"{exchange}nightlink-{i:012d}").status_code
            for i in range(30)} == {401}
    r = ns.client.get(exchange + ns.admin_token)
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    ns.app.state.nightscout.failures.succeeded("127.0.0.1")
    assert ns.client.get(exchange + ns.admin_token).status_code == 200


def test_failed_credentials__parallel_socket_guesses_are_counted_before_they_are_looked_at(
        ns, monkeypatch):
    """40 sockets send a wrong secret at once, each lookup taking a while: only the 30 the
    limit allows are looked up; the rest are refused before any lookup (counting after the
    lookup let every one of them through the check)."""
    directory = ns.app.state.nightscout.directory
    looked = []
    lookup = directory.credential

    def slow_lookup(presented, key=None):
        looked.append(presented)
        time.sleep(0.2)  # a slow database: every guess is in flight at once
        return lookup(presented, key)

    monkeypatch.setattr(directory, "credential", slow_lookup)

    async def guess(rec, i):
        try:  # a refused socket is disconnected without an answer
            return await rec.call("authorize", {"secret": f"{i:040x}"}, main, timeout=3)
        except socketio.exceptions.SocketIOError:
            return None

    async def run():
        recs = [Recorder() for _ in range(40)]
        await asyncio.gather(*(rec.connect(ns.root, [main], transports=["websocket"])
                               for rec in recs))
        acks = await asyncio.gather(*(guess(rec, i) for i, rec in enumerate(recs)))
        await asyncio.gather(*(rec.close() for rec in recs))
        return acks

    main = namespace(ns, "")
    acks = asyncio.run(run())
    assert not any(ack and ack.get("read") for ack in acks), acks
    assert len(looked) == 30


def _slow_credentials(ns, monkeypatch) -> list:
    """Every credential lookup takes 0.2 s (a slow database) and none is cached: the
    presented credentials looked up, in order."""
    state = ns.app.state.nightscout
    looked = []
    lookup = state.directory.credential

    def slow_lookup(presented, key=None):
        looked.append(presented)
        time.sleep(0.2)
        return lookup(presented, key)

    monkeypatch.setattr(state.directory, "credential", slow_lookup)
    monkeypatch.setattr(state, "_grants", _NoCache())
    return looked


class _NoCache(dict):
    def __setitem__(self, key, value):
        pass


def _at_once(n: int, fn) -> list:
    """fn(i) for i in range(n), all at once from threads; their results in order."""
    out = [None] * n

    def run(i):
        out[i] = fn(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def test_failed_credentials__parallel_polls_with_a_right_credential_are_never_counted(
        ns, monkeypatch):
    """40 polls at once from one address (a family behind one router, or every client seen
    through a proxy) with the right secret while each lookup takes 0.2 s: all answered. With
    the lookups in worker threads, counting each one until it was found right answered 429
    to those past the 30th."""
    looked = _slow_credentials(ns, monkeypatch)
    statuses = _at_once(40, lambda i: httpx.get(
        f"{ns.site_url}/api/v1/entries.json?count={i + 1}", headers=AUTH, timeout=60).status_code)
    assert statuses == [200] * 40
    assert len(looked) >= 40


def test_failed_credentials__parallel_http_guesses_are_counted_before_they_are_looked_at(
        ns, monkeypatch):
    """40 wrong secrets at once from one address, each lookup taking 0.2 s: the 30 the
    limit allows are looked up and refused, the rest get 429 without a lookup."""
    looked = _slow_credentials(ns, monkeypatch)
    statuses = _at_once(40, lambda i: httpx.get(
        f"{ns.site_url}/api/v1/entries.json", headers={"api-secret": f"{i:040x}"},
        timeout=60).status_code)
    assert sorted(statuses) == [401] * 30 + [429] * 10
    assert len(looked) == 30


def test_failure_limit__right_credentials_leave_nothing_behind_and_blocks_outlive_crowds():
    """A right credential takes its count back and leaves no entry; 10,001 addresses signing
    in right do not lift the block of an address past the limit."""
    from nightlink.nightscout.auth import FailureLimit

    limit = FailureLimit()
    for _ in range(30):
        limit.attempt("attacker")
    assert limit.blocked("attacker") > 0
    for i in range(10_001):
        _wait, stamp = limit.attempt(f"phone-{i}")
        limit.forgive(f"phone-{i}", stamp)
    assert limit.blocked("attacker") > 0 and len(limit._seen) == 1


def test_failed_credentials__a_lookup_that_fails_is_not_counted(ns, monkeypatch):
    """The database away while the household's apps poll: those requests fail, but none
    counts as a wrong credential, so the apps are not locked out once it is back."""
    state = ns.app.state.nightscout

    def away(*_args, **_kwargs):
        raise DatabaseError("could not connect to the database server")

    monkeypatch.setattr(state, "cached_credential", away)
    assert {ns.get("/api/v1/entries.json", headers=AUTH).status_code for _ in range(35)} == {503}
    monkeypatch.undo()
    assert ns.get("/api/v1/entries.json", headers=AUTH).status_code == 200
    assert "127.0.0.1" not in state.failures._seen


def test_failed_credentials__a_wrong_secret_beside_a_right_token_counts(ns):
    """A read token (every clock holds one) must not carry guesses at the API secret: a
    request with a wrong secret and the right token is answered, and still counted."""
    for i in range(30):
        r = ns.get(f"/api/v1/entries.json?token={ns.read_token}",
                   headers={"api-secret": f"{i:040x}"})
        assert r.status_code == 200
    assert ns.get("/api/v1/entries.json", headers={"api-secret": "f" + "0123456789abcdef" * 3}).status_code == 429


def test_failed_credentials__a_wrong_token_on_a_public_site_counts_once(cloud_ns):
    """A `?token=` nobody has, on a site everyone may read, is served with what anyone may do
    and counted as one guess per request: properties (two permission checks) and a poll the
    reply cache answers after a change do not count it twice, so 30 such polls a minute pass
    and the 31st is refused."""
    store = cloud_ns.app.state.store
    store.create_tenant("fam-pub", "Public", public_read=True)
    site = f"{cloud_ns.root}/t/fam-pub"
    for i in range(30):
        r = cloud_ns.client.get(f"{site}/api/v2/properties/bgnow,iob?token=wrong-{i % 3}")
        assert r.status_code == 200, (i, r.status_code, r.text)
    r = cloud_ns.client.get(f"{site}/api/v2/properties/bgnow,iob?token=wrong-0")
    assert r.status_code == 429, r.text


def test_failed_credentials__a_wrong_secret_on_a_remembered_reply_counts_once(ns):
    """A poll whose reply the cache remembers is checked by the cache, then (refused there)
    by the route: a wrong secret on it is one guess, not two, so 30 pass and the 31st is
    refused."""
    url = "/api/v1/entries.json?count=1"
    assert ns.get(url, headers=AUTH).status_code == 200
    assert ns.get(url, headers=AUTH).status_code == 200  # answered from the cache
    wrong = {"api-secret": "0" * 40}
    assert [ns.get(url, headers=wrong).status_code for _ in range(30)] == [401] * 30
    assert ns.get(url, headers=wrong).status_code == 429
