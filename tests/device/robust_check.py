# The clock app against what a real feed can send: malformed and hostile messages, a reading
# dated ahead of the clock, no reading at all since a power cut, a sensor error right after
# an urgent low, mmol/L. Runs under real MicroPython and CPython; prints one JSON object.
import json

from nightlink.device import app, config

CFG = {"version": 1, "device": {"id": "a4cf12b0c3d4", "tenant": "smith"},
       "wifi": [{"ssid": "home", "password": "correct horse"}], "mqtt": {"host": "10.0.0.2"},
       "tz": "UTC0", "thresholds": {"urgent_low": 54, "low": 70, "high": 250,
                                    "rising_fast": 3.0, "stale_min": 15, "nodata_min": 30}}
T0 = 1768510800  # 2026-01-15 21:00 UTC
TOPIC = b"nl/v1/smith/edge-1/clock/glucose"
NIGHT = b"nl/v1/smith/edge-1/clock/night"
out = {}


def clock(**over):
    raw = json.loads(json.dumps(CFG))
    for k in over:
        raw[k] = over[k]
    errs = config.validate(raw)
    return app.Clock(config.with_defaults(raw, errs), errs)


def reading(c, minute, sgv, trend=4, delta=0):
    body = json.dumps({"t": T0 + minute * 60, "sgv": sgv, "trend": trend, "delta": delta})
    return c.on_message(TOPIC, body.encode(), (T0 + minute * 60) * 1000)


def state(c, minute):
    c.step((T0 + minute * 60) * 1000)
    a = c.alarms
    return [a.shown, a.sounding, a.pattern, a.label(a.shown) if a.shown else None]


# 1. hostile messages: each dropped, none raises, the clock goes on
c = clock()
reading(c, 0, 120)
bad = [b"null", b"[1, 2]", b"3", b"{", b'{"t": 1768510800, "sgv": 1e999}',
       b'{"t": 1e999, "sgv": 100}', b'{"t": 1768510860, "sgv": 100, "trend": 1e999}',
       b'{"t": 1768510920, "sgv": 100, "delta": 1e999}', b'{"t": "x", "sgv": 100}',
       b'{"t": 1768510980, "sgv": 100, "recent": [[1e999, 5]]}', b"\xff\xfe\x00"]
took = []
for body in bad:
    try:
        took.append(c.on_message(TOPIC, body, (T0 + 60) * 1000))
    except Exception as e:  # noqa: BLE001
        took.append("raised " + type(e).__name__)
try:
    took.append(c.on_message(b"\xff\xfe/glucose", b"{}", (T0 + 60) * 1000))
except Exception as e:  # noqa: BLE001
    took.append("raised " + type(e).__name__)
out["hostile"] = took
c.on_message(NIGHT, b'{"night": "2026-01-15", "sleep_min": "451", "lows": null, '
             b'"efficiency_pct": 1e999, "tir_pct": 84, "curve": [null, "x", 1e999, 120, -5]}',
             (T0 + 60) * 1000)
out["summary"] = c.summary
try:
    c.override = ("morning", (T0 + 3600) * 1000)
    c.step((T0 + 120) * 1000)
    out["morning_drawn"] = c.view.screen
except Exception as e:  # noqa: BLE001
    out["morning_drawn"] = "raised " + type(e).__name__
out["bad_messages"] = c.bad_messages

# 1b. the morning screen (07:30 the next day, no alarm): last night's summary is drawn; one
# from five nights ago (the edge down since) is not shown as "Last night"
morning = []
for night in ("2026-01-15", "2026-01-10"):
    c = clock()
    reading(c, 10 * 60 + 25, 120)
    c.on_message(NIGHT, json.dumps({"night": night, "sleep_min": 420}).encode(), (T0 + 36000) * 1000)
    state(c, 10 * 60 + 30)
    morning.append(c.view.screen)
out["morning_screen"] = morning

# 1c. a day sleeper (night shifts): quiet hours 08:00-16:00, the edge's summary of the sleep
# that ended at 16:00 (end_t): the morning screen from 16:00 for 4.5 hours, then the night
# screen; the same summary 20 hours on is not "last night" any more


def screens_after(c, end_t, minutes):
    """The screen at each of these minutes after end_t, a reading a minute before each."""
    shown = []
    for minute in minutes:
        at = end_t + minute * 60
        c.on_message(TOPIC, json.dumps({"t": at - 60, "sgv": 120, "trend": 4,
                                        "delta": 0}).encode(), at * 1000)
        c.step(at * 1000)
        shown.append(c.view.screen)
    return shown


c = clock(quiet_hours={"start": "08:00", "end": "16:00"})
end_t = T0 + 19 * 3600  # 2026-01-16 16:00 UTC
c.on_message(NIGHT, json.dumps({"night": "2026-01-16", "sleep_min": 440,
                                "end_t": end_t}).encode(), end_t * 1000)
