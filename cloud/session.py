"""A browser's sign-in that lasts: the portal and the patient app keep a 15-minute access
token in the `nl_portal` cookie, and the session's refresh token in `nl_session` (HttpOnly,
SameSite=Strict, `refresh_token_days`). A parent following a child's glucose leaves the app
open for days; the access token alone signed them out after 15 minutes, during a low too.

`SessionRenewal` gives a request whose access token is missing, expired or past half its
life a new one, from the session's refresh token while that is neither revoked nor expired,
and sets it on the answer. The refresh token is read, not spent: the app's parallel requests
after a laptop wakes all renew from it, with no race between them. Signing out revokes it;
a new password or a deleted account revokes every session (the access token then ends
within its 15 minutes)."""

from __future__ import annotations

import logging
import time

from starlette.concurrency import run_in_threadpool
from starlette.requests import cookie_parser

from nightlink.cloud import auth

_LOGGER = logging.getLogger(__name__)
ACCESS_COOKIE = "nl_portal"
SESSION_COOKIE = "nl_session"
RENEWED = ("/app", "/portal")  # paths whose requests renew the access cookie
NOT_RENEWED = ("/app/static", "/app/sw.js", "/app/shell", "/app/manifest", "/portal/login",
               "/portal/logout", "/portal/signup")


class SessionRenewal:
    """ASGI middleware renewing a browser session's access cookie (module docstring)."""

    def __init__(self, app, store, settings):
        self.app, self.store, self.settings = app, store, settings

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "") if scope["type"] == "http" else ""
        # The browser's pages and the app's JSON only: never the Nightscout API, static
        # files or the health checks (a cache keeping a Set-Cookie would hand it on), nor the
        # sign-in and sign-out forms, which set the cookies themselves.
        if not path.startswith(RENEWED) or path.startswith(NOT_RENEWED):
            await self.app(scope, receive, send)
            return
        cookies = _cookies(scope)
        session = cookies.get(SESSION_COOKIE)
        if not session or not self._due(cookies.get(ACCESS_COOKIE)):
            await self.app(scope, receive, send)
            return
        fresh, dead = await run_in_threadpool(self._renew, session)
        if fresh is not None:  # the request itself goes on with the new token
            scope = {**scope, "headers": _with_access(scope["headers"], fresh)}
            extra = [(b"set-cookie", access_cookie_header(fresh, self.settings).encode())]
        elif dead:  # signed out elsewhere, a new password, expired: forget it
            extra = [(b"set-cookie", f"{SESSION_COOKIE}=; Max-Age=0; Path=/".encode())]
        else:
            await self.app(scope, receive, send)
            return

        async def sending(msg):
            if msg["type"] == "http.response.start":
                headers = list(msg.get("headers", []))
                # A route that sets or clears the cookies itself has the last word.
                if not any(k.lower() == b"set-cookie" and v.startswith(
                        (ACCESS_COOKIE + "=").encode()) for k, v in headers):
                    headers += extra
                    if not any(k.lower() == b"cache-control" for k, _ in headers):
                        headers.append((b"cache-control", b"private, no-store"))
                msg = {**msg, "headers": headers}
            await send(msg)

        await self.app(scope, receive, sending)

    def _due(self, access: str | None) -> bool:
        """Whether the access token is missing, not valid, or past half its life."""
        if not access:
            return True
        try:
            claims = auth.decode(access, self.settings.jwt_secret, "access")
        except auth.AuthError:
            return True
        return claims["exp"] - time.time() < self.settings.access_token_minutes * 30

    def _renew(self, session: str) -> tuple[str | None, bool]:
        """(a new access token, or None; whether the session is dead for good)."""
        from nightlink.cloud.store import NotFoundError

        try:
            claims = auth.decode(session, self.settings.jwt_secret, "refresh")
            user_id = self.store.live_refresh_token(claims.get("jti", ""))
            if user_id is None or str(user_id) != claims["sub"]:
                return None, True  # signed out, a new password, or expired: sign in again
            user = auth.token_user(self.store, claims)
            return auth.access_token(user, self.settings.jwt_secret,
                                     self.settings.access_token_minutes), False
        except (auth.AuthError, NotFoundError, ValueError):
            return None, True
        except Exception:  # noqa: BLE001 - a database away: the request goes on without it
            _LOGGER.warning("a browser session could not be renewed", exc_info=True)
            return None, False


def _cookies(scope) -> dict[str, str]:
    """The request's cookies as Starlette reads them (lenient: one odd cookie set by another
    page of the domain does not hide the others)."""
    out: dict[str, str] = {}
    for key, value in scope.get("headers") or ():
        if key == b"cookie":
            out.update(cookie_parser(value.decode("latin-1")))
    return out


def _with_access(headers, token: str) -> list:
    """The request headers with the access cookie replaced, every other cookie as sent."""
    out = []
    for key, value in headers:
        if key == b"cookie":
            kept = [p for p in value.decode("latin-1").split(";")
                    if p.split("=", 1)[0].strip() != ACCESS_COOKIE]
            value = "; ".join([*(p.strip() for p in kept if p.strip()),
                               f"{ACCESS_COOKIE}={token}"]).encode("latin-1")
        out.append((key, value))
    return out


def _cookie(name: str, value: str, max_age: int, settings) -> str:
    secure = "; Secure" if settings.env == "production" else ""
    return (f"{name}={value}; Max-Age={max_age}; Path=/; HttpOnly; SameSite=strict"
            f"{secure}")


def access_cookie_header(token: str, settings) -> str:
    return _cookie(ACCESS_COOKIE, token, settings.access_token_minutes * 60, settings)


def start(resp, tokens: dict, settings):
    """Sign a browser in on `resp`: the access token and the session's refresh token."""
    resp.headers.append("set-cookie", access_cookie_header(tokens["access_token"], settings))
    resp.headers.append("set-cookie", _cookie(SESSION_COOKIE, tokens["refresh_token"],
                                              settings.refresh_token_days * 86400, settings))
    return resp


def end(resp, store, request, settings):
    """Sign a browser out on `resp`: its session revoked, both cookies gone."""
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        try:
            store.revoke_refresh_token(auth.decode(token, settings.jwt_secret,
                                                   "refresh").get("jti", ""))
        except auth.AuthError:
            pass
    for name in (ACCESS_COOKIE, SESSION_COOKIE):
        resp.delete_cookie(name, path="/")
    resp.delete_cookie(ACCESS_COOKIE, path="/portal")  # sessions from before the app
    return resp
