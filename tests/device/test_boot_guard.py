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


CONFIG_SCREEN = ROOT / "tests" / "device" / "config_screen_check.py"


@pytest.mark.micropython
def test_config_errors__on_screen_never_a_crash(mpy_json):
    got = mpy_json(CONFIG_SCREEN, libs=[ROOT / "shared", ROOT / "device"])
    assert got["screen"] == "status" and got["frames"] == 1
    assert got["errors"] == [
        "wifi[0].password must be empty (open network) or 8 to 63 characters.",
        "thresholds.low must be a number between 40 and 150 mg/dL."]
    assert got["low_threshold"] == 70  # the broken section falls back to its default
    # an urgent low takes the screen and sounds even with the config broken
    assert got["with_urgent_low"] == ["night", "urgent_low"]
