"""Who may do what on a Nightscout site: the API secret, access tokens, JWTs and roles.

As Nightscout: the API secret is presented as its SHA-1 hex (any case) or SHA-512 hex, in the
`api-secret` header or `?secret=`, and gives every permission. An access token (a subject's
name, a dash and hex digits) is presented as `?token=`, in the api-secret header (raw,
`token=…` as py-nightscout sends it, or its SHA-1), or exchanged at
`/api/v2/authorization/request/{token}` for a JWT sent as `Authorization: Bearer`. A subject's
roles give permissions such as `api:treatments:create`; without credentials the site's
default role applies (`readable` on a site open for reading, else `denied`). Permissions are
matched as Shiro does: `*` grants any part, a shorter grant covers deeper parts, and a comma
in a wanted permission asks for every alternative.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

import jwt

from nightlink.shared.apisecret import api_secret_hash

ROLES: dict[str, tuple[str, ...]] = {
    "admin": ("*",),
    "denied": (),
    "status-only": ("api:status:read",),
    "readable": ("*:*:read",),
    "careportal": ("api:treatments:create",),
    "devicestatus-upload": ("api:devicestatus:create",),
    "activity": ("api:activity:create",),
    # the role OpenAPS's setup guide has people make, checked by name by oref0-setup
    # (oref0_nightscout_check.py): a rig reads and writes treatments, statuses and entries
    "oref0rig": ("api:treatments:read", "api:treatments:create", "api:devicestatus:read",
                 "api:devicestatus:create", "api:entries:read", "api:entries:create"),
}
# The roles a token is made with (the CLIs, the portal's API)
TOKEN_ROLES = ("readable", "careportal", "devicestatus-upload", "oref0rig", "admin")
JWT_HOURS = 8
_HEX = re.compile(r"^[0-9a-fA-F]+$")





def sha512_hex(text: str) -> str:
    return hashlib.sha512(text.encode("utf-8")).hexdigest()


def secret_forms(secret: str) -> tuple[str, str]:
    """What a client may send for the API secret: its SHA-1 and SHA-512, lowercase hex."""
    return api_secret_hash(secret), sha512_hex(secret)


def kept_hash(presented: str) -> str:
    """How a credential is kept: SHA-256 of what the client presents, never the value."""
    return hashlib.sha256(presented.encode("utf-8")).hexdigest()


def token_only(grant: Grant | None) -> Grant | None:
    """The grant of an access token sent where only tokens go (a Bearer): the API secret is
    taken in `api-secret` and `?secret=` alone, as Nightscout takes it."""
    return grant if grant is not None and grant.kind == "token" else None


def normalise_presented(value: str) -> str:
    """A presented secret or token, trimmed; hex hashes lowercased; `token=` prefix removed."""
    value = value.strip()
    if value.lower().startswith("token="):
        value = value[len("token="):].strip()
    if len(value) in (40, 128) and _HEX.match(value):
        value = value.lower()
    return value


def secret_sha1(presented: str) -> str | None:
    """The SHA-1 hex of an API secret as presented (already a SHA-1, or the plain secret);
    None for a SHA-512, from which it cannot be had."""
    value = normalise_presented(presented)
    if len(value) in (40, 128) and _HEX.match(value):
        return value if len(value) == 40 else None
    return hashlib.sha1(value.encode("utf-8")).hexdigest()


def _abbrev(name: str) -> str:
    # ASCII as JavaScript's \W (Nightscout, LoopFollow): a header cannot carry other letters
    return re.sub(r"\W", "", name.lower(), flags=re.ASCII)[:10] or "token"


def new_access_token(name: str) -> str:
    """A new access token shaped as Nightscout's: the name's first letters, a dash, 16 hex
    (apps check that shape: LoopFollow takes `?token=` from a pasted URL only if it has it)."""
    return f"{_abbrev(name)}-{secrets.token_hex(8)}"


def derived_access_token(name: str, secret_sha1: str, subject_id: int | str) -> str:
    """The token Nightscout gives a subject: its abbreviation, a dash and the first 16 hex of
    SHA-1(the API secret's SHA-1 hex + the subject's _id). LoopFollow makes its read token
    this way itself after creating a subject with the API secret, and uses that."""
    digest = hashlib.sha1((secret_sha1.lower() + str(subject_id)).encode()).hexdigest()
    return f"{_abbrev(name)}-{digest[:16]}"


class Permissions:
    """A set of granted permission patterns (one role's or several roles' union)."""

    def __init__(self, patterns: Iterable[str] = ()):
        self.patterns = tuple(dict.fromkeys(patterns))

    @classmethod
    def of_roles(cls, roles: Iterable[str]) -> Permissions:
        out: list[str] = []
        for role in roles:
            out += ROLES.get(role, ())
        return cls(out)

    def allows(self, wanted: str) -> bool:
        """True when every alternative of every comma-separated part is granted."""
        parts = wanted.split(":")
        for combo in _expand(parts):
            if not any(_granted(p.split(":"), combo) for p in self.patterns):
                return False
        return True

    def __repr__(self) -> str:
        return f"Permissions({list(self.patterns)})"


def _expand(parts: list[str]) -> list[list[str]]:
    combos: list[list[str]] = [[]]
    for part in parts:
        combos = [c + [alt] for c in combos for alt in part.split(",")]
    return combos


def _granted(grant: list[str], wanted: list[str]) -> bool:
    for i, want in enumerate(wanted):
        if i >= len(grant):
            return True  # a shorter grant covers every deeper part
        if grant[i] != "*" and want not in grant[i].split(","):
            return False
    return len(grant) <= len(wanted) or all(g == "*" for g in grant[len(wanted):])


@dataclass
class Grant:
    """What one request's credentials allow on one site."""

    site_key: str
    subject: str  # "api-secret", a token's subject name, a member's email, "anonymous"
    permissions: Permissions
    kind: str  # secret, token, jwt, member, anonymous
    token: str | None = None  # the access token behind a token or JWT grant
    roles: tuple[str, ...] = ()

    @property
    def authenticated(self) -> bool:
        return self.kind != "anonymous"

    def allows(self, wanted: str) -> bool:
        return self.permissions.allows(wanted)

    def may_change(self, coll: str) -> bool:
        """Whether an upload may change a stored document it matches (by `_id` or the
        collection's duplicate rules): reading the collection and updating it, as API v3
        asks of a create that lands on a stored document. A token that may only read and add
        (the sharing page's "read and log treatments", `oref0rig`) rewrote a past bolus by
        posting its `_id` with another dose; now its upload is answered with what is stored."""
        return self.allows(f"api:{coll}:read") and self.allows(f"api:{coll}:update")


