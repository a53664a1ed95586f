# Runs under MicroPython (and CPython): the clock's predicted-low policy and its 15-minute
# sensor handling, through the clock app as the edge drives it. Prints one JSON line.
import json

from nightlink.device import alarms, app, config

T0 = 1768510800  # 2026-01-15 21:00 UTC
MIN = 60000
cfg = config.with_defaults({"version": 1}, [])
out = {}

# A 15-minute sensor falling 0.5 mg/dL a minute: a prediction on every pass once an hour of
# readings is in, between readings too.
clock = app.Clock(cfg, [])
risks = []
for m in range(0, 100):
    now = (T0 * 1000) + m * MIN
    if m % 15 == 0:
        body = json.dumps({"t": T0 + m * 60, "sgv": 200 - m // 2, "trend": 5, "delta": -7})
        clock.on_message(b"nl/v1/t/e/clock/glucose", body.encode(), now)
    clock.step(now)
    risks.append(clock.risk)
out["libre_risks"] = risks
out["history"] = list(clock.history)

# The edge's calibrated policy arrives with the glucose; unsafe values are refused whole.
out["policy_before"] = clock.alarms.policy_text()
good = {"t": T0 + 6000, "sgv": 150, "alarm": {"permille": 900, "persist": 2,
                                              "refractory_min": 30, "rising": 0.5}}
clock.on_message(b"nl/v1/t/e/clock/glucose", json.dumps(good).encode(), T0 * 1000 + 6000000)
out["policy_after"] = clock.alarms.policy_text()
out["refused"] = clock.alarms.set_policy({"permille": 100})
out["policy_kept"] = clock.alarms.policy_text()

# Persistence and refractory on the alarm logic itself: readings every 5 minutes at 120
# mg/dL (steady), the risk given per reading.
a = alarms.Alarms(cfg, 800)
a.set_policy({"permille": 800, "persist": 2, "refractory_min": 30, "rising": 0.5})
readings = []
fired = []
risk_at = [900, 100, 900, 900, 900, 100, 900, 900, 100, 100, 100, 100, 900, 900]
for k, risk in enumerate(risk_at):
    t = (T0 + k * 300) * 1000
    readings.append((t, 120))
    a.evaluate(readings, t + MIN, 0, risk)
    fired.append(alarms.PREDICTED_LOW in a.active)
out["fired"] = fired

# While glucose rises, no predicted low whatever the risk.
b = alarms.Alarms(cfg, 800)
rising = []
for k in range(6):
    t = (T0 + k * 300) * 1000
    rising.append((t, 100 + 10 * k))
    b.evaluate(rising, t + MIN, 0, 950)
out["while_rising"] = alarms.PREDICTED_LOW in b.active
print(json.dumps(out))
