"""A simulated night through the clock app under real MicroPython (and CPython): alarms
escalate on stale data, snooze and quiet hours behave, urgent low always sounds; the app's
heap is measured with gc.mem_alloc()."""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.support.mpy_board import compiled_lib, host_env, run_steps

SCRIPT = ROOT / "tests" / "device" / "night_check.py"
HEAP_LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def mpy_night(tmp_path_factory):
    # the image build's .mpy packages, as they sit in /lib/nightlink on the board
    lib = compiled_lib(tmp_path_factory.mktemp("build"))
    return run_steps(SCRIPT, libs=(), mpy=[lib])


@pytest.fixture(scope="module")
def cpy_night():
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True,
                          env=host_env(), check=True, cwd=ROOT)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _states(night):
    """minute -> (shown, sounding, pattern, escalation, freshness, screen) as logged."""
    return {row[0]: row[1:7] for row in night["log"]}


def _at(night, minute):
    """The logged state in force at a minute."""
    rows = [r for r in night["log"] if r[0] <= minute]
    return rows[-1][1:7]


@pytest.mark.micropython
def test_night__micropython_matches_cpython(mpy_night, cpy_night):
    assert mpy_night["log"] == cpy_night["log"]
    assert mpy_night["events"] == cpy_night["events"]


@pytest.mark.micropython
def test_night__heap_under_64k(mpy_night, record_property):
    heap = mpy_night["heap"]
    record_property("heap", heap)
    assert 0 < heap["live"] <= heap["peak"] < HEAP_LIMIT, heap


def test_night__low_and_urgent_low(cpy_night):
    n = cpy_night
    # 23:00-00:30 the glucose falls 0.86 mg/dL/min from 125: below 70 at minute 124+
    assert n["events"]["low"] == 130  # first 5-min reading below 70 (66)
    assert n["events"]["urgent_low"] == 145  # first reading below 54 (53)
    assert _at(n, 130)[:3] == ["low", "low", 2]
    assert _at(n, 145)[:3] == ["urgent_low", "urgent_low", 4]


def test_night__quiet_hours_never_mute_urgent_low(cpy_night):
    # quiet hours 22:30-06:30 local: the urgent low at 00:25 sounds anyway
    assert cpy_night["sounds"]["urgent_low"][0] == 145


def test_night__snooze(cpy_night):
    n = cpy_night
    # the button at minute 152 silences the urgent low for urgent_snooze_min (10), not longer
    assert _at(n, 152)[:2] == ["urgent_low", None]
    assert _at(n, 161)[:2] == ["urgent_low", None]
    assert _at(n, 162)[:2] == ["urgent_low", "urgent_low"]


def test_night__stale_then_no_data_escalates(cpy_night):
    n = cpy_night
    # last reading at minute 265; silent sensor from 270 to 360
    assert n["events"]["stale"] == 280  # 15 min: stale, struck through on screen
    stale = _at(n, 280)
    assert stale[0] == "stale" and stale[3] == 1 and stale[4] == 1
    assert stale[1] is None  # stale (not no data) is muted in quiet hours: LED only
    assert n["events"]["no_data"] == 295  # 30 min: NO DATA, urgent, sounds in quiet hours
    assert _at(n, 295)[:5] == ["no_data", "no_data", 3, 2, 2]
    assert _at(n, 325)[:4] == ["no_data", "no_data", 4, 3]  # 60 min: siren
    # a snooze (330) lasts 10 minutes and the alarm comes back: it never goes quiet for good
    assert _at(n, 330)[1] is None
    assert _at(n, 340)[:2] == ["no_data", "no_data"]
    # data returns at 360: everything clears
    assert _at(n, 360)[:5] == [None, None, 0, 0, 0]


def test_night__quiet_hours_mute_high_until_they_end(cpy_night):
    n = cpy_night
    assert n["events"]["high"] == 470  # 05:50 local, in quiet hours
    assert _at(n, 470)[:2] == ["high", None]
    assert n["sounds"]["high"][0] == 510  # 06:30: quiet hours over


def test_night__refresh_at_most_once_a_minute(cpy_night):
    # one pass a minute, the clock changes every minute: never more than one refresh each
    assert cpy_night["refreshes"] <= 9 * 60 + 1


@pytest.mark.micropython
def test_night__predicted_low_fires_before_the_low(mpy_night):
    assert mpy_night["model"] is True  # the real on-device model, no stand-in
    ev = mpy_night["events"]
    assert ev["predicted_low"] < ev["low"], ev
    assert mpy_night["sounds"]["predicted_low"][0] < ev["low"]
