"""The clock's config validator (device/config.py) under real MicroPython and CPython."""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "tests" / "device" / "config_cases.py"
LIBS = [ROOT / "shared", ROOT / "device"]


def _check(got):
    assert got["not_utf8"] == [["The config file bad_config.json is not valid JSON (it is not "
                                "UTF-8 text)."], 70]
    e = got["errors"]
    assert e["good"] == []
    assert e["mmol_ok"] == ["thresholds.urgent_low must be a number between 2.22 and 5 mmol/L.",
                            "thresholds.low must be a number between 2.22 and 8.33 mmol/L.",
                            "thresholds.high must be a number between 6.66 and 22.2 mmol/L.",
                            "thresholds.rising_fast must be a number between 0.06 and 0.56 "
                            "mmol/L/min."]
    assert e["mmol_thresholds"] == []
    assert e["mmol_thresholds_bad"] == e["mmol_ok"]
    assert e["low_out_of_range"] == ["thresholds.low must be a number between 40 and 150 mg/dL."]
    assert e["low_text"] == e["low_out_of_range"]
    assert e["order"] == ["thresholds.low must lie between thresholds.urgent_low and "
                          "thresholds.high."]
    assert e["nodata_le_stale"] == ["thresholds.nodata_min must be more than "
                                    "thresholds.stale_min."]
    assert e["quiet_mutes_urgent"] == ["quiet_hours.mute may not hold urgent_low: it always "
                                       "sounds."]
    assert e["quiet_bad_time"] == ['quiet_hours.start must be a local time "HH:MM".']
    assert e["wifi_short_pw"] == ["wifi[0].password must be empty (open network) or 8 to 63 "
                                  "characters."]
    assert e["wifi_missing"] == ["wifi must be a list of 1 to 8 networks."]
    assert len(e["bad_tenant"]) == 1 and e["bad_tenant"][0].startswith("device.tenant ")
    assert e["bad_id"] == ["device.id must be the clock's 12 lowercase hex digits (its wire id)."]
    assert len(e["bad_tz"]) == 1 and e["bad_tz"][0].startswith("tz must be a POSIX TZ")
    assert e["bad_port"] == ["mqtt.port must be a whole number between 1 and 65535."]
    assert e["typo_key"] == ["thresholds.hihg is not a known key."]
    assert e["cloud_short_secret"] == ["cloud.api_secret must be text of 12 characters or more."]
    assert e["user_without_pw"] == ["mqtt.user and mqtt.password must be given together."]
    assert e["not_object"] == ["The config must be a JSON object."]
    assert got["mmol_low_mgdl"] == 70
    assert got["mmol_defaults_mgdl"] == [[0, 54, 70, 250, 30], [0, 54, 79, 250, 30],
                                         [1, 54, 70, 250, 30]]
    assert got["quiet"] == [22 * 60 + 30, 6 * 60 + 30]
    assert got["bad_section_defaults"] == 70  # the broken section falls back to defaults
    assert got["bad_section_keeps_wifi"] == "home"  # nothing else is lost
    assert got["tz"] == [7200, 10800, [1, 0], [2, 0], 3600, 7200, [20, 0], 39600, 36000,
                         [5, 30]]


@pytest.mark.micropython
def test_config__micropython(mpy_json):
    _check(mpy_json(SCRIPT, libs=LIBS))


def test_config__cpython(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True,
                          env={"PATH": ""}, cwd=tmp_path,
                          check=True)
    _check(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_config__package_import_and_load(tmp_path):
    from nightlink.device import config

    path = tmp_path / "config.json"
    cfg, errs = config.load(str(path))
    assert errs == [f"The config file {path} is missing: provision the clock."]
    assert cfg["thresholds"]["low"] == 70
    path.write_text("{not json")
    assert config.load(str(path))[1] == [f"The config file {path} is not valid JSON."]
    path.write_text(json.dumps({"version": 1}))
    cfg, errs = config.load(str(path))
    assert "device is missing; it must be an object." in errs
    assert cfg["units"] == "mg/dL"
