# Runs under MicroPython: a 1-minute sensor (Libre 3) through the clock app as the
# edge's feed brings it (/feed.json: one glucose message a minute, built by the edge's own
# clock_feed.glucose_message). Prints one JSON line: the clock's risk at every minute; the
# history and risk of a clock that starts (a reboot) on the last message alone; and when the
# predicted-low alarm first sounds with a risky prediction on every reading, persist 2.
import json

from nightlink.device import alarms, app, config

cfg = config.with_defaults({"version": 1}, [])
with open("/feed.json") as fh:
    feed = json.load(fh)
clock = app.Clock(cfg, [])
risks = []
for body in feed:
    now = json.loads(body)["t"] * 1000
    clock.on_message(b"nl/v1/t/e/clock/glucose", body.encode(), now)
    clock.step(now)
    risks.append(clock.risk)
last = json.loads(feed[-1])["t"] * 1000
fresh = app.Clock(cfg, [])
fresh.on_message(b"nl/v1/t/e/clock/glucose", feed[-1].encode(), last)
fresh.step(last)

# The policy counts one prediction per 5-minute slot, as the edge calibrates it: two risky
# predictions in a row are 5 minutes apart, not 2, with a reading every minute.
a = alarms.Alarms(cfg, 800)
a.set_policy({"permille": 800, "persist": 2, "refractory_min": 60, "rising": 0.5})
T0 = 1768510800000
readings = []
first = None
for m in range(12):
    readings.append((T0 + m * 60000, 110))
    a.evaluate(readings, T0 + m * 60000 + 1000, 120, 900, 100)
    if first is None and alarms.PREDICTED_LOW in a.active:
        first = m
print(json.dumps({"risks": risks, "fresh_history": list(fresh.history),
                  "fresh_risk": fresh.risk, "first_alarm_min": first}))
