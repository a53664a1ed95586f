"""The clock's flash outbox under real MicroPython and under CPython: same answers."""


import pytest

from tests.conftest import ROOT
from tests.support.mpy_board import BOARD_LIBS, MPY_FLASHFS, host_check

SCRIPT = ROOT / "tests" / "device" / "outbox_check.py"
HEAD_SCRIPT = ROOT / "tests" / "device" / "outbox_head_check.py"
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
    _check(mpy_json(SCRIPT, libs=BOARD_LIBS, puts=MPY_FLASHFS, heap=192 * 1024))


def test_outbox__cpython_host_port(tmp_path):
    _check(host_check(SCRIPT, tmp_path))


def _check_head(got):
    d = got["drain"]
    # 600 records in batches of 8: every record read once by its CRC (plus 3 state writes
    # as the head moves), none decoded, in order, and the file gone at the end.
    assert d == {"passes": 76, "order_ok": True, "decodes": 0, "crc_checks": 603, "size": 0}
    h = got["head_after_reboot"]
    # 250 of 300 acked: the reboot starts at the saved head and reads only the 50 after it
    # (plus the record at the head, checked to be the one the state names, and the state).
    assert h == {"head": 250 * 38, "count": 300, "unacked": 50, "first": [251], "next": 301,
                 "recovery_crc": 52}
    # A state that names a record the file does not hold there: the whole file is scanned,
    # nothing is cut off.
    assert got["foreign_state"] == {"head": 0, "count": 300, "size": 300 * 46, "torn": 0,
                                    "unacked": 175}
    # Power cut before a rewrite's swap: the old file stays, everything unsent is still there.
    assert got["cut_in_ack_rewrite"] == {"cut": True, "count": 39, "unacked": 18,
                                         "pending": list(range(22, 40)), "next": 40}
    # ... and before a swap that drops records for room: the drop is already counted and
    # reported; the record itself is still sent (at least once, never silently lost).
    assert got["cut_in_drop_rewrite"] == {"cut": True, "drops": 1, "dropped": [[1, 1]],
                                          "kept": list(range(1, 11))}


@pytest.mark.micropython
def test_outbox_head__micropython(mpy_json):
    _check_head(mpy_json(HEAD_SCRIPT, libs=BOARD_LIBS, puts=MPY_FLASHFS, heap=192 * 1024))


def test_outbox_head__cpython_host_port(tmp_path):
    _check_head(host_check(HEAD_SCRIPT, tmp_path))
