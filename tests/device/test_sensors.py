"""Room sensor drivers (device/sensors.py) against register-level doubles of the chips (only
the I2C bus is doubled) and 30-s room epochs into the flash outbox, under real MicroPython."""


import pytest

from tests.conftest import ROOT
from tests.support.mpy_board import BOARD_LIBS, MPY_FLASHFS, host_check, host_env

SCRIPT = ROOT / "tests" / "device" / "sensors_check.py"


def _check(got):
    assert got["crc_beef"] == 0x92  # the Sensirion datasheets' CRC example
    assert got["sht4x"] == [25.0, 56.5]
    assert got["sht4x_bad_crc"] == [None, None]  # a damaged frame is missing, not wrong
    assert got["bh1750"] == 416.7
    assert got["scd4x"][0] == [None, None, None]  # first call starts low-power periodic mode
    assert got["scd4x"][1:] == [812, 25.0, 50.0]
    assert got["scd4x_cmds"] == ["21ac", "e4b8", "ec05"]
    assert got["missing_chip"] == [None, None]
    t, rh = got["bme280"]
    assert t == pytest.approx(25.08, abs=0.01)  # Bosch's worked example: 25.08 degC
    assert 0 <= rh <= 100
    recs = got["records"]
    assert got["skipped_unset_clock"] == 12  # none filed in 2000: the records are the 3 below
    assert [r[:2] for r in recs] == [[1, 0], [2, 1], [3, 2]]  # one record per epoch
    assert recs[0][2] == [20.13, 45.0, None, 800.0, 31.0]  # mean 20.125 of 6 samples, 0.01 steps
    assert recs[1][2][3] == 800.0


@pytest.mark.micropython
def test_sensors__micropython(mpy_json):
    _check(mpy_json(SCRIPT, libs=BOARD_LIBS, puts=MPY_FLASHFS))


def test_sensors__cpython_host_port(tmp_path):
    _check(host_check(SCRIPT, tmp_path, env=host_env()))
