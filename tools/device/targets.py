"""The three clock boards: chip ids, flash offsets and MicroPython's filesystem placement.

MicroPython 1.26 and later (the build targets 1.29, see `build.FIRMWARE_RELEASE`) ship one
partition table for the generic ESP32, ESP32-S3 and ESP32-C3 boards (`partitions-4MiBplus.csv`):
nvs at 0x9000 (0x6000), phy_init at 0xf000 (0x1000), the firmware ("factory") at 0x10000
(0x1F0000). There is no `vfs` entry: at boot the firmware measures the flash and creates a
`vfs` data partition from the end of the last partition to the end of the flash
(micropython/micropython PR 17337). Older releases list `vfs` in the table itself. Either way
`firmware.data_partition` reads the real placement from the firmware file the user downloaded,
so these defaults are only used when building without one.
"""

from dataclasses import dataclass

KIB = 1024
MIB = 1024 * KIB
BLOCK = 4096  # SPI flash erase block; MicroPython's littlefs block size on the esp32 port
PARTITION_TABLE_OFFSET = 0x8000


@dataclass(frozen=True)
class Target:
    name: str  # esptool's chip argument
    chip_name: str  # esptool's CHIP_NAME, what `detect_chip` reports
    image_chip_id: int  # the chip id in an ESP image header (esptool IMAGE_CHIP_ID)
    firmware_offset: int  # where MicroPython's firmware .bin (bootloader first) goes
    default_flash: int  # the most common module size for this chip
    vfs_offset: int  # MicroPython 1.26+: end of the factory partition
    march: str  # mpy-cross -march, only matters for @native/@viper code
    board: str  # MicroPython's board name on its download page


TARGETS = {
    "esp32": Target("esp32", "ESP32", 0, 0x1000, 4 * MIB, 0x200000, "xtensawin",
                    "ESP32_GENERIC"),
    "esp32s3": Target("esp32s3", "ESP32-S3", 9, 0x0, 8 * MIB, 0x200000, "xtensawin",
                      "ESP32_GENERIC_S3"),
    "esp32c3": Target("esp32c3", "ESP32-C3", 5, 0x0, 4 * MIB, 0x200000, "rv32imc",
                      "ESP32_GENERIC_C3"),
}

BY_CHIP_ID = {t.image_chip_id: t for t in TARGETS.values()}
BY_CHIP_NAME = {t.chip_name: t for t in TARGETS.values()}

# Image chip ids of other Espressif chips, to name them in an error (esptool's IMAGE_CHIP_ID).
OTHER_CHIPS = {2: "ESP32-S2", 12: "ESP32-C2", 13: "ESP32-C6", 16: "ESP32-H2", 18: "ESP32-P4",
               20: "ESP32-C61", 23: "ESP32-C5"}

FLASH_SIZES = {"2MB": 2 * MIB, "4MB": 4 * MIB, "8MB": 8 * MIB, "16MB": 16 * MIB,
               "32MB": 32 * MIB}


def flash_size_name(size: int) -> str:
    for name, value in FLASH_SIZES.items():
        if value == size:
            return name
    return f"{size // MIB}MB"


def human(n: int) -> str:
    """1536 -> '1.5 KiB', 2097152 -> '2 MiB'."""
    for unit, size in (("MiB", MIB), ("KiB", KIB)):
        if n >= size:
            v = n / size
            return f"{v:.0f} {unit}" if v == int(v) else f"{v:.1f} {unit}"
    return f"{n} B"


def dotted(version: tuple[int, ...]) -> str:
    """(1, 29, 0) -> '1.29.0'."""
    return ".".join(str(v) for v in version)
