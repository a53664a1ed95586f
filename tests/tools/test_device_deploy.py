"""`nightlink device deploy`: real mpremote over a pty to real MicroPython (the WebAssembly
port behind the raw-REPL protocol, tests/tools/mpy_board.mjs). Only the USB serial line is a
stand-in; mpremote, its file transfer code and the interpreter running it are real."""

import os
import pty
import shutil
import subprocess
import sys
import threading
import tty
from pathlib import Path

import pytest
from click.testing import CliRunner

from nightlink.cli import main
from nightlink.tools.device import build
from tests.conftest import ROOT

BOARD = Path(__file__).with_name("mpy_board.mjs")
# The official ESP32 firmware has umqtt.simple frozen in; the stand-in board gets a module of
# that name so deploy's check finds it and mip (which would need the internet) is not run.
UMQTT = "# stand-in for the frozen umqtt.simple of the official firmware\nclass MQTTClient:\n" \
        "    pass\n"

pytestmark = [pytest.mark.micropython,
              pytest.mark.skipif(shutil.which("node") is None or
                                 not (ROOT / "node_modules").exists(),
                                 reason="Node.js and `npm ci` are needed for the MicroPython board")]


class Board:
    """A pty whose other end is the MicroPython board process."""

    def __init__(self, tmp_path: Path, umqtt: bool = True):
        puts = []
        if umqtt:
            src = tmp_path / "umqtt_simple.py"
            src.write_text(UMQTT)
            puts.append(f"{src}:/lib/umqtt/simple.py")
        self.master, self.slave = pty.openpty()
        tty.setraw(self.slave)
        self.port = os.ttyname(self.slave)
        self.proc = subprocess.Popen(["node", str(BOARD), *puts], cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.threads = [threading.Thread(target=self._to_board, daemon=True),
                        threading.Thread(target=self._from_board, daemon=True)]
        for t in self.threads:
            t.start()

    def _to_board(self):
        while True:
            try:
                data = os.read(self.master, 4096)
            except OSError:
                return
            if not data:
                return
            self.proc.stdin.write(data)
            self.proc.stdin.flush()

    def _from_board(self):
        while True:
            data = self.proc.stdout.read1(4096)
            if not data:
                return
            os.write(self.master, data)

    def mpremote(self, *args) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "mpremote", "connect", self.port, *args],
                              capture_output=True, text=True, timeout=120)

    def close(self):
        self.proc.kill()
        self.proc.wait()
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def board(tmp_path):
    b = Board(tmp_path)
    yield b
    b.close()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("deploy") / "b"
    build.build(out, "esp32")
    return out


def deploy(port, build_dir, *extra):
    return CliRunner().invoke(main, ["device", "deploy", "--port", port, "--build",
                                     str(build_dir), *extra])


def test_deploy__copies_then_skips_unchanged_and_the_mpy_files_import(board, built):
    n = len(list((built / "app").rglob("*.mpy"))) + len(list((built / "app").glob("*.py")))
    r = deploy(board.port, built)
    assert r.exit_code == 0, r.output
    assert r.output == f"copied {n}, unchanged 0\n"
    # What is on the board is byte for byte the build, and real MicroPython imports the .mpy.
    check = board.mpremote("exec", "import hashlib, binascii, os\n"
                           "def walk(d):\n"
                           "  for n in sorted(os.listdir(d)):\n"
                           "    p = d + '/' + n\n"
                           "    if os.stat(p)[0] & 0x4000:\n"
                           "      walk(p)\n"
                           "    elif n.endswith('.mpy'):\n"
                           "      h = hashlib.sha256(open(p, 'rb').read()).digest()\n"
                           "      print(p[1:], binascii.hexlify(h).decode())\n"
                           "walk('/lib')\n"
                           "from nightlink.shared import codec\n"
                           "print('codec', codec.HEADER_SIZE)")
    assert check.returncode == 0, check.stderr + check.stdout
    info = build.load_build(built)
    on_board = dict(line.split() for line in check.stdout.splitlines())
    lib_files = [p for p in info["files"] if p.startswith("lib/")]
    assert lib_files and all(p.startswith("lib/nightlink/") for p in lib_files)
    for path in lib_files:
        assert on_board[path] == info["files"][path]
    from nightlink.shared import codec
    assert on_board["codec"] == str(codec.HEADER_SIZE)
    # Nothing changed: nothing copied.
    r = deploy(board.port, built)
    assert r.exit_code == 0, r.output
    assert r.output == f"copied 0, unchanged {n}\n"
    # One file changed on the board: only that one is copied back.
    assert board.mpremote("exec", "open('/lib/nightlink/shared/codec.mpy', 'wb')"
                          ".write(b'stale')").returncode == 0
    r = deploy(board.port, built)
    assert r.output == f"copied 1, unchanged {n - 1}\n"


def test_deploy__missing_port(built, tmp_path):
    port = str(tmp_path / "ttyACM5")
    r = deploy(port, built)
    assert r.exit_code == 2
    assert r.output == (f"error: There is no serial port {port}: plug the clock in with a data "
                        "USB cable and list the ports with `python -m serial.tools.list_ports`.\n")


def test_deploy__busy_port(built, board):
    """mpremote opens ports with an exclusive lock too; a second holder is refused."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import serial, sys, time\n"
         "p = serial.Serial(sys.argv[1], exclusive=True)\nprint('held', flush=True)\n"
         "time.sleep(60)", board.port], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        r = deploy(board.port, built)
    finally:
        holder.kill()
        holder.wait()
    assert r.exit_code == 2
    assert r.output == (f"error: The serial port {board.port} is in use by another program (a "
                        "serial monitor, mpremote or the Arduino IDE): close it and try again.\n")


def test_deploy__nothing_built(tmp_path):
    r = deploy("/dev/null", tmp_path / "none")
    assert r.exit_code == 2
    assert r.output.startswith(f"error: {tmp_path / 'none'} holds no build: run")
