"""`nightlink edge import`: CGM exports and wearable exports into the edge store.

The format is told from the file (`sniff.py`) unless named; a file named as one format but
plainly another is refused with the right --format.

CGM readings become Nightscout entries (so the local endpoint serves them) and CGM
epoch records; wearable samples become wearable epoch records. Epochs that already
hold a record of that stream from this node are left as they are, so importing the
same file twice, or a file that overlaps a live night, adds nothing twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from nightlink.edge.features.pipeline import EdgePipeline
from nightlink.edge.importers import sniff
from nightlink.edge.importers.carelink import read_carelink_csv
from nightlink.edge.importers.cgm_csv import read_dexcom_clarity_csv, read_libreview_csv
from nightlink.edge.importers.common import ImportedReadings
from nightlink.edge.importers.nightscout_json import read_nightscout_json
from nightlink.edge.sources.samples import Glucose, SourceError
from nightlink.edge.store import EdgeStore
from nightlink.shared import features
from nightlink.shared.epoch import epoch_index

_LOGGER = logging.getLogger(__name__)
FORMATS = sniff.FORMATS
MAX_SPAN_EPOCHS = 2880 * 120  # refuse a file spanning more than ~4 months


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
    fmt, samples = read_samples(path, fmt, tz, date_order)
    if not samples:
        raise SourceError(f"{path} holds no readings Nightlink can use.")
    stream = features.CGM if isinstance(samples[0], Glucose) else features.WEARABLE
    result = ImportResult(fmt, len(samples), samples.skipped, 0, 0,
                          first_bad=samples.first_bad, notes=list(samples.notes))
    if stream == features.CGM:
        from nightlink.edge.sources.cgm import glucose_to_entry

        result.entries_stored, result.entries_duplicate = store.add_entries(
            glucose_to_entry(g, f"import-{fmt}") for g in samples
        )
    first, last = epoch_index(samples[0].t), epoch_index(samples[-1].t)
    if last - first > MAX_SPAN_EPOCHS:
        raise SourceError(f"{path} spans more than 120 days; import it in parts.")
    have = {
        r.epoch
        for r in store.records(stream, first, last + 1, device=store.device)
        if r.count == 1
    }
    store.start_boot()
    pipe = EdgePipeline(store, first, audio=False, streams=(stream,))
    pending = iter(samples)
    nxt = next(pending, None)
    for epoch in range(first, last + 1):
        while nxt is not None and epoch_index(nxt.t) <= epoch:
            pipe.add(nxt)
            nxt = next(pending, None)
        pipe.close(epoch, write=epoch not in have)
        if epoch in have:
            result.epochs_kept += 1
        else:
            result.epochs_written += 1
    _LOGGER.info("imported %s: %d samples, %d epochs written", path, len(samples),
                 result.epochs_written)
    return result
