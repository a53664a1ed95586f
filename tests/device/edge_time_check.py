# device/main.py under real MicroPython on a LAN with no NTP server, after a power cut (the RTC
# at 2000-01-01): the edge's time message (nl/v1/{tenant}/{edge}/clock/time, not retained)
# sets the RTC, after two malformed ones are dropped; a retained reading then has its real age.
# Then a clock whose NTP answers: the edge's (here wrong) time is not taken. Prints JSON.
import json
import os
import sys
import time

from mqtt_broker import BROKER

T2000 = 946684800
T0 = 1768510800  # 2026-01-15 21:00 UTC: the edge's time
TENANT = "smith"
EDGE = "ed9e00000001"
PREFIX = "nl/v1/" + TENANT + "/" + EDGE + "/clock/"


class Ntp:
    """ntptime: `answer` is the time NTP gives, None when no server answers."""

    answer = None

    def settime(self):
        if self.answer is None:
            raise OSError(110)
        time.set_unix(self.answer)


NTP = Ntp()
sys.modules["ntptime"] = NTP

import machine  # noqa: E402

from nightlink.device import main as clock_main  # noqa: E402
from nightlink.shared import epoch  # noqa: E402

CONFIG = {"version": 1, "device": {"id": "a4cf12b0c3d4", "name": "Nightstand", "tenant": TENANT},
          "wifi": [{"ssid": "home", "password": "correct horse"}],
          "mqtt": {"host": "edge.lan", "port": 1883}, "tz": "UTC0",
          "sensors": {"temp": "none", "light": "none", "co2": "none", "mic": False}}


def run(root, start_s, ntp, times, passes):
    """The clock from start_s, NTP answering `ntp` (or not), the edge's retained reading two
    minutes before T0 and `times` [(board s, payload)] sent on the time topic."""
    BROKER.reset()
    NTP.answer = ntp
    machine._state["rtc_set"] = []
    time.set_clock(start_s, 60)  # a pass of the main loop is a minute
    try:
        os.mkdir(root)
    except OSError:
        pass
    with open(root + "config.json", "w") as f:
        f.write(json.dumps(CONFIG))
    BROKER.publish(PREFIX + "glucose", json.dumps({"t": T0 - 120, "sgv": 104, "trend": 4,
                                                   "delta": 0}).encode())
    for at, payload in times:
        BROKER.schedule(at, PREFIX + "time", payload.encode(), retain=False)
    runner, _room = clock_main.main(root=root, passes=passes)
    clock = runner.clock
    return {"now": epoch.unix_now(), "rtc_set": machine._state["rtc_set"],
            "bad": clock.bad_messages, "age_min": clock.view.age_min,
            "now_hm": list(clock.view.now_hm), "readings": [t // 1000 for t, _ in clock.readings],
            "retained_time": PREFIX + "time" in BROKER.retained}


out = {"no_ntp": run("/a/", T2000, None, [(T2000 + 60, '{"t": "soon"}'),
                                           (T2000 + 120, '{"t": 99}'),
                                           (T2000 + 180, json.dumps({"t": T0}))], 8),
       "ntp": run("/b/", T2000, T0, [(T0 + 60, json.dumps({"t": T0 + 7200}))], 8)}
print(json.dumps(out))
