"""`nightlink device deploy`: push a build's changed files to a running clock with mpremote.

For development: instead of reflashing, copy the compiled app (the packages under
`/lib/nightlink`, `main.py`, `boot.py`) over the serial REPL. mpremote's `fs cp` compares each file's SHA-256 on the board and skips
unchanged ones ("Up to date"). Then, unless told not to, the micropython-lib packages the app
requires are installed with `mpremote mip install` when the board cannot import them (the
official ESP32 firmware has umqtt.simple built in, so usually nothing is installed; `mip`
downloads on this computer, so it needs internet here, not on the clock).
"""

from __future__ import annotations

import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from nightlink.errors import NightlinkError
from nightlink.tools.device.build import load_build

_LOGGER = logging.getLogger(__name__)
_MKDIRS = "import os\nfor d in %r:\n try:\n  os.mkdir(d)\n except OSError:\n  pass"


@dataclass
class Deployed:
    copied: list[str]
    unchanged: list[str]
    installed: list[str]


def _mpremote(port: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "mpremote", "connect", port, *args]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise NightlinkError(f"mpremote did not finish within {timeout:.0f} s on {port}: is "
                             "the clock's program stuck? Press its RESET button and retry.") from None


def _fail(port: str, proc: subprocess.CompletedProcess) -> NightlinkError:
    from nightlink.tools.device.flash import port_error

    text = (proc.stderr or proc.stdout).strip()
    if "failed to access" in text or "could not open" in text.lower():
        return port_error(port, OSError(text))
    if "could not enter raw repl" in text:
        return NightlinkError(f"The clock on {port} does not answer at the REPL: press its "
                              "RESET button (or Ctrl-C its program) and retry.")
    last = (text.splitlines() or ["no message"])[-1]
    return NightlinkError(f"mpremote failed on {port}: {last.rstrip('.')}.")


def deploy(port: str, build_dir: Path, mip: bool = True) -> Deployed:
    build = load_build(build_dir)
    app = Path(build_dir) / "app"
    libs = sorted(p.relative_to(app).as_posix() for p in (app / "lib").rglob("*.mpy"))
    roots = sorted(p.name for p in app.glob("*.py"))
    if not libs:
        raise NightlinkError(f"{app} holds no compiled files: run `nightlink device build`.")
    folders = sorted({p.rpartition("/")[0] for p in libs})  # lib, lib/nightlink, …/shared …
    dirs = []
    for folder in folders:
        parts = folder.split("/")
        dirs += ["/" + "/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    args = ["exec", _MKDIRS % (sorted(set(dirs), key=len),)]
    for folder in folders:  # one copy per folder, into the same folder on the board
        files = [str(app / p) for p in libs if p.rpartition("/")[0] == folder]
        args += ["+", "fs", "cp", *files, f":/{folder}/"]
    for root in roots:  # one by one, each to its own name: mpremote cannot test ":/" as a folder
        args += ["+", "fs", "cp", str(app / root), f":/{root}"]
    proc = _mpremote(port, *args)
    if proc.returncode != 0:
        raise _fail(port, proc)
    unchanged = {line.split(":", 1)[1].strip().lstrip(":/") for line in proc.stdout.splitlines()
                 if line.startswith("Up to date:")}
    copied = [n for n in libs + roots if n not in unchanged]
    installed = []
    if mip:
        for package in build.get("requires", []):
            check = _mpremote(port, "exec", f"import {package}")
            if check.returncode == 0:
                continue
            got = _mpremote(port, "mip", "install", package, timeout=300)
            if got.returncode != 0:
                raise _fail(port, got)
            installed.append(package)
    _LOGGER.info("deployed to %s: %d copied, %d unchanged, installed %s", port, len(copied),
                 len(unchanged), installed)
    return Deployed(copied, sorted(unchanged), installed)
