"""`nightlink device flash`: plans from real firmware-shaped images, `esptool merge-bin` run for
real, and esptool's own errors for a missing and a busy serial port (no hardware here)."""

import os
import pty
import subprocess
import sys

import pytest
from click.testing import CliRunner

from nightlink.cli import main
from nightlink.errors import NightlinkError
from nightlink.tools.device import build
from nightlink.tools.device import flash as flash_mod
from nightlink.tools.device.firmware import (
    TYPE_APP,
    TYPE_DATA,
    Partition,
    decode_partition_table,
    image_chip_id,
)
from tests.tools.device_firmware import TABLE_4MIB_OLD, make_firmware

ESPTOOL = [sys.executable, "-m", "esptool"]
# chip, firmware offset, flash size, fs offset, fs size (MicroPython 1.26+ layout)
PLANS = [("esp32", 0x1000, "4MB", 0x200000, 0x200000),
         ("esp32s3", 0x0, "8MB", 0x200000, 0x600000),
         ("esp32c3", 0x0, "4MB", 0x200000, 0x200000)]


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    root = tmp_path_factory.mktemp("builds")
    out = {}
    for chip, *_ in PLANS:
        build.build(root / chip, chip)
        out[chip] = (root / chip, make_firmware(root / f"fw-{chip}.bin", chip))
    return out


def invoke(*args):
    return CliRunner().invoke(main, ["device", "flash", *args])


@pytest.mark.parametrize("chip,fw_off,flash,fs_off,fs_size", PLANS)
def test_flash__dry_run_plan(builds, chip, fw_off, flash, fs_off, fs_size):
    build_dir, fw = builds[chip]
    r = invoke("--firmware", str(fw), "--build", str(build_dir), "--dry-run")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    name = {"esp32": "ESP32", "esp32s3": "ESP32-S3", "esp32c3": "ESP32-C3"}[chip]
    assert lines[0] == f"chip:        {name} ({chip}), flash {flash}"
    assert "MicroPython v1.29.0" in lines[1]
    fw_size = fw.stat().st_size
    assert (f"step 1:      write firmware {fw.name} ({fw_size} bytes) at "
            f"{fw_off:#08x}-{fw_off + fw_size:#08x}") in lines
    assert (f"step 2:      write filesystem fs-{chip}.img ({fs_size} bytes) at "
            f"{fs_off:#08x}-{fs_off + fs_size:#08x}") in lines
    assert lines[-1] == "dry run: nothing written"
    assert not any(line.startswith("note:") for line in lines)


def test_flash__wrong_chip_firmware_is_refused(builds):
    build_dir, _ = builds["esp32"]
    _, c3_fw = builds["esp32c3"]
    r = invoke("--firmware", str(c3_fw), "--build", str(build_dir), "--dry-run")
    assert r.exit_code == 2
    assert r.output == (f"error: {c3_fw.name} is firmware for the ESP32-C3, but this clock is an "
                        "ESP32: download the ESP32_GENERIC build instead.\n")


def test_flash__image_larger_than_the_partition_is_refused(builds):
    """An S3 image built for 8 MB flash, flashed to a 4 MB module."""
    build_dir, fw = builds["esp32s3"]
    r = invoke("--firmware", str(fw), "--build", str(build_dir), "--flash-size", "4MB",
               "--dry-run")
    assert r.exit_code == 2
    assert r.output == ("error: The filesystem image (6 MiB) is larger than the data partition "
                        f"(2 MiB at 0x200000) of this firmware on a 4 MiB flash: rebuild it with "
                        f"--firmware {fw.name} --flash-size 4MB.\n")


