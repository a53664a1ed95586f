"""Mount the Nightscout APIs on a FastAPI app: `mount(app, directory)`.

Adds API v1 (at /api/v1 and /api/v2), v2, v3 and /pebble at the root and under /t/{site},
socket.io at /socket.io, Nightscout's CORS for browser apps (its `cors` option; Nightscout
Reporter runs from another origin), errors in Nightscout's shape, request paths with doubled
slashes (a base URL ending in /) and a trailing slash folded, the site's own address sent to
the family app, and the live hub and its watchers stopped with the app.
It also bounds what a request may cost (`limits.py`): the body size for every route of the
app, and the upload rate per site for Nightscout's writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from nightlink.nightscout import api_v1, api_v2, api_v3
from nightlink.nightscout.http import NightscoutState, NSError, resolve_sync
from nightlink.nightscout.hub import Hub
from nightlink.nightscout.limits import WRITE_METHODS, BodyLimit, Limits, UploadLimit, refuse
from nightlink.nightscout.site import Directory
from nightlink.nightscout.sockets import NightscoutSockets
from nightlink.pacing import LogThrottle
from nightlink.sql import DatabaseError

_LOGGER = logging.getLogger(__name__)
DATABASE_RETRY_AFTER_S = 10

_NS_PATH = re.compile(r"^(/t/([^/]+))?(/(api/v[123]|api/versions|pebble)(/.*)?)$")
# What a user types as the site's address; Nightscout answers its web page there.
_SITE_ROOT = re.compile(r"^(?:/t/([^/]+))?/?$")
HOME = "/app"  # the patient and family app, on the cloud and the edge
_STORED = api_v1.HEADER_STORED.lower().encode()  # as ASGI spells header names
_DUPLICATES = api_v1.HEADER_DUPLICATES.lower().encode()
_REJECTED = api_v1.HEADER_REJECTED.lower().encode()
REFUND_MAX_DOCS = 10  # a write of at most this many duplicates gives its upload turn back
_CORS_HEADERS = [
    (b"access-control-allow-origin", None),
    (b"access-control-allow-methods", b"GET,PUT,POST,DELETE,PATCH,OPTIONS"),
    (b"access-control-allow-headers", b"Content-Type, Authorization, Content-Length, "
                                      b"X-Requested-With, api-secret, If-Modified-Since"),
    (b"access-control-expose-headers", b"Last-Modified, ETag, Location"),
]


def mount(app: FastAPI, directory: Directory, *, hub: Hub | None = None,
          cors_origin: str | None = "*", limits: Limits | None = None) -> NightscoutState:
    """Serve Nightscout on this app; returns the shared state (also app.state.nightscout)."""
    hub = hub or Hub(directory)
    if hub.directory is None:
        hub.directory = directory
    limits = limits or Limits()
    state = NightscoutState(directory, hub, cors_origin=cors_origin, limits=limits,
                            uploads=UploadLimit.of(limits))
    app.state.nightscout = state
    api_v1.install(app)
    api_v2.install(app)
    api_v3.install(app)

    @app.exception_handler(NSError)
    async def _ns_error(request: Request, exc: NSError):
        return exc.response()

    database_log = LogThrottle(60.0)

    @app.exception_handler(DatabaseError)
    async def _database_away(request: Request, exc: DatabaseError):
        # A full disk or a lost database server is the server's trouble, not the request's:
        # 503 and a time to come back, so apps keep what they sent and try again. Every app
        # polls every few minutes: one line a minute says it, not one per request.
        held = database_log.ok("database")
        if held is not None:
            _LOGGER.warning("database error on %s %s: %s%s", request.method, request.url.path,
                            exc, f" ({held} more requests refused for it since the last "
                            "line)" if held else "")
        return JSONResponse({"status": 503, "message": "The database cannot be used right now; "
                             "try again shortly."}, status_code=503,
                            headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)})

    sockets = NightscoutSockets(state)
    app.state.nightscout_sockets = sockets
    app.add_middleware(_Edge, sockets=sockets, cors_origin=cors_origin)
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)  # outside: every route
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(a):
        try:
            async with inner(a) as value:
                yield value
        finally:
            await sockets.close()
            await hub.close()

    app.router.lifespan_context = lifespan
    return state


def _revalidated(send):
    """Every reply `Cache-Control: private, no-cache`: a browser-based client (Nightscout
    Reporter, a clock's settings page, a follower web page) asks again each time, with
    If-Modified-Since (answered 304 while nothing changed), instead of reusing a reply its
    HTTP cache kept. With Last-Modified alone Chromium reuses one for a tenth of its age (an
    hour without writes: 6 minutes of a stale reading); and no shared cache keeps health
    data fetched with a token in the URL."""
    async def send_revalidated(message):
        if message["type"] == "http.response.start":
            headers = message.get("headers", [])
            if not any(k.lower() == b"cache-control" for k, _ in headers):
                message = dict(message, headers=[*headers,
                                                 (b"cache-control", b"private, no-cache")])
        await send(message)

    return send_revalidated


class _Edge:
    """Plain ASGI in front of the app: socket.io, CORS for Nightscout paths, folded slashes,
    the upload rate of each site, and two path rewrites that keep the route table small:
    `/t/{site}/<path>` is served by the route of `<path>` with the site in the scope, and API
    v2's copy of v1 by the v1 routes."""

    def __init__(self, app, sockets: NightscoutSockets, cors_origin: str | None):
        self.app = app
        self.sockets = sockets
        self.state = sockets.state
        self.origin = cors_origin.encode("latin-1") if cors_origin else None

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        if "//" in path:
            path = re.sub(r"/{2,}", "/", path)
            scope = dict(scope, path=path, raw_path=quote(path).encode("ascii"))
        if path.startswith("/socket.io"):
            return await self.sockets.asgi(scope, receive, send)
        found = _NS_PATH.match(path)
        if found is None:
            home = _SITE_ROOT.match(path) if scope["type"] == "http" else None
            if home is not None and scope["method"] in ("GET", "HEAD"):
                return await _to_home(send, home.group(1))
            return await self.app(scope, receive, send)
        if path.endswith("/"):  # Express is not strict about it: /api/v1/treatments/ is served
            path = path[:-1]
            scope = dict(scope, path=path, raw_path=quote(path).encode("ascii"))
            found = _NS_PATH.match(path)
        if found.group(2) is not None or path.startswith("/api/v2/"):
            scope = _rewritten(scope, found)
        cached = None
        if scope["type"] == "http" and scope["method"] == "GET":
            # a poll whose answer may be unchanged (the check reads the database: in a thread)
            hit = self.state.replies.remembered(scope)
            if hit is not None:
                cached = await run_in_threadpool(self.state.replies.answer, scope, hit)
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        send = _revalidated(send)
        if self.origin is not None:
            if scope["method"] == "OPTIONS":
                await send({"type": "http.response.start", "status": 200,
                            "headers": [*self._cors(), (b"content-type", b"text/plain")]})
                await send({"type": "http.response.body", "body": b"OK"})
                return None
            send = self._with_cors(send)
        if cached is not None:
            return await cached(scope, receive, send)
        if scope["method"] in WRITE_METHODS:
            key = await self._upload_turn(scope, send)
            if key is False:
                return None
            if key is not None:
                return await self.app(scope, receive, self._refunding(key, send))
        return await self.app(scope, receive, send)

    def _refunding(self, key: str, send):
        """`send`, giving the site's turn back when the answer says a few duplicates came and
        nothing else: not for a refused document (each is kept as a dead letter), nor for a
        big batch (its deduplication is work the turn pays for)."""
        async def watch(message):
            if message["type"] == "http.response.start" and message["status"] < 300:
                found = dict(message.get("headers", ()))
                duplicates = found.get(_DUPLICATES, b"")
                if found.get(_STORED) == b"0" and found.get(_REJECTED) == b"0" \
                        and duplicates.isdigit() and 0 < int(duplicates) <= REFUND_MAX_DOCS:
                    self.state.uploads.refund(key)
            await send(message)

        return watch

    def _with_cors(self, send):
        async def send_cors(message):
            if message["type"] == "http.response.start":
                message = dict(message, headers=[*message.get("headers", []), *self._cors()])
            await send(message)

        return send_cors

    async def _upload_turn(self, scope: dict, send) -> str | None | bool:
        """Wait for this write's turn in its site's upload bucket: the site whose turn it took,
        None when it takes none, False when refused (429 sent). Writes the route will refuse
        (no or a read-only credential) take no turn, so that a clock's read token cannot use
        up a site's uploads."""
        uploads = self.state.uploads
        if uploads is None:
            return None
        key = await run_in_threadpool(_writer_site, scope)
        if key is None:
            return None
        wait = uploads.reserve(key)
        if wait is None:
            seconds = uploads.retry_after(key)
            await refuse(scope, send, 429, "Too Many Requests",
                         f"This site uploads faster than {uploads.rate * 60:g} writes a "
                         f"minute; try again in {seconds} s.", {"Retry-After": str(seconds)})
            return False
        if wait > 0:
            await asyncio.sleep(wait)
        return key

    def _cors(self) -> list[tuple[bytes, bytes]]:
        return [(k, v if v is not None else self.origin) for k, v in _CORS_HEADERS]


async def _to_home(send, site: str | None) -> None:
    """The site's address (`/`, `/t/{site}`) opened by a browser or checked by an app
    (Nightscouter sends HEAD and adds the site only on 200-399): to the family app."""
    where = HOME if site is None else f"{HOME}/{quote(site, safe='')}"
    await send({"type": "http.response.start", "status": 302,
                "headers": [(b"location", where.encode("ascii")),
                            (b"content-type", b"text/plain; charset=utf-8")]})
    await send({"type": "http.response.body", "body": f"See {where}".encode("ascii")})


def _writer_site(scope: dict) -> str | None:
    """The site a write's credential may write to; None when it may write nothing."""
    try:
        site, grant = resolve_sync(Request(scope), v3=scope["path"].startswith("/api/v3"),
                                   count_failure=False)
    except (NSError, DatabaseError):
        return None  # the route answers the refusal (or the database being away: 503)
    if not any(_writes(pattern) for pattern in grant.permissions.patterns):
        return None
    return site.key


def _writes(pattern: str) -> bool:
    """Whether a permission pattern grants anything but reading (`*`, `api:*:create`)."""
    parts = pattern.split(":")
    return len(parts) < 3 or any(action != "read" for action in parts[2].split(","))


def _rewritten(scope: dict, found: re.Match) -> dict:
    """The scope with `/t/{site}` taken off the path (kept as scope["nightscout_site"]) and
    /api/v2/<v1 route> served by /api/v1."""
    path = found.group(3)
    if path.startswith("/api/v2/") and not api_v2.own_route(path[len("/api/v2/"):]):
        path = "/api/v1/" + path[len("/api/v2/"):]
    out = dict(scope, path=path, raw_path=quote(path).encode("ascii"))
    if found.group(2) is not None:
        out["nightscout_site"] = found.group(2)
    return out
