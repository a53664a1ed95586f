# Every clock screen rendered into its framebuf (device/render.py), under real MicroPython or
# CPython with the host port's framebuf. Prints one JSON object: {name: hex of the buffer}.
import binascii
import json

from nightlink.device import config, render

buf, fb = render.new_buffer()
out = {}


def view(**kw):
    v = render.View()
    v.now_hm = (2, 14)
    v.last_hm = (2, 12)
    v.source = "LAN"
    for k in kw:
        setattr(v, k, kw[k])
    return v


SUMMARY = {"night": "2026-01-15", "sleep_min": 432, "efficiency_pct": 91, "lows": 1,
           "low_min": 35, "tir_pct": 84,
           "curve": [128, 126, 124, 121, 118, 112, 104, 97, 90, 82, 75, 68, 62, 57, 55, 58, 66,
                     78, 92, 104, 112, 0, 0, 0, 0, 118, 124, 131, 140, 152, 166, 181, 196, 210,
                     224, 238, 250, 262, 270, 268, 262, 250]}
BAD = {"version": 1, "device": {"id": "a4cf12b0c3d4", "tenant": "smith"},
       "wifi": [{"ssid": "home", "password": "short"}], "mqtt": {"host": "192.168.1.20"},
       "thresholds": {"low": 200}, "quiet_hours": {"start": "22:30", "end": "06:30",
                                                   "mute": ["urgent_low"]}}

SCREENS = (
    ("night", view(sgv=112, trend=4, delta=3, age_min=2, risk=40)),
    ("night_mmol", view(sgv=112, trend=3, delta=8, age_min=1, unit="mmol/L", risk=30)),
    ("falling", view(sgv=84, trend=6, delta=-12, age_min=0, risk=620)),
    ("predicted_low", view(sgv=78, trend=5, delta=-7, age_min=1, risk=850,
                           alarm="LOW SOON")),
    ("low", view(sgv=62, trend=6, delta=-9, age_min=2, alarm="LOW")),
    ("urgent_low_snoozed", view(sgv=48, trend=7, delta=-14, age_min=1, alarm="URGENT LOW",
                                alarm_urgent=True, snoozed_min=9)),
    ("high_quiet", view(sgv=262, trend=2, delta=11, age_min=3, quiet=True,
                        alarm="HIGH  (quiet)")),
    ("stale", view(sgv=188, trend=3, delta=4, age_min=23, freshness=render.STALE,
                   alarm="STALE 23 min")),
    ("no_data", view(sgv=188, age_min=41, freshness=render.NODATA, last_hm=(1, 33),
                     alarm="NO DATA 41 min", alarm_urgent=True)),
    ("sensor_error", view(sgv=10, trend=8, last_hm=(2, 12))),
    ("double_up", view(sgv=203, trend=1, delta=17, age_min=4)),
    ("morning", view(screen="morning", now_hm=(7, 5), summary=SUMMARY, source="")),
    ("status", view(screen="status", now_hm=(22, 1), status=[
        ("Config", "ok"), ("Wi-Fi", "home (-61 dBm)"), ("Broker", "192.168.1.20:1883 up"),
        ("Last sync", "2 min ago"), ("Outbox", "12 records, 0 dropped")])),
    ("config_errors", view(screen="status", now_hm=(22, 1), errors=config.validate(BAD))),
)

for name, v in SCREENS:
    render.draw(fb, buf, v)
    out[name] = binascii.hexlify(buf).decode()
print(json.dumps(out))
