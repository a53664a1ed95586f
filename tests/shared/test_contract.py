"""shared/ gives the same answers under CPython and real MicroPython, call for call."""

import hashlib
import json
import math
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "tests" / "shared" / "contract_calls.py"


def _cpython_script():
    """The calls under CPython as a script, importing `nightlink.shared` as the board does."""
    out = subprocess.run(
        [sys.executable, str(SCRIPT)],
        capture_output=True, text=True, check=True, cwd=ROOT / "shared",
        env={"PATH": ""},
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def _equal(a, b):
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-12)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return a == b


@pytest.fixture(scope="module")
def cpython():
    return _cpython_script()


def test_contract__expected_answers(cpython):
    """A few answers pinned exactly, so both interpreters agreeing on a wrong one still fails."""
    assert cpython["topics.data_topic"] == {"ok": "nl/v1/fam-1/a4cf12b0c3d4/room"}
    assert cpython["topics.parse ack"] == {"ok": ["ack", "fam-1", "a4cf12b0c3d4", "room"]}
    assert cpython["topics.parse cmd"] == {"ok": ["cmd", "fam-1", "a4cf12b0c3d4", None]}
    assert cpython["topics.parse status"] == {"ok": ["status", "fam-1", "a4cf12b0c3d4", None]}
    for bad in ("wrong prefix", "too deep", "reserved", "wildcard", "upper", "empty"):
        assert cpython[f"topics.parse {bad}"] == {"error": "TopicError"}, bad
    assert cpython["topics.check_publish hash"] == {"error": "TopicError"}
    assert cpython["epoch.epoch_index"] == {"ok": 58950540}
    assert cpython["epoch.epoch_index float"] == {"ok": 58950541}
    assert cpython["epoch.iso_epoch"] == {"ok": "2026-01-15T22:30:30Z"}
    assert cpython["epoch.night_of morning"] == {"ok": "2026-01-15"}
    assert cpython["epoch.night_of offset"] == {"ok": "2026-01-15"}
    assert cpython["units.format mmol"] == {"ok": "5.4"}
    assert cpython["units.format low"] == {"ok": "LOW"}
    assert cpython["units.format high"] == {"ok": ["400", "HIGH", "HIGH"]}
    assert cpython["units.format error"] == {"ok": "sensor not calibrated"}
    assert cpython["units.format bad unit"] == {"error": "ValueError"}
    assert cpython["units.band"] == {"ok": [0, 0, 1, 1, 2, 2, 3, 3, 4]}
    assert cpython["units.trend"] == {"ok": [8, 1, 2, 3, 4, 4, 5, 6, 7]}
    assert cpython["units.from_mmoll"] == {"ok": 70}
    assert cpython["clinical.ahi_severity"] == {"ok": [
        None, "normal", "normal", "mild", "mild", "moderate", "moderate", "severe", "severe"]}
    dead = cpython["clinical.unusable_audio"]["ok"]
    assert dead[0][1] == "no usable sound: silent" and "silent" in dead[0][0]
    assert "in 9 of 10 epochs" in dead[0][0]  # the epoch without audio is not counted
    assert dead[1][1] == "no usable sound: clipped at full scale"
    assert "clipped at full scale in 8" in dead[1][0] and "silent" in dead[1][0]
    assert dead[2:5] == [None, None, None]  # 8 of 10 silent is a quiet input, not a dead one
    assert dead[5][1] == "no usable sound: silent"  # stuck, without the full-band flatness
    assert dead[6] is None
    assert cpython["apisecret.api_secret_hash"] == {"ok": [
        "da39a3ee5e6b4b0d3255bfef95601890afd80709",  # SHA-1 of nothing (FIPS 180 example)
        hashlib.sha1(b"a secret of 12+").hexdigest(),
        hashlib.sha1("caf\u00e9-token-\u00fc".encode()).hexdigest()]}
    assert cpython["codec.crc32 soft"] == {"ok": [0xCBF43926, 0xCBF43926]}
    assert cpython["codec.quantize_row range"] == {"error": "RangeError"}
    assert cpython["codec.quantize_row count"] == {"error": "StreamError"}
    assert cpython["codec.device_id bad"] == {"error": "WireError"}
    assert cpython["codec.pack_runs"] == {"ok": [[1, 100, 2], [3, 102, 1], [4, 110, 2],
                                                 [1, 2, 3, 4, 5]]}
    header = [1, 1, 1, 5, [97, 98, 99, 100, 101, 102], 7, 41, 58950540, 3, 43]  # room: 1
    assert cpython["codec.peek_header"] == {"ok": header}
    assert cpython["codec.peek_header header only"] == {"ok": header}  # rows not needed
    assert cpython["codec.peek_header short"] == {"error": "TruncatedError"}
    assert cpython["codec.peek_header version"] == {"error": "VersionError"}
    assert cpython["codec.check"] == {"ok": True}
    assert cpython["codec.check payload damaged"] == {"error": "CrcError"}
    assert cpython["codec.check cut"] == {"error": "TruncatedError"}


@pytest.mark.micropython
def test_contract__micropython_matches_cpython(cpython, mpy_json):
    got = mpy_json(SCRIPT, libs=[ROOT / "shared"])
    assert got.keys() == cpython.keys()
    differ = [k for k in cpython if not _equal(cpython[k], got[k])]
    assert differ == [], {k: (cpython[k], got[k]) for k in differ}
