"""Live CGM for the edge: Nightscout entries as `Glucose` samples and back, a Nightscout
follower, and the readings uploaded to the local Nightscout.

Every source yields `Glucose` samples oldest first; sgv < 39 becomes an error code, never glucose.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable

import httpx

from nightlink.edge.sources.samples import Glucose, SourceError
from nightlink.edge.store import EdgeStore
from nightlink.nightscout.times import iso as date_string
from nightlink.shared import units
from nightlink.shared.apisecret import api_secret_hash

_LOGGER = logging.getLogger(__name__)


# -- Nightscout entries -----------------------------------------------------------------------


MAX_SGV = 1000  # mg/dL: no sensor reads higher (they stop at 400-500); above is not glucose
FUTURE_S = 300  # an entry dated further ahead of the clock is a wrong clock, not a reading


def entry_to_glucose(entry: dict) -> Glucose:
    """A Nightscout sgv entry as a Glucose sample; raise ValueError if it is not one.

    As Nightscout reads uploads: `sgv` a number or numeric text, the time from `date` (epoch
    ms, as a number or text) or else `dateString` or `sysTime`. A value below 39 is a
    sensor's error code, so it must be a whole number: 3.1 is an mmol/L reading sent as mg/dL,
    refused rather than shown as error 3 (no antenna) in place of a low.
    """
    from nightlink.nightscout.documents import to_number
    from nightlink.nightscout.times import Y2000_MS, parse_ms

    if entry.get("type", "sgv") != "sgv":
        raise ValueError(f"Entry of type {entry.get('type')!r} is not an sgv entry.")
    sgv = to_number(entry.get("sgv"))
    if isinstance(sgv, bool) or not isinstance(sgv, int | float) or not math.isfinite(sgv):
        raise ValueError(f"The entry's sgv must be a number, not {entry.get('sgv')!r}.")
    if not 0 <= sgv <= MAX_SGV:
        raise ValueError(f"The entry's sgv {sgv!r} is not a glucose value in mg/dL.")
    if units.is_sensor_error(round(sgv)) and sgv != int(sgv):
        raise ValueError(f"The entry's sgv {sgv!r} looks like mmol/L; Nightscout entries "
                         "carry mg/dL.")
    stamp = next((entry[k] for k in ("date", "dateString", "sysTime") if entry.get(k) is not None
                  and not isinstance(entry.get(k), bool)), None)
    if stamp is None:
        raise ValueError("The entry has no date.")
    date = parse_ms(stamp)  # ValueError (TimeError) when it is no time
    if date < Y2000_MS:
        raise ValueError(f"The entry's date {stamp!r} is before 2000 (seconds, not ms?).")
    sgv = int(round(sgv))
    source = str(entry.get("device") or "nightscout")
    direction = entry.get("direction") or None
    direction = direction if isinstance(direction, str) else None
    if units.is_sensor_error(sgv):
        return Glucose(t=date / 1000, sgv=None, error_code=sgv, direction=direction,
                       source=source)
    return Glucose(t=date / 1000, sgv=sgv, direction=direction, source=source)


def glucose_to_entry(g: Glucose, device: str) -> dict:
    """A Glucose sample as a Nightscout sgv entry (an error code goes back into sgv)."""
    value = g.sgv if g.sgv is not None else g.error_code
    if value is None:
        raise ValueError("A Glucose sample needs an sgv or an error code to become an entry.")
    date_ms = round(g.t * 1000)
    entry = {"type": "sgv", "date": date_ms, "dateString": date_string(date_ms),
             "sgv": int(value), "device": device}
    if g.direction:
        entry["direction"] = g.direction
    return entry


def readings_from_store(store: EdgeStore, since_ms: int) -> list[Glucose]:
    """The store's sgv entries dated at or after since_ms, oldest first (entries that are no
    reading, such as an mmol/L value an uploader sent as mg/dL, left out)."""
    return readings_between(store, since_ms)[0]


def readings_between(store: EdgeStore, since_ms: int, until_ms: int | None = None
                     ) -> tuple[list[Glucose], int | None]:
    """(readings, the newest entry date looked at) for sgv entries dated since_ms to
    until_ms, oldest first. The date counts entries left out too, so a caller that goes on
    from it does not read them again (and say so again) on every pass."""
    out, newest = [], None
    for doc in store.entries(count=100_000, type_="sgv", date_gte=since_ms, date_lte=until_ms,
                             ascending=True):
        date = doc.get("date")
        if isinstance(date, int | float) and not isinstance(date, bool):
            newest = int(date) if newest is None else max(newest, int(date))
        try:
            out.append(entry_to_glucose(doc))
        except ValueError as exc:
            _LOGGER.debug("stored entry skipped: %s", exc)
    return out, newest


# -- two uploaders that disagree -----------------------------------------------------------------

DISAGREE_MGDL = 40  # and DISAGREE_SHARE of the lower: two apps reading one sensor stay closer
DISAGREE_SHARE = 0.25
DISAGREE_WITHIN_S = 300  # readings of two uploaders this close in time are compared
DISAGREE_TIMES = 3  # this many disagreements within DISAGREE_HOUR_S make a warning
DISAGREE_HOUR_S = 3600


class UploaderCheck:
    """Readings of one person sent by two uploaders (xDrip+ and Juggluco on one sensor, a
    phone and a follower) agree within a few mg/dL, and one person's glucose does not jump
    back and forth. Two children's phones set up with the same site do: as two uploaders,
    or as one (the same app on both phones sends the same device name, or none). The desk
    clock would then alarm on the other child's lows. A reading is compared with the other
    uploaders' latest within 5 minutes, and with its own uploader's two before it (far from
    the last, back near the one before: interleaved); three such readings within an hour
    make `add` return a warning (then at most once an hour)."""

    def __init__(self):
        self.latest: dict[str, Glucose] = {}
        self.before: dict[str, Glucose] = {}  # each uploader's reading before its latest
        self.times: list[float] = []  # when readings disagreed, within the last hour
        self.warned_at: float | None = None

    @staticmethod
    def _far(a: float, b: float) -> bool:
        gap = abs(a - b)
        return gap > DISAGREE_MGDL and gap > DISAGREE_SHARE * min(a, b)

    def add(self, g: Glucose, now: float) -> str | None:
        if g.sgv is None:
            return None
        pairs = []
        for source, other in self.latest.items():
            if source != g.source and other.sgv is not None \
                    and abs(other.t - g.t) <= DISAGREE_WITHIN_S and self._far(other.sgv, g.sgv):
                pairs.append((repr(source), other, repr(g.source)))
        p, pp = self.latest.get(g.source), self.before.get(g.source)
        if p is not None and pp is not None and p.sgv is not None and pp.sgv is not None \
                and g.t - pp.t <= 2 * DISAGREE_WITHIN_S and self._far(g.sgv, p.sgv) \
                and self._far(p.sgv, pp.sgv) and not self._far(g.sgv, pp.sgv):
            pairs.append((f"{g.source!r} (twice)", p, f"{g.source!r}"))
        said = None
        for first, other, second in pairs:
            self.times = [t for t in self.times if now - t < DISAGREE_HOUR_S] + [now]
            if len(self.times) >= DISAGREE_TIMES and (
                    self.warned_at is None or now - self.warned_at >= DISAGREE_HOUR_S):
                self.warned_at = now
                said = (f"two uploaders send different glucose: {first} {other.sgv} and "
                        f"{second} {g.sgv} mg/dL {abs(other.t - g.t) / 60:.0f} min apart, "
                        f"{len(self.times)} times within an hour. Are two people's phones "
                        "set up with this site (each person needs an edge and a tenant of "
                        "their own), or two sensors on one person?")
        if p is None or g.t >= p.t:
            if p is not None:
                self.before[g.source] = p
            self.latest[g.source] = g
        return said

    def quiet(self, now: float) -> bool:
        """No disagreement within the last hour."""
        return not any(now - t < DISAGREE_HOUR_S for t in self.times)


# -- following a Nightscout site -----------------------------------------------------------------


class NightscoutFollower:
    """Polls a Nightscout site (or another edge, or xDrip+'s local web service) for new sgv
    entries.

    `poll()` returns the entries newer than the last one seen, oldest first, paging back
    when more than one page (288 entries, a day at 5 minutes) arrived since the last poll.
    The URL may be written as people copy it: with `/api/v1/` at its end, with the API secret
    before the host (`https://SECRET@host`, xDrip+'s form) or a `?token=` (a shared read
    link); these become the secret and token, and messages name the site without them. A
    plain-http site that redirects to https on the same host is followed there.
    """

    PAGE = 288
    MAX_PAGES = 50  # about 50 days of 5-minute readings in one catch-up
    MAX_BYTES = 8 * 1024 * 1024  # a page of 288 entries is about 60 KB

    def __init__(
        self,
        url: str,
        api_secret: str | None = None,
        token: str | None = None,
        interval_s: float = 60,
        client: httpx.Client | None = None,
        *,
        since_ms: int | None = None,
        timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ):
        self.url, secret_in_url, token_in_url = site_url(url)
        api_secret = api_secret or secret_in_url
        self._token = token or token_in_url
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.last_ms = since_ms
        self.until_ms: int | None = None  # entries after this are not asked for (an import)
        self.skipped = 0
        self.future = 0  # entries refused for being dated ahead of the clock
        self.clock = clock
        self._own_client = client is None
        self._client = client or httpx.Client(timeout=timeout_s)
        self._headers = {"Accept": "application/json"}
        if api_secret:
            self._headers["api-secret"] = api_secret_hash(api_secret)
        self._warned: set[str] = set()

    def close(self) -> None:
        if self._own_client:
            self._client.close()

    def __enter__(self) -> NightscoutFollower:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def poll(self) -> list[Glucose]:
        """New readings since the last poll, oldest first; raise SourceError if the site
        cannot be read. Entries that are not readings are skipped and counted, never fatal;
        one dated ahead of the clock is refused (a phone with a wrong clock would otherwise
        hold the follower until that time), and entries at or before the last one seen are
        dropped (xDrip+'s web service ignores `find`)."""
        found: dict[int, Glucose] = {}
        horizon_ms = int((self.clock() + FUTURE_S) * 1000)
        # a site that honours find sends none ahead (nor after until_ms, an import's end)
        before: int | None = min(horizon_ms, self.until_ms or horizon_ms) + 1
        for _ in range(self.MAX_PAGES):
            page = self._fetch(self.last_ms, before)
            dates, new, ahead = [], 0, 0
            for entry in page:
                try:
                    g = entry_to_glucose(entry)
                except (ValueError, TypeError, OverflowError) as exc:
                    self._skip(str(exc))
                    continue
                date_ms = round(g.t * 1000)
                dates.append(date_ms)
                if date_ms > horizon_ms:
                    self.future += 1
                    ahead += 1
                    self._skip(f"an entry dated {date_string(date_ms)}, ahead of this clock "
                               "(a phone or uploader with a wrong clock?), is not a reading")
                    continue
                if self.last_ms is not None and date_ms <= self.last_ms:
                    continue
                if date_ms not in found:
                    new += 1
                    found[date_ms] = g
            # a page that brought nothing new ends the catch-up (a site ignoring find sends
            # the same newest entries again), unless it was all entries dated ahead
            if len(page) < self.PAGE or not dates or not (new or ahead == len(dates)):
                break
            if before is not None and min(dates) >= before:  # the site ignores find: no
                break  # earlier page will come
            before = min(dates)
        else:
            self._once("pages", "%s: stopped catching up after %d pages", self.url,
                       self.MAX_PAGES)
        if found:
            newest = max(found)
            self.last_ms = newest if self.last_ms is None else max(self.last_ms, newest)
        return [found[d] for d in sorted(found)]

    def _skip(self, why: str) -> None:
        self.skipped += 1
        self._once(_kind(why), "entry from %s skipped: %s (said once for entries like it)",
                   self.url, why)

    def _once(self, key: str, msg: str, *args) -> None:
        """Log a warning the first time only: a site repeats the same bad entry every poll."""
        if key not in self._warned and len(self._warned) < 100:
            self._warned.add(key)
            _LOGGER.warning(msg, *args)

    def _fetch(self, after_ms: int | None, before_ms: int | None) -> list[dict]:
        path = "/api/v1/entries/sgv.json"
        params: dict[str, str | int] = {"count": self.PAGE}
        if after_ms is not None:
            params["find[date][$gt]"] = after_ms
        if before_ms is not None:
            params["find[date][$lt]"] = before_ms
        if self._token:
            params["token"] = self._token
        try:
            with self._client.stream("GET", self.url + path, params=params,
                                     headers=self._headers) as resp:
                moved = resp.headers.get("location", "")
                if resp.status_code in (301, 302, 307, 308) and self._to_https(moved):
                    return self._fetch(after_ms, before_ms)
                body = self._read(resp, path) if resp.status_code == 200 else b""
        except httpx.TimeoutException as exc:
            raise SourceError(f"Nightscout at {self.url} did not answer within "
                              f"{self.timeout_s:g} s ({type(exc).__name__}).",
                              transient=True) from exc
        except httpx.HTTPError as exc:
            raise SourceError(
                f"Nightscout at {self.url} could not be reached ({type(exc).__name__}: {exc}).",
                transient=True) from exc
        if resp.status_code in (401, 403):
            raise SourceError(f"Nightscout at {self.url} refused the API secret or token "
                              f"(HTTP {resp.status_code}).")
        if resp.status_code in (301, 302, 307, 308):
            raise SourceError(f"Nightscout at {self.url} moved to {safe_url(moved) or '?'} "
                              f"(HTTP {resp.status_code}); use that address.")
        if resp.status_code != 200:
            raise SourceError(f"Nightscout at {self.url} answered HTTP {resp.status_code} "
                              f"to {path}.", retry_after_s=_retry_after(resp),
                              transient=resp.status_code == 429 or resp.status_code >= 500)
        try:
            body = json.loads(body)
        except ValueError as exc:
            raise SourceError(f"Nightscout at {self.url} sent {path} that is not JSON.") from exc
        if not isinstance(body, list):
            raise SourceError(f"Nightscout at {self.url} sent {path} that is not a list.")
        return [e for e in body if isinstance(e, dict)]

    def _read(self, resp: httpx.Response, path: str) -> bytes:
        chunks, size = [], 0
        for chunk in resp.iter_bytes():
            size += len(chunk)
            if size > self.MAX_BYTES:
                raise SourceError(f"Nightscout at {self.url} sent more than "
                                  f"{self.MAX_BYTES // 2**20} MB for {path} (count ignored?).")
            chunks.append(chunk)
        return b"".join(chunks)

    def _to_https(self, location: str) -> bool:
        """Follow a plain-http site's redirect to https on the same host (Nightscout sends
        one unless INSECURE_USE_HTTP is set); any other redirect is said, not followed, so
        the API secret never goes to another host."""
        here, there = httpx.URL(self.url), httpx.URL(location) if location else None
        if there is None or here.scheme != "http" or there.scheme != "https" or \
                there.host != here.host:
            return False
        self.url = str(here.copy_with(scheme="https", port=there.port)).rstrip("/")
        _LOGGER.warning("Nightscout at %s redirects to https; following it there (set the "
                        "follower's url to %s)", safe_url(str(here)), self.url)
        return True


_API_TAILS = ("/api/v1/entries/sgv.json", "/api/v1/entries.json", "/api/v1/entries/sgv",
              "/api/v1/entries", "/api/v1")


def _split_userinfo(url: str) -> tuple[str, str | None]:
    """(the URL without what is written before its host, that text percent-decoded, or
    None). As a URL parser reads it, and also when a secret in front holds a `/` (a pasted
    `https://SECRET@host` whose secret the parser would take for the host): then the host is
    after the last `@` that comes before any `?` or `#`. A `@` in a query (`?token=a@b`) is
    the query's. Secrets holding `?` or `#` must be percent-encoded."""
    from urllib.parse import unquote

    url = url.strip()
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url, None
    end = min([i for i in (rest.find("?"), rest.find("#")) if i >= 0] or [len(rest)])
    at = rest.rfind("@", 0, end)
    if at < 0:
        return url, None
    host = rest[at + 1:end].split("/", 1)[0]
    if not host or not all(c.isalnum() or c in ".-:[]_%" for c in host):
        return url, None
    return f"{scheme}://{rest[at + 1:]}", unquote(rest[:at])


def site_url(url: str) -> tuple[str, str | None, str | None]:
    """(the site's base URL, an API secret and a token written into it): `/api/v1/…` at the
    end, `SECRET@` (or `user:SECRET@`) before the host and a `?token=` are taken out.
    ValueError if it is no URL."""
    bare, userinfo = _split_userinfo(url)
    try:
        u = httpx.URL(bare)
    except httpx.InvalidURL as exc:
        raise ValueError(f"{safe_url(url)!r} is not a URL ({exc})") from None
    if u.scheme not in ("http", "https") or not u.host:
        raise ValueError(f"{safe_url(url)!r} is not an http:// or https:// URL")
    secret = None
    if userinfo is None and u.userinfo:  # what the parser found, if the rule above did not
        from urllib.parse import unquote

        userinfo = unquote(u.userinfo.decode())
    if userinfo:
        user, colon, password = userinfo.partition(":")
        secret = (password if colon and user and password else userinfo) or None
    token = u.params.get("token") or None
    path = u.path.rstrip("/")
    for tail in _API_TAILS:
        if path.lower().endswith(tail):
            path = path[: -len(tail)]
            break
    base = u.copy_with(username=None, password=None, query=None, fragment=None,
                       path=path or "/")
    return str(base).rstrip("/"), secret, token


def safe_url(url: str) -> str:
    """A URL fit for logs: without a secret before the host, a query (a token) or a
    fragment."""
    bare, _ = _split_userinfo(str(url))
    return bare.split("#", 1)[0].split("?", 1)[0].rstrip("/")


def _kind(why: str) -> str:
    """A refusal's kind: its sentence with values and dates taken out."""
    import re

    return re.sub(r"'[^']*'|[-+\d.:TZ]+\d", "#", why)[:80]


def _retry_after(resp: httpx.Response) -> float | None:
    """Seconds a 429 or 503 asks to wait (Retry-After in seconds), or None."""
    try:
        wait = float(resp.headers.get("retry-after", ""))
    except ValueError:
        return None
    return min(max(wait, 0.0), 3600.0) if math.isfinite(wait) else None
