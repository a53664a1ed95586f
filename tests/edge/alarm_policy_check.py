# Runs under MicroPython (and CPython): the clock's predicted-low policy and its 15-minute
# sensor handling, through the clock app as the edge drives it. Prints one JSON line.
import json

from nightlink.device import alarms, app, config, render

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
                                              "refractory_min": 30, "rising": 0.5,
                                              "floor": 85, "carb_hold_min": 30, "urgent": 54}}
clock.on_message(b"nl/v1/t/e/clock/glucose", json.dumps(good).encode(), T0 * 1000 + 6000000)
out["policy_after"] = clock.alarms.policy_text()
out["refused"] = clock.alarms.set_policy({"permille": 100})
out["policy_kept"] = clock.alarms.policy_text()
out["bad_floor_refused"] = clock.alarms.set_policy({"permille": 900, "floor": 20})
mmol = app.Clock(config.with_defaults({"version": 1, "units": "mmol/L"}, []), [])
mmol.alarms.set_policy({"permille": 850, "persist": 1, "refractory_min": 60, "floor": 90,
                        "carb_hold_min": 45, "calibrated": False})
out["policy_mmol_uncalibrated"] = mmol.alarms.policy_text()
widest = app.Clock(cfg, [])
widest.alarms.set_policy({"permille": 925, "persist": 6, "refractory_min": 180, "floor": 400 - 1,
                          "carb_hold_min": 120})
out["policy_line_px"] = render.text_width(render.font_small, widest.alarms.policy_text())

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


def steady(a, risk_forecast, start_min=0):
    """Readings at 120 mg/dL every 5 minutes; whether the predicted low is on after each."""
    readings = []
    fired = []
    for k, (risk, fc) in enumerate(risk_forecast):
        t = (T0 + start_min * 60 + k * 300) * 1000
        readings.append((t, 120))
        a.evaluate(readings, t + MIN, 0, risk, fc)
        fired.append(alarms.PREDICTED_LOW in a.active)
    return fired


# The forecast floor (85): risky predictions count only when the forecast is below it.
out["floor"] = [steady(alarms.Alarms(cfg, 800, 85, 0, 54), [(900, fc)])[-1]
                for fc in (90, 84, -1)]  # -1: no forecast head, the floor cannot apply

# Carbs entered at T0 hold the predicted low for 30 minutes (readings from T0 + 15 min, each
# looked at a minute later: the fourth 31 minutes after the carbs), unless the forecast is
# below 54.
d = alarms.Alarms(cfg, 800, 400, 30, 54)
d.set_carbs(T0 * 1000)
out["carbs"] = steady(d, [(900, 80)] * 4, 15)
e = alarms.Alarms(cfg, 800, 400, 30, 54)
e.set_carbs(T0 * 1000)
out["carbs_urgent"] = steady(e, [(900, 50)], 15)[-1]

# No model on the clock: the straight-line rule, held after carbs too. Falling 1.6 mg/dL a
# minute from 104 (the line reaches 56 in 20 minutes: low, not urgent); carbs entered 60
# minutes before the second run (the hold is over by then).
trend = []
for carbs_min in (0, -60):
    f = alarms.Alarms(cfg, None, 400, 30, 54)
    f.set_carbs((T0 + carbs_min * 60) * 1000)
    readings = [((T0 + k * 300) * 1000, 104 - 8 * k) for k in range(3)]
    f.evaluate(readings, readings[-1][0] + MIN, 0)
    trend.append(alarms.PREDICTED_LOW in f.active)
out["trend_after_carbs"] = trend

# Glucose rising 1 mg/dL a minute: under the rising-fast alarm's own 3 mg/dL/min threshold.
g = alarms.Alarms(cfg, 800)
up = [((T0 + k * 300) * 1000, 100 + 5 * k) for k in range(5)]
g.evaluate(up, up[-1][0] + MIN, 0, 0)
out["rising_fast_at_1"] = alarms.RISING_FAST in g.active
print(json.dumps(out))
