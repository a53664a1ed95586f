"""Web Push (cloud/push.py): the message encryption against RFC 8291's own example and an
independent implementation (http_ece, which decrypts what we send), the VAPID signature
against PyJWT, and deliveries to a real HTTP push service on a loopback port that decrypts
each message as a browser would: accepted, gone, refused, busy, unreachable. Then the app's
routes that subscribe a browser, and the alert worker pushing an alert it raises."""

import asyncio
import base64
import contextlib
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import http_ece
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from nightlink.cloud import alerts, push
from nightlink.cloud.config import SettingsError, load_settings
from nightlink.nightscout.hub import Hub

from .conftest import PASSWORD, make_cloud

B64 = push._b64


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Browser:
    """A browser's side of a subscription: its key pair and auth secret."""

    def __init__(self):
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.auth = B64(b"0123456789abcdef")
        self.p256dh = B64(self.key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint))

    def read(self, body: bytes) -> dict:
        return json.loads(http_ece.decrypt(body, private_key=self.key,
                                           auth_secret=_unb64(self.auth), version="aes128gcm"))


def test_encrypt__rfc_8291_example():
    """RFC 8291 section 5: the same keys and salt give the RFC's message byte for byte."""
    sender = ec.derive_private_key(int.from_bytes(
        _unb64("yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw"), "big"), ec.SECP256R1())
    body = push.encrypt(
        b"When I grow up, I want to be a watermelon",
        "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
        "BTBZMqHH6r4Tts7J_aSIgg", salt=_unb64("DGv6ra1nlYgDCS1FRnbzlw"), sender=sender)
    assert B64(body) == (
        "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLoc"
        "InmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLV"
        "WGNWQexSgSxsj_Qulcy4a-fN")


def test_encrypt__read_by_an_independent_implementation():
    browser = Browser()
    alert = {"id": 7, "level": "urgent", "message": "Urgent low: 48 mg/dL (below 54).",
             "at_ms": 1_768_500_000_000}
    body = push.encrypt(push.message("fam-1", "Ann Example", alert), browser.p256dh,
                        browser.auth)
    assert browser.read(body) == {
        "title": "Urgent · Ann Example", "body": "Urgent low: 48 mg/dL (below 54).",
        "tag": "nightlink-fam-1-7", "urgent": True, "url": "/app/fam-1",
        "at_ms": 1_768_500_000_000}
    assert push.encrypt(b"x", browser.p256dh, browser.auth) != push.encrypt(
        b"x", browser.p256dh, browser.auth)  # a fresh key and salt each time
    with pytest.raises(ValueError, match="at most"):
        push.encrypt(b"x" * (push.MAX_PAYLOAD + 1), browser.p256dh, browser.auth)


def test_vapid__signed_for_the_endpoint_s_origin():
    key = push.load_key(push.new_key())
    header = push.vapid("https://fcm.googleapis.com/fcm/send/abc:def", key,
                        "mailto:ops@example.org", now=1_000_000)
    assert header.startswith("vapid t=")
    token, k = header[len("vapid t="):].split(", k=")
    assert k == push.public_key(key)
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), _unb64(k))
    claims = jwt.decode(token, public, algorithms=["ES256"],
                        audience="https://fcm.googleapis.com", options={"verify_exp": False})
    assert claims == {"aud": "https://fcm.googleapis.com", "exp": 1_000_000 + 12 * 3600,
                      "sub": "mailto:ops@example.org"}


def test_keys__bad_ones_named(monkeypatch, tmp_path):
    assert len(_unb64(push.new_key())) == 32
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()
    assert push.public_key(push.load_key(pem)).startswith("B")
    for bad, why in (("abc", "not the 32"), ("!!!!", "not"), (B64(b"\0" * 32), "not a P-256")):
        with pytest.raises(push.PushKeyError, match=why):
            push.load_key(bad)
    monkeypatch.setenv("NIGHTLINK_ENV", "development")
    monkeypatch.setenv("NIGHTLINK_PUSH_KEY", "not-a-key")
    with pytest.raises(SettingsError, match="NIGHTLINK_PUSH_KEY"):
        load_settings(env_file=str(tmp_path / "none.env"))
    monkeypatch.setenv("NIGHTLINK_PUSH_KEY", "")
    monkeypatch.setenv("NIGHTLINK_PUSH_SUBJECT", "ops@example.org")
    with pytest.raises(SettingsError, match="NIGHTLINK_PUSH_SUBJECT"):
        load_settings(env_file=str(tmp_path / "none.env"))
    monkeypatch.delenv("NIGHTLINK_PUSH_SUBJECT")
    monkeypatch.setenv("NIGHTLINK_MAIL_FROM", "Nightlink <alerts@example.org>")
    assert load_settings(env_file=str(tmp_path / "none.env")).push_contact() == "mailto:alerts@example.org"


