"""Every clock screen rendered under real MicroPython equals its committed PNG
(docs/screens/*.png) pixel for pixel, and so does the host port's framebuf on CPython.

Regenerate the PNGs after a deliberate change of the screens (from real MicroPython):
    .venv/bin/python -m tests.device.test_screens
"""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.support.micropython import run_micropython
from tests.support.mpy_board import HOSTPORT, host_env

SCRIPT = ROOT / "tests" / "device" / "screens_check.py"
PNG_DIR = ROOT / "docs" / "screens"
LIBS = [ROOT / "shared", ROOT / "device"]
W, H = 296, 128
NAMES = ["night", "night_mmol", "falling", "predicted_low", "low", "urgent_low_snoozed",
         "high_quiet", "stale", "no_data", "sensor_error", "double_up", "morning", "status",
         "status_full", "config_errors"]

sys.path.insert(0, str(HOSTPORT))
import png  # noqa: E402  (tools/device/hostport/png.py)


def _rows(hexbuf):
    return png.rows_from_vlsb(bytes.fromhex(hexbuf), W, H)


def _mpy_screens():
    out = run_micropython(SCRIPT, libs=LIBS)
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def mpy_screens():
    return _mpy_screens()


@pytest.fixture(scope="module")
def cpy_screens():
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True,
                          env=host_env(), check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _diff(a, b):
    return sum(x != y for ra, rb in zip(a, b, strict=True) for x, y in zip(ra, rb, strict=True))


@pytest.mark.micropython
@pytest.mark.parametrize("name", NAMES)
def test_screen__micropython_equals_reference_png(mpy_screens, name):
    ref = png.decode((PNG_DIR / f"{name}.png").read_bytes())
    got = _rows(mpy_screens[name])
    assert len(ref) == H and len(ref[0]) == W
    assert _diff(got, ref) == 0, f"{name}: {_diff(got, ref)} pixels differ from {name}.png"


@pytest.mark.parametrize("name", NAMES)
def test_screen__host_port_framebuf_equals_reference_png(cpy_screens, name):
    ref = png.decode((PNG_DIR / f"{name}.png").read_bytes())
    assert _diff(_rows(cpy_screens[name]), ref) == 0


def test_screens__differ_from_each_other(cpy_screens):
    # a renderer that drew nothing (or the same image) would pass the comparisons above
    images = {cpy_screens[n] for n in NAMES}
    assert len(images) == len(NAMES)
    assert all(sum(map(sum, _rows(cpy_screens[n]))) > 300 for n in NAMES)


def test_status__seven_rows_all_on_the_panel(cpy_screens):
    """The seventh row (the low alarm's policy) used to be drawn at y 126, off the panel."""
    rows = _rows(cpy_screens["status_full"])
    label = _rows(cpy_screens["_low_alarm_label"])
    bottom = 30 + 6 * 14  # the seventh row, 14 px apart: its label whole, nothing else there
    assert [r[:96] for r in rows[bottom:]] == [r[:96] for r in label[bottom:]]
    assert sum(map(sum, label)) > 50
    assert not any(r[W - 1] for r in rows)  # and the long broker line stops short of the edge


def test_png__round_trip():
    rows = [[(x * y) % 3 == 0 for x in range(13)] for y in range(5)]
    rows = [[1 if p else 0 for p in r] for r in rows]
    assert png.decode(png.encode(rows)) == rows


if __name__ == "__main__":
    PNG_DIR.mkdir(parents=True, exist_ok=True)
    screens = _mpy_screens()
    for n in NAMES:
        (PNG_DIR / f"{n}.png").write_bytes(png.encode(_rows(screens[n])))
    print(f"wrote {len(NAMES)} screens to {PNG_DIR}")
