"""The clock's flash outbox under real MicroPython and under CPython: same answers."""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "tests" / "device" / "outbox_check.py"
EXPECTED_AFTER_50 = [50, 50 * 38, 51]


def _check(got):
    assert got["after_50"] == EXPECTED_AFTER_50
    assert got["reboot"] == [50, 12, 51]  # the torn 12 bytes are cut off, seq continues
    assert got["pending"] == [50, 1, 50]
    assert got["after_ack_20"] == [30, 30]
    assert got["after_ack_all"] == [0, 0, 51]
    assert got["seq_after_empty_reboot"] == 51
    count, within, drops = got["full"]
    assert within and count == 4000 // 38 and drops == 200 - count
    assert got["drops_persist"] is True
    assert got["oldest_kept_seq"] == 51 + drops
    assert got["dropped_ranges"] == [[51, 50 + drops]]  # told to the cloud, kept across reboot


@pytest.mark.micropython
def test_outbox__micropython(mpy_json):
    _check(mpy_json(SCRIPT, libs=[ROOT / "shared", ROOT / "device"], heap=192 * 1024))


def test_outbox__cpython_host_port(tmp_path):
    script = SCRIPT.read_text().replace('"/flash', f'"{tmp_path}/flash')
    path = tmp_path / "check.py"
    path.write_text(script)
    proc = subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                          env={"PYTHONPATH": f"{ROOT / 'device'}:{ROOT / 'shared'}", "PATH": ""},
                          cwd=tmp_path, check=True)
    _check(json.loads(proc.stdout.strip().splitlines()[-1]))
