# Config cases for device/config.py, run under MicroPython and CPython (same answers).
# Prints one JSON object: {case name: [errors...]} plus the tz checks.
import json

from nightlink.device import config, tzrule

GOOD = {
    "version": 1,
    "device": {"id": "a4cf12b0c3d4", "name": "Nightstand", "tenant": "smith"},
    "wifi": [{"ssid": "home", "password": "correct horse"}],
    "mqtt": {"host": "192.168.1.20", "port": 1883, "user": "smith.a4cf12b0c3d4",
             "password": "p4ssw0rd-from-provisioning", "tls": False},
    "cloud": {"url": "https://nightlink.example.org/t/smith", "api_secret": "0123456789abcdef"},
    "units": "mg/dL",
    "tz": "CET-1CEST,M3.5.0,M10.5.0/3",
    "thresholds": {"urgent_low": 54, "low": 70, "high": 250, "rising_fast": 3.0,
                   "stale_min": 15, "nodata_min": 30},
    "quiet_hours": {"start": "22:30", "end": "06:30"},
}


def variant(path, value):
    cfg = json.loads(json.dumps(GOOD))
    d = cfg
    keys = path.split(".")
    for k in keys[:-1]:
        d = d[k]
    if value == "<del>":
        del d[keys[-1]]
    else:
        d[keys[-1]] = value
    return cfg


CASES = {
    "good": GOOD,
    "low_out_of_range": variant("thresholds.low", 200),
    "low_text": variant("thresholds.low", "70"),
    "mmol_ok": variant("units", "mmol/L"),
    "order": variant("thresholds.urgent_low", 80),
    "nodata_le_stale": variant("thresholds.nodata_min", 15),
    "quiet_mutes_urgent": variant("quiet_hours.mute", ["high", "urgent_low"]),
    "quiet_bad_time": variant("quiet_hours.start", "25:00"),
    "wifi_short_pw": variant("wifi", [{"ssid": "home", "password": "short"}]),
    "wifi_missing": variant("wifi", "<del>"),
    "bad_tenant": variant("device.tenant", "Smith Family"),
    "bad_id": variant("device.id", "clock-1"),
    "bad_tz": variant("tz", "Europe/Paris"),
    "bad_port": variant("mqtt.port", 70000),
    "typo_key": variant("thresholds.hihg", 200),
    "cloud_short_secret": variant("cloud.api_secret", "short"),
    "user_without_pw": variant("mqtt.password", "<del>"),
    "not_object": [1, 2],
}
mm = json.loads(json.dumps(GOOD))
mm["units"] = "mmol/L"
mm["thresholds"] = {"urgent_low": 3.0, "low": 3.9, "high": 13.9, "rising_fast": 0.17,
                    "stale_min": 15, "nodata_min": 30}
CASES["mmol_thresholds"] = mm
CASES["mmol_thresholds_bad"] = variant("units", "mmol/L")  # 70 "mmol/L" is absurd

out = {"errors": {}}
for name in CASES:
    out["errors"][name] = config.validate(CASES[name])

cfg = config.with_defaults(mm, [])
out["mmol_low_mgdl"] = round(config.mgdl(cfg, "low"))
# mmol/L with thresholds left to the defaults (as `device provision --units mmol/L` writes
# it), with only one given, and with a bad one (the section falls back to the defaults): the
# alarms stay at 54/70/250 mg/dL, not the mg/dL numbers read as mmol/L (973/1261/4504)
bare = json.loads(json.dumps(GOOD))
bare["units"] = "mmol/L"
del bare["thresholds"]
only_low = json.loads(json.dumps(bare))
only_low["thresholds"] = {"low": 4.4}
bad_one = json.loads(json.dumps(bare))
bad_one["thresholds"] = {"low": 2.0}
out["mmol_defaults_mgdl"] = []
for case in (bare, only_low, bad_one):
    errs = config.validate(case)
    got = config.with_defaults(case, errs)
    out["mmol_defaults_mgdl"].append(
        [len(errs)] + [round(config.mgdl(got, k)) for k in ("urgent_low", "low", "high")]
        + [round(config.mgdl(got, "rising_fast") * 10)])
out["quiet"] = config.quiet_minutes(config.with_defaults(GOOD, []))
bad = variant("thresholds.low", 200)
d = config.with_defaults(bad, config.validate(bad))
out["bad_section_defaults"] = d["thresholds"]["low"]
out["bad_section_keeps_wifi"] = d["wifi"][0]["ssid"]

tz = tzrule.Tz("CET-1CEST,M3.5.0,M10.5.0/3")
us = tzrule.Tz("EST5EDT,M3.2.0,M11.1.0")
syd = tzrule.Tz("AEST-10AEDT,M10.1.0,M4.1.0/3")
ind = tzrule.Tz("<+0530>-5:30")
jer = tzrule.Tz("IST-2IDT,M3.4.4/26,M10.5.0")  # tzdata's Asia/Jerusalem: a 26:00 rule time
out["tz"] = [
    jer.offset(1774569600 - 1), jer.offset(1774569600),  # 2026-03-27 00:00 UTC switch
    tz.hm(1768521600),  # 2026-01-16 00:00 UTC -> 01:00 CET
    tz.hm(1784160000),  # 2026-07-16 00:00 UTC -> 02:00 CEST
    tz.offset(1774746000 - 1), tz.offset(1774746000),  # 2026-03-29 01:00 UTC switch
    us.hm(1784160000),  # 2026-07-16 00:00 UTC -> 20:00 EDT
    syd.offset(1768521600), syd.offset(1784160000),
    ind.hm(0),
]
# a byte that is not UTF-8 stopped the boot before its guard ran (fuzzing run)
with open("bad_config.json", "wb") as f:
    f.write(b'{"version": 1, "device": {"id": "a4cf12b0c3d4", "tenant": "\xff"}}')
loaded, load_errs = config.load("bad_config.json")
out["not_utf8"] = [load_errs, loaded["thresholds"]["low"]]
print(json.dumps(out))
