"""Epoch rows as the cloud keeps them, and the one way a stored row becomes feature values.

A row is one epoch of one stream from one device: its raw integers in the wire layout
(`shared/features.py` gives each stream's struct format, scale and offset). Every reader
(the data API, fusion, the data export) decodes through `values()`, so a feature has one
type everywhere: an integer when its scale and offset are whole (glucose 812), otherwise a
float rounded to the scale's decimals (0.1 scale: 36.6).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from nightlink.shared import features
from nightlink.shared.epoch import EPOCH_S, epoch_start


@dataclass(frozen=True)
class Row:
    """One stored epoch row (one epoch of one stream from one device)."""

    device: str
    stream: int
    boot: int
    seq: int
    epoch: int
    flags: int
    nfeat: int
    row_data: bytes


def _decimals(scale: float) -> int:
    """How many decimals a feature's scale has (0.01 -> 2, 1 -> 0)."""
    d = 0
    while d < 6 and abs(scale * 10**d - round(scale * 10**d)) > 1e-9:
        d += 1
    return d


# stream -> per feature (name, missing sentinel, scale, offset, decimals, whole)
_LAYOUT: dict[int, list[tuple[str, int, float, float, int, bool]]] = {
    s[features.S_ID]: [
        (f[features.F_NAME], features.MISSING[f[features.F_TYPE]], f[features.F_SCALE],
         f[features.F_OFFSET], _decimals(f[features.F_SCALE]),
         _decimals(f[features.F_SCALE]) == 0 and f[features.F_OFFSET] == int(f[features.F_OFFSET]))
        for f in s[features.S_FEATURES]]
    for s in features.STREAMS
}
_FORMATS: dict[tuple[int, int], struct.Struct] = {}


def _format(stream: int, nfeat: int) -> struct.Struct:
    fmt = _FORMATS.get((stream, nfeat))
    if fmt is None:
        fmt = _FORMATS[(stream, nfeat)] = struct.Struct(features.row_format(stream, nfeat))
    return fmt


def pack_row(stream: int, row: Sequence[int]) -> bytes:
    """One row's raw values in the wire layout (no header, no CRC)."""
    return _format(stream, len(row)).pack(*row)


def unpack_row(stream: int, nfeat: int, data: bytes) -> tuple[int, ...]:
    """The raw integers of a stored row; struct.error if the bytes do not fit the layout."""
    return _format(stream, nfeat).unpack(data)


def values(stream: int, nfeat: int, data: bytes) -> dict[str, int | float | None]:
    """A stored row as {feature name: value}, None where the device did not measure it (or
    the feature is newer than the device). Raises struct.error for bytes that do not fit."""
    raw = unpack_row(stream, nfeat, data)
    out: dict[str, int | float | None] = {}
    for i, (name, missing, scale, offset, decimals, whole) in enumerate(_LAYOUT.get(stream, ())):
        if i >= len(raw) or raw[i] == missing:
            out[name] = None
        elif whole:
            out[name] = int(raw[i] * int(scale) + int(offset))
        else:
            out[name] = round(raw[i] * scale + offset, decimals)
    return out


def measured(stream: int, nfeat: int, data: bytes) -> dict[str, int | float]:
    """Only the features the row holds a value for."""
    return {k: v for k, v in values(stream, nfeat, data).items() if v is not None}


def reading_ms(epoch: int, age_min: float) -> int:
    """When a CGM row's reading was taken (Unix ms, whole seconds): its epoch's end minus the
    reading's age. Every epoch that carries the same reading gives the same time, so its
    Nightscout entry is one (date, type)."""
    return int(round(epoch_start(epoch) + EPOCH_S - age_min * 60.0)) * 1000
