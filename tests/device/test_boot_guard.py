"""Safe mode after three failed starts (device/boot_guard.py), under real MicroPython."""

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "tests" / "device" / "boot_guard_check.py"


@pytest.mark.micropython
def test_boot_guard__safe_mode_after_three_failed_starts(mpy_json):
    got = mpy_json(SCRIPT, libs=[ROOT / "device"])
    assert got["starts"] == [False, False, False, True]
    assert got["after_reset"] is False
    assert got["count_after_healthy"] == 0
