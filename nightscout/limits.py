"""What one request may cost the edge or the cloud: the size of its body, checked while it
arrives, and how fast one site may upload.

`BodyLimit` is plain ASGI in front of the whole app (every route, the Nightlink API too): a
declared Content-Length over the cap is refused with 413 before a byte of the body is read,
and a chunked body is counted as it arrives and refused the moment it crosses the cap.
Nightscout's routes then decompress and parse within the same cap (`http.read_json`,
`jsonsafe`).

`UploadLimit` is a token bucket per site for writes (POST, PUT, PATCH, DELETE). A write that
finds the bucket empty waits its turn for up to `queue_s` seconds instead of being refused:
AndroidAPS (NSClient v3) uploads one document per request and counts any 4xx answer to a
create as done, so a refusal during its catch-up after a night offline would lose that
treatment; a short wait only slows it down. Past the queue, 429 with Retry-After. A wait
holds a socket, not a worker thread, and at most rate × queue_s writes wait per site. A write
answered as storing nothing new (only duplicates) gives its turn back: bridges re-send the
last day every minute, one document per request, and would otherwise queue their new reading
behind hundreds of turns.
docs/nightscout.md ("Limits") gives the numbers and why.
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass

from nightlink.nightscout import jsonsafe

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
OTHER_MAX_BODY_BYTES = 1024 * 1024  # the Nightlink API and the portal take small forms
_NIGHTSCOUT_PREFIXES = ("/api/v1", "/api/v2", "/api/v3", "/pebble", "/t/")


@dataclass(frozen=True)
class Limits:
    """The bounds of one app; `from_settings` reads them from a tier's settings."""

    max_body_bytes: int = jsonsafe.MAX_BODY_BYTES
    upload_rate_per_min: float = 60.0  # 0 turns the upload limit off
    upload_burst: int = 600
    upload_queue_s: float = 10.0

    @classmethod
    def from_settings(cls, settings: object) -> Limits:
        """The limits a settings object names (missing names keep the defaults)."""
        default = cls()
        return cls(
            max_body_bytes=int(getattr(settings, "max_body_bytes", default.max_body_bytes)),
            upload_rate_per_min=float(getattr(settings, "upload_rate_per_min",
                                              default.upload_rate_per_min)),
            upload_burst=int(getattr(settings, "upload_burst", default.upload_burst)),
            upload_queue_s=float(getattr(settings, "upload_queue_s", default.upload_queue_s)),
        )


# -- answers ------------------------------------------------------------------------------------


def is_nightscout_path(path: str) -> bool:
    return path.startswith(_NIGHTSCOUT_PREFIXES)


async def refuse(scope: dict, send, status: int, message: str, description: str,
                 headers: dict[str, str] | None = None) -> None:
    """Answer a refusal in the shape of the API the path belongs to: Nightscout's
    {status, message, description}, or the Nightlink API's {detail}."""
    if is_nightscout_path(scope.get("path", "")):
        body = {"status": status, "message": message, "description": description}
    else:
        body = {"detail": description}
    raw = json.dumps(body).encode("utf-8")
    extra = [(k.lower().encode("latin-1"), v.encode("latin-1"))
             for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(raw)).encode("ascii")), *extra]})
    await send({"type": "http.response.body", "body": raw})


# -- body size ----------------------------------------------------------------------------------


class BodyLimit:
    """Plain ASGI: request bodies over the cap are refused with 413 while they arrive."""

    def __init__(self, app, max_bytes: int = jsonsafe.MAX_BODY_BYTES,
                 other_max_bytes: int = OTHER_MAX_BODY_BYTES):
        self.app = app
        self.max_bytes = max_bytes
        self.other_max_bytes = min(other_max_bytes, max_bytes)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        cap = self.max_bytes if is_nightscout_path(scope["path"]) else self.other_max_bytes
        length, chunked = _framing(scope)
        if length is not None:
            if length > cap:
                return await _too_large(scope, send, cap)
            return await self.app(scope, receive, send)  # the server stops at Content-Length
        if not chunked:
            return await self.app(scope, receive, send)
        messages, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                messages.append(message)  # the client went away; the app sees it
                break
            size += len(message.get("body", b""))
            if size > cap:
                return await _too_large(scope, send, cap)
            messages.append(message)
            if not message.get("more_body", False):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        return await self.app(scope, replay, send)


def _framing(scope: dict) -> tuple[int | None, bool]:
    """The declared Content-Length (None when absent) and whether the body is chunked."""
    length, chunked = None, False
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            text = value.strip()
            length = int(text) if text.isdigit() and len(text) < 19 else 2**63
        elif key == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    return length, chunked


async def _too_large(scope: dict, send, cap: int) -> None:
    await refuse(scope, send, 413, "Payload Too Large",
                 f"The body is larger than {cap} bytes.", {"Connection": "close"})


# -- upload rate ------------------------------------------------------------------------------


class UploadLimit:
    """A token bucket per site: `rate_per_min` writes a minute, `burst` at once, and a queue
    of up to `queue_s` seconds before refusing (see the module docstring)."""

    def __init__(self, rate_per_min: float, burst: int, queue_s: float):
        self.rate = rate_per_min / 60.0  # tokens a second
        self.burst = max(1, burst)
        self.queue_s = max(0.0, queue_s)
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._lock = threading.Lock()

    @classmethod
    def of(cls, limits: Limits) -> UploadLimit | None:
        if limits.upload_rate_per_min <= 0:
            return None
        return cls(limits.upload_rate_per_min, limits.upload_burst, limits.upload_queue_s)

    def reserve(self, key: str, now: float | None = None) -> float | None:
        """Take a turn: the seconds to wait before writing (0 for now), or None when the
        queue is full and the write is refused."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens = self._tokens(key, now)
            wait = max(0.0, (1.0 - tokens) / self.rate)
            if wait > self.queue_s:
                self._buckets[key] = (tokens, now)
                return None
            self._buckets[key] = (tokens - 1.0, now)
            if len(self._buckets) > 10_000:
                self._forget_full(now)
            return wait

    def refund(self, key: str, now: float | None = None) -> None:
        """Give a turn back: the write it was taken for stored nothing new (every document
        already there: a bridge re-sending the last day each minute, as Nightscout lets it)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._buckets[key] = (min(float(self.burst), self._tokens(key, now) + 1.0), now)

    def retry_after(self, key: str, now: float | None = None) -> int:
        """Whole seconds until a write of this site would be taken without waiting."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens = self._tokens(key, now)
        return max(1, math.ceil((1.0 - tokens) / self.rate))

    def _tokens(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - at) * self.rate)

    def _forget_full(self, now: float) -> None:
        """Drop the buckets that have refilled (bounded memory over many sites)."""
        for key in [k for k in self._buckets if self._tokens(k, now) >= self.burst]:
            del self._buckets[key]
