"""Read a MicroPython firmware .bin: which chip it is for, its partition table, its release.

A firmware file from micropython.org is the bootloader, the partition table and the app,
merged so that the file's first byte goes at the chip's bootloader offset (0x1000 on the
ESP32, 0x0 on the S3 and C3). Everything here reads bytes; nothing touches a serial port.
"""

from __future__ import annotations

import hashlib
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from nightlink.errors import NightlinkError
from nightlink.tools.device.targets import (
    BY_CHIP_ID,
    OTHER_CHIPS,
    PARTITION_TABLE_OFFSET,
    TARGETS,
    Target,
    dotted,
    human,
)

ESP_IMAGE_MAGIC = 0xE9
_ENTRY = struct.Struct("<2sBBII16sI")  # magic, type, subtype, offset, size, label, flags
_ENTRY_MAGIC = b"\xaa\x50"
_MD5_MAGIC = b"\xeb\xeb"
TYPE_APP, TYPE_DATA = 0x00, 0x01
SUBTYPE_FAT = 0x81
_BANNER = re.compile(rb"MicroPython v(\d+)\.(\d+)\.(\d+)[\w.\-]* on \d{4}-\d{2}-\d{2}")


@dataclass(frozen=True)
class Partition:
    label: str
    type: int
    subtype: int
    offset: int
    size: int

    @property
    def end(self) -> int:
        return self.offset + self.size


@dataclass(frozen=True)
class DataPartition:
    offset: int
    size: int
    source: str  # how it was found, for the plan


@dataclass(frozen=True)
class FirmwareInfo:
    path: Path
    size: int
    sha256: str
    target: Target
    partitions: tuple[Partition, ...]
    micropython: tuple[int, int, int] | None
    frozen_umqtt: bool
    header_flash_size: int | None

    def data_partition(self, flash_size: int) -> DataPartition:
        """Where MicroPython mounts its filesystem on a flash of `flash_size` bytes."""
        for p in self.partitions:
            if p.type == TYPE_DATA and p.label in ("vfs", "ffat"):
                if p.end > flash_size:
                    raise NightlinkError(
                        f"The firmware's '{p.label}' partition ends at {p.end:#x}, past the end "
                        f"of a {human(flash_size)} flash: this firmware is for a bigger module.")
                return DataPartition(p.offset, p.size, f"'{p.label}' in the partition table")
        end = max(p.end for p in self.partitions)
        if end >= flash_size:
            raise NightlinkError(
                f"The firmware's partitions reach {end:#x}, leaving no room for a filesystem "
                f"on a {human(flash_size)} flash.")
        return DataPartition(end, flash_size - end,
                             "created by MicroPython after the last partition")

    @property
    def version_text(self) -> str:
        return "v" + dotted(self.micropython) if self.micropython else "unknown release"


def encode_partition_table(parts: list[Partition]) -> bytes:
    """The binary partition table ESP-IDF writes at 0x8000 (with its MD5 entry)."""
    body = b"".join(
        _ENTRY.pack(_ENTRY_MAGIC, p.type, p.subtype, p.offset, p.size,
                    p.label.encode().ljust(16, b"\0"), 0)
        for p in parts
    )
    md5 = _MD5_MAGIC + b"\xff" * 14 + hashlib.md5(body).digest()
    return (body + md5).ljust(0xC00, b"\xff")


def decode_partition_table(data: bytes) -> list[Partition]:
    parts = []
    for off in range(0, min(len(data), 0xC00), _ENTRY.size):
        raw = data[off:off + _ENTRY.size]
        if raw[:2] == _MD5_MAGIC:
            if raw[16:] != hashlib.md5(data[:off]).digest():
                raise NightlinkError("The firmware's partition table fails its MD5 check: "
                                     "the file is damaged; download it again.")
            break
        if raw[:2] != _ENTRY_MAGIC:
            break
        _, ptype, subtype, offset, size, label, _ = _ENTRY.unpack(raw)
        parts.append(Partition(label.rstrip(b"\0").decode("ascii", "replace"), ptype, subtype,
                               offset, size))
    return parts


def image_chip_id(header: bytes) -> int:
    """The chip id in an ESP image's extended header (bytes 12-13)."""
    return struct.unpack_from("<H", header, 12)[0]


def chip_label(chip_id: int) -> str:
    if chip_id in BY_CHIP_ID:
        return BY_CHIP_ID[chip_id].chip_name
    return OTHER_CHIPS.get(chip_id, f"chip id {chip_id}")


def read_firmware(path: Path, expect: str | None = None) -> FirmwareInfo:
    """Inspect a MicroPython firmware file; `expect` is a target name it must be for."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise NightlinkError(f"There is no firmware file {path}.") from None
    if len(data) < 0x100 or data[0] != ESP_IMAGE_MAGIC:
        raise NightlinkError(
            f"{path.name} is not an ESP32 firmware image (no 0xE9 header): download the .bin "
            "file from micropython.org, not the .app-bin, .elf or .uf2.")
    chip_id = image_chip_id(data)
    target = BY_CHIP_ID.get(chip_id)
    if expect is not None and (target is None or target.name != expect):
        want = TARGETS[expect].chip_name
        raise NightlinkError(
            f"{path.name} is firmware for the {chip_label(chip_id)}, but this clock is an "
            f"{want}: download the {TARGETS[expect].board} build instead.")
    if target is None:
        raise NightlinkError(f"{path.name} is firmware for the {chip_label(chip_id)}, which "
                             "Nightlink clocks do not use (ESP32, ESP32-S3 or ESP32-C3).")
    table_at = PARTITION_TABLE_OFFSET - target.firmware_offset
    parts = decode_partition_table(data[table_at:table_at + 0xC00])
    if not parts:
        raise NightlinkError(
            f"{path.name} has no partition table at {PARTITION_TABLE_OFFSET:#x}: it is an app "
            "image, not the full MicroPython firmware download.")
    m = _BANNER.search(data)
    size_code = data[3] >> 4
    header_flash = (1 << 20) << size_code if size_code <= 5 else None
    return FirmwareInfo(
        path=path,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        target=target,
        partitions=tuple(parts),
        micropython=tuple(int(x) for x in m.groups()) if m else None,
        frozen_umqtt=b"umqtt/simple.py" in data,
        header_flash_size=header_flash,
    )
