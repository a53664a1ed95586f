"""Passwords (argon2id), JWT access and refresh tokens, and the login rate limit."""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from collections import defaultdict, deque

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from nightlink.cloud.store import Store
from nightlink.sql import off_loop

_HASHER = PasswordHasher()
ALGORITHM = "HS256"


class AuthError(Exception):
    """Credentials are missing, wrong or expired; the message is safe to show."""


def hash_password(password: str) -> str:
    off_loop("a password hash")  # argon2id takes tens of milliseconds and 64 MiB by design
    return _HASHER.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    off_loop("a password check")
    try:
        return _HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


# A real hash to verify against when the account does not exist, so that a wrong email
# costs the same time as a wrong password.
_DUMMY_HASH = _HASHER.hash(secrets.token_hex(16))


def check_login(store: Store, email: str, password: str) -> dict:
    from nightlink.cloud.store import NotFoundError

    try:
        user = store.user_by_email(email)
    except NotFoundError:
        verify_password(_DUMMY_HASH, password)
        raise AuthError("Wrong email or password.") from None
    if not verify_password(user["password_hash"], password):
        raise AuthError("Wrong email or password.")
    return user


def account_mark(user: dict) -> int:
    """When the account was made, in ms: with its id, it names one account for good. An id
    alone can name another account later (a database restored from a backup hands out the
    ids made after it again)."""
    return round(float(user["created_at"]) * 1000)


def token_user(store: Store, claims: dict) -> dict:
    """The account a decoded token names; NotFoundError when it is gone, or when its id now
    belongs to an account made after the token's (tokens without the mark, issued before it
    was added, name the id alone)."""
    from nightlink.cloud.store import NotFoundError

    user = store.user(int(claims["sub"]))
    mark = claims.get("acc")
    if mark is not None and mark != account_mark(user):
        raise NotFoundError(f"No user {claims['sub']} made at {mark}.")
    return user


def issue_tokens(store: Store, user_id: int, secret: str, access_minutes: int,
                 refresh_days: int, stored: tuple[str, int] | None = None) -> dict:
    """An access and a refresh token; `stored`: (jti, expiry) of a refresh token already kept
    (the successor refresh() kept as it spent the old one), else a new sign-in's is kept."""
    now = int(time.time())
    user = store.user(user_id)
    mark = account_mark(user)
    access = access_token(user, secret, access_minutes)
    jti, expires = stored or (uuid.uuid4().hex, now + refresh_days * 86400)
    refresh = jwt.encode({"sub": str(user_id), "acc": mark, "typ": "refresh", "jti": jti,
                          "iat": now, "exp": expires}, secret, algorithm=ALGORITHM)
    if stored is None:
        store.add_refresh_token(jti, user_id, expires)
    return {"access_token": access, "refresh_token": refresh, "token_type": "bearer",
            "expires_in": access_minutes * 60}


def access_token(user: dict, secret: str, access_minutes: int) -> str:
    """A new access token for an account (a user row; a browser session renewing it)."""
    now = int(time.time())
    return jwt.encode({"sub": str(user["id"]), "acc": account_mark(user), "typ": "access",
                       "iat": now, "exp": now + access_minutes * 60}, secret,
                      algorithm=ALGORITHM)


def decode(token: str, secret: str, typ: str) -> dict:
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM],
                            options={"require": ["exp", "sub"]})
    except jwt.ExpiredSignatureError:
        raise AuthError("The token has expired.") from None
    except (jwt.PyJWTError, UnicodeError):  # a half emoji cannot even be encoded to check
        raise AuthError("The token is not valid.") from None
    if claims.get("typ") != typ:
        raise AuthError(f"An {typ} token is needed here.")
    return claims


def refresh(store: Store, token: str, secret: str, access_minutes: int, refresh_days: int) -> dict:
    """New tokens for a refresh token, which is spent (rotation: reuse is refused)."""
    from nightlink.cloud.store import NotFoundError

    claims = decode(token, secret, "refresh")
    successor = (uuid.uuid4().hex, int(time.time()) + refresh_days * 86400)
    spent = store.use_refresh_token(claims.get("jti", ""), successor)
    user_id = spent[0] if spent is not None else None
    if user_id is None or str(user_id) != claims["sub"]:
        # (or unknown: made after the backup the database was restored from)
        raise AuthError("The refresh token is not valid any more (already used, revoked or "
                        "unknown here); sign in again.")
    try:
        token_user(store, claims)
    except NotFoundError:
        raise AuthError("The account no longer exists.") from None
    return issue_tokens(store, user_id, secret, access_minutes, refresh_days, successor)


class RateLimiter:
    """At most `limit` events per key in a sliding minute (per process)."""

    def __init__(self, limit: int, window_s: float = 60.0):
        self.limit = limit
        self.window = window_s
        self._events: dict[str, deque] = defaultdict(deque)
        self._lock = threading.Lock()

    def hit(self, key: str) -> float:
        """Count an event; return 0 if allowed, else the seconds until it would be."""
        now = time.monotonic()
        with self._lock:
            q = self._events[key]
            while q and q[0] <= now - self.window:
                q.popleft()
            if len(q) >= self.limit:
                return max(0.1, q[0] + self.window - now)
            q.append(now)
            return 0.0

    def forget(self, key: str) -> None:
        """Clear a key's events: a sign-in that succeeded ends the count of attempts, so
        setting up several devices with one account in a minute is not refused."""
        with self._lock:
            self._events.pop(key, None)