def test_flash__image_for_another_layout_is_refused(builds, tmp_path):
    """Firmware 1.20-1.25 lists vfs itself; an image for a different size would be wiped."""
    build_dir, _ = builds["esp32s3"]
    old = make_firmware(tmp_path / "old.bin", "esp32s3", version="1.25.0",
                        partitions=TABLE_4MIB_OLD)
    r = invoke("--firmware", str(old), "--build", str(build_dir), "--dry-run")
    assert r.exit_code == 2
    assert "rebuild it with --firmware old.bin --flash-size 8MB." in r.output
    # The same image size as the old layout but at a different place is refused too.
    build.build(tmp_path / "c3", "esp32c3")
    moved = make_firmware(tmp_path / "moved.bin", "esp32c3", partitions=TABLE_4MIB_OLD[:2] + [
        Partition("factory", TYPE_APP, 0, 0x10000, 0x100000),
        Partition("vfs", TYPE_DATA, 0x81, 0x110000, 0x200000)])
    r = invoke("--firmware", str(moved), "--build", str(tmp_path / "c3"), "--dry-run")
    assert r.exit_code == 2
    assert r.output == ("error: The filesystem image was built for a 2 MiB partition at "
                        "0x200000, but with this firmware on a 4 MiB flash MicroPython uses "
                        "2 MiB at 0x110000 (and would wipe a mismatched image): rebuild with "
                        "--firmware moved.bin --flash-size 4MB.\n")
    # Rebuilt against that firmware, the plan uses the table's vfs partition.
    build.build(tmp_path / "b", "esp32s3", firmware=old)
    r = invoke("--firmware", str(old), "--build", str(tmp_path / "b"), "--dry-run")
    assert r.exit_code == 0, r.output
    assert "(2097152 bytes) at 0x200000-0x400000" in r.output
    assert "note:        the firmware is MicroPython v1.25.0" in r.output


def test_flash__firmware_too_old_for_the_bytecode(builds, tmp_path):
    build_dir, _ = builds["esp32"]
    fw = make_firmware(tmp_path / "fw122.bin", "esp32", version="1.22.2")
    r = invoke("--firmware", str(fw), "--build", str(build_dir), "--dry-run")
    assert r.exit_code == 2
    assert r.output == ("error: fw122.bin is MicroPython v1.22.2, which cannot load the app's "
                        "mpy v6.3 files: download MicroPython 1.29.\n")


def test_flash__firmware_without_umqtt_gets_a_note(builds, tmp_path):
    build_dir, _ = builds["esp32"]
    fw = make_firmware(tmp_path / "bare.bin", "esp32", frozen_umqtt=False)
    r = invoke("--firmware", str(fw), "--build", str(build_dir), "--dry-run")
    assert r.exit_code == 0
    assert "no umqtt.simple built in" in r.output


def test_flash__not_a_firmware_file(builds, tmp_path):
    build_dir, _ = builds["esp32"]
    junk = tmp_path / "firmware.uf2"
    junk.write_bytes(b"UF2\n" + bytes(4096))
    r = invoke("--firmware", str(junk), "--build", str(build_dir), "--dry-run")
    assert r.exit_code == 2
    assert r.output.startswith("error: firmware.uf2 is not an ESP32 firmware image")
    assert r.output.count("\n") == 1


def test_flash__without_a_port_says_so(builds):
    build_dir, fw = builds["esp32"]
    r = invoke("--firmware", str(fw), "--build", str(build_dir))
    assert r.exit_code == 2
    assert r.output.endswith("error: Say which serial port the clock is on with --port "
                             "(or use --dry-run).\n")


