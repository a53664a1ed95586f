"""What every Nightscout route shares: the site and credentials of a request, errors in
Nightscout's shape, bodies read safely, content negotiation and the reply cache.

`NightscoutState` lives on `app.state.nightscout`; a tier builds it with its `Directory`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from nightlink.nightscout import auth, jsonsafe
from nightlink.nightscout.limits import Limits, UploadLimit
from nightlink.nightscout.site import Directory, Site
from nightlink.sql import DatabaseError

CREDENTIAL_CACHE_S = 10.0  # a revoked token or secret stops working within this time
_BARE_SHA1 = re.compile(r"[0-9a-fA-F]{40}")  # a query that is an API secret's SHA-1 alone
JSON_TYPE = "application/json"


class NSError(Exception):
    """An answer other than success, in Nightscout's shape: {status, message, description}."""

    def __init__(self, status: int, message: str, description: str | None = None,
                 headers: dict | None = None):
        super().__init__(description or message)
        self.status = status
        self.message = message
        self.description = description
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"status": self.status, "message": self.message}
        if self.description is not None:
            body["description"] = self.description
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def unauthorized(description: str = "Invalid/Missing") -> NSError:
    return NSError(401, "Unauthorized", description)


def bad_request(description: str) -> NSError:
    return NSError(400, "Bad Request", description)


def not_found(description: str) -> NSError:
    return NSError(404, "Not Found", description)


@dataclass
class NightscoutState:
    """What the Nightscout routes of one app share."""

    directory: Directory
    hub: Any = None  # the live Hub, when the app has one
    failures: auth.FailureLimit = field(default_factory=auth.FailureLimit)
    replies: ReplyCache = field(default_factory=lambda: ReplyCache())
    cors_origin: str | None = "*"
    limits: Limits = field(default_factory=Limits)
    uploads: UploadLimit | None = None  # the per-site write rate, when limited
    listeners: list = field(default_factory=list)  # called (no arguments) by forget()
    _grants: OrderedDict = field(default_factory=OrderedDict)
    _jwts: OrderedDict = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def jwt_claims(self, token: str) -> dict | None:
        """The claims of a JWT this site issued (verified once, then kept until it expires:
        AndroidAPS sends the same one with every request)."""
        now = time.time()
        with self._lock:
            hit = self._jwts.get(token)
        if hit is not None and hit["exp"] > now:
            return hit
        claims = auth.read_jwt(self.directory.jwt_secret, token)
        if claims is not None:
            with self._lock:
                self._jwts[token] = claims
                while len(self._jwts) > 4096:
                    self._jwts.popitem(last=False)
        return claims

    def forget(self) -> None:
        """Drop cached grants (a secret, token or membership changed in this process)."""
        with self._lock:
            self._grants.clear()
        forget_sites = getattr(self.directory, "forget", None)
        if forget_sites is not None:
            forget_sites()
        for listener in self.listeners:  # the sockets look at their credentials again
            listener()

    def known_credential(self, presented: str, key: str | None, kind: str) -> bool:
        """Whether the credential was looked up and found right moments ago (still cached)."""
        with self._lock:
            hit = self._grants.get((presented, key, kind))
        return hit is not None and hit[0] > time.monotonic() and hit[1] is not None

    def cached_credential(self, presented: str, key: str | None, kind: str):
        """directory.credential/bearer with a short cache (polling clocks ask every minute)."""
        cache_key = (presented, key, kind)
        now = time.monotonic()
        with self._lock:
            hit = self._grants.get(cache_key)
            if hit is not None and hit[0] > now:
                return hit[1]
        if kind == "bearer":
            grant = self.directory.bearer(presented, key)
        else:
            grant = self.directory.credential(presented, key)
        with self._lock:
            self._grants[cache_key] = (now + CREDENTIAL_CACHE_S, grant)
            while len(self._grants) > 4096:
                self._grants.popitem(last=False)
        return grant


def state_of(request: Request) -> NightscoutState:
    return request.app.state.nightscout


def site_key(request: Request) -> str | None:
    """The site a request's URL names (`/t/{site}/…`, folded away by the app's edge
    middleware), None at the root URL."""
    return request.scope.get("nightscout_site")


