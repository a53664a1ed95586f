"""Which export a file is, from its first bytes and lines (`nightlink edge import --format auto`).

FIT files carry ".FIT" at byte 8 of their header, Apple Health exports are XML with a
<HealthData> root (or the zip they come in), Nightscout exports are a JSON array (or
object) or its text download (a quoted dateString or none, then milliseconds); CSV exports
are told apart by their header rows: Clarity's `Timestamp (YYYY-MM-DDThh:mm:ss)` and
`Event Type`, LibreView's device timestamp and record type (in
any of the languages in cgm_csv.py), CareLink's `Index;Date;Time`.
"""

from __future__ import annotations

from pathlib import Path

from nightlink.edge.importers.carelink import PREAMBLE_SEARCH_LINES, is_carelink
from nightlink.edge.importers.cgm_csv import clarity_columns, header_row, libre_columns
from nightlink.edge.importers.nightscout_json import is_text_download
from nightlink.edge.sources.samples import SourceError

LABELS = {
    "clarity": "Dexcom Clarity",
    "libreview": "LibreView",
    "carelink": "Medtronic CareLink",
    "nightscout": "Nightscout JSON",
    "apple-health": "Apple Health",
    "fit": "FIT",
}
FORMATS = ("auto", *LABELS)
_HEAD_BYTES = 65_536


def sniff(path: Path) -> str | None:
    """The format a file looks like (a key of LABELS), or None if it looks like none."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(_HEAD_BYTES)
    except OSError as exc:
        raise SourceError(f"{path} cannot be read ({exc.strerror or exc}).") from exc
    if head[8:12] == b".FIT":
        return "fit"
    if head[:4] == b"PK\x03\x04":
        return "apple-health"  # the zip Apple Health exports come in; its reader says unzip
    if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        text = head.decode("utf-16", errors="replace")
    else:
        text = head.decode("utf-8", errors="replace").removeprefix("\ufeff")
    start = text.lstrip()[:1]
    if start in ("[", "{") or is_text_download(text):
        return "nightscout"
    if start == "<":
        return "apple-health" if "<HealthData" in text else None
    lines = text.splitlines()[:PREAMBLE_SEARCH_LINES]
    if header_row(lines, clarity_columns) is not None:
        return "clarity"
    if header_row(lines, libre_columns) is not None:
        return "libreview"
    if is_carelink(lines):
        return "carelink"
    return None


def check(path: Path, fmt: str) -> str:
    """The format to read `path` as: `fmt`, or with "auto" the one it looks like. A file that
    plainly is another export than the one asked for is refused with the right --format."""
    found = sniff(path)
    if fmt == "auto":
        if found is None:
            raise SourceError(f"{path} is none of the exports Nightlink reads (Dexcom Clarity, "
                              "LibreView, Medtronic CareLink, Nightscout JSON, Apple Health, "
                              "FIT); name one with --format to see what it lacks.")
        return found
    if found is not None and found != fmt:
        article = "an" if LABELS[found][0] in "AEIOU" else "a"
        raise SourceError(f"{path} looks like {article} {LABELS[found]} export, not "
                          f"{LABELS[fmt]}; use --format {found}.")
    return fmt
