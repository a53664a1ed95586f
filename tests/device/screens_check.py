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
        ("Config", "ok"), ("Wi-Fi", "home (-61 dBm)"), ("Broker", "up, 192.168.1.20:1883"),
        ("Last sync", "2 min ago"), ("Outbox", "12 records, 0 dropped")])),
    # Every row the clock can show, with values wider than the panel: seven rows fit, each
    # value is clipped at the edge.
    ("status_full", view(screen="status", now_hm=(22, 1), status=[
        ("Config", "ok"), ("Wi-Fi", "not connected"),
        ("Broker", "down: not authorised, mqtt.nightlink.example.org:8883"),
        ("Cloud", "fallback, 12 polls"), ("Last sync", "182 min ago (cloud)"),
        ("Outbox", "1204 records"), ("Low alarm", "edge 900 x2 30m <80 c45")])),
    ("config_errors", view(screen="status", now_hm=(22, 1), errors=config.validate(BAD))),
)

for name, v in SCREENS:
    render.draw(fb, buf, v)
    out[name] = binascii.hexlify(buf).decode()
# The seventh status row's label drawn alone where that row belongs (not a screen: what
# test_status__seven_rows_all_on_the_panel compares the bottom of status_full with).
fb.fill(render.PAPER)
render.text(fb, render.font_small, "Low alarm", 4, 30 + 6 * 14)
out["_low_alarm_label"] = binascii.hexlify(buf).decode()
print(json.dumps(out))
