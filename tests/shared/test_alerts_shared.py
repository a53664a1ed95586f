"""The alert rules the clock and the cloud share: same answers in both interpreters."""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "tests" / "shared" / "alert_calls.py"


@pytest.fixture(scope="module")
def cpython():
    out = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True,
                         check=True, env={"PATH": ""})
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_alert_rules__expected(cpython):
    assert cpython["urgent_low"] == ["urgent", 52]
    assert cpython["low"] == ["warning", 66] and cpython["low_stale"] is None
    assert cpython["high"] == ["warning", 255]
    assert cpython["rising_fast"][0] == "warning" and cpython["rising_fast"][1] > 4
    assert cpython["slope_falling"] == pytest.approx(-2.2, abs=0.05)
    assert cpython["predicted_low"] == ["warning", 42]
    assert cpython["no_predicted_low_when_flat"] is None
    assert cpython["stale_warning"] == ["warning", 16.0]
    assert cpython["stale_urgent"] == ["urgent", 31.0]
    assert cpython["valid"] == [[cpython["valid"][0][0], 100]]


@pytest.mark.micropython
def test_alert_rules__micropython_matches_cpython(cpython, mpy_json):
    got = mpy_json(SCRIPT, libs=[ROOT / "shared"])
    assert got.keys() == cpython.keys()
    for key, value in cpython.items():
        if key == "slope_falling":
            assert got[key] == pytest.approx(value, abs=1e-3)
        else:
            assert got[key] == value, key
