"""A small FIT encoder (tests, `nightlink bench import`): fitparse only reads, so FIT files are
written here.

Follows the FIT protocol: a 14-byte header with ".FIT", definition and data messages
(little-endian), and a CRC-16 over header and records, by the FIT SDK's nibble algorithm.
"""

import struct
from datetime import UTC, datetime

FIT_EPOCH = 631_065_600  # 1989-12-31 00:00:00 UTC as Unix seconds

# Base types: (number in the definition message, struct code)
ENUM = (0x00, "B")
UINT8 = (0x02, "B")
UINT16 = (0x84, "H")
UINT32 = (0x86, "I")
UINT32Z = (0x8C, "I")

_CRC_TABLE = (0x0000, 0xCC01, 0xD801, 0x1400, 0xF001, 0x3C00, 0x2800, 0xE401,
              0xA001, 0x6C00, 0x7800, 0xB401, 0x5000, 0x9C01, 0x8801, 0x4400)


def crc16(data: bytes, crc: int = 0) -> int:
    """FIT SDK CRC-16 (FitCRC_Get16), four bits at a time."""
    for byte in data:
        tmp = _CRC_TABLE[crc & 0xF]
        crc = (crc >> 4) & 0x0FFF
        crc ^= tmp ^ _CRC_TABLE[byte & 0xF]
        tmp = _CRC_TABLE[crc & 0xF]
        crc = (crc >> 4) & 0x0FFF
        crc ^= tmp ^ _CRC_TABLE[(byte >> 4) & 0xF]
    return crc


def fit_time(unix_s: float) -> int:
    return int(unix_s) - FIT_EPOCH


class FitWriter:
    """Collects messages; each (local type, layout) pair gets its definition message once."""

    def __init__(self):
        self._records = bytearray()
        self._layouts: dict[int, tuple] = {}

    def message(self, local: int, mesg_num: int, fields: list[tuple[int, tuple, object]]):
        """Append a data message; fields are (field number, base type, value or list of values)."""
        layout = (mesg_num, tuple((num, base, len(v) if isinstance(v, list | tuple) else None)
                                  for num, base, v in fields))
        if self._layouts.get(local) != layout:
            self._layouts[local] = layout
            out = struct.pack("<BBBHB", 0x40 | local, 0, 0, mesg_num, len(fields))
            for num, (base_num, code), count in layout[1]:
                size = struct.calcsize("<" + code) * (count or 1)
                out += struct.pack("<BBB", num, size, base_num)
            self._records += out
        out = bytes([local])
        for _num, (_base, code), value in fields:
            values = list(value) if isinstance(value, list | tuple) else [value]
            out += struct.pack(f"<{len(values)}{code}", *values)
        self._records += out

    def file_id(self, created_unix: float, *, kind: int = 4, manufacturer: int = 1,
                product: int = 3113, serial: int = 3_990_000_001):
        self.message(0, 0, [(0, ENUM, kind), (1, UINT16, manufacturer), (2, UINT16, product),
                            (3, UINT32Z, serial), (4, UINT32, fit_time(created_unix))])

    def record(self, unix_s: float, heart_rate: int | None = None, spo2_tenths: int | None = None):
        fields = [(253, UINT32, fit_time(unix_s))]
        if heart_rate is not None:
            fields.append((3, UINT8, heart_rate))
        if spo2_tenths is not None:  # saturated_hemoglobin_percent, scale 10
            fields.append((57, UINT16, spo2_tenths))
        self.message(1, 20, fields)

    def session(self, unix_s: float, sport: int):
        """A session message (mesg 18): timestamp, sport (field 5; 2 = cycling)."""
        self.message(4, 18, [(253, UINT32, fit_time(unix_s)), (5, ENUM, sport)])

    def hrv(self, rr_ms: list[int]):
        """One hrv message: field 0 `time`, uint16 array in 1/1000 s (0xFFFF pads)."""
        self.message(2, 78, [(0, UINT16, rr_ms)])

    def spo2_data(self, unix_s: float, pct: int, confidence: int = 100):
        """Garmin's spo2_data (mesg 269): reading_spo2 (0), reading_confidence (1)."""
        self.message(3, 269, [(253, UINT32, fit_time(unix_s)), (0, UINT8, pct),
                              (1, UINT8, confidence)])

    def monitoring(self, unix_s: float, heart_rate: int | None = None, *,
                   short: bool = True, activity_type: int | None = None):
        """A Garmin all-day monitoring message (mesg 55): timed by timestamp_16 (field 26, the
        low 16 bits of FIT seconds) when `short`, else by a full timestamp (253); heart_rate
        field 27, activity_type field 5."""
        fields = ([(26, UINT16, fit_time(unix_s) & 0xFFFF)] if short else
                  [(253, UINT32, fit_time(unix_s))])
        if heart_rate is not None:
            fields.append((27, UINT8, heart_rate))
        if activity_type is not None:
            fields.append((5, ENUM, activity_type))
        self.message(5 if short else 6, 55, fields)

    def monitoring_info(self, unix_s: float):
        """monitoring_info (mesg 103): the full timestamp a monitoring file starts from."""
        self.message(7, 103, [(253, UINT32, fit_time(unix_s))])

    def raw(self, data: bytes):
        self._records += data

    def to_bytes(self) -> bytes:
        header = struct.pack("<BBHI4s", 14, 0x20, 2132, len(self._records), b".FIT")
        header += struct.pack("<H", crc16(header))
        body = header + bytes(self._records)
        return body + struct.pack("<H", crc16(body))


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def beats_fit(beat_t_s, rr_ms, start_unix: float, record_every_s: float = 10.0) -> bytes:
    """A FIT file of a night from beats (times in s from the start, RR in ms), as a watch
    logging HRV writes it: a `record` with the heart rate every `record_every_s`, the beats
    in `hrv` messages of up to five intervals after the record they follow."""
    w = FitWriter()
    w.file_id(start_unix)
    pending: list[int] = []
    next_record = 0.0
    for t, rr in zip(beat_t_s, rr_ms, strict=True):
        while t >= next_record:
            if pending:
                w.hrv(pending)
                pending = []
            w.record(start_unix + next_record, heart_rate=max(30, min(220, round(60_000 / rr))))
            next_record += record_every_s
        pending.append(int(round(rr)))
        if len(pending) == 5:
            w.hrv(pending)
            pending = []
    if pending:
        w.hrv(pending)
    return w.to_bytes()
