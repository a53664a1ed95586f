"""Running scripts under the real MicroPython interpreter (the WebAssembly port, by Node)."""

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MPY_RUNNER = ROOT / "tests" / "mpy" / "run.mjs"


class MicroPythonError(AssertionError):
    """The script raised under MicroPython; the message holds its traceback."""


def run_micropython(script, libs=(), puts=(), heap=256 * 1024, timeout=120, *, mpy=(),
                    steps=False):
    """Run a script file under MicroPython and return its stdout.

    libs: folders (shared/, device/) that become the packages /lib/nightlink/<folder name>,
    as the clock's image lays them out. mpy: trees of mpy-cross output copied into /lib.
    puts: (source path, destination path) pairs copied into the virtual file system.
    steps: call the script's tick() once per top-level call until it returns False, then its
    finish() (this port collects garbage only between top-level calls, as a board's loop).
    """
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("Node.js is needed to run MicroPython tests; install nodejs.")
    if not (ROOT / "node_modules" / "@micropython").is_dir():
        raise RuntimeError("The MicroPython npm package is missing: run `make test` (npm ci).")
    cmd = [node, str(MPY_RUNNER), "--heap", str(heap), *(["--steps"] if steps else [])]
    for lib in libs:
        cmd += ["--lib", str(lib)]
    for tree in mpy:
        cmd += ["--mpy", str(tree)]
    for src, dest in puts:
        cmd += ["--put", f"{src}:{dest}"]
    cmd.append(str(script))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if proc.returncode != 0:
        raise MicroPythonError(f"MicroPython failed:\n{proc.stderr}\n{proc.stdout}")
    return proc.stdout
