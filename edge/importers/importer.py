"""`nightlink edge import`: CGM exports and wearable exports into the edge store.

The format is told from the file (`sniff.py`) unless named; a file named as one format but
plainly another is refused with the right --format.

CGM readings become Nightscout entries (so the local endpoint serves them) and CGM
epoch records; wearable samples become wearable epoch records. Epochs are written only
where a sample can give them a value (none across a long gap). Epochs that already hold a record of
that stream from this node are left as they are, so importing the same file twice, or a
file that overlaps a live night, adds nothing twice. Readings the store would refuse are
found before anything is stored; a file whose newest reading lies ahead of now (local times
read in the wrong zone, a device clock set ahead) is refused whole. Of a file spanning more
than MAX_SPAN_DAYS the newest are taken (or those from `since`).

Epochs are written a day at a time, each day in one transaction that first reads which of
its epochs are there: a store refusing a write mid-way leaves whole days, a second import of
the same file running at once writes none of them twice, and a live node sharing the store
waits for one day's write, never for the whole import. A wearable's beats are kept as the
live node keeps them, for the heart-rhythm apnea screen of the night they belong to.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from nightlink.edge.features.pipeline import EdgePipeline
from nightlink.edge.features.reducers import BEAT_BUFFER_S, CGM_MAX_AGE_MIN
from nightlink.edge.importers import sniff
from nightlink.edge.importers.carelink import read_carelink_csv
from nightlink.edge.importers.cgm_csv import read_dexcom_clarity_csv, read_libreview_csv
from nightlink.edge.importers.common import ImportedReadings
from nightlink.edge.importers.nightscout_json import read_nightscout_json
from nightlink.edge.importers.span import SpanKeeper
from nightlink.edge.sources.samples import Beat, Glucose, SourceError
from nightlink.edge.store import EdgeStore
from nightlink.edge.store.imports import IMPORT_DEVICE
from nightlink.nightscout import documents as ns_documents
from nightlink.shared import features
from nightlink.shared.epoch import EPOCH_S, epoch_index
from nightlink.sql import DatabaseError

_LOGGER = logging.getLogger(__name__)
FORMATS = sniff.FORMATS
LOCAL_TIME_FORMATS = ("clarity", "libreview", "carelink")  # wall-clock times, no zone
SITE = "nightscout-site"  # read from a Nightscout site's API rather than a file
MAX_SPAN_DAYS = 120  # one import takes this many days of a file (its newest, or from since)
AHEAD_S = 15 * 60  # a device clock this far ahead of ours is drift; more, a wrong zone
DAY_EPOCHS = 86400 // EPOCH_S  # epochs written per transaction
# How long after a sample its epochs can still hold a value from it: a glucose reading is
# the latest value for CGM_MAX_AGE_MIN, beats feed the trailing 5-minute CVHR window.
REACH_S = {features.CGM: 60 * CGM_MAX_AGE_MIN - EPOCH_S, features.WEARABLE: BEAT_BUFFER_S}
# A file's readings already stored this far apart at most (two zones' offsets differ by up to
# 26 h), in quarter hours, are the same readings read in another zone.
SHIFT_MAX_S = 26 * 3600
SHIFT_STEP_S = 15 * 60
SHIFT_PROBE = 500  # readings of the file tried at every shift (all of them at the best one)


@dataclass
class ImportResult:
    format: str
    samples: int
    skipped_rows: int
    epochs_written: int
    epochs_kept: int
    entries_stored: int = 0
    entries_duplicate: int = 0
    first_bad: str | None = None  # "line 17: bad timestamp '...'", the first skipped row
    notes: list[str] = field(default_factory=list)  # assumptions the user should know of
    span: tuple[float, float] | None = None  # Unix seconds of the first and last sample stored
    import_id: int | None = None  # its number in the store's imports (undo: imports.py)

    @property
    def label(self) -> str:
        return "Nightscout site" if self.format == SITE else sniff.LABELS.get(self.format,
                                                                               self.format)


def read_samples(path: Path, fmt: str = "auto", tz: str = "UTC",
                 date_order: str | None = None, *, device_clocks: bool = True,
                 window: SpanKeeper | None = None) -> tuple[str, ImportedReadings]:
    """(format, time-ordered samples) of an export file; `fmt` "auto" tells it by its content.
    `date_order` ("dmy"/"mdy") settles CSV dates that fit both orders. `device_clocks`
    False reads CGM times as the device showed them, even where a pump's or a phone's clock
    was set (for a caller that keeps the local clock and does not know its zone). `window`:
    samples an import would not take are dropped as the file is read (span.py; Apple
    Health, and the CGM CSV exports)."""
    if fmt not in FORMATS:
        raise SourceError(f"Unknown import format {fmt!r}; use one of {', '.join(FORMATS)}.")
    fmt = sniff.check(Path(path), fmt)
    if fmt == "clarity":
        return fmt, read_dexcom_clarity_csv(path, tz=tz, device_clocks=device_clocks,
                                            window=window)
    if fmt == "libreview":
        return fmt, read_libreview_csv(path, tz=tz, date_order=date_order, window=window)
    if fmt == "carelink":
        return fmt, read_carelink_csv(path, tz=tz, date_order=date_order,
                                      device_clocks=device_clocks, window=window)
    if fmt == "nightscout":
        return fmt, read_nightscout_json(path, tz=tz)
    if fmt == "apple-health":
        from nightlink.edge.importers.wearables import read_apple_health

        got = read_apple_health(path, keep=window)
    else:
        from nightlink.edge.importers.wearables import read_fit

        got = read_fit(path)
    out = ImportedReadings(got, skipped=got.skipped)  # oldest first already
    out.activity, out.first_t = got.activity, got.first_t
    return fmt, out


def import_file(store: EdgeStore, path: Path | str, fmt: str = "auto", tz: str = "UTC",
                date_order: str | None = None, since: float | None = None,
                now: float | None = None, *, dry_run: bool = False,
                site_secret: str | None = None,
                say: Callable[[str], None] = _LOGGER.warning) -> ImportResult:
    """Read an export, or a Nightscout site's readings when `path` is a site's URL (a str,
    see nightscout_site.py; `site_secret` its API secret unless the URL carries one), and
    store it; every check that can refuse it runs before anything is stored, so a refused
    import leaves the store as it was. `since` (Unix s): import only what is recorded from
    then on (from a site: by default the newest MAX_SPAN_DAYS). `dry_run`: every check, and
    the result's counts and span, but nothing stored (no epochs or entries counted as
    written). `say`: what the user should hear while a site is read (a wait, a retry)."""
    now = time.time() if now is None else now
    if isinstance(path, str):
        from nightlink.edge.importers.nightscout_site import read_nightscout_site

        fmt = SITE
        start = now - MAX_SPAN_DAYS * 86400 if since is None else since
        path, samples = read_nightscout_site(path, start, now, api_secret=site_secret, say=say,
                                             until_s=start + MAX_SPAN_DAYS * 86400)
    else:
        fmt, samples = read_samples(path, fmt, tz, date_order, window=SpanKeeper(
            ns_documents.DATE_MIN_MS / 1000, now + 86400, MAX_SPAN_DAYS * 86400, since))
    if not samples:
        raise SourceError(f"{path} holds no readings Nightlink can use.")
    if samples.activity is not None:  # its heart would be read as a night's: nothing stored
        raise SourceError(f"{path} is a workout ({samples.activity.replace('_', ' ')}), not a "
                          "night: its heart rate would be read as sleep, so nothing was "
                          "stored.")
    stream = features.CGM if isinstance(samples[0], Glucose) else features.WEARABLE
    result = ImportResult(fmt, len(samples), samples.skipped, 0, 0,
                          first_bad=samples.first_bad, notes=list(samples.notes))
    first_t = samples.first_t
    samples = _dated(path, samples, result, now)
    _check_not_ahead(path, fmt, tz, samples, now)
    samples = _window(path, samples, result, since, first_t)
    entries: list[dict] = []
    if stream == features.CGM:
        samples, entries = _storable(path, fmt, samples, result, now)
        _check_not_shifted(store, path, fmt, tz, entries)
    result.span = (samples[0].t, samples[-1].t)
    if dry_run:
        return result
    try:
        with store.transaction():  # refused, it is not listed either
            result.import_id = store.begin_import(str(path), fmt, tz, result.span,
                                                  len(samples))
            if entries:
                result.entries_stored, result.entries_duplicate = store.add_entries(
                    entries, import_id=result.import_id)
    except DatabaseError as exc:
        raise SourceError(f"The edge store {store.path} refused the import ({exc}); nothing "
                          "was stored.") from None
    _write_epochs(store, stream, samples, result)
    beats = [(s.t, s.rr_ms) for s in samples if isinstance(s, Beat)]
    try:  # for the heart-rhythm apnea screen when the night closes (the wire has epochs only)
        store.add_beats(beats, import_id=result.import_id)
    except DatabaseError as exc:
        raise SourceError(f"The edge store {store.path} refused the beats ({exc}); the "
                          "epochs are stored, and importing the same file again adds the "
                          "beats.") from None
    _LOGGER.info("imported %s: %d samples, %d epochs written", path, len(samples),
                 result.epochs_written)
    return result


def _dated(path: Path, samples, result: ImportResult, now: float) -> list:
    """The samples dated from 2000 to a day ahead; the others (a device clock never set, a
    bogus record) are counted as skipped rows, the first named, as the store refuses such
    Nightscout entries."""
    lo, hi = ns_documents.DATE_MIN_MS / 1000, now + 86400
    kept = [s for s in samples if lo <= s.t <= hi]
    if len(kept) == len(samples):
        return samples
    odd = next(s for s in samples if not lo <= s.t <= hi)
    first = (f"reading at {_iso(odd.t)}: "
             + ("dated before 2000" if odd.t < lo else "is more than a day in the future"))
    if not kept:
        raise SourceError(f"{path} has {len(samples)} readings but none can be stored "
                          f"(first: {first}).")
    result.skipped_rows += len(samples) - len(kept)
    result.first_bad = result.first_bad or first
    result.samples = len(kept)
    return kept


def _check_not_ahead(path: Path, fmt: str, tz: str, samples, now: float) -> None:
    """Refuse a file whose newest reading is later than now: stored, it would be the current
    reading on the local Nightscout site and hide the live one for hours."""
    ahead = samples[-1].t - now
    if ahead <= AHEAD_S:
        return
    why = (f"its local times are not {tz} times (give the export's own zone with --tz), or "
           "the clock of the device that recorded it is set ahead (correct it, or import the "
           "export once its times have passed)" if fmt in LOCAL_TIME_FORMATS else
           "the clock of the device that recorded it was set ahead")
    raise SourceError(f"{path}'s newest reading is at {_iso(samples[-1].t)}, "
                      f"{ahead / 3600:.1f} h from now: {why}; nothing was stored.")


def _window(path: Path, samples, result: ImportResult, since: float | None,
            first_t: float | None = None) -> list:
    """The samples from `since` on, at most MAX_SPAN_DAYS of them: the first days after
    `since`, else the newest days of the file (Apple Health exports hold years). `first_t`:
    the file's first sample, where its reader dropped it already."""
    first, last = min(samples[0].t, first_t or samples[0].t), samples[-1].t
    if since is not None:
        samples = [s for s in samples if s.t >= since]
        if not samples:
            raise SourceError(f"{path} has no readings from {_iso(since)} on (it spans "
                              f"{_iso(first)} to {_iso(last)}).")
    span = MAX_SPAN_DAYS * 86400
    if samples[-1].t - (first if since is None else samples[0].t) < span:
        result.samples = len(samples)
        return samples
    if since is not None:
        end = samples[0].t + span
        kept = [s for s in samples if s.t < end]
        result.notes.append(f"{path.name} holds readings up to {_iso(last)}; one import takes "
                            f"{MAX_SPAN_DAYS} days, so these end at {_iso(kept[-1].t)}: import "
                            "it again with a later --since for the rest.")
    else:
        start = last - span
        kept = [s for s in samples if s.t > start]
        result.notes.append(f"{path.name} spans {_iso(first)} to {_iso(last)}; one import "
                            f"takes {MAX_SPAN_DAYS} days, so its newest were taken, from "
                            f"{_iso(kept[0].t)} (--since chooses where to start).")
    result.samples = len(kept)
    return kept