def test_check_subscription__says_what_is_wrong():
    b = Browser()
    ok = "https://fcm.googleapis.com/fcm/send/abc:def"

    def check(endpoint=ok, p256dh=b.p256dh, auth=b.auth, https_only=True,
              hosts=push.PUSH_HOSTS):
        return push.check_subscription(endpoint, p256dh, auth, https_only=https_only,
                                       hosts=hosts)

    assert check() == ""
    assert "https" in check("http://127.0.0.1/x", hosts=("127.0.0.1",))
    assert check("http://127.0.0.1/x", https_only=False, hosts=("127.0.0.1",)) == ""
    assert "not 127.0.0.1" in check("https://127.0.0.1/x")
    assert "https" in check("file:///etc/passwd", https_only=False)
    assert "https" in check("https://[::1/x")
    assert "https" in check("https://fcm.googleapis.com:abc/x")
    assert "https" in check("https://fcm.googleapis.com/a\nb")
    assert "p256dh" in check(p256dh=B64(b"\4" + b"\1" * 64))
    assert "p256dh" in check(p256dh=None)
    assert "auth" in check(auth=B64(b"short"))
    assert "auth" in check(auth=5)
    assert "endpoint" in check(ok + "x" * 3000)


# -- a push service on a loopback port ------------------------------------------------------------


class PushService:
    """A push service on a port the OS picks: answers a POST to each path with the next status
    planned for that path (201 once the plan is used up), and keeps what it received."""

    def __init__(self):
        self.plans: dict[str, list[tuple[int, dict]]] = {}
        self.received: list[tuple[str, dict, bytes]] = []
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                service.received.append((self.path, dict(self.headers), body))
                plan = service.plans.get(self.path)
                status, headers = plan.pop(0) if plan else (201, {})
                headers = dict(headers)
                body, trickle = headers.pop("body", b""), headers.pop("trickle", 0)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body) + trickle))
                self.end_headers()
                with contextlib.suppress(OSError):
                    self.wfile.write(body)
                    for _ in range(trickle):  # a byte every 0.2 s: never done in time
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        time.sleep(0.2)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def service():
    s = PushService()
    yield s
    s.close()


@pytest.fixture
def family(cloud):
    people = {}
    for email, role in (("pat@x.org", "patient"), ("care@x.org", "caregiver"),
                        ("doc@x.org", "doctor")):
        people[role] = cloud.user(email, tenant="fam-1", role=role)
    return people


def _push(sender, tenant, alerts_):
    async def run():
        sender.alerts(tenant, alerts_)
        while sender.tasks:
            await asyncio.gather(*list(sender.tasks), return_exceptions=True)
        await sender.close()

    asyncio.run(run())


def _sender(store, **kw):
    return push.PushSender(store, push.load_key(push.new_key()), "mailto:ops@example.org",
                           hosts=("127.0.0.1",), first_wait_s=0.05, **kw)


def _subs(store) -> dict:
    return {s["endpoint"].rsplit("/", 1)[1]: s for s in store.push_subscriptions("fam-1")}


ALERT = {"id": 41, "level": "urgent", "message": "Urgent low: 48 mg/dL (below 54).",
         "at_ms": 1_768_500_000_000, "rule": "urgent_low"}


def test_sender__delivers_to_each_member_s_browser_not_a_doctor_s(cloud, family, service):
    store = cloud.store
    browsers = {}
    for role in ("patient", "caregiver", "doctor"):
        browsers[role] = Browser()
        store.add_push("fam-1", family[role]["id"], f"{service.url}/{role}",
                       browsers[role].p256dh, browsers[role].auth)
    sender = _sender(store)
    _push(sender, "fam-1", [ALERT])
    got = {path: (headers, body) for path, headers, body in service.received}
    assert sorted(got) == ["/caregiver", "/patient"]
    for role in ("patient", "caregiver"):
        headers, body = got[f"/{role}"]
        assert browsers[role].read(body) == {
            "title": "Urgent · Family one", "body": ALERT["message"],
            "tag": "nightlink-fam-1-41", "urgent": True, "url": "/app/fam-1",
            "at_ms": ALERT["at_ms"], "ack": "/app/api/fam-1/alerts/41/ack"}
        assert (headers["Content-Encoding"], headers["TTL"], headers["Urgency"],
                headers["Topic"]) == ("aes128gcm", "1800", "high", "alert41")
        token, k = headers["Authorization"][len("vapid t="):].split(", k=")
        assert k == push.public_key(sender.key)
        assert jwt.decode(token, sender.key.public_key(), algorithms=["ES256"],
                          audience=service.url)["sub"] == "mailto:ops@example.org"
    subs = _subs(store)
    assert subs["patient"]["ok_at"] is not None and subs["patient"]["error"] == ""
    assert subs["doctor"]["ok_at"] is None
    assert (sender.sent, sender.failed) == (2, 0)


