"""Shared fixtures: the real MicroPython interpreter, free ports and paths."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MPY_RUNNER = ROOT / "tests" / "mpy" / "run.mjs"


class MicroPythonError(AssertionError):
    """The script raised under MicroPython; the message holds its traceback."""


def run_micropython(script, libs=(), puts=(), heap=256 * 1024, timeout=120):
    """Run a script file under MicroPython (WebAssembly port, Node) and return its stdout.

    libs: folders whose .py files go flat into /lib, as deployed on the board.
    puts: (source path, destination path) pairs copied into the virtual file system.
    """
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("Node.js is needed to run MicroPython tests; install nodejs.")
    if not (ROOT / "node_modules" / "@micropython").is_dir():
        raise RuntimeError("The MicroPython npm package is missing: run `make test` (npm ci).")
    cmd = [node, str(MPY_RUNNER), "--heap", str(heap)]
    for lib in libs:
        cmd += ["--lib", str(lib)]
    for src, dest in puts:
        cmd += ["--put", f"{src}:{dest}"]
    cmd.append(str(script))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if proc.returncode != 0:
        raise MicroPythonError(f"MicroPython failed:\n{proc.stderr}\n{proc.stdout}")
    return proc.stdout


@pytest.fixture(scope="session")
def micropython():
    """The run_micropython function, for tests marked `micropython`."""
    return run_micropython


@pytest.fixture
def mpy_json(tmp_path):
    """Run a script under MicroPython and parse the last line it prints as JSON."""

    def run(script, **kw):
        out = run_micropython(script, **kw).strip().splitlines()
        assert out, "the MicroPython script printed nothing"
        return json.loads(out[-1])

    return run


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if found is None:
        raise RuntimeError("mosquitto is not installed: run `make test`, which installs it.")
    return found


class Broker:
    """A real Mosquitto process on a free loopback port, owned by one test."""

    def __init__(self, workdir: Path):
        self.host = "127.0.0.1"
        self.port = free_port()
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} {self.host}\nallow_anonymous true\npersistence false\n"
            "log_dest stderr\nlog_type error\nlog_type warning\n"
        )
        self.proc = None

    def start(self):
        import socket
        import time

        self.proc = subprocess.Popen(
            [_mosquitto_binary(), "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.proc.stderr.read().decode()}")
            with socket.socket() as s:
                if s.connect_ex((self.host, self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on port {self.port} within 10 s")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def mosquitto(tmp_path):
    """A running broker: `.host`, `.port`; `.stop()` and `.start()` for fault tests."""
    broker = Broker(tmp_path).start()
    yield broker
    broker.stop()
