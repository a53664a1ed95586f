"""The edge node's local Nightscout: the Nightscout core's APIs (v1, v2, v3, socket.io) over
the edge store, for phones and clocks on the LAN when the internet is down.

One site, at the root URL. Credentials:
- the API secret, sent as its SHA-1 (or SHA-512) hex in the `api-secret` header or
  `?secret=`: every permission (uploaders such as xDrip+, Loop, Trio);
- the derived read token `access_token(secret)` (`edge-` + 16 hex digits of an HMAC), given to
  clocks and followers so that a token kept in a clock's flash cannot write;
- access tokens of subjects made with the API secret at /api/v2/authorization/subjects
  (AndroidAPS needs one with the admin role, exchanged for a JWT).
The edge has no public read. The patient and family app is served at /app on the same site
(`edge/node/app_site.py`, signing in with the same credentials).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI

from nightlink.edge.node import app_site
from nightlink.edge.sources.samples import Glucose
from nightlink.edge.store import SITE, EdgeStore
from nightlink.nightscout import auth
from nightlink.nightscout.app import mount
from nightlink.nightscout.hub import Hub
from nightlink.nightscout.limits import Limits
from nightlink.nightscout.site import Site
from nightlink.nightscout.store import find_token
from nightlink.shared.apisecret import api_secret_hash

_LOGGER = logging.getLogger(__name__)
MIN_SECRET_LENGTH = 12  # Nightscout itself refuses API_SECRETs shorter than 12 characters.


def access_token(secret: str) -> str:
    """The read-only token derived from a secret."""
    mac = hmac.new(secret.encode("utf-8"), b"nightlink edge read token", hashlib.sha256)
    return "edge-" + mac.hexdigest()[:16]


class EdgeDirectory:
    """The Nightscout core's Directory for the one site of the edge node."""

    def __init__(self, store: EdgeStore, api_secret: str, name: str = "Nightlink edge"):
        self.store = store
        self.name = name
        self.jwt_secret = auth.derived_secret(api_secret, "nightscout-jwt")
        self.storage_name = "sqlite"
        try:
            self.version = version("nightlink")
        except PackageNotFoundError:
            self.version = "0.0.0"
        self._admin = set(auth.secret_forms(api_secret))
        token = access_token(api_secret)
        self._reader = {token, api_secret_hash(token)}
        self._site = Site(SITE, name, store.docs, store.subjects)

    def site(self, key: str) -> Site | None:
        return self._site if key == SITE else None

    def default_site(self) -> Site | None:
        return self._site

    def credential(self, presented: str, key: str | None) -> auth.Grant | None:
        if key not in (None, SITE):
            return None
        given = presented.encode("utf-8", "replace")
        if any(hmac.compare_digest(given, form.encode()) for form in self._admin):
            return auth.Grant(SITE, "api-secret", auth.Permissions(["*"]), "secret",
                              roles=("admin",))
        if any(hmac.compare_digest(given, form.encode()) for form in self._reader):
            return auth.Grant(SITE, "reader", auth.Permissions.of_roles(["readable"]), "token",
                              token=presented, roles=("readable",))
        subject = find_token(self._site.subjects.db, presented)
        if subject is None:
            return None
        return auth.Grant(SITE, subject.name, auth.Permissions.of_roles(subject.roles),
                          "token", token=presented, roles=subject.roles)

    def bearer(self, token: str, key: str | None) -> auth.Grant | None:
        """An access token sent as a Bearer (nightscout-tray), as the cloud takes it."""
        return auth.token_only(self.credential(auth.normalise_presented(token), key))

    def dead_letter(self, site_key: str, source: str, reason: str, payload: bytes) -> None:
        self.store.dead_letter(source, reason, payload)


def create_app(store: EdgeStore, api_secret: str, *, development: bool = False,
               name: str = "Nightlink edge", limits: Limits | None = None,
               keep: Callable[[list[Glucose]], None] | None = None) -> FastAPI:
    """The local Nightscout over `store`, guarded by `api_secret`; `limits` bounds bodies and
    the upload rate (nightscout/limits.py; the defaults suit a household's uploaders).
    `keep` is handed the readings of an upload the store refused (_KeepRefused)."""
    if not api_secret:
        raise ValueError("The Nightscout API secret must not be empty, even in development.")
    if len(api_secret) < MIN_SECRET_LENGTH and not development:
        raise ValueError(
            f"The Nightscout API secret must be at least {MIN_SECRET_LENGTH} characters "
            "(a default or short secret is refused outside development)."
        )
    app = FastAPI(title="Nightlink edge Nightscout API", docs_url=None, redoc_url=None)
    hub = Hub()
    store.notify = hub.changed  # before the directory takes the store's document handle
    directory = EdgeDirectory(store, api_secret, name)
    mount(app, directory, hub=hub, limits=limits)
    app_site.install(app, store, directory, hub, api_secret)  # the patient app at /app
    if keep is not None:
        app.add_middleware(_KeepRefused, keep=keep, secret_forms=auth.secret_forms(api_secret))
    return app


_ENTRY_PATHS = ("/api/v1/entries", "/api/v1/entries.json", "/api/v3/entries")
KEEP_MAX_BYTES = 1 << 20  # an uploader's batch is a few KB; bigger bodies are not looked at


class _KeepRefused:
    """ASGI middleware: when the store refuses an upload of readings (answered 503, a full or
    read-only SD card), the uploader keeps them and sends them again later, but the clocks
    would meanwhile see no new reading and the predicted-low alarm would go quiet. The
    readings of such an upload, sent with the API secret (as xDrip+, Juggluco and AndroidAPS
    send it), are handed to `keep` so the clocks get them from memory."""

    def __init__(self, app, keep: Callable[[list[Glucose]], None], secret_forms):
        self.app, self.keep = app, keep
        self.forms = [f.encode() for f in secret_forms]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or \
                scope["path"].rstrip("/") not in _ENTRY_PATHS:
            await self.app(scope, receive, send)
            return
        body, status = bytearray(), []

        async def reading():
            msg = await receive()
            if msg["type"] == "http.request" and len(body) <= KEEP_MAX_BYTES:
                body.extend(msg.get("body", b""))
            return msg

        async def answering(msg):
            if msg["type"] == "http.response.start":
                status.append(msg["status"])
            await send(msg)

        await self.app(scope, reading, answering)
        if status[:1] == [503] and len(body) <= KEEP_MAX_BYTES and self._secret(scope):
            readings = _readings(bytes(body))
            if readings:
                self.keep(readings)
                _LOGGER.warning("%d readings the store refused are passed to the clocks from "
                                "memory (the uploader sends them again)", len(readings))

    def _secret(self, scope) -> bool:
        given = dict(scope.get("headers") or ()).get(b"api-secret", b"")
        return any(hmac.compare_digest(given, form) for form in self.forms)


def _readings(body: bytes) -> list[Glucose]:
    """The sgv readings of an upload's body (a list of entries, or one)."""
    from nightlink.edge.sources.cgm import entry_to_glucose

    try:
        doc = json.loads(body)
    except ValueError:
        return []
    out = []
    for entry in doc if isinstance(doc, list) else [doc]:
        if isinstance(entry, dict):
            try:
                out.append(entry_to_glucose(entry))
            except ValueError:
                continue
    return out