def test_sender__gone_forgotten_busy_retried_refused_and_down_said(cloud, family, service):
    store = cloud.store
    for name in ("gone", "busy", "refused", "down"):
        b = Browser()
        store.add_push("fam-1", family["patient"]["id"], f"{service.url}/{name}", b.p256dh,
                       b.auth)
    # a port bound but not listening: connection refused, and no other test can take it
    # while this socket holds it
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    store.db.execute("UPDATE push_subscriptions SET endpoint = ? WHERE endpoint LIKE ?",
                     (f"http://127.0.0.1:{closed.getsockname()[1]}/down", "%/down"))
    service.plans = {"/gone": [(410, {})], "/busy": [(503, {"Retry-After": "0"}), (429, {})],
                     "/refused": [(403, {})]}
    before = {r: _pushes(r) for r in ("delivered", "gone", "failed")}
    try:
        started = time.monotonic()
        _push(_sender(store, tries=3), "fam-1", [ALERT])
    finally:
        closed.close()
    assert time.monotonic() - started < 10
    paths = [p for p, _h, _b in service.received]
    assert paths.count("/gone") == 1 and paths.count("/refused") == 1  # neither tried again
    assert paths.count("/busy") == 3  # 503 (Retry-After 0), 429 (back-off), then accepted
    subs = _subs(store)
    assert "gone" not in subs  # the push service no longer knows it: forgotten
    assert subs["busy"]["ok_at"] is not None and subs["busy"]["error"] == ""
    assert subs["refused"]["error"] == "the push service refused it (HTTP 403)"
    assert subs["down"]["error"] == "the push service is unreachable (ConnectError)"
    assert subs["down"]["ok_at"] is None and subs["down"]["error_at"] is not None
    # the operator's view (/metrics)
    assert {r: _pushes(r) - n for r, n in before.items()} == {"delivered": 1, "gone": 1,
                                                              "failed": 2}


