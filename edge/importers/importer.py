"""`nightlink edge import`: CGM exports and wearable exports into the edge store.

The format is told from the file (`sniff.py`) unless named; a file named as one format but
plainly another is refused with the right --format.

CGM readings become Nightscout entries (so the local endpoint serves them) and CGM
epoch records; wearable samples become wearable epoch records. Epochs are written only
where a sample can give them a value (none across a long gap). Epochs that already hold a record of
that stream from this node are left as they are, so importing the same file twice, or a
file that overlaps a live night, adds nothing twice. Readings the store would refuse and
a file spanning too long are found before anything is stored.
"""

from __future__ import annotations

import logging
import time
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
from nightlink.edge.sources.samples import Glucose, SourceError
from nightlink.edge.store import EdgeStore
from nightlink.nightscout import documents as ns_documents
from nightlink.shared import features
from nightlink.shared.epoch import EPOCH_S, epoch_index

_LOGGER = logging.getLogger(__name__)
FORMATS = sniff.FORMATS
MAX_SPAN_EPOCHS = 2880 * 120  # refuse a file spanning more than ~4 months
# How long after a sample its epochs can still hold a value from it: a glucose reading is
# the latest value for CGM_MAX_AGE_MIN, beats feed the trailing 5-minute CVHR window.
REACH_S = {features.CGM: 60 * CGM_MAX_AGE_MIN - EPOCH_S, features.WEARABLE: BEAT_BUFFER_S}


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

    @property
    def label(self) -> str:
        return sniff.LABELS.get(self.format, self.format)


def read_samples(path: Path, fmt: str = "auto", tz: str = "UTC",
                 date_order: str | None = None) -> tuple[str, ImportedReadings]:
    """(format, time-ordered samples) of an export file; `fmt` "auto" tells it by its content.
    `date_order` ("dmy"/"mdy") settles CSV dates that fit both orders."""
    if fmt not in FORMATS:
        raise SourceError(f"Unknown import format {fmt!r}; use one of {', '.join(FORMATS)}.")
    fmt = sniff.check(Path(path), fmt)
    if fmt == "clarity":
        return fmt, read_dexcom_clarity_csv(path, tz=tz)
    if fmt == "libreview":
        return fmt, read_libreview_csv(path, tz=tz, date_order=date_order)
    if fmt == "carelink":
        return fmt, read_carelink_csv(path, tz=tz, date_order=date_order)
    if fmt == "nightscout":
        return fmt, read_nightscout_json(path, tz=tz)
    if fmt == "apple-health":
        from nightlink.edge.importers.wearables import read_apple_health

        got = read_apple_health(path)
    else:
        from nightlink.edge.importers.wearables import read_fit

        got = read_fit(path)
    return fmt, ImportedReadings(sorted(got, key=lambda s: s.t), skipped=got.skipped)


def import_file(store: EdgeStore, path: Path, fmt: str = "auto", tz: str = "UTC",
                date_order: str | None = None) -> ImportResult:
    """Read an export and store it; every check that can refuse it runs before anything is
    stored, so a refused import leaves the store as it was."""
    fmt, samples = read_samples(path, fmt, tz, date_order)
    if not samples:
        raise SourceError(f"{path} holds no readings Nightlink can use.")
    stream = features.CGM if isinstance(samples[0], Glucose) else features.WEARABLE
    result = ImportResult(fmt, len(samples), samples.skipped, 0, 0,
                          first_bad=samples.first_bad, notes=list(samples.notes))
    entries: list[dict] = []
    if stream == features.CGM:
        samples, entries = _storable(path, fmt, samples, result)
    _check_span(path, samples)
    result.span = (samples[0].t, samples[-1].t)
    if entries:
        result.entries_stored, result.entries_duplicate = store.add_entries(entries)
    _write_epochs(store, stream, samples, result)
    _LOGGER.info("imported %s: %d samples, %d epochs written", path, len(samples),
                 result.epochs_written)
    return result


def _storable(path: Path, fmt: str, samples: list[Glucose],
              result: ImportResult) -> tuple[list[Glucose], list[dict]]:
    """The readings the store takes and their entries; those it refuses (a date more than a
    day ahead) are counted as skipped rows, the first named."""
    from nightlink.edge.sources.cgm import glucose_to_entry

    now = int(time.time() * 1000)
    kept, entries, refused = [], [], []
    for g in samples:
        entry = glucose_to_entry(g, f"import-{fmt}")
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


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _check_span(path: Path, samples) -> None:
    first, last = samples[0].t, samples[-1].t
    if epoch_index(last) - epoch_index(first) > MAX_SPAN_EPOCHS:
        raise SourceError(f"{path} spans {_iso(first)} to {_iso(last)}, more than the "
                          f"{MAX_SPAN_EPOCHS // 2880} days one import takes; nothing was stored.")


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
    """Epoch records of `stream`, left alone where this node already holds one."""
    epochs = epochs_to_write(samples, REACH_S[stream])
    have = {
        r.epoch
        for r in store.records(stream, epochs[0], epochs[-1] + 1, device=store.device)
        if r.count == 1
    }
    store.start_boot()
    pipe = EdgePipeline(store, epochs[0], audio=False, streams=(stream,))
    pending = iter(samples)
    nxt = next(pending, None)
    for epoch in epochs:
        while nxt is not None and epoch_index(nxt.t) <= epoch:
            pipe.add(nxt)
            nxt = next(pending, None)
        pipe.close(epoch, write=epoch not in have)
        if epoch in have:
            result.epochs_kept += 1
        else:
            result.epochs_written += 1
