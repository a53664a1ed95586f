"""The clock app against what a real feed can send, under real MicroPython and CPython
(tests/device/robust_check.py): nothing in a message stops it, a reading dated ahead of its
clock is refused, silence after a power cut escalates to NO DATA, an urgent low keeps
sounding through sensor errors until a real reading above it, mmol/L users read mmol/L."""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.support.micropython import run_micropython
from tests.support.mpy_board import host_env

SCRIPT = ROOT / "tests" / "device" / "robust_check.py"
LIBS = [ROOT / "shared", ROOT / "device"]


@pytest.fixture(scope="module")
def cpy():
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True,
                          env=host_env(), check=True, cwd=ROOT)
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.micropython
def test_robust__micropython_answers_as_cpython(cpy):
    mpy = json.loads(run_micropython(SCRIPT, libs=LIBS).strip().splitlines()[-1])
    assert mpy == cpy


def test_robust__hostile_messages_are_dropped_and_counted(cpy):
    assert cpy["hostile"] == [False] * 12  # null, a list, 1e999 anywhere, not UTF-8 ...
    assert cpy["bad_messages"] >= 8
    assert cpy["summary"] == {"night": "2026-01-15", "tir_pct": 84, "curve": [0, 0, 0, 120, 0]}
    assert cpy["morning_drawn"] == "morning"  # fields of the wrong type are left out, not drawn


def test_robust__a_reading_dated_ahead_does_not_hide_the_real_fall(cpy):
    assert cpy["ahead_taken"] is False
    shown, sounding, pattern, _label, newest, refused = cpy["after_fall"]
    assert (shown, sounding, pattern, newest, refused) == ("urgent_low", "urgent_low", 4, 40, 1)


def test_robust__no_reading_since_the_start_escalates_like_silence(cpy):
    assert [s[0] for s in cpy["no_reading"]] == [None, "stale", "no_data", "no_data"]
    assert cpy["no_reading"][2][3] == "NO DATA 31 min" and cpy["no_reading"][3][2] == 4


def test_robust__a_clock_not_set_up_yet_does_not_cry_no_data(cpy):
    has_errors, first, later = cpy["unconfigured"]
    assert has_errors and first == later == [None, None, 0, None]
    has_errors, state = cpy["minor_error"]  # an unknown key: it still watches for data
    assert has_errors and state == ["no_data", "no_data", 3]


def test_robust__setting_the_time_after_a_power_cut_is_not_hours_of_silence(cpy):
    """Passes at 2000-01-01, then NTP sets the time: 3 minutes without data, not 26 years."""
    assert cpy["after_ntp"][0] == [None, None, 0, None]
    assert cpy["after_ntp"][1][:2] == ["stale", "stale"]


def test_robust__the_morning_screen_shows_only_last_nights_summary(cpy):
    assert cpy["morning_screen"] == ["morning", "night"]


def test_robust__a_day_sleeper_s_morning_screen_follows_their_wake(cpy):
    assert cpy["day_sleeper_morning"] == ["morning", "morning", "night", "night"]
    assert cpy["end_t_kept"] is True
    assert cpy["early_sleeper_morning"] == ["morning", "morning"]


def test_robust__an_older_message_does_not_lift_the_carb_hold(cpy):
    assert cpy["carbs_after_older"] is not None  # the redelivered older reading changed nothing
    assert cpy["carbs_after_newest_again"] is None  # the newest reading without carbs: lifted


def test_robust__with_the_time_unset_a_reading_ages_from_its_arrival(cpy):
    assert cpy["time_unset"] == [[None, None, 0, 1], [None, None, 0, 12],
                                 ["stale", "stale", 1, 16], ["stale", "stale", 1, 24],
                                 ["no_data", "no_data", 3, 31]]


def test_robust__an_urgent_low_sounds_through_sensor_errors_until_a_real_reading(cpy):
    seq = cpy["urgent_then_errors"]
    assert all(s[:3] == ["urgent_low", "urgent_low", 4] for s in seq[:4])
    assert seq[4] == [None, None, 0, None]  # 80 mg/dL: over


def test_robust__a_low_sounds_through_sensor_errors_until_a_real_reading(cpy):
    seq = cpy["low_then_errors"]
    assert [s[:3] for s in seq[:4]] == [["low", "low", 2]] * 4  # stale at 16 min: LOW first
    assert seq[4] == [None, None, 0, None]  # 90 mg/dL: over


def test_robust__a_15_minute_sensor_is_not_stale_between_its_readings(cpy):
    """Each reading waits 15 minutes and comes a minute late: STALE used to blip every 15
    minutes, which also ended a snoozed LOW after 14 minutes instead of 30."""
    shown = cpy["fifteen_minute_sensor"]
    assert all(s[0] == "low" for s in shown[1:]), shown
    assert shown[15][1] == "stale"  # after the first reading alone its interval is not known
    assert all(s[1] is None for s in shown[16:32]) and shown[32][1] == "low"  # 30-min snooze
    assert "stale" not in [s[1] for s in shown[16:]]


def test_robust__deep_sleep_keeps_the_urgent_low_and_the_silence(cpy):
    restored, urgent, silent, low = cpy["deep_sleep"]
    assert low == ["low", "low", 2]  # held through the error code and the sleep
    assert restored is True
    assert urgent == ["urgent_low", "urgent_low", 4]  # through the sensor error, after a wake
    assert silent == ["no_data", "no_data", 3]  # nothing since the start, across wakes


def test_robust__the_rising_rate_in_mmol(cpy):
    assert cpy["mmol_rising"] == "RISING FAST +0.2/min"


def test_robust__fuzzed_feed_messages_cannot_stop_or_mislead_the_clock(cpy):
    """A delta of 401 digits stopped every render and, retained, sent the clock into safe
    mode: a delta out of range is dropped and the reading kept (a spurious high before a real
    low must not cost the low). A negative sgv and a bad message's `recent` pairs (a 45 that
    sounded URGENT LOW) are refused; an arrow Nightscout lacks is drawn as none."""
    took, values, trend, delta, shown = cpy["fuzzed"]
    assert took == [True, True, False, False, True]
    assert values == [120, 62, 100, 110] and trend == 0 and delta == -3
    assert cpy["huge_delta"] is None
    assert shown == [None, None, 0]


def test_robust__a_reading_dated_ahead_while_the_time_was_unset_goes_when_it_is_set(cpy):
    """Taken at 2000-01-01 (no network time yet after a power cut), a reading of 2065 stood
    as the newest, "0 min ago", and held off every low alarm; one after 2100 is never taken."""
    took, shown, values, refused = cpy["ahead_unset"]
    assert took == [True, False]
    assert shown == ["urgent_low", "urgent_low", 4, "URGENT LOW"]
    assert values == [100, 90, 80, 70, 60, 50] and refused == 2


def test_robust__summary_figures_no_night_has_are_left_out(cpy):
    assert cpy["summary_ranges"] == {"night": "2026-01-15", "lows": 2}