out["day_sleeper_morning"] = screens_after(c, end_t, (30, 4 * 60 + 20, 4 * 60 + 40, 20 * 60))
# ... and one sleeping 07:00-13:00, whose night is named by the evening before (2026-01-15)
c = clock(quiet_hours={"start": "07:00", "end": "13:00"})
end_t = T0 + 16 * 3600  # 2026-01-16 13:00 UTC
c.on_message(NIGHT, json.dumps({"night": "2026-01-15", "sleep_min": 330,
                                "end_t": end_t}).encode(), end_t * 1000)
out["end_t_kept"] = c.summary.get("end_t") == end_t
out["early_sleeper_morning"] = screens_after(c, end_t, (30, 4 * 60))

# 2. one reading dated two hours ahead (a phone with a wrong clock), then a real fall
c = clock()
reading(c, 0, 100)
out["ahead_taken"] = c.on_message(TOPIC, json.dumps({"t": T0 + 7200, "sgv": 100}).encode(),
                                  T0 * 1000)
for k in range(1, 13):
    reading(c, 5 * k, 100 - 5 * k)
out["after_fall"] = state(c, 60) + [c.readings[-1][1], c.refused_ahead]

# 3. a clock that hears nothing after a power cut
c = clock()
out["no_reading"] = [state(c, 0), state(c, 16), state(c, 31), state(c, 61)]

# 3a. a clock not set up yet (its config has errors) expects no data
raw = json.loads(json.dumps(CFG))
raw["wifi"] = []
errs = config.validate(raw)
c = app.Clock(config.with_defaults(raw, errs), errs)
out["unconfigured"] = [len(errs) > 0, state(c, 0), state(c, 61)]
raw = json.loads(json.dumps(CFG))
raw["note"] = "x"  # another error: the clock still runs and gets data
errs = config.validate(raw)
c = app.Clock(config.with_defaults(raw, errs), errs)
state(c, 0)
out["minor_error"] = [len(errs) > 0, state(c, 31)[:3]]

# 3b. the same after a power cut: the first passes at 2000-01-01, then NTP sets the time
c = clock()
Y2K = 946684800 - T0  # minutes are counted from T0: this is 2000-01-01 in seconds from it
for sec in (0, 60, 120):
    c.step((T0 + Y2K + sec) * 1000)
out["after_ntp"] = [state(c, 3), state(c, 19)]