def _storable(path: Path, fmt: str, samples: list[Glucose], result: ImportResult,
              now_s: float) -> tuple[list[Glucose], list[dict]]:
    """The readings the store takes and their entries; those it refuses are counted as
    skipped rows, the first named."""
    from nightlink.edge.sources.cgm import glucose_to_entry

    now = int(now_s * 1000)
    kept, entries, refused = [], [], []
    for g in samples:
        entry = glucose_to_entry(g, f"{IMPORT_DEVICE}{fmt}")
        try:
            ns_documents.normalize("entries", dict(entry), now)
        except ns_documents.DocumentError as exc:
            refused.append((g, str(exc).rstrip(".")))
            continue
        kept.append(g)
        entries.append(entry)
    if refused:
        first = f"reading at {_iso(refused[0][0].t)}: {refused[0][1]}"
        if not kept:
            raise SourceError(f"{path} has {len(samples)} readings but none can be stored "
                              f"(first: {first}).")
        result.skipped_rows += len(refused)
        result.first_bad = result.first_bad or first
    result.samples = len(kept)
    return kept, entries


def _check_not_shifted(store: EdgeStore, path: Path, fmt: str, tz: str,
                       entries: list[dict]) -> None:
    """Refuse readings most of which are already stored a whole number of quarter hours
    away (to the minute) with the same values: the same export imported before in another
    zone (a wrong --tz, now or then), or readings the live uploader stored, read in a wrong
    zone. Stored again, every reading would count twice, an hour apart, in
    every figure."""
    if not entries:
        return
    lo, hi = entries[0]["date"], entries[-1]["date"]
    reach = SHIFT_MAX_S * 1000
    # By minute, give or take one: the live uploader's copy of a reading carries its own
    # seconds, an export's the minute alone.
    stored = {(e["date"] // 60_000, e.get("sgv")) for e in store.entries(
        count=10_000_000, type_="sgv", date_gte=lo - reach, date_lte=hi + reach,
        ascending=True)}
    if len(stored) < 12:
        return
    probe = entries[:: max(1, len(entries) // SHIFT_PROBE)]
    step = SHIFT_STEP_S * 1000

    def matches(rows, shift_ms):
        n = 0
        for e in rows:
            m, v = (e["date"] + shift_ms) // 60_000, e["sgv"]
            n += (m, v) in stored or (m - 1, v) in stored or (m + 1, v) in stored
        return n

    counts = {k: matches(probe, k * step) for k in range(-reach // step, reach // step + 1)}
    k_best = max((k for k in counts if k), key=lambda k: counts[k])
    best, best_n = k_best * step, counts[k_best]
    # A copy matches at one shift: a trace so flat that it matches at many (1-minute readings
    # stored, a steady night) says nothing, and the file goes in.
    others = max((n for k, n in counts.items() if abs(k - k_best) >= 2), default=0)
    if best_n < max(12, len(probe) // 2) or best_n <= counts[0] or best_n < 2 * others:
        return
    n = matches(entries, best)
    h = abs(best) / 3_600_000
    where = f"{h:g} h {'later' if best > 0 else 'earlier'}"
    why = (f"the same readings, imported or uploaded before, read now or then in a zone other "
           f"than {tz}: check --tz" if fmt in LOCAL_TIME_FORMATS else
           "the same readings, stored before in another zone")
    raise SourceError(
        f"{n} of the {len(entries)} readings in {path.name} are already stored {where}, with "
        f"the same values ({why}); stored again they would count twice in every figure, so "
        "nothing was stored. If the zone is right now, the earlier copy is not: undo that "
        "import (`nightlink edge imports` lists them, `--undo N` removes one) and import "
        "this file again.")


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M UTC")


def epochs_to_write(samples, reach_s: float) -> list[int]:
    """The epochs from the first sample's to the last's that a sample can give a value: its
    own, and those up to `reach_s` after it (time-ordered samples)."""
    out: list[int] = []
    last = epoch_index(samples[-1].t)
    for s in samples:
        lo = max(epoch_index(s.t), out[-1] + 1 if out else 0)
        out.extend(range(lo, min(epoch_index(s.t + reach_s), last) + 1))
    return out


def _write_epochs(store: EdgeStore, stream: int, samples, result: ImportResult) -> None:
    """Epoch records of `stream`, left alone where this node already holds one; a day of
    epochs per transaction (module docstring)."""
    epochs = epochs_to_write(samples, REACH_S[stream])
    try:  # under the import's own boot (begin_import), where it says
        store.imported(result.import_id, epochs=(epochs[0], epochs[-1]))
        pipe = EdgePipeline(store, epochs[0], audio=False, streams=(stream,))
        pending = iter(samples)
        nxt = next(pending, None)
        for lo in range(0, len(epochs), DAY_EPOCHS):
            day = epochs[lo:lo + DAY_EPOCHS]
            written = kept = 0
            with store.transaction():
                have = {
                    r.epoch
                    for r in store.records(stream, day[0], day[-1] + 1, device=store.device)
                    if r.count == 1
                }
                for epoch in day:
                    while nxt is not None and epoch_index(nxt.t) <= epoch:
                        pipe.add(nxt)
                        nxt = next(pending, None)
                    pipe.close(epoch, write=epoch not in have)
                    kept += epoch in have
                    written += epoch not in have
            result.epochs_written += written
            result.epochs_kept += kept
    except DatabaseError as exc:
        done = result.epochs_written + result.epochs_kept
        raise SourceError(
            f"The edge store {store.path} refused a write ({exc}) after {done} of the "
            f"{len(epochs)} epochs; the readings and the epochs written stay, and importing "
            "the same file again finishes it without storing anything twice (or `nightlink "
            f"edge imports --undo {result.import_id}` removes what was written).") from None
