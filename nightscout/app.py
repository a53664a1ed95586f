"""Mount the Nightscout APIs on a FastAPI app: `mount(app, directory)`.

Adds API v1 (at /api/v1 and /api/v2), v2, v3 and /pebble at the root and under /t/{site},
socket.io at /socket.io, Nightscout's CORS for browser apps (its `cors` option; Nightscout
Reporter runs from another origin), errors in Nightscout's shape, request paths with doubled
slashes (a base URL ending in /) folded, and the live hub and its watchers stopped with the app.
"""

from __future__ import annotations

import contextlib
import re

from fastapi import FastAPI, Request

from nightlink.nightscout import api_v1, api_v2, api_v3
from nightlink.nightscout.http import NightscoutState, NSError
from nightlink.nightscout.live import Hub
from nightlink.nightscout.site import Directory
from nightlink.nightscout.sockets import NightscoutSockets

_NS_PATH = re.compile(r"^(/t/[^/]+)?/(api/v[123]|api/versions|pebble)(/|$)")
_CORS_HEADERS = [
    (b"access-control-allow-origin", None),
    (b"access-control-allow-methods", b"GET,PUT,POST,DELETE,PATCH,OPTIONS"),
    (b"access-control-allow-headers", b"Content-Type, Authorization, Content-Length, "
                                      b"X-Requested-With, api-secret, If-Modified-Since"),
    (b"access-control-expose-headers", b"Last-Modified, ETag, Location"),
]


def mount(app: FastAPI, directory: Directory, *, hub: Hub | None = None,
          cors_origin: str | None = "*") -> NightscoutState:
    """Serve Nightscout on this app; returns the shared state (also app.state.nightscout)."""
    hub = hub or Hub(directory)
    if hub.directory is None:
        hub.directory = directory
    state = NightscoutState(directory, hub, cors_origin=cors_origin)
    app.state.nightscout = state
    api_v1.install(app)
    api_v2.install(app)
    api_v3.install(app)

    @app.exception_handler(NSError)
    async def _ns_error(request: Request, exc: NSError):
        return exc.response()

    sockets = NightscoutSockets(state)
    app.state.nightscout_sockets = sockets
    app.add_middleware(_Edge, sockets=sockets, cors_origin=cors_origin)
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


class _Edge:
    """Plain ASGI in front of the app: socket.io, CORS for Nightscout paths, folded slashes."""

    def __init__(self, app, sockets: NightscoutSockets, cors_origin: str | None):
        self.app = app
        self.sockets = sockets
        self.origin = cors_origin.encode("latin-1") if cors_origin else None

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        if "//" in path:
            path = re.sub(r"/{2,}", "/", path)
            scope = dict(scope, path=path, raw_path=path.encode("latin-1"))
        if path.startswith("/socket.io"):
            return await self.sockets.asgi(scope, receive, send)
        if scope["type"] != "http" or self.origin is None or not _NS_PATH.match(path):
            return await self.app(scope, receive, send)
        if scope["method"] == "OPTIONS":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [*self._cors(), (b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"OK"})
            return None

        async def send_cors(message):
            if message["type"] == "http.response.start":
                message = dict(message, headers=[*message.get("headers", []), *self._cors()])
            await send(message)

        return await self.app(scope, receive, send_cors)

    def _cors(self) -> list[tuple[bytes, bytes]]:
        return [(k, v if v is not None else self.origin) for k, v in _CORS_HEADERS]