def _pushes(result: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("nightlink_push_deliveries_total",
                                     {"result": result}) or 0.0


def test_sender__the_retry_waits_with_jitter_and_says_so(cloud, family, service):
    store = cloud.store
    b = Browser()
    store.add_push("fam-1", family["patient"]["id"], f"{service.url}/busy", b.p256dh, b.auth)
    service.plans = {"/busy": [(503, {})] * 10}
    sender = _sender(store, tries=2)
    sender.first_wait_s = 0.4
    started = time.monotonic()
    _push(sender, "fam-1", [ALERT])
    waited = time.monotonic() - started
    assert 0.2 <= waited < 5  # 0.4 s x 0.5-1.5
    assert [p for p, _h, _b in service.received] == ["/busy", "/busy"]
    assert _subs(store)["busy"]["error"] == "the push service refused it (HTTP 503)"
    assert sender.failed == 1


def test_subscriptions__a_revoked_member_s_go_and_ten_a_person(cloud, family, service):
    store = cloud.store
    b = Browser()
    store.add_push("fam-1", family["caregiver"]["id"], f"{service.url}/care", b.p256dh, b.auth)
    store.revoke("fam-1", family["caregiver"]["id"])
    assert store.push_subscriptions("fam-1") == []
    for k in range(10):
        store.add_push("fam-1", family["patient"]["id"], f"{service.url}/{k}", b.p256dh, b.auth)
    store.add_push("fam-1", family["patient"]["id"], f"{service.url}/newest", b.p256dh, b.auth)
    kept = list(_subs(store))
    assert len(kept) == 10 and "newest" in kept and "0" not in kept  # the oldest went


def test_worker__pushes_the_alert_it_raises(cloud, family, service):
    """The alert worker's check raises an urgent low from the readings and pushes it."""
    store = cloud.store
    b = Browser()
    store.add_push("fam-1", family["patient"]["id"], f"{service.url}/pat", b.p256dh, b.auth)
    now = int(time.time() * 1000)
    store.tenant("fam-1").add_entries([{"type": "sgv", "date": now - (2 - k) * 300_000,
                                        "sgv": v, "direction": "Flat"}
                                       for k, v in enumerate((120, 80, 48))])
    sender = _sender(store)
    worker = alerts.AlertWorker(store, Hub(), pusher=sender)

    async def run():
        await worker._check(["fam-1"])
        while sender.tasks:
            await asyncio.gather(*list(sender.tasks), return_exceptions=True)
        await sender.close()

    asyncio.run(run())
    [raised] = store.tenant("fam-1").alerts()
    [(_path, _headers, body)] = service.received
    shown = b.read(body)
    assert (shown["title"], shown["tag"]) == ("Urgent · Family one",
                                              f"nightlink-fam-1-{raised['id']}")
    assert shown["body"] == raised["message"] and raised["rule"] == "urgent_low"


# -- the app's routes ----------------------------------------------------------------------------

SAME = {"Origin": "http://testserver"}


def _sign_in(c, email):
    c.client.cookies.clear()
    r = c.client.post("/portal/login", data={"email": email, "password": PASSWORD},
                      follow_redirects=False)
    assert r.status_code == 303, r.text


def test_routes__subscribe_once_the_operator_set_a_key(tmp_path):
    b = Browser()
    sub = {"endpoint": "https://push.example/send/1", "keys": {"p256dh": b.p256dh,
                                                                "auth": b.auth}}
    key = push.new_key()
    for push_key in ("", key):
        c = make_cloud(f"sqlite:///{tmp_path / f'push{len(push_key)}.db'}", push_key=push_key,
                       push_hosts="push.example")
        c.store.create_tenant("fam-1", "Ann Example")
        for email, role in (("pat@x.org", "patient"), ("doc@x.org", "doctor")):
            c.user(email, tenant="fam-1", role=role)
        _sign_in(c, "pat@x.org")
        client = c.client
        if not push_key:
            assert client.get("/app/api/fam-1/push").json() == {"key": None,
                                                                 "subscriptions": {}}
            r = client.post("/app/api/fam-1/push", json=sub, headers=SAME)
            assert r.status_code == 409 and "NIGHTLINK_PUSH_KEY" in r.json()["detail"]
            continue
        assert client.get("/app/api/fam-1/push").json()["key"] == push.public_key(
            push.load_key(key))
        for bad, field in (({"endpoint": "https://push.example/x"}, "p256dh"),
                           ({**sub, "keys": {**sub["keys"], "auth": "AA"}}, "auth"),
                           ({**sub, "endpoint": "ftp://x"}, "endpoint"), ([], "object"),
                           ({**sub, "endpoint": "https://[::1/x"}, "endpoint"),
                           ({**sub, "endpoint": "https://push.example:abc/x"}, "endpoint"),
                           ({**sub, "endpoint": "https://10.0.0.7/admin"}, "not 10.0.0.7"),
                           ({**sub, "endpoint": "https://push.example.evil.org/x"},
                            "push.example.evil.org")):
            r = client.post("/app/api/fam-1/push", json=bad, headers=SAME)
            assert r.status_code == 422 and field in r.json()["detail"], (bad, r.text)
        assert client.post("/app/api/fam-1/push", json=sub).status_code == 403  # no Origin
        r = client.post("/app/api/fam-1/push", json=sub, headers=SAME)
        assert r.status_code == 200 and r.json()["subscription"]["service"] == "push.example"
        listed = client.get("/app/api/fam-1/push").json()["subscriptions"]
        assert list(listed) == [sub["endpoint"]] and listed[sub["endpoint"]]["error"] == ""
        assert [e["action"] for e in c.store.audit_log("fam-1")].count("push.subscribe") == 1
        r = client.post("/app/api/fam-1/push/remove", json={"endpoint": sub["endpoint"]},
                        headers=SAME)
        assert r.json() == {"removed": True}
        assert client.get("/app/api/fam-1/push").json()["subscriptions"] == {}
        assert client.get("/app/api/fam-2/push").status_code == 404  # not theirs
        _sign_in(c, "doc@x.org")
        r = client.post("/app/api/fam-1/push", json=sub, headers=SAME)
        assert r.status_code == 403 and "doctor" in r.json()["detail"]
        c.client.close()
        c.store.close()


def test_subscriptions__kept_on_each_backend(cloud_any):
    """Subscribing again replaces the keys and forgets the last outcome; outcomes kept; a
    purged tenant leaves none (SQLite and PostgreSQL)."""
    store = cloud_any.store
    user = cloud_any.user("pat@x.org", tenant="fam-1", role="patient")
    a, b = Browser(), Browser()
    store.add_push("fam-1", user["id"], "https://push.example/1", a.p256dh, a.auth)
    [sub] = store.push_subscriptions("fam-1")
    store.push_outcome(sub["id"], "the push service refused it (HTTP 403)")
    assert store.push_subscriptions("fam-1", user["id"])[0]["error"].endswith("(HTTP 403)")
    store.add_push("fam-1", user["id"], "https://push.example/1", b.p256dh, b.auth)
    [again] = store.push_subscriptions("fam-1")
    assert (again["id"], again["p256dh"], again["error"], again["error_at"]) == (
        sub["id"], b.p256dh, "", None)
    store.push_outcome(sub["id"])
    assert store.push_subscriptions("fam-1")[0]["ok_at"] is not None
    assert store.push_subscriptions("fam-2") == []
    assert not store.remove_push("fam-1", "https://push.example/1", user["id"] + 1)  # not theirs
    store.set_tenant("fam-1", deleted_at=time.time())
    store.purge_tenant("fam-1")
    assert store.db.query("SELECT * FROM push_subscriptions") == []


def test_cli__push_key_makes_a_key_the_settings_take(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from nightlink.cli import main

    got = CliRunner().invoke(main, ["cloud", "push-key"])
    assert got.exit_code == 0, got.output
    line = next(x for x in got.stdout.splitlines() if x.startswith("NIGHTLINK_PUSH_KEY="))
    key = line.split("=", 1)[1]
    assert f"public half, which browsers are given: {push.public_key(push.load_key(key))}" \
        in got.stderr
    monkeypatch.setenv("NIGHTLINK_ENV", "development")
    monkeypatch.setenv("NIGHTLINK_PUSH_KEY", key)
    assert load_settings(env_file=str(tmp_path / "none.env")).push_key == key


def test_sender__a_slow_or_long_answer_is_cut_short(cloud, family, service):
    """An answer trickling in is given up after the timeout, whatever the bytes; of a long
    one only the first bytes are read; a retry asks for what is left of the TTL."""
    store = cloud.store
    b = Browser()
    for name in ("slow", "long", "busy"):
        store.add_push("fam-1", family["patient"]["id"], f"{service.url}/{name}", b.p256dh,
                       b.auth)
    service.plans = {"/slow": [(201, {"trickle": 100})] * 3,
                     "/long": [(500, {"body": b"oops " * 2_000_000})] * 3,
                     "/busy": [(503, {"Retry-After": "1"})]}
    started = time.monotonic()
    _push(_sender(store, tries=2, timeout_s=1.0), "fam-1", [ALERT])
    assert time.monotonic() - started < 8
    subs = _subs(store)
    assert subs["slow"]["error"] == "the push service did not answer within 1 s"
    assert subs["long"]["error"] == "the push service refused it (HTTP 500: " + (
        "oops " * 24).strip() + ")"
    assert subs["busy"]["ok_at"] is not None
    ttls = [int(h["TTL"]) for p, h, _b in service.received if p == "/busy"]
    assert ttls[0] == 1800 and 1797 <= ttls[1] < 1800  # after the 1 s Retry-After


def test_message__in_the_recipient_s_unit():
    assert push.in_unit("Urgent low: 48 mg/dL (below 54).", "mmol/L") == \
        "Urgent low: 2.7 mmol/L (below 3.0)."
    assert push.in_unit("Rising fast: 3.4 mg/dL/min (above 3).", "mmol/L") == \
        "Rising fast: 0.19 mmol/L/min (above 0.2)."
    assert push.in_unit("Urgent low: 39 mg/dL (below 54).", "mmol/L") == \
        "Urgent low: below the sensor's range (below 3.0)."
    assert push.in_unit("Urgent low: 48 mg/dL (below 54).", "mg/dL") == \
        "Urgent low: 48 mg/dL (below 54)."


def _pushed_to_family(store, family, service) -> dict[str, dict]:
    """ALERT pushed to the patient's and the caregiver's phones: what each shows."""
    phones = {}
    for role in ("patient", "caregiver"):
        phones[role] = Browser()
        store.add_push("fam-1", family[role]["id"], f"{service.url}/{role}",
                       phones[role].p256dh, phones[role].auth)
    _push(_sender(store), "fam-1", [ALERT])
    return {p[1:]: phones[p[1:]].read(body) for p, _h, body in service.received}


def test_sender__each_recipient_reads_their_own_unit(cloud, family, service):
    store = cloud.store
    store.set_units(family["caregiver"]["id"], "mmol/L")
    got = {role: shown["body"] for role, shown in _pushed_to_family(store, family,
                                                                    service).items()}
    assert got == {"patient": "Urgent low: 48 mg/dL (below 54).",
                   "caregiver": "Urgent low: 2.7 mmol/L (below 3.0)."}


def test_retry_after__seconds_or_a_date():
    from datetime import UTC, datetime
    from email.utils import format_datetime

    assert push._retry_after("7") == 7.0
    assert push._retry_after("100000") == push.MAX_WAIT_S
    assert push._retry_after(None) is None and push._retry_after("soon") is None
    later = format_datetime(datetime.fromtimestamp(time.time() + 30, UTC), usegmt=True)
    assert 27 <= push._retry_after(later) <= 31


def test_hosts__the_push_services_and_their_subdomains():
    hosts = push.PUSH_HOSTS
    for ok in ("fcm.googleapis.com", "updates.push.services.mozilla.com", "web.push.apple.com",
               "wns2-par02p.notify.windows.com", "FCM.googleapis.com."):
        assert push.host_allowed(ok, hosts), ok
    for bad in ("googleapis.com", "evilfcm.googleapis.com.evil.org", "127.0.0.1",
                "metadata.google.internal", "notify.windows.com.evil.org"):
        assert not push.host_allowed(bad, hosts), bad
    assert push.host_allowed("anything.example", ("*",))


def test_settings__a_push_key_needs_a_public_contact(monkeypatch, tmp_path):
    from nightlink.cloud.config import Settings

    base = {"env": "production", "jwt_secret": "k9" + "0123456789abcdef" * 2 + "zq",
            "push_key": push.new_key(), "database_url": f"sqlite:///{tmp_path / 'c.db'}"}
    with pytest.raises(ValueError, match="NIGHTLINK_PUSH_SUBJECT.*localhost"):
        Settings(**base)  # mail_from's default is nightlink@localhost: Apple refuses it
    with pytest.raises(ValueError, match="NIGHTLINK_PUSH_SUBJECT"):
        Settings(**base, push_subject="mailto:me@nas.local")
    assert Settings(**base, push_subject="mailto:ops@example.org").push_key
    assert Settings(**base, mail_from="Nightlink <alerts@example.org>").push_contact() == \
        "mailto:alerts@example.org"
    assert Settings(**{**base, "push_key": ""}).push_key == ""  # no key: nothing to check


def test_subscriptions__one_person_a_browser_and_renewed(cloud, family):
    """A browser is one signed-in person's: when another signs in and subscribes it, the
    first person's subscriptions of it end. Posting the same keys again keeps the last
    outcome; the push service's replacement moves them."""
    store = cloud.store
    b = Browser()
    pat, care = family["patient"]["id"], family["caregiver"]["id"]
    store.add_push("fam-1", pat, "https://push.example/1", b.p256dh, b.auth)
    store.add_push("fam-2", pat, "https://push.example/1", b.p256dh, b.auth)
    [sub] = store.push_subscriptions("fam-1")
    store.push_outcome(sub["id"])
    store.add_push("fam-1", pat, "https://push.example/1", b.p256dh, b.auth)  # the app opens
    assert store.push_subscriptions("fam-1")[0]["ok_at"] is not None
    assert store.renew_push(pat, "https://push.example/1", "https://push.example/2", b.p256dh,
                            b.auth) == 2
    assert [s["endpoint"] for s in store.push_subscriptions("fam-1")] == [
        "https://push.example/2"]
    store.add_push("fam-1", care, "https://push.example/2", b.p256dh, b.auth)
    assert [(s["tenant_id"], s["user_id"]) for t in ("fam-1", "fam-2")
            for s in store.push_subscriptions(t)] == [("fam-1", care)]


def test_routes__renew_moves_the_caller_s_subscriptions(tmp_path):
    b, c2 = Browser(), Browser()
    c = make_cloud(f"sqlite:///{tmp_path / 'renew.db'}", push_key=push.new_key(),
                   push_hosts="push.example")
    c.store.create_tenant("fam-1", "Ann Example")
    user = c.user("pat@x.org", tenant="fam-1", role="patient")
    c.store.add_push("fam-1", user["id"], "https://push.example/old", b.p256dh, b.auth)
    _sign_in(c, "pat@x.org")
    new = {"old_endpoint": "https://push.example/old", "endpoint": "https://push.example/new",
           "keys": {"p256dh": c2.p256dh, "auth": c2.auth}}
    assert c.client.post("/app/api/push/renew", json=new).status_code == 403  # no Origin
    r = c.client.post("/app/api/push/renew", json=new, headers=SAME)
    assert r.json() == {"renewed": 1}
    [sub] = c.store.push_subscriptions("fam-1")
    assert (sub["endpoint"], sub["p256dh"]) == ("https://push.example/new", c2.p256dh)
    r = c.client.post("/app/api/push/renew", json={**new, "old_endpoint": 3}, headers=SAME)
    assert r.status_code == 422
    c.client.close()
    c.store.close()


def test_sender__only_those_who_may_acknowledge_get_the_button(cloud, family, service):
    """A caregiver invited read-only hears the alert (they chose sound) but gets no
    "Acknowledge" button, as the app gives them none."""
    store = cloud.store
    store.grant("fam-1", family["caregiver"]["id"], "caregiver", by=None, alerts=False)
    got = _pushed_to_family(store, family, service)
    assert got["patient"]["ack"] == "/app/api/fam-1/alerts/41/ack"
    assert "ack" not in got["caregiver"] and got["caregiver"]["body"] == ALERT["message"]


def test_push_again__an_urgent_low_every_5_minutes_while_it_lasts(cloud_any):
    """Raised: pushed once, by one caller of several; still under 54 and unacknowledged,
    again 5 minutes on with the reading of then; not once glucose is back over it, nor after
    an acknowledgement. On SQLite and PostgreSQL."""
    store = cloud_any.store
    user = cloud_any.user("pat@x.org", tenant="fam-1", role="patient")
    data = store.tenant("fam-1")
    t0 = 1_768_500_000_000
    minute = 60_000

    def reading(at_ms, sgv):
        data.add_entries([{"type": "sgv", "date": at_ms, "sgv": sgv, "direction": "Flat"}])

    for k, v in enumerate((120, 60, 48)):
        reading(t0 - (2 - k) * 5 * minute, v)
    raised = alerts.check_tenant(store, "fam-1", t0 + 1000)
    urgent = next(a for a in raised if a["level"] == "urgent")
    assert [a["id"] for a in alerts.claim_new(store, "fam-1", raised, t0 + 1000)] == [
        a["id"] for a in raised]
    assert alerts.claim_new(store, "fam-1", raised, t0 + 1000) == []  # another process: none
    reading(t0 + 5 * minute, 47)
    assert alerts.due_again(store, "fam-1", t0 + 4 * minute) == []  # not yet
    again = alerts.due_again(store, "fam-1", t0 + 1000 + 5 * minute)
    assert [(a["id"], a["message"]) for a in again] == [
        (urgent["id"], "Still urgent low: 47 mg/dL (below 54).")]
    assert alerts.due_again(store, "fam-1", t0 + 1000 + 6 * minute) == []  # claimed
    reading(t0 + 10 * minute, 130)  # back over 54: the alert is still open (15 minutes)
    assert data.alert(urgent["id"])["acked_at"] is None
    assert alerts.due_again(store, "fam-1", t0 + 1000 + 11 * minute) == []
    reading(t0 + 15 * minute, 50)
    assert [a["id"] for a in alerts.due_again(store, "fam-1", t0 + 15 * minute + 1000)] == [
        urgent["id"]]
    data.ack_alert(urgent["id"], user["id"])
    reading(t0 + 20 * minute, 49)
    assert alerts.due_again(store, "fam-1", t0 + 1000 + 21 * minute) == []
    # no reading at all for a while: the urgent low is not pushed as if it were now
    reading(t0 + 25 * minute, 46)
    raised = alerts.check_tenant(store, "fam-1", t0 + 25 * minute + 1000)
    alerts.claim_new(store, "fam-1", raised, t0 + 25 * minute + 1000)
    assert alerts.due_again(store, "fam-1", t0 + 50 * minute) == []


# -- the news that a pushed alert closed -----------------------------------------------------------


def _run_worker(worker, sender, tenant="fam-1"):
    async def run():
        await worker._check([tenant])
        while sender.tasks:
            await asyncio.gather(*list(sender.tasks), return_exceptions=True)

    asyncio.run(run())


def test_closed__the_phones_it_rang_on_hear_who_acknowledged_it(cloud, family, service):
    """An urgent low pushed to the patient's phone and the caregiver's phone and laptop; the
    caregiver acknowledges it on the laptop: the patient's phone and the caregiver's own phone
    get the quiet news (who, and what it was), replacing the alert at the push service too
    (same Topic); the laptop, which said it was the one, nothing more. Once only, however
    often the worker looks."""
    store = cloud.store
    store.db.execute("UPDATE users SET name = ? WHERE id = ?",
                     ("Sam  Carer", family["caregiver"]["id"]))
    phones = {}
    for name, role in (("patient", "patient"), ("caregiver", "caregiver"),
                       ("laptop", "caregiver")):
        phones[name] = Browser()
        store.add_push("fam-1", family[role]["id"], f"{service.url}/{name}",
                       phones[name].p256dh, phones[name].auth)
    store.set_units(family["patient"]["id"], "mmol/L")
    now = int(time.time() * 1000)
    store.tenant("fam-1").add_entries([{"type": "sgv", "date": now - (2 - k) * 300_000,
                                        "sgv": v, "direction": "Flat"}
                                       for k, v in enumerate((120, 80, 48))])
    sender = _sender(store)
    hub = Hub()
    worker = alerts.AlertWorker(store, hub, pusher=sender)
    _run_worker(worker, sender)
    [raised] = store.tenant("fam-1").alerts()
    assert sorted(p for p, _h, _b in service.received) == ["/caregiver", "/laptop", "/patient"]
    service.received.clear()
    _run_worker(worker, sender)
    assert service.received == []  # open: nothing to say
    alerts.acknowledge_one(store, hub, "fam-1", raised["id"],
                           user_id=family["caregiver"]["id"], via="app",
                           endpoint=f"{service.url}/laptop")
    _run_worker(worker, sender)
    got = {path: (headers, body) for path, headers, body in service.received}
    assert sorted(got) == ["/caregiver", "/patient"]
    assert phones["caregiver"].read(got["/caregiver"][1])["body"].startswith(
        "Acknowledged by Sam Carer. Was: Urgent low: 48 mg/dL")
    headers, body = got["/patient"]
    assert phones["patient"].read(body) == {
        "title": "Family one", "body": "Acknowledged by Sam Carer. Was: Urgent low: 2.7 mmol/L "
        "(below 3.0).", "tag": f"nightlink-fam-1-{raised['id']}", "closed": True,
        "url": "/app/fam-1", "at_ms": raised["at_ms"]}
    assert (headers["TTL"], headers["Urgency"], headers["Topic"]) == (
        "3600", "normal", f"alert{raised['id']}")
    service.received.clear()
    _run_worker(worker, sender)
    asyncio.run(sender.close())
    assert service.received == []


def test_closed__over_on_its_own_or_from_a_nightscout_app(cloud_any):
    """How it closed, in words; claimed by one caller of several; not for an alert never
    pushed, nor one that closed more than CLOSED_WITHIN_MIN ago (one closed before an
    upgrade, say), nor a predicted low that ended (it may have become a low). On SQLite and
    PostgreSQL."""
    store = cloud_any.store
    cloud_any.user("pat@x.org", tenant="fam-1", role="patient")
    data = store.tenant("fam-1")
    now = int(time.time() * 1000)
    made = {}
    for name, rule in (("over", "urgent_low"), ("socket", "high"), ("unpushed", "low"),
                       ("old", "urgent_low"), ("predicted", "predicted_low")):
        made[name] = data.add_alert(rule, "urgent", now - 60_000, f"{name} alert.", threshold=54)
    for name in ("over", "socket", "old", "predicted"):
        assert data.claim_push(made[name], now - 50_000)
    for name in ("over", "predicted", "unpushed", "old"):
        assert data.end_alert(made[name], now - 10_000)
    assert alerts.acknowledge(store, None, "fam-1", made["socket"], user_id=None,
                              via="socket", token="reader")
    store.db.execute("UPDATE alerts SET acked_at = ? WHERE id = ?",
                     (time.time() - (alerts.CLOSED_WITHIN_MIN + 1) * 60, made["old"]))
    assert [(a["id"], a["closed"]) for a in alerts.claim_closed(store, "fam-1", now)] == [
        (made["over"], "Over."), (made["socket"], "Acknowledged from a Nightscout app.")]
    assert alerts.claim_closed(store, "fam-1", now) == []  # another process: none
    assert data.alert(made["predicted"])["closed_pushed_ms"] == now  # looked at once only
    assert data.alert(made["old"])["closed_pushed_ms"] is None


def test_closed__the_alert_s_own_retry_never_comes_after_its_news(cloud, family, service):
    """The alert's first push to the patient's phone meets a busy push service (503, try
    again in 1 s); meanwhile the caregiver acknowledges it. The news goes out, and the alert's
    retry gives up rather than ring after it (at a push service holding both for a phone off
    line, the later one would replace the news: same Topic)."""
    store = cloud.store
    phone = Browser()
    store.add_push("fam-1", family["patient"]["id"], f"{service.url}/patient", phone.p256dh,
                   phone.auth)
    now = int(time.time() * 1000)
    store.tenant("fam-1").add_entries([{"type": "sgv", "date": now - (2 - k) * 300_000,
                                        "sgv": v, "direction": "Flat"}
                                       for k, v in enumerate((120, 80, 48))])
    service.plans = {"/patient": [(503, {"Retry-After": "1"})]}
    sender = _sender(store)
    hub = Hub()
    worker = alerts.AlertWorker(store, hub, pusher=sender)

    async def run():
        await worker._check(["fam-1"])
        while len(service.received) < 1:  # the first try refused; the retry waits 1 s
            await asyncio.sleep(0.02)
        [raised] = await asyncio.to_thread(lambda: store.tenant("fam-1").alerts())
        await asyncio.to_thread(alerts.acknowledge_one, store, hub, "fam-1", raised["id"],
                                user_id=family["caregiver"]["id"], via="app")
        await worker._check(["fam-1"])
        while sender.tasks:
            await asyncio.gather(*list(sender.tasks), return_exceptions=True)
        await sender.close()

    asyncio.run(run())
    seen = [phone.read(b) for _p, _h, b in service.received]
    assert [bool(m.get("closed")) for m in seen] == [False, True]
    assert seen[1]["body"].startswith("Acknowledged by a member. Was: Urgent low")


def test_closed__an_urgent_low_that_became_a_low_is_no_longer_urgent(cloud, family):
    """An urgent low (48) pushed; glucose then sits at 60: the urgent low's episode ends and
    a low is raised in the same check. Its news says "No longer urgent.", not "Over.", while
    the low rings."""
    store = cloud.store
    data = store.tenant("fam-1")
    now = int(time.time() * 1000)
    minute = 60_000

    def reading(at, sgv):
        data.add_entries([{"type": "sgv", "date": at, "sgv": sgv, "direction": "Flat"}])

    reading(now - 30 * minute, 120)
    reading(now - 25 * minute, 48)
    raised = alerts.check_tenant(store, "fam-1", now - 25 * minute + 1000)
    assert [a["rule"] for a in raised] == ["urgent_low"]
    alerts.claim_new(store, "fam-1", raised, now - 25 * minute + 1000)
    for k in range(5):
        reading(now - (20 - 5 * k) * minute, 60)
    assert [a["rule"] for a in alerts.check_tenant(store, "fam-1", now + 1000)] == ["low"]
    [closed] = alerts.claim_closed(store, "fam-1", now + 1000)
    assert (closed["rule"], closed["closed"]) == ("urgent_low", "No longer urgent.")


def test_routes__an_acknowledgement_may_name_the_browser_it_came_from(cloud):
    """The app's and the notification's Acknowledge send this browser's push endpoint, kept
    on the alert (that browser is not told); without a body, or with another field, the same
    acknowledgement; a body that is not a JSON object, 422 and nothing acknowledged."""
    c = cloud
    user = c.user("pat@x.org", tenant="fam-1", role="patient")
    data = c.store.tenant("fam-1")
    ids = [data.add_alert("low", "warning", 1_768_500_000_000 + k, "Low: 65 mg/dL.",
                          threshold=70) for k in range(4)]
    _sign_in(c, "pat@x.org")
    url = "/app/api/fam-1/alerts/{}/ack"
    endpoint = "https://fcm.googleapis.com/fcm/send/abc"
    r = c.client.post(url.format(ids[0]), headers=SAME, json={"endpoint": endpoint})
    assert r.status_code == 200, r.text
    r = c.client.post(url.format(ids[1]), headers=SAME)
    assert r.status_code == 200, r.text
    r = c.client.post(url.format(ids[2]), headers=SAME, json={"endpoint": 7, "x": 1})
    assert r.status_code == 200, r.text
    r = c.client.post(url.format(ids[3]), headers={**SAME, "Content-Type":
                                                   "application/json"}, content=b"[1]")
    assert r.status_code == 422 and "JSON object" in r.json()["detail"]
    got = [data.alert(i) for i in ids]
    assert [a["acked_endpoint"] for a in got] == [endpoint, None, None, None]
    assert [a["acked_by"] for a in got] == [user["id"]] * 3 + [None]