# 3c. a power cut and no network time: the clock runs from 2000 and the broker hands over the
# reading kept from before the cut; its age counts from its arrival, so it goes stale and then
# NO DATA sounds (it used to show as current for ever, "-13696910 min ago", never alarming)
# (review) the same retained message delivered again at each reconnect, or a sensor error
# code, is no new data: the age keeps counting from the reading's first arrival
c = clock()
body = json.dumps({"t": T0, "sgv": 95, "trend": 4, "delta": 0})
error = json.dumps({"t": T0 + 300, "sgv": 9, "trend": 4, "delta": 0})
c.on_message(TOPIC, body.encode(), (T0 + Y2K) * 1000)
unset = []
for minute in (1, 12, 16, 24, 31):
    if minute in (12, 24):
        c.on_message(TOPIC, (body if minute == 12 else error).encode(),
                     (T0 + Y2K + minute * 60) * 1000)
    st = state(c, Y2K // 60 + minute)
    unset.append(st[:3] + [c.view.age_min])
out["time_unset"] = unset

# 3d. carbs with the newest reading, then an older message redelivered without them: the carb
# hold stays (the older message used to lift it just after a meal)
c = clock()
for minute, extra in ((10, {"carbs_t": T0 + 9 * 60}), (5, {}), (10, {})):
    d = {"t": T0 + minute * 60, "sgv": 110, "trend": 4, "delta": 0}
    d.update(extra)
    c.on_message(TOPIC, json.dumps(d).encode(), (T0 + 11 * 60) * 1000)
    if minute == 5:
        out["carbs_after_older"] = c.alarms.carbs_ms
out["carbs_after_newest_again"] = c.alarms.carbs_ms

def then_errors(low, code, checks, back):
    """A reading of `low`, sensor error `code` every 5 minutes, the states at `checks`, then a
    real 80-90 mg/dL reading at minute `back`."""
    c = clock()
    reading(c, 0, low)
    seq = [state(c, 0)]
    for m in (5, 10, 15, 20, 25):
        reading(c, m, code)
    seq.extend(state(c, m) for m in checks)
    reading(c, back, 80 if low < 54 else 90)
    seq.append(state(c, back))
    return seq


# 4. an urgent low, then sensor errors, then nothing: the siren goes on until a real reading
out["urgent_then_errors"] = then_errors(50, 10, (6, 21, 40), 45)
# 4a. a low (not urgent), then sensor errors: LOW goes on (it used to clear at the first error
# code, and stay silent until no data at 30 minutes), and a real reading above it ends it
out["low_then_errors"] = then_errors(62, 9, (6, 16, 29), 30)

# 4b'. a 15-minute sensor at 62 mg/dL, each reading delivered a minute late, the LOW snoozed
# at minute 2: no STALE every 15 minutes, and the 30-minute snooze lasts its 30 minutes
c = clock()
shown = []
for m in range(0, 61):
    if m % 15 == 1:
        body = json.dumps({"t": T0 + (m - 1) * 60, "sgv": 62, "trend": 4, "delta": 0})
        c.on_message(TOPIC, body.encode(), (T0 + m * 60) * 1000)
    st = state(c, m)
    if m == 2:
        c.alarms.snooze((T0 + m * 60) * 1000)
        st = state(c, m)
    shown.append(st[:3])
out["fifteen_minute_sensor"] = shown

# 4b. the same across deep sleep (battery): the state kept in RTC memory holds the urgent
# low and the time since data stopped
from nightlink.device import power  # noqa: E402


class Rtc:
    def __init__(self):
        self.data = b""

    def memory(self, data=None):
        if data is None:
            return self.data
        self.data = data
        return None


rtc = Rtc()
c = clock()
reading(c, 0, 50)
state(c, 0)
reading(c, 5, 10)
power.save_state(c, rtc)
woke = clock()
out["deep_sleep"] = [power.restore_state(woke, rtc), state(woke, 10)[:3]]
fresh = clock()
state(fresh, 0)
power.save_state(fresh, rtc)
woke = clock()
power.restore_state(woke, rtc)
out["deep_sleep"].append(state(woke, 31)[:3])
c = clock()  # a low, then a sensor error, then a deep sleep: the low goes on after the wake
reading(c, 0, 62)
state(c, 0)
reading(c, 5, 9)
state(c, 6)
power.save_state(c, rtc)
woke = clock()
power.restore_state(woke, rtc)
out["deep_sleep"].append(state(woke, 16)[:3])

# 5. mmol/L: the rising rate in the person's unit
c = clock(units="mmol/L", thresholds={"urgent_low": 3.0, "low": 3.9, "high": 13.9,
                                      "rising_fast": 0.17, "stale_min": 15, "nodata_min": 30})
for k in range(4):
    reading(c, 5 * k, 100 + 20 * k, 2, 20)
out["mmol_rising"] = state(c, 15)[3]

# 6. what a fuzzing run found: a delta of 401 digits stopped every render (safe mode); a bad
# message's `recent` pairs were taken; a reading dated ahead while the time was unset stood
# as the newest once it was set; summary figures no night has were drawn
c = clock()
reading(c, 0, 120)
huge = '{"t": ' + str(T0 + 300) + ', "sgv": 62, "trend": 6, "delta": 1' + "0" * 400 + "}"
took = [c.on_message(TOPIC, huge.encode(), (T0 + 300) * 1000)]
out["huge_delta"] = c.delta
took.append(c.on_message(TOPIC, json.dumps({"t": T0 + 360, "sgv": 100, "delta": 1001}).encode(),
                         (T0 + 360) * 1000))
took.append(c.on_message(TOPIC, json.dumps({"t": T0 + 420, "sgv": "x",
                                            "recent": [[T0 + 400, 45]]}).encode(),
                         (T0 + 420) * 1000))
took.append(c.on_message(TOPIC, json.dumps({"t": T0 + 480, "sgv": -5}).encode(),
                         (T0 + 480) * 1000))
took.append(c.on_message(TOPIC, json.dumps({"t": T0 + 540, "sgv": 110, "trend": 99,
                                            "delta": -3}).encode(), (T0 + 540) * 1000))
out["fuzzed"] = [took, [r[1] for r in c.readings], c.trend, c.delta, state(c, 9)[:3]]
UNSET = 946684800000  # 2000-01-01: the clock's time after a power cut, before NTP
c = clock()
far = [c.on_message(TOPIC, json.dumps({"t": 3000000000, "sgv": 110}).encode(), UNSET),
       c.on_message(TOPIC, json.dumps({"t": 5000000000, "sgv": 111}).encode(), UNSET)]
for k in range(6):  # the time is set; the real readings fall from 100 to 50
    reading(c, 5 * k, 100 - 10 * k, 6, -10)
out["ahead_unset"] = [far, state(c, 25), [r[1] for r in c.readings], c.refused_ahead]
c.on_message(NIGHT, b'{"night": "2026-01-15", "sleep_min": -1, "tir_pct": 1000000000, '
             b'"lows": 2, "efficiency_pct": 101}', (T0 + 60) * 1000)
out["summary_ranges"] = c.summary
print(json.dumps(out))