def too_many_failures(wait: float) -> NSError:
    """The 429 for an address past its failed-credential limit, with when to try again."""
    return NSError(429, "Too Many Requests", f"Too many failed credentials from this "
                   f"address; try again in {int(wait)} s.", {"Retry-After": str(int(wait))})


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _jwt_grant(state: NightscoutState, token: str, key: str | None) -> auth.Grant | None:
    claims = state.jwt_claims(token)
    if claims is None or key is not None and claims["site"] != key:
        return None
    grant = state.cached_credential(claims["accessToken"], claims["site"], "credential")
    if grant is None:
        return None
    return auth.Grant(grant.site_key, grant.subject, grant.permissions, "jwt",
                      token=claims["accessToken"], roles=grant.roles)


def _presented_grant(state: NightscoutState, key: str | None, bearer: str, offered: list[str],
                     token: str) -> tuple[auth.Grant | None, bool]:
    """(the grant of the first credential that is right, whether one presented before it was
    wrong): a Bearer token or JWT, then an api-secret (query or header), then a token or JWT
    in the query. A wrong secret next to a right read token is still a guess at the secret."""
    missed = False
    if bearer:
        grant = _jwt_grant(state, bearer, key) or state.cached_credential(bearer, key, "bearer")
        if grant is not None:
            return grant, missed
        missed = True
    for value in offered:
        grant = state.cached_credential(auth.normalise_presented(value), key, "credential")
        if grant is not None:
            return grant, missed
        missed = True
    if not token:
        return None, missed
    if auth.looks_like_jwt(token):
        return _jwt_grant(state, token, key), missed
    return state.cached_credential(auth.normalise_presented(token), key, "credential"), missed


def resolve_sync(request: Request, *, v3: bool = False,
                 count_failure: bool = True) -> tuple[Site, auth.Grant]:
    """The site and grant of a request; NSError 401/404/429 when there is none.
    `count_failure=False` looks without counting a bad credential against the address (the
    upload limit looks before the route, which counts it)."""
    state = state_of(request)
    if not count_failure:  # a look before the route, which resolves (and counts) itself
        return _resolve(request, state, v3, count_failure)
    kept = _kept(request, v3)
    if kept is not None:  # once a request: a guess is counted once
        return kept
    try:
        found = _resolve(request, state, v3, count_failure)
    except NSError as exc:  # refused (a wrong credential, counted): the same to the route
        request.scope.setdefault("state", {})[_RESOLVED] = (v3, exc)
        raise
    request.scope.setdefault("state", {})[_RESOLVED] = (v3, found)
    return found


_RESOLVED = "nightlink.nightscout.resolved"


def _kept(request: Request, v3: bool) -> tuple[Site, auth.Grant] | None:
    """The request's resolution made before it reached here (the reply cache's check), its
    refusal raised again, or None."""
    kept = request.scope.get("state", {}).get(_RESOLVED)
    if kept is None or kept[0] != v3:
        return None
    if isinstance(kept[1], NSError):
        raise kept[1]
    return kept[1]


def _resolve(request: Request, state: NightscoutState, v3: bool,
             count_failure: bool) -> tuple[Site, auth.Grant]:
    header = request.headers.get("authorization", "")
    bearer = header[7:].strip() if header[:7].lower() == "bearer " else ""
    offered = _offered_secrets(request)
    token = (request.query_params.get("token") or "").strip()
    if not _presents(v3, bearer, offered, token) or _known(
            state, site_key(request), bearer, [] if v3 else offered, "" if v3 else token):
        # no credential, or the one the lookup would take first was found right moments
        # ago: no guess to count
        return _resolved(request, state, v3, count_failure, bearer, offered, token, False)
    # Requests run in worker threads: one address's unknown credentials are judged one at a
    # time, so that its counted attempts are the guesses, not requests still being looked up
    # (a family behind one router, or a proxy's address, opening many polls at once), and
    # parallel guesses still cannot all pass before the first is counted.
    address = client_address(request)
    wait = state.failures.blocked(address)
    if wait:  # refused without waiting for a turn
        raise too_many_failures(wait)
    with state.failures.turn(address):
        return _resolved(request, state, v3, count_failure, bearer, offered, token, True)


def _presents(v3: bool, bearer: str, offered: list[str], token: str) -> bool:
    """Whether the request offers a credential (API v3 takes only a Bearer)."""
    return bool(bearer) or (not v3 and bool(offered or token))


