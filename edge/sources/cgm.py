"""Live CGM for the edge: Nightscout entries as `Glucose` samples and back, a Nightscout
follower, and the readings uploaded to the local Nightscout.

Every source yields `Glucose` samples oldest first; sgv < 39 becomes an error code, never glucose.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import httpx

from nightlink.edge.sources.samples import Glucose, SourceError
from nightlink.edge.store import EdgeStore
from nightlink.nightscout.times import iso as date_string
from nightlink.shared import units
from nightlink.shared.apisecret import api_secret_hash

_LOGGER = logging.getLogger(__name__)


# -- Nightscout entries -----------------------------------------------------------------------


def entry_to_glucose(entry: dict) -> Glucose:
    """A Nightscout sgv entry as a Glucose sample; raise ValueError if it is not one."""
    if entry.get("type", "sgv") != "sgv":
        raise ValueError(f"Entry of type {entry.get('type')!r} is not an sgv entry.")
    date, sgv = entry.get("date"), entry.get("sgv")
    for name, value in (("date", date), ("sgv", sgv)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"The entry's {name} must be a number, not {value!r}.")
    sgv = int(sgv)
    source = str(entry.get("device") or "nightscout")
    direction = entry.get("direction") or None
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
    """The store's sgv entries dated at or after since_ms, oldest first."""
    out = []
    for doc in store.entries(count=100_000, type_="sgv", date_gte=since_ms, ascending=True):
        try:
            out.append(entry_to_glucose(doc))
        except ValueError as exc:
            _LOGGER.warning("stored entry skipped: %s", exc)
    return out


# -- following a Nightscout site -----------------------------------------------------------------


class NightscoutFollower:
    """Polls a Nightscout site (or another edge) for new sgv entries.

    `poll()` returns the entries newer than the last one seen, oldest first, paging back
    when more than one page (288 entries, a day at 5 minutes) arrived since the last poll.
    """

    PAGE = 288
    MAX_PAGES = 50  # about 50 days of 5-minute readings in one catch-up

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
    ):
        self.url = url.rstrip("/")
        self.interval_s = interval_s
        self.last_ms = since_ms
        self.skipped = 0
        self._own_client = client is None
        self._client = client or httpx.Client(timeout=timeout_s)
        self._headers = {"Accept": "application/json"}
        if api_secret:
            self._headers["api-secret"] = api_secret_hash(api_secret)
        self._token = token

    def close(self) -> None:
        if self._own_client:
            self._client.close()

    def __enter__(self) -> NightscoutFollower:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def poll(self) -> list[Glucose]:
        """New readings since the last poll, oldest first; raise SourceError if unreachable."""
        found: dict[int, Glucose] = {}
        before: int | None = None
        for _ in range(self.MAX_PAGES):
            page = self._fetch(self.last_ms, before)
            dates = []
            for entry in page:
                try:
                    g = entry_to_glucose(entry)
                except (ValueError, TypeError) as exc:
                    self.skipped += 1
                    _LOGGER.warning("entry from %s skipped: %s", self.url, exc)
                    continue
                date_ms = int(entry["date"])
                dates.append(date_ms)
                found.setdefault(date_ms, g)
            if len(page) < self.PAGE or not dates:
                break
            before = min(dates)
        else:
            _LOGGER.warning("%s: stopped catching up after %d pages", self.url, self.MAX_PAGES)
        if found:
            newest = max(found)
            self.last_ms = newest if self.last_ms is None else max(self.last_ms, newest)
        return [found[d] for d in sorted(found)]

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
            resp = self._client.get(self.url + path, params=params, headers=self._headers)
        except httpx.HTTPError as exc:
            raise SourceError(
                f"Nightscout at {self.url} could not be reached ({type(exc).__name__}: {exc})."
            ) from exc
        if resp.status_code == 401:
            raise SourceError(
                f"Nightscout at {self.url} refused the API secret or token (HTTP 401)."
            )
        if resp.status_code != 200:
            raise SourceError(f"Nightscout at {self.url} answered HTTP {resp.status_code} "
                              f"to {path}.")
        try:
            body = resp.json()
        except ValueError as exc:
            raise SourceError(f"Nightscout at {self.url} sent {path} that is not JSON.") from exc
        if not isinstance(body, list):
            raise SourceError(f"Nightscout at {self.url} sent {path} that is not a list.")
        return [e for e in body if isinstance(e, dict)]

    def run(self, on_readings: Callable[[list[Glucose]], None], stop: threading.Event) -> None:
        """Poll every interval_s until `stop` is set; an unreachable site is logged, not fatal."""
        while not stop.is_set():
            try:
                readings = self.poll()
            except SourceError as exc:
                _LOGGER.warning("%s", exc)
            else:
                if readings:
                    on_readings(readings)
            stop.wait(self.interval_s)
