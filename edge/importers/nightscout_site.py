"""Readings straight from a Nightscout site: `nightlink edge import https://site`.

For a person who already keeps their CGM in Nightscout (or in a Nightlink cloud, whose
tenant's Nightscout a read token opens) and sets up a new or replacement edge: the
predicted-low alarm calibrates on the person's own recent nights and, without history, uses
the model's own threshold until it has 5 of them. Imported, the site's readings become
Nightscout entries and CGM epochs on the edge as an entries.json export's do.

The site is read as the live follower reads it (`sources/cgm.py`, `NightscoutFollower`):
`/api/v1/entries/sgv.json` a page of 288 at a time from the newest back, bounded by
`find[date][$gt]` and `$lt`, the URL written as people copy it (`https://SECRET@host`,
`?token=`, `/api/v1/` at its end). A page the site cannot give right now (a timeout, a
refused connection, HTTP 429 or 5xx) is asked again after a back-off with jitter, the wait
said to the user; a refused secret or a wrong address ends the import at once, with nothing
stored.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

import httpx

from nightlink.edge.importers.common import ImportedReadings
from nightlink.edge.sources.cgm import NightscoutFollower, safe_url
from nightlink.edge.sources.samples import SourceError

_LOGGER = logging.getLogger(__name__)
TRIES = 5  # per page: a site restarting (Heroku, a Pi) is back within a minute
BACKOFF_S = (2.0, 60.0)  # first wait and the longest, doubled between tries, with jitter


def is_site(source: str) -> bool:
    """Whether an import's source is a site's URL rather than a file."""
    return source.strip().lower().startswith(("http://", "https://"))


class SiteName(str):
    """A site's URL without its secret or token, where the importer names a file (`name`
    as a path's)."""

    @property
    def name(self) -> str:
        return str(self)


class _SiteReader(NightscoutFollower):
    """The follower, asking a page again after a wait when the site cannot give it now."""

    def __init__(self, url: str, *, say: Callable[[str], None], sleep: Callable[[float], None],
                 **kw):
        super().__init__(url, **kw)
        self._say, self._sleep = say, sleep
        self.pages = 0

    def _fetch(self, after_ms: int | None, before_ms: int | None) -> list[dict]:
        wait = BACKOFF_S[0]
        for attempt in range(1, TRIES + 1):
            try:
                page = super()._fetch(after_ms, before_ms)
            except SourceError as exc:
                if not exc.transient or attempt == TRIES:
                    raise
                pause = exc.retry_after_s if exc.retry_after_s is not None else \
                    wait * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not a secret
                self._say(f"{str(exc).rstrip('.')}; asking again in {pause:.0f} s "
                          f"(try {attempt + 1} of {TRIES}).")
                self._sleep(pause)
                wait = min(wait * 2, BACKOFF_S[1])
                continue
            self.pages += 1
            return page
        raise AssertionError("unreachable")  # the last try raises or returns


def read_nightscout_site(url: str, since_s: float, now: float, *,
                         until_s: float | None = None,
                         api_secret: str | None = None,
                         say: Callable[[str], None] = _LOGGER.warning,
                         client: httpx.Client | None = None,
                         sleep: Callable[[float], None] = time.sleep,
                         ) -> tuple[SiteName, ImportedReadings]:
    """(the site's name for messages, its sgv readings from `since_s` to `now` (or to
    `until_s`), oldest first). SourceError, one sentence, when the site refuses or cannot be
    read."""
    try:
        reader = _SiteReader(url, api_secret=api_secret, since_ms=int(since_s * 1000) - 1,
                             clock=lambda: now, client=client, say=say, sleep=sleep)
    except ValueError as exc:
        raise SourceError(f"{exc}.") from None
    # Entries after until_s (one import's span from since) are not even asked for.
    until_s = now if until_s is None else min(now, until_s)
    if until_s < now:
        reader.until_ms = int(until_s * 1000)
    # Enough pages for the span at six readings a minute: 1-minute sensors (Libre 3, Dexcom G7
    # backfill) sent by several uploaders at once.
    reader.MAX_PAGES = max(2, int((until_s - since_s) / 10 / reader.PAGE) + 2)
    name = SiteName(safe_url(reader.url))
    with reader:
        got = reader.poll()
    if not got:
        raise SourceError(f"Nightscout at {name} has no glucose readings from "
                          f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(since_s))} UTC on"
                          + (f" ({reader.skipped} entries that are not readings skipped)."
                             if reader.skipped else "."))
    _LOGGER.info("read %d readings from %s in %d pages", len(got), name, reader.pages)
    notes = []
    if reader.pages >= reader.MAX_PAGES:
        notes.append(f"{name} holds more than {reader.MAX_PAGES * reader.PAGE} entries in the "
                     "span; the newest were read, back to "
                     f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(got[0].t))} UTC: import "
                     "again with --since for the older part.")
    elif reader.pages >= 2 and len(got) == reader.PAGE and got[0].t - since_s > 3600:
        # a second page asked for older entries and brought the same ones back
        notes.append(f"{name} sent only its newest {len(got)} readings, back to "
                     f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(got[0].t))} UTC: it does "
                     "not seem to take date queries (xDrip+'s web service does not), so the "
                     "older part of the span was not imported.")
    if reader.future:
        notes.append(f"{reader.future} entries dated ahead of this clock were left out (a phone "
                     "or uploader with a wrong clock?).")
    return name, ImportedReadings(got, skipped=reader.skipped, notes=notes)