def _known(state: NightscoutState, key: str | None, bearer: str, offered: list[str],
           token: str) -> bool:
    """Whether the first credential _presented_grant looks at is cached as right."""
    value = bearer or (offered[0] if offered else token)
    if auth.looks_like_jwt(value) and (bearer or not offered):
        claims = state.jwt_claims(value)
        if claims is not None:
            return (key is None or claims["site"] == key) and \
                state.known_credential(claims["accessToken"], claims["site"], "credential")
        if not bearer:
            return False
        # not this site's JWT: a member's sign-in token, looked up as a Bearer
    if bearer:
        return state.known_credential(bearer, key, "bearer")
    return state.known_credential(auth.normalise_presented(value), key, "credential")


def _resolved(request: Request, state: NightscoutState, v3: bool, count_failure: bool,
              bearer: str, offered: list[str], token: str,
              counted: bool) -> tuple[Site, auth.Grant]:
    directory = state.directory
    presented = _presents(v3, bearer, offered, token)
    key = site_key(request)
    address = client_address(request)
    # A request with a credential not known right is counted before the credential is looked
    # at, in one locked step, so parallel guesses cannot all pass the limit before any is
    # counted; a right credential takes its count back.
    wait, stamp = (state.failures.attempt(address) if counted
                   else (state.failures.blocked(address), 0.0))
    if wait:
        raise too_many_failures(wait)
    try:
        if key is not None and directory.site(key) is None:
            raise _NoSite
        if v3 and not bearer:
            raise unauthorized("Missing or bad access token or JWT")
        grant, missed = _presented_grant(state, key, bearer, [] if v3 else offered,
                                         "" if v3 else token)
    except _NoSite:
        # Answered as a site that exists but does not let this request in would answer it:
        # a site's name (a family's) is not found out by probing. A credential offered is a
        # wrong one, and counted.
        grant, missed = None, True
        if not presented:
            raise unauthorized("Missing or bad access token or JWT" if v3 else
                               "Invalid/Missing") from None
    except Exception:
        # The lookup failed (a database away): not a wrong credential.
        state.failures.forgive(address, stamp)
        raise
    if presented and grant is None:
        if not count_failure:
            state.failures.forgive(address, stamp)
        # only a `?token=` alone: a wrong Bearer or secret is refused everywhere
        site = directory.site(key) if key is not None and not bearer and not offered else None
        fallback = site.unknown_token_grant() if site is not None else None
        if fallback is not None:
            return site, fallback
        raise unauthorized("Missing or bad access token or JWT" if v3 else
                           "The api-secret, token or JWT is not valid for this site.")
    if grant is None:
        site = directory.site(key) if key is not None else directory.default_site()
        if site is None:
            raise unauthorized("Name the site in the URL (/t/{site}/… or its subdomain) or "
                               "send its api-secret or token.")
        return site, site.default_grant()
    if grant.kind == "secret":
        # Only the API secret clears the count: a read token (which every clock and follower
        # holds) must not buy another round of guesses at the secret.
        state.failures.succeeded(address)
    elif not missed or not count_failure:
        state.failures.forgive(address, stamp)
    site = directory.site(grant.site_key)
    if site is None:
        raise unauthorized("The site of this credential no longer exists.")
    return site, grant


class _NoSite(Exception):
    """The URL names no site (resolve_sync answers as for a site that refuses the request)."""


def _offered_secrets(request: Request) -> list[str]:
    """What a request offers as an API secret: the query's `secret`, then the `api-secret`
    header (either may also hold an access token), then a query that is the secret's SHA-1
    alone (oref0's nightly profile upload asks `/api/v1/profile/current?<sha1>`)."""
    bare = request.url.query if _BARE_SHA1.fullmatch(request.url.query) else None
    return [value for value in (request.query_params.get("secret"),
                                request.headers.get("api-secret"), bare)
            if value and value.strip()]


def granting_secret_sha1(request: Request) -> str | None:
    """The SHA-1 hex of the API secret that granted this request (query `secret` or header
    `api-secret`), None when another credential did."""
    state = state_of(request)
    key = site_key(request)
    for value in _offered_secrets(request):
        grant = state.cached_credential(auth.normalise_presented(value), key, "credential")
        if grant is not None and grant.kind == "secret":
            return auth.secret_sha1(value)
    return None