# -- JWTs (API v2 authorization/request, API v3 Bearer) -------------------------------------------


def issue_jwt(secret: str, site_key: str, access_token: str, now: float | None = None) -> dict:
    """The reply of /api/v2/authorization/request/{token}: the JWT and its times."""
    iat = int(now if now is not None else time.time())
    exp = iat + JWT_HOURS * 3600
    token = jwt.encode({"accessToken": access_token, "site": site_key, "iat": iat, "exp": exp},
                       secret, algorithm="HS256")
    return {"token": token, "iat": iat, "exp": exp}


def read_jwt(secret: str, token: str) -> dict | None:
    """The claims of a JWT this site issued, None when it is not one (or has expired)."""
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"],
                            options={"require": ["exp", "iat"]})
    except (jwt.PyJWTError, UnicodeError):
        return None
    if not isinstance(claims.get("accessToken"), str) or not isinstance(claims.get("site"), str):
        return None
    return claims


def looks_like_jwt(value: str) -> bool:
    return value.count(".") == 2 and len(value) > 30 and " " not in value


def derived_secret(secret: str, purpose: str) -> str:
    """A key derived from a secret for one purpose (the edge signs its JWTs with it)."""
    return hmac.new(secret.encode("utf-8"), purpose.encode("utf-8"), hashlib.sha256).hexdigest()


# -- failed attempts --------------------------------------------------------------------------


@dataclass
class FailureLimit:
    """Failed credential attempts per client address: past `limit` a minute, answer 429.

    Nightscout delays every later request of an address by 5 s per failure; holding requests
    open ties up workers, so this refuses quickly instead, saying when to try again.
    """

    limit: int = 30
    window_s: float = 60.0
    _seen: dict = field(default_factory=lambda: defaultdict(deque))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _turns: tuple = field(default_factory=lambda: tuple(threading.Lock() for _ in range(64)))

    def turn(self, address: str) -> threading.Lock:
        """The lock an address's credential checks take one at a time (from attempt() to
        forgive()): one of 64, by the address's hash (two addresses may share one; nothing
        to forget, and no moment where one address has two)."""
        return self._turns[hash(address) % len(self._turns)]

    def blocked(self, address: str) -> float:
        """Seconds until this address may try again; 0 when it may now."""
        now = time.monotonic()
        with self._lock:
            seen = self._seen.get(address)
            if not seen:
                return 0.0
            while seen and seen[0] < now - self.window_s:
                seen.popleft()
            if len(seen) < self.limit:
                return 0.0
            return max(1.0, seen[0] + self.window_s - now)

    def failed(self, address: str) -> None:
        with self._lock:
            self._seen[address].append(time.monotonic())
            self._forget_oldest()

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._seen.pop(address, None)

    def attempt(self, address: str) -> tuple[float, float]:
        """Count an attempt before its credential is looked at, in one locked step, so that
        parallel guesses cannot all pass the check before any is counted: (seconds to wait,
        0.0) when the address is over the limit, else (0.0, the attempt's stamp for
        forgive())."""
        now = time.monotonic()
        with self._lock:
            seen = self._seen[address]
            while seen and seen[0] < now - self.window_s:
                seen.popleft()
            if len(seen) >= self.limit:
                return max(1.0, seen[0] + self.window_s - now), 0.0
            seen.append(now)
            self._forget_oldest()
            return 0.0, now

    def forgive(self, address: str, stamp: float) -> None:
        """Take back one counted attempt that turned out right."""
        with self._lock:
            seen = self._seen.get(address)
            if seen and stamp in seen:
                seen.remove(stamp)
            if seen is not None and not seen:
                del self._seen[address]  # only addresses with failures are kept

    def _forget_oldest(self) -> None:
        """Bounded: past 10,000 addresses, forget those whose failures have all expired,
        then the oldest of those still under the limit; an address over it is kept (else
        enough other addresses would lift its block) up to a hard cap of 20,000."""
        if len(self._seen) <= 10_000:
            return
        now = time.monotonic()
        for key in [k for k, seen in self._seen.items()
                    if not seen or seen[-1] < now - self.window_s]:
            del self._seen[key]
        if len(self._seen) > 10_000:
            for key in [k for k, seen in self._seen.items() if len(seen) < self.limit][:1000]:
                del self._seen[key]
        if len(self._seen) > 20_000:  # a flood from that many blocked addresses: a hard cap
            for key in list(self._seen)[:1000]:
                del self._seen[key]
