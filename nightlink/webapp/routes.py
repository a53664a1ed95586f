"""The app's routes that are the same on the cloud and the edge: the shell the service worker
keeps, the service worker, the manifest, the script, style sheet and icons; and the two
checks every write route of the app makes (a JSON object body, a same-origin request)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from nightlink.webapp import CSP, STATIC, STATIC_TYPES, icon_png, static_path

PAGE_HEADERS = {"Cache-Control": "no-cache", "X-Frame-Options": "DENY",
                "Content-Security-Policy": CSP}


def page(html: str) -> HTMLResponse:
    return HTMLResponse(html, headers=PAGE_HEADERS)


def static_router(shell: Callable[[], str]) -> APIRouter:
    """The static part of the app; `shell()` gives the tier's page."""
    router = APIRouter(tags=["app"], include_in_schema=False)

    @router.get("/app/shell")
    def app_shell():
        """The page without a sign-in check: what the service worker keeps for offline."""
        return page(shell())

    @router.get("/app/sw.js")
    def service_worker():
        """The service worker, served from /app so that it controls every app page."""
        return FileResponse(STATIC / "sw.js", media_type=STATIC_TYPES[".js"],
                            headers={"Cache-Control": "no-cache",
                                     "Service-Worker-Allowed": "/app"})

    @router.get("/app/manifest.webmanifest")
    def manifest():
        """The web app manifest (install to the home screen)."""
        return FileResponse(STATIC / "manifest.webmanifest",
                            media_type=STATIC_TYPES[".webmanifest"],
                            headers={"Cache-Control": "no-cache"})

    @router.get("/app/static/{name}")
    def static_file(name: str):
        """The app's script, style sheet and icons."""
        if name.startswith("icon-") and name.endswith(".png"):
            try:
                size = int(name[5:-4])
            except ValueError:
                size = 0
            if size not in (192, 512):
                raise HTTPException(404, f"No file {name!r}.")
            return Response(icon_png(size), media_type="image/png",
                            headers={"Cache-Control": "public, max-age=86400"})
        path = static_path(name)
        if path is None:
            raise HTTPException(404, f"No file {name!r}.")
        return FileResponse(path, media_type=STATIC_TYPES[path.suffix],
                            headers={"Cache-Control": "no-cache"})

    return router


def same_origin(request: Request) -> None:
    """Refuse a cookie-authenticated write that another site's page may have sent, where a
    Bearer token authenticates too (the cloud): a request with one needs no check, since
    browsers never attach one on their own and the route then goes by the token.
    """
    if request.headers.get("authorization", "").lower().startswith("bearer "):
        return
    origin_only(request)


def origin_only(request: Request) -> None:
    """Refuse a write that another site's page may have sent, Bearer header or not: for
    routes that authenticate by the cookie alone (the edge), where a page could add a dummy
    Bearer header to a cookie-carrying request to skip the check.

    SameSite=Strict already keeps the cookie off cross-site requests; the Origin check is the
    second lock (older browsers, a sibling subdomain).
    """
    origin = request.headers.get("origin")
    host = request.headers.get("host", "")
    if origin is None:
        if request.headers.get("sec-fetch-site") == "same-origin":
            return
        raise HTTPException(403, "Writes from the app need an Origin header naming this site.")
    if urlsplit(origin).netloc.lower() != host.lower():
        raise HTTPException(403, "Requests from another site are refused.")


async def _raw_body(request: Request) -> bytes:
    return await request.body()


# A route's body as bytes, read on the event loop before the route runs: a route that takes it
# can be a plain `def`, which FastAPI runs in a worker thread, so that its database statements
# and password checks never hold the event loop (nightlink/sql.py off_loop).
RawBody = Annotated[bytes, Depends(_raw_body)]


async def json_object(request: Request) -> dict:
    """The request's body as a JSON object, else 422 with one sentence."""
    return object_from(await request.body())


def object_from(raw: bytes) -> dict:
    """A body as a JSON object, else 422 with one sentence."""
    try:
        body = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested too deep
        raise HTTPException(422, "The body is not JSON (or is nested too deep).") from None
    if not isinstance(body, dict):
        raise HTTPException(422, "The body must be a JSON object.")
    why = _refusal(body)
    if why:
        raise HTTPException(422, why)
    return body


MAX_DEPTH = 32  # the app's bodies are flat; a deeper one is refused, not walked


def form_fields(raw: bytes, *, blank: bool = False) -> dict[str, str]:
    """A posted HTML form's fields (the first value of each); empty ones only with `blank`
    (a field cleared on purpose)."""
    return {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace"),
                                         keep_blank_values=blank).items()}


def _refusal(value, depth: int = 0) -> str:
    """Why a decoded body cannot be taken, "" when it can: text with a lone UTF-16 surrogate
    (JSON's "\\ud800" decodes to one, which no UTF-8 store or page can hold), or nesting
    deeper than MAX_DEPTH."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "The body holds text that is not Unicode (a lone surrogate such as \\ud800)."
        return ""
    if depth >= MAX_DEPTH and isinstance(value, dict | list):
        return f"The body is nested deeper than {MAX_DEPTH} levels."
    items = [*value.keys(), *value.values()] if isinstance(value, dict) else \
        value if isinstance(value, list) else []
    for item in items:
        why = _refusal(item, depth + 1)
        if why:
            return why
    return ""