async def need(request: Request, permission: str, *,
               v3: bool = False) -> tuple[Site, auth.Grant]:
    """need_sync for a route: the site and credential are looked up in a worker thread (the
    database may wait on a lock or a server; the event loop serves everyone else meanwhile),
    once a request (a later call finds them in the request's scope)."""
    kept = _kept(request, v3)
    if kept is not None:
        return _granted(kept, permission, v3)
    return await run_in_threadpool(need_sync, request, permission, v3=v3)


async def resolve(request: Request, *, v3: bool = False) -> tuple[Site, auth.Grant]:
    """resolve_sync in a worker thread (none needed once the request has been resolved)."""
    kept = _kept(request, v3)
    if kept is not None:
        return kept
    return await run_in_threadpool(resolve_sync, request, v3=v3)


def need_sync(request: Request, permission: str, *,
              v3: bool = False) -> tuple[Site, auth.Grant]:
    """resolve_sync, then 401 (v1) or 403 (v3) unless the grant has the permission."""
    return _granted(resolve_sync(request, v3=v3), permission, v3)


def _granted(found: tuple[Site, auth.Grant], permission: str,
             v3: bool) -> tuple[Site, auth.Grant]:
    site, grant = found
    if not grant.allows(permission):
        if v3:
            raise NSError(403, f"Missing permission {permission}")
        raise unauthorized("Invalid/Missing" if not grant.authenticated else
                           f"This credential does not allow {permission}.")
    return site, grant


# -- bodies -------------------------------------------------------------------------------------


async def read_json(request: Request) -> Any:
    """The body as cleaned JSON (gzip accepted); NSError 400/413/415 when unusable.
    The app's BodyLimit has refused bodies over the cap already; this counts again so that
    the route is safe on its own."""
    cap = state_of(request).limits.max_body_bytes
    too_large = NSError(413, "Payload Too Large", f"The body is larger than {cap} bytes.")
    length = request.headers.get("content-length")
    if length and length.isdecimal() and int(length) > cap:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise too_large
        chunks.append(chunk)
    body = b"".join(chunks)
    try:
        body = jsonsafe.decompress(body, request.headers.get("content-encoding", ""), cap)
        if not body.strip():
            raise jsonsafe.BodyError("The body is empty; send a JSON object or array.")
        return await run_in_threadpool(jsonsafe.loads, body)
    except jsonsafe.BodyError as exc:
        raise NSError(exc.status, _REASONS.get(exc.status, "Bad Request"), str(exc)) from None


_REASONS = {400: "Bad Request", 413: "Payload Too Large", 415: "Unsupported Media Type"}


def as_items(payload: Any) -> list[Any]:
    return payload if isinstance(payload, list) else [payload]


# -- replies ------------------------------------------------------------------------------------


def json_response(data: Any, status: int = 200, headers: dict | None = None) -> Response:
    body = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return Response(body.encode("utf-8"), status_code=status, headers=headers,
                    media_type=JSON_TYPE)


def wants(request: Request, ext: str | None, options: tuple[str, ...],
          fallback: str | None = None) -> str:
    """The reply format: the path's extension, else the option the Accept header prefers, as
    Express's res.format (which cgm-remote-monitor uses) ranks them: highest q, then the most
    specific match (`application/json` over `application/*` over `*/*`), then the type the
    client lists first, then the server's order. So `*/*` or no Accept gives the first option
    and axios's `application/json, text/plain, */*` gives JSON. Nothing acceptable:
    `fallback` (Nightscout's entries answer JSON there), else the first option."""
    if ext:
        return ext
    accepted = _accept_ranges(request.headers.get("accept") or "*/*")
    best: tuple | None = None
    for rank, option in enumerate(options):
        kind, _, sub = _MIME[option].partition("/")
        match = None  # (q, specificity, client position) of the range that fits best
        for pos, (a_kind, a_sub, q) in enumerate(accepted):
            if a_kind not in ("*", kind) or a_sub not in ("*", sub):
                continue
            spec = (4 if a_kind == kind else 0) + (2 if a_sub == sub else 0)
            if match is None or (spec, q, -pos) > (match[1], match[0], -match[2]):
                match = (q, spec, pos)
        if match is None or match[0] <= 0:
            continue
        key = (-match[0], -match[1], match[2], rank)
        if best is None or key < best[0]:
            best = (key, option)
    return best[1] if best else (fallback or options[0])


