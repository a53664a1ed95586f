# A clock booted with a broken config shows the errors on its status screen (and still shows
# and sounds an urgent low when one comes). Runs under MicroPython or CPython; prints JSON.
import json

from nightlink.device import app, config

BAD = {"version": 1, "device": {"id": "a4cf12b0c3d4", "tenant": "smith"},
       "wifi": [{"ssid": "home", "password": "short"}], "mqtt": {"host": "192.168.1.20"},
       "thresholds": {"low": 200}}
errs = config.validate(BAD)
clock = app.Clock(config.with_defaults(BAD, errs), errs)
T = 1768520000000
clock.step(T)
out = {"screen": clock.view.screen, "errors": clock.view.errors, "frames": clock.frames,
       "low_threshold": clock.alarms.low}
clock.on_glucose(json.dumps({"t": T // 1000 + 60, "sgv": 48, "trend": 7, "delta": -9}), "LAN",
                 T + 60000)
clock.step(T + 61000)
out["with_urgent_low"] = [clock.view.screen, clock.alarms.sounding]
print(json.dumps(out))
