"""Web Push: an alert reaches a phone whose screen is locked.

A page that is not running cannot ring, so a browser that chose "Sound alerts on this device"
also subscribes to its push service (Google's for Chrome, Mozilla's for Firefox, Apple's for
Safari on a home-screen app). When the cloud raises an alert it posts the alert to each
subscribed browser's endpoint; the push service wakes the browser, whose service worker shows
the notification (`nightlink/webapp/sw.js`). Three standards, implemented here on
`cryptography` alone:

- RFC 8030 (delivery): a POST to the subscription's endpoint with `TTL` (seconds the push
  service may hold the message for a phone that is off line), `Urgency` (`high` wakes a phone
  in power saving) and `Topic` (a newer message with the same topic replaces one not yet
  delivered). 201 or 202: accepted. 404 or 410: the subscription is gone for good (the
  browser unsubscribed, the app was removed) and is forgotten. 429 and 5xx: try again later,
  after the `Retry-After` the service gave, else with back-off and jitter.
- RFC 8291 (encryption): the message is encrypted for the browser alone (ECDH on P-256 with
  the subscription's `p256dh` key, HKDF-SHA-256 with its `auth` secret, AES-128-GCM), in the
  `aes128gcm` content coding of RFC 8188, one record.
- RFC 8292 (VAPID): each request carries a JWT (ES256) signed with the server's key, for the
  endpoint's origin, naming a contact (`mailto:`), and the key's public half, which the
  browser was given when it subscribed: only this server can push to its subscriptions.

The server's key is a secret: `NIGHTLINK_PUSH_KEY` (`nightlink cloud push-key` makes one).
Without it the cloud sends no pushes and the app says so. Facts: docs/alerts.md.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import os
import random
import re
import struct
import time
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import httpx
import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from nightlink.cloud import metrics
from nightlink.shared import units

_LOGGER = logging.getLogger(__name__)

RECORD_SIZE = 4096  # RFC 8188 record size; one record holds the whole message
MAX_PAYLOAD = 3800  # push services take 4096 bytes of body; header and tag take 103 of them
JWT_HOURS = 12  # a VAPID token's lifetime (RFC 8292 allows at most 24 hours)
TTL_S = {"urgent": 30 * 60, "warning": 60 * 60}  # an alert older than this is not worth waking
CLOSED_TTL_S = 60 * 60  # the news that an alert closed, for a phone off line now
TRIES = 5
FIRST_WAIT_S = 2.0
MAX_WAIT_S = 120.0
TIMEOUT_S = 10.0
MAX_ENDPOINT = 2048
PUSH_ROLES = ("patient", "caregiver", "admin")  # a doctor reads reports, not night alarms
# The browsers' push services: Chrome and most Chromium browsers (Google), Firefox (Mozilla),
# Safari (Apple), Edge on Windows (Microsoft). NIGHTLINK_PUSH_HOSTS replaces the list.
PUSH_HOSTS = ("fcm.googleapis.com", "push.services.mozilla.com", "push.apple.com",
              "notify.windows.com")
BODY_MAX = 2048  # of a push service's answer, read for the reason it gives
MESSAGE_MAX = 600  # characters of an alert's text in a push
PER_TENANT = 4  # deliveries of one tenant at a time


class PushKeyError(ValueError):
    """NIGHTLINK_PUSH_KEY is not a P-256 private key."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    text = text.strip()
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_key() -> str:
    """A new server key: the P-256 private value, base64url (as `web-push
    generate-vapid-keys` prints its private key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return _b64(key.private_numbers().private_value.to_bytes(32, "big"))


def load_key(text: str) -> ec.EllipticCurvePrivateKey:
    """The server key from its base64url private value (or a PEM), else PushKeyError."""
    try:
        if "BEGIN" in text:
            key = serialization.load_pem_private_key(text.encode(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
                raise PushKeyError("it is a PEM key, but not a P-256 one")
            return key
        raw = _unb64(text)
        if len(raw) != 32:
            raise PushKeyError(f"it decodes to {len(raw)} bytes, not the 32 of a P-256 key")
        return ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
    except PushKeyError:
        raise
    except (ValueError, TypeError) as exc:
        raise PushKeyError(f"it is not a P-256 private key ({exc})") from None


def public_key(key: ec.EllipticCurvePrivateKey) -> str:
    """The key's public half, uncompressed and base64url: the browser's
    `applicationServerKey`, and `k=` of the VAPID header."""
    return _b64(key.public_key().public_bytes(serialization.Encoding.X962,
                                              serialization.PublicFormat.UncompressedPoint))


def host_allowed(host: str, hosts: tuple[str, ...]) -> bool:
    """Whether a push service's host is one this server sends to: a listed name or below it
    ("*" in the list: any)."""
    host = host.lower().rstrip(".")
    return "*" in hosts or any(host == h or host.endswith("." + h) for h in hosts)


def check_subscription(endpoint: str, p256dh: str, auth: str, *, https_only: bool,
                       hosts: tuple[str, ...] = PUSH_HOSTS) -> str:
    """"" when a browser's subscription can be pushed to, else why not (one sentence). Only
    the push services in `hosts` (NIGHTLINK_PUSH_HOSTS): the server POSTs to the endpoint, so
    anything else would let a member make it call an address of their choosing."""
    if not isinstance(endpoint, str) or len(endpoint) > MAX_ENDPOINT:
        return f"endpoint must be a URL of at most {MAX_ENDPOINT} characters."
    parts = None
    try:
        parts = urlsplit(endpoint)
        host = parts.hostname
        httpx.URL(endpoint)  # what the sender will be able to request
    except (ValueError, httpx.InvalidURL):
        host = None
    if parts is None or host is None or parts.scheme not in (
            ("https",) if https_only else ("https", "http")):
        return "endpoint must be an https URL of a push service."
    if not host_allowed(host, hosts):
        return (f"endpoint must be at a push service this server sends to ({', '.join(hosts)}), "
                f"not {host}.")
    try:
        key = _unb64(p256dh)
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), key)
    except (ValueError, TypeError, AttributeError):
        return "keys.p256dh must be the browser's P-256 public key (65 bytes, base64url)."
    try:
        secret = _unb64(auth)
    except (ValueError, TypeError, AttributeError):
        secret = b""
    if len(secret) != 16:
        return "keys.auth must be the browser's 16-byte secret, base64url."
    return ""


def _hkdf(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    return HKDF(hashes.SHA256(), length, salt, info).derive(ikm)


def encrypt(payload: bytes, p256dh: str, auth: str, *, salt: bytes | None = None,
            sender: ec.EllipticCurvePrivateKey | None = None) -> bytes:
    """The message body for one browser (RFC 8291, aes128gcm): a fresh sender key and salt
    each time unless given (the RFC's test vector gives them)."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"a push message holds at most {MAX_PAYLOAD} bytes, not {len(payload)}")
    ua_public = _unb64(p256dh)
    secret = _unb64(auth)
    sender = sender or ec.generate_private_key(ec.SECP256R1())
    salt = salt if salt is not None else os.urandom(16)
    as_public = sender.public_key().public_bytes(serialization.Encoding.X962,
                                                 serialization.PublicFormat.UncompressedPoint)
    shared = sender.exchange(ec.ECDH(), ec.EllipticCurvePublicKey.from_encoded_point(
        ec.SECP256R1(), ua_public))
    ikm = _hkdf(secret, shared, b"WebPush: info\x00" + ua_public + as_public, 32)
    cek = _hkdf(salt, ikm, b"Content-Encoding: aes128gcm\x00", 16)
    nonce = _hkdf(salt, ikm, b"Content-Encoding: nonce\x00", 12)
    sealed = AESGCM(cek).encrypt(nonce, payload + b"\x02", None)  # \x02: the last record
    return salt + struct.pack("!IB", RECORD_SIZE, len(as_public)) + as_public + sealed


def vapid(endpoint: str, key: ec.EllipticCurvePrivateKey, subject: str,
          now: float | None = None) -> str:
    """The Authorization header value of RFC 8292 for a request to `endpoint`."""
    parts = urlsplit(endpoint)
    claims = {"aud": f"{parts.scheme}://{parts.netloc}",
              "exp": int((now or time.time()) + JWT_HOURS * 3600), "sub": subject}
    token = jwt.encode(claims, key, algorithm="ES256")
    return f"vapid t={token}, k={public_key(key)}"


def in_unit(text: str, unit: str) -> str:
    """An alert's text (written in mg/dL) in the person's unit, as the app shows it
    (`alertText` in nightlink/webapp/app.js)."""
    if unit != units.MMOLL:
        return text
    num = r"(\d+(?:\.\d+)?)"
    text = re.sub(num + " mg/dL/min", lambda m: f"{float(m[1]) / units.MGDL_PER_MMOLL:.2f} "
                  "mmol/L/min", text)
    text = re.sub(num + " mg/dL", lambda m: "below the sensor's range" if float(m[1]) <= 39
                  else f"{float(m[1]) / units.MGDL_PER_MMOLL:.1f} mmol/L", text)
    return re.sub(r"\((below|above) " + num + r"\)",
                  lambda m: f"({m[1]} {float(m[2]) / units.MGDL_PER_MMOLL:.1f})", text)


def message(tenant_id: str, name: str, alert: dict, unit: str = units.MGDL,
            ack: bool = False) -> bytes:
    """What the service worker shows: the app's own notification for the alert (same title,
    text and tag, so one replaces the other), in the recipient's unit; `ack`: the recipient
    may acknowledge it, from the notification's button (`ack` is the app's route for it)."""
    urgent = alert["level"] == "urgent"
    doc = {"title": (f"Urgent · {name}" if urgent else name)[:100],
           "body": in_unit(alert["message"], unit)[:MESSAGE_MAX],
           "tag": f"nightlink-{tenant_id}-{alert['id']}",
           "urgent": urgent, "url": f"/app/{tenant_id}", "at_ms": alert["at_ms"]}
    if ack:
        doc["ack"] = f"/app/api/{tenant_id}/alerts/{alert['id']}/ack"
    return json.dumps(doc, separators=(",", ":")).encode()


def closed_message(tenant_id: str, name: str, alert: dict, unit: str = units.MGDL) -> bytes:
    """What replaces the alert's notification once it has closed (`alert["closed"]` says
    how): same tag, quiet (`closed`), no button."""
    doc = {"title": name[:100],
           "body": f"{alert['closed']} Was: {in_unit(alert['message'], unit)}"[:MESSAGE_MAX],
           "tag": f"nightlink-{tenant_id}-{alert['id']}", "closed": True,
           "url": f"/app/{tenant_id}", "at_ms": alert["at_ms"]}
    return json.dumps(doc, separators=(",", ":")).encode()


def _retry_after(value: str | None) -> float | None:
    """Seconds a `Retry-After` asks for (delay-seconds or an HTTP date), at most MAX_WAIT_S."""
    if not value:
        return None
    try:
        wait = float(value)
    except ValueError:
        try:
            wait = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return min(MAX_WAIT_S, max(0.0, wait))


class PushSender:
    """Sends the alerts this process raised to the tenant's subscribed browsers, each delivery
    in a task of its own (at most PER_TENANT of a tenant at a time), so that a slow or
    refusing push service delays nobody's other alerts. Every outcome is kept on the
    subscription, where its owner's app shows it; nothing here stops the alert worker."""

    def __init__(self, store, key: ec.EllipticCurvePrivateKey, subject: str, *,
                 hosts: tuple[str, ...] = PUSH_HOSTS, client: httpx.AsyncClient | None = None,
                 first_wait_s: float = FIRST_WAIT_S, tries: int = TRIES,
                 timeout_s: float = TIMEOUT_S):
        self.store = store
        self.key = key
        self.subject = subject
        self.hosts = hosts
        self.client = client or httpx.AsyncClient(timeout=timeout_s, follow_redirects=False)
        self.first_wait_s = first_wait_s
        self.tries = tries
        self.timeout_s = timeout_s
        self.tasks: set[asyncio.Task] = set()
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._posting: dict[tuple[str, int], int] = {}  # (tenant, alert): requests under way
        self.sent = 0
        self.failed = 0

    def _spawn(self, work) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def alerts(self, tenant_id: str, alerts: list[dict]) -> None:
        """Queue pushes of newly raised alerts (from the event loop)."""
        if alerts:
            self._spawn(self._tenant(tenant_id, alerts))

    def closed(self, tenant_id: str, alerts: list[dict]) -> None:
        """Queue the news that pushed alerts closed (alerts.claim_closed), to every
        recipient but the browser it was acknowledged on (`acked_endpoint`, when it said),
        which took its notification off itself. A delivery of the alert itself still trying
        gives up, and one under way is let finish first, so the news comes last."""
        if alerts:
            self._spawn(self._tenant(tenant_id, alerts, closed=True))

    async def _tenant(self, tenant_id: str, alerts: list[dict], closed: bool = False) -> None:
        try:
            subs, name = await asyncio.to_thread(self._recipients, tenant_id)
        except Exception:  # noqa: BLE001 - a database error loses this push, never the worker
            _LOGGER.exception("cannot read the push subscriptions of %s", tenant_id)
            return
        slots = self._slots.setdefault(tenant_id, asyncio.Semaphore(PER_TENANT))
        for alert in alerts:
            for sub in subs:
                if not closed:
                    body = message(tenant_id, name, alert, sub["unit"], sub["ack"])
                elif sub["endpoint"] != alert.get("acked_endpoint"):
                    body = closed_message(tenant_id, name, alert, sub["unit"])
                else:
                    continue
                self._spawn(self._guarded(slots, sub, body, alert, closed))

    async def _guarded(self, slots: asyncio.Semaphore, sub: dict, body: bytes, alert: dict,
                       closed: bool):
        try:
            return await self.deliver(sub, body, alert, slots, closed=closed)
        except Exception:  # noqa: BLE001 - one delivery's failure is its own
            self.failed += 1
            _LOGGER.exception("push of alert %s to subscription %s failed", alert["id"],
                              sub["id"])
            return False

    def _recipients(self, tenant_id: str) -> tuple[list[dict], str]:
        """The subscriptions of people who still take part in the tenant's alerts, each with
        its owner's glucose unit."""
        from nightlink.cloud.access import may_act, resolve_access
        from nightlink.cloud.store import NotFoundError

        out = []
        try:
            name = self.store.get_tenant(tenant_id)["name"]
        except NotFoundError:
            return [], ""
        for sub in self.store.push_subscriptions(tenant_id):
            try:
                user = self.store.user(sub["user_id"])
            except NotFoundError:
                continue
            access = resolve_access(self.store, user, tenant_id)
            if access is not None and access.role in PUSH_ROLES:
                out.append({**sub, "unit": self.store.units(user["id"]) or units.MGDL,
                            "ack": may_act(self.store, access)})
        return out, name

    async def deliver(self, sub: dict, body: bytes, alert: dict,
                      slots: asyncio.Semaphore | None = None, *, closed: bool = False) -> bool:
        """One alert (or, `closed`, the news that it closed) to one browser, tried up to
        `tries` times within its TTL; each try holds one of the tenant's `slots` (not the
        waits between them)."""
        slots = slots or asyncio.Semaphore(1)
        ttl = CLOSED_TTL_S if closed else TTL_S.get(alert["level"], TTL_S["warning"])
        urgency = "high" if alert["level"] == "urgent" and not closed else "normal"
        key = (sub["tenant_id"], alert["id"])
        give_up = time.monotonic() + ttl
        wait = self.first_wait_s
        for attempt in range(1, self.tries + 1):
            if closed:
                await self._posted(key)  # the alert's own request first, the news after it
            elif await asyncio.to_thread(self._is_closed, key):
                return False  # closed meanwhile: its news goes instead, not the alarm
            left = math.ceil(give_up - time.monotonic())  # a retry asks for what is left
            async with slots:
                if not closed:
                    self._posting[key] = self._posting.get(key, 0) + 1
                try:
                    error, again_s = await self._post(sub, body, alert, max(left, 1), urgency)
                finally:
                    if not closed:
                        self._posting[key] -= 1
                        if not self._posting[key]:
                            del self._posting[key]
            if error is None:
                self.sent += 1
                metrics.PUSHES.labels("delivered").inc()
                await asyncio.to_thread(self.store.push_outcome, sub["id"])
                return True
            if error.startswith("gone"):
                self.failed += 1
                metrics.PUSHES.labels("gone").inc()
                _LOGGER.info("push subscription %s of %s is gone: %s", sub["id"],
                             sub["tenant_id"], error)
                await asyncio.to_thread(self.store.remove_push, sub["tenant_id"],
                                        sub["endpoint"])
                return False
            pause = None if again_s is None or attempt == self.tries else (
                again_s if again_s > 0 else wait * random.uniform(0.5, 1.5))
            if pause is not None and time.monotonic() + pause + 1 >= give_up:
                pause = None  # the alert would be stale by then
            shown = error if pause is None else f"{error}; trying again in {pause:.0f} s"
            _LOGGER.warning("push of alert %s to %s (%s): %s", alert["id"],
                            urlsplit(sub["endpoint"]).hostname, sub["tenant_id"], shown)
            await asyncio.to_thread(self.store.push_outcome, sub["id"], shown)
            if pause is None:
                break
            await asyncio.sleep(pause)
            wait = min(MAX_WAIT_S, wait * 2)
        self.failed += 1
        metrics.PUSHES.labels("failed").inc()
        return False

    def _is_closed(self, key: tuple[str, int]) -> bool:
        """Whether the alert has closed (acknowledged by anyone, in any process, or over)."""
        row = self.store.tenant(key[0]).alert(key[1])
        return row is not None and row["acked_at"] is not None

    async def _posted(self, key: tuple[str, int]) -> None:
        """Once no request pushing the alert itself is under way (at most one timeout)."""
        stop = time.monotonic() + self.timeout_s
        while self._posting.get(key) and time.monotonic() < stop:
            await asyncio.sleep(0.02)

    async def _post(self, sub: dict, body: bytes, alert: dict, ttl: int,
                    urgency: str) -> tuple[str | None, float | None]:
        """(None, _) delivered; ("gone: …", None) forget it; (why, seconds to wait or 0 for the
        back-off) try again; (why, None) not worth trying again."""
        try:
            host = urlsplit(sub["endpoint"]).hostname
        except ValueError:
            host = None
        if host is not None and not host_allowed(host, self.hosts):  # the setting changed
            return (f"not sent: {host} is not a push service this server sends to "
                    f"({', '.join(self.hosts)})"), None
        why = check_subscription(sub["endpoint"], sub["p256dh"], sub["auth"], https_only=False,
                                 hosts=("*",))
        if why:
            return f"gone: the subscription is unusable ({why})", None
        headers = {"TTL": str(ttl), "Content-Encoding": "aes128gcm",
                   "Content-Type": "application/octet-stream",
                   "Urgency": urgency,
                   # the alert's close takes the place of the alert itself at a push service
                   # still holding it for a phone off line
                   "Topic": f"alert{alert['id']}"[:32],
                   "Authorization": vapid(sub["endpoint"], self.key, self.subject)}
        data = encrypt(body, sub["p256dh"], sub["auth"])
        try:
            # the whole exchange within the timeout, and no more of the answer than its reason
            status, retry, text = await asyncio.wait_for(
                self._exchange(sub["endpoint"], data, headers), self.timeout_s)
        except TimeoutError:
            return f"the push service did not answer within {self.timeout_s:.0f} s", 0.0
        except httpx.HTTPError as exc:
            return f"the push service is unreachable ({type(exc).__name__})", 0.0
        if status in (200, 201, 202, 204):
            return None, None
        if status in (404, 410):
            return f"gone: the push service no longer knows it (HTTP {status})", None
        why = f"the push service refused it (HTTP {status}" + (f": {text})" if text else ")")
        if status == 429 or status >= 500:
            again = _retry_after(retry)
            return why, 0.0 if again is None else again
        return why, None  # 400, 401, 403, 413: the same request would be refused again

    async def _exchange(self, endpoint: str, data: bytes,
                        headers: dict) -> tuple[int, str | None, str]:
        async with self.client.stream("POST", endpoint, content=data,
                                      headers=headers) as response:
            got = b""
            async for chunk in response.aiter_bytes():
                got += chunk
                if len(got) >= BODY_MAX:
                    break
            text = " ".join(got[:BODY_MAX].decode("utf-8", "replace").split())[:120].strip()
            return response.status_code, response.headers.get("retry-after"), text

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.client.aclose()