def _accept_ranges(header: str) -> list[tuple[str, str, float]]:
    """(type, subtype, q) of each media range of an Accept header, in the client's order;
    ranges that are not type/subtype are left out, a q that is no number counts as 1."""
    out = []
    for part in header.lower().split(","):
        media, *params = (p.strip() for p in part.split(";"))
        kind, slash, sub = media.partition("/")
        if not (slash and kind and sub):
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    q = min(1.0, max(0.0, float(value)))
                except ValueError:
                    q = 1.0
        out.append((kind, sub, q))
    return out


_MIME = {"json": "application/json", "txt": "text/plain", "tsv": "text/tab-separated-values",
         "csv": "text/csv", "html": "text/html", "js": "application/javascript"}


def split_ext(name: str, allowed: tuple[str, ...] = ("json",)) -> tuple[str, str | None]:
    """("current", "json") for "current.json"; the extension must be one of allowed."""
    base, dot, ext = name.rpartition(".")
    if dot and ext.lower() in allowed:
        return base, ext.lower()
    return name, None


@dataclass(frozen=True)
class Served:
    """A reply as sent for a URL, and what it is valid for: the site and permission it
    needs, the collection whose newest change it reflects, and until when at most."""

    site: str
    coll: str
    permission: str
    v3: bool
    stamp: int | None
    until_ms: int | None
    body: bytes
    media: str
    headers: tuple[tuple[str, str], ...]


def _url_key(scope: dict) -> tuple:
    accept = next((v for k, v in scope.get("headers", ()) if k == b"accept"), b"")
    return (scope.get("nightscout_site"), scope["path"], scope.get("query_string", b""),
            accept)


class ReplyCache:
    """Replies to polled queries, kept until the site's collection changes.

    `get`/`put` keep replies by what they depend on, for the routes; `remember`/`answer`
    keep the last reply per URL, so that the app's edge middleware answers a poll without
    routing it (after checking the credential and that nothing changed)."""

    def __init__(self, size: int = 1024):
        self._data: OrderedDict = OrderedDict()
        self._urls: OrderedDict = OrderedDict()
        self._size = size
        self._lock = threading.Lock()
        self._computing: dict[tuple, asyncio.Lock] = {}

    def remember(self, request: Request, served: Served) -> None:
        key = _url_key(request.scope)
        with self._lock:
            self._urls[key] = served
            while len(self._urls) > self._size:
                self._urls.popitem(last=False)

    def remembered(self, scope: dict) -> Served | None:
        """The reply last sent for this URL, if any (memory only: for the event loop)."""
        with self._lock:
            return self._urls.get(_url_key(scope))

    def answer(self, scope: dict, hit: Served) -> Response | None:
        """The remembered reply `hit` to this request if it is still what the route would
        send. It reads the database: call it in a worker thread."""
        request = Request(scope)
        try:
            site, _ = need_sync(request, hit.permission, v3=hit.v3)
            if site.key != hit.site or hit.until_ms is not None and time.time() * 1000 >= \
                    hit.until_ms or site.docs.last_modified(hit.coll) != hit.stamp:
                return None
        except (NSError, DatabaseError):
            # The route answers refusals, and a database it cannot use (503, Retry-After):
            # this runs before the app's exception handlers, where either would be a 500.
            return None
        headers = dict(hit.headers)
        last = headers.get("Last-Modified")
        ims = request.headers.get("if-modified-since")
        if last and not hit.v3 and hit.stamp is not None:
            from nightlink.nightscout import times

            # As the route would send it now (the second of the change, once it is over).
            headers["Last-Modified"] = times.last_modified_header(hit.stamp)
        if last and ims and not hit.v3 and hit.stamp is not None:
            since = times.parse_http_date(ims)
            if since is not None and hit.stamp // 1000 * 1000 <= since:
                return Response(status_code=304)
        return Response(hit.body, media_type=hit.media, headers=headers)

    @contextlib.asynccontextmanager
    async def computing(self, key: tuple):
        """Hold while computing a missing reply, so that a hundred clients asking at once
        after a change run the query once (within this event loop)."""
        lock = self._computing.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and self._computing.get(key) is lock:
                del self._computing[key]

    def get(self, key: tuple, stamp: int | None) -> Any:
        with self._lock:
            hit = self._data.get(key)
            if hit is not None and hit[0] == stamp:
                self._data.move_to_end(key)
                return hit[1]
        return None

    def put(self, key: tuple, stamp: int | None, value: Any) -> None:
        with self._lock:
            self._data[key] = (stamp, value)
            while len(self._data) > self._size:
                self._data.popitem(last=False)