@pytest.mark.parametrize("chip,fw_off,flash,fs_off,fs_size", PLANS)
def test_flash__esptool_merge_bin_puts_everything_where_the_plan_says(
        builds, tmp_path, chip, fw_off, flash, fs_off, fs_size):
    build_dir, fw = builds[chip]
    plan = flash_mod.make_plan(fw, build_dir)
    merged = tmp_path / "merged.bin"
    args = [f"{s.offset:#x}" for s in plan.steps]
    proc = subprocess.run(
        [*ESPTOOL, "--chip", chip, "merge-bin", "-o", str(merged), "--flash-size", flash,
         args[0], str(fw), args[1], str(build_dir / f"fs-{chip}.img")],
        capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = merged.read_bytes()
    assert len(data) == fs_off + fs_size  # the filesystem runs to the end of the flash
    # The bootloader is where the ROM looks for it, for the right chip.
    assert data[fw_off] == 0xE9
    assert image_chip_id(data[fw_off:]) == plan.target.image_chip_id
    assert data[:fw_off] == b"\xff" * fw_off
    # The partition table at 0x8000: nvs, phy_init, factory, and nothing after the factory
    # partition's end but the filesystem MicroPython creates there.
    parts = decode_partition_table(data[0x8000:0x8C00])
    assert [(p.label, p.offset, p.size) for p in parts] == [
        ("nvs", 0x9000, 0x6000), ("phy_init", 0xF000, 0x1000), ("factory", 0x10000, 0x1F0000)]
    assert parts[-1].end == fs_off
    # The app at 0x10000 is a valid image (esptool image-info checks checksum and digest).
    app = tmp_path / "app.bin"
    app.write_bytes(data[0x10000:fs_off].rstrip(b"\xff"))
    info = subprocess.run([*ESPTOOL, "--chip", chip, "image-info", str(app)],
                          capture_output=True, text=True)
    assert info.returncode == 0, info.stdout + info.stderr
    assert "Checksum: " in info.stdout and "(valid)" in info.stdout
    # The filesystem at its offset mounts and holds the app.
    files = build.read_fs_image(data[fs_off:])
    assert files == build.read_fs_image((build_dir / f"fs-{chip}.img").read_bytes())
    assert "lib/nightlink/shared/codec.mpy" in files


def test_flash__missing_port_is_what_esptool_reports(builds, tmp_path):
    """Real esptool against a path that does not exist."""
    build_dir, fw = builds["esp32"]
    port = str(tmp_path / "ttyUSB9")
    r = invoke("--firmware", str(fw), "--build", str(build_dir), "--port", port)
    assert r.exit_code == 2
    assert r.output.splitlines()[-1] == (
        f"error: There is no serial port {port}: plug the clock in with a data USB cable and "
        "list the ports with `python -m serial.tools.list_ports`.")
    # What esptool itself raised, untranslated: the sentence above is made from it.
    from esptool.cmds import detect_chip
    from esptool.util import FatalError
    with pytest.raises(FatalError, match="the port is busy or doesn't exist"):
        detect_chip(port, connect_attempts=1)


@pytest.fixture
def held_pty():
    """A pty whose slave another process holds with pyserial's exclusive lock, as a serial
    monitor would."""
    master, slave = pty.openpty()
    name = os.ttyname(slave)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import serial, sys, time\n"
         "p = serial.Serial(sys.argv[1], exclusive=True)\nprint('held', flush=True)\n"
         "time.sleep(60)", name], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    yield name
    holder.kill()
    holder.wait()
    os.close(master)
    os.close(slave)


def test_flash__busy_port_is_what_esptool_reports(builds, held_pty):
    build_dir, fw = builds["esp32"]
    r = invoke("--firmware", str(fw), "--build", str(build_dir), "--port", held_pty)
    assert r.exit_code == 2
    assert r.output.splitlines()[-1] == (
        f"error: The serial port {held_pty} is in use by another program (a serial monitor, "
        "mpremote or the Arduino IDE): close it and try again.")


def test_flash__silent_port_is_no_esp32_answering(builds):
    """A pty nobody answers on: esptool's real connect attempt times out."""
    build_dir, fw = builds["esp32"]
    master, slave = pty.openpty()
    try:
        plan = flash_mod.make_plan(fw, build_dir)
        with pytest.raises(NightlinkError, match=r"^No ESP32 answered on /dev/pts/\d+: hold the "
                                                 r"BOOT button"):
            flash_mod.flash(plan, os.ttyname(slave), echo=lambda *_: None)
    finally:
        os.close(master)
        os.close(slave)
