"""A MicroPython-shaped firmware file for tests: no real firmware can be downloaded here.

Real ESP images made with esptool's own image classes (header, extended header with the
chip id, segments, checksum, SHA-256 digest) for the bootloader and the app, with a binary
partition table at 0x8000, laid out like micropython.org's merged `.bin` downloads: the file
starts at the chip's bootloader offset. The app holds a MicroPython banner string and, by
default, the frozen-module name umqtt/simple.py, as the real firmware does.
"""

from pathlib import Path

from esptool.bin_image import (
    ELFSection,
    ESP32C3FirmwareImage,
    ESP32FirmwareImage,
    ESP32S3FirmwareImage,
)

from nightlink.tools.device.firmware import (
    TYPE_APP,
    TYPE_DATA,
    Partition,
    encode_partition_table,
)
from nightlink.tools.device.targets import TARGETS

IMAGES = {"esp32": ESP32FirmwareImage, "esp32s3": ESP32S3FirmwareImage,
          "esp32c3": ESP32C3FirmwareImage}
DRAM = {"esp32": 0x3FFB0000, "esp32s3": 0x3FC88000, "esp32c3": 0x3FC80000}
# MicroPython 1.26+ partitions-4MiBplus.csv: no vfs entry, the firmware adds it at boot.
TABLE_4MIBPLUS = [
    Partition("nvs", TYPE_DATA, 0x02, 0x9000, 0x6000),
    Partition("phy_init", TYPE_DATA, 0x01, 0xF000, 0x1000),
    Partition("factory", TYPE_APP, 0x00, 0x10000, 0x1F0000),
]
# MicroPython 1.20-1.25 partitions-4MiB.csv: vfs listed in the table.
TABLE_4MIB_OLD = TABLE_4MIBPLUS + [Partition("vfs", TYPE_DATA, 0x81, 0x200000, 0x200000)]


def esp_image(chip: str, payload: bytes, flash_size_code: int = 2) -> bytes:
    img = IMAGES[chip]()
    img.entrypoint = DRAM[chip]
    img.flash_size_freq = flash_size_code << 4
    data = payload.ljust((len(payload) + 3) // 4 * 4, b"\0")
    img.segments = [ELFSection(b".dram0.data", DRAM[chip], data, 0)]
    return img.save(None)


def make_firmware(path: Path, chip: str, *, version: str = "1.29.0", frozen_umqtt: bool = True,
                  partitions=None, app_size: int = 96 * 1024) -> Path:
    """Write a firmware-shaped .bin for `chip` and return its path."""
    offset = TARGETS[chip].firmware_offset
    banner = f"MicroPython v{version} on 2026-08-29; Generic module with {chip}\0".encode()
    app_payload = banner + (b"umqtt/simple.py\0" if frozen_umqtt else b"") + bytes(
        range(256)) * (app_size // 256)
    boot = esp_image(chip, b"bootloader " + chip.encode() + bytes(2000))
    table = encode_partition_table(partitions or TABLE_4MIBPLUS)
    app = esp_image(chip, app_payload)
    data = bytearray(b"\xff" * (0x10000 - offset))
    data[0:len(boot)] = boot
    data[0x8000 - offset:0x8000 - offset + len(table)] = table
    data += app
    path.write_bytes(bytes(data))
    return path
