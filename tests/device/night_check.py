# A simulated night through the clock app (device/app.py), under real MicroPython (heap
# measured with gc.mem_alloc) or CPython. Prints one JSON object with what happened when.
# Under MicroPython tests/mpy/run.mjs --steps calls tick() once per simulated minute (at the
# top level, where this port's garbage collector can run), then finish().
import gc
import json
import sys

if not hasattr(gc, "mem_alloc"):  # CPython: no heap figures
    gc.mem_alloc = lambda: 0
# every module the app uses, imported before measuring
from nightlink.device import alarms, app, config, render  # noqa: E402, F401

# On the board these modules are frozen bytecode in flash; here their code sits in the heap,
# so the app's own use is measured from the first tick (after a top-level collection).
CFG_TEXT = """{"version": 1, "device": {"id": "a4cf12b0c3d4", "tenant": "smith"},
 "wifi": [{"ssid": "home", "password": "correct horse"}],
 "mqtt": {"host": "192.168.1.20"}, "tz": "CET-1CEST,M3.5.0,M10.5.0/3",
 "thresholds": {"urgent_low": 54, "low": 70, "high": 250, "rising_fast": 3.0,
                "stale_min": 15, "nodata_min": 30},
 "quiet_hours": {"start": "22:30", "end": "06:30"}}"""
clock = None
BASE = 0
after_init = 0
peak = 0

T0 = 1768510800  # 2026-01-15 21:00 UTC = 22:00 CET
MIN = 60


def glucose_at(m):
    """The night's glucose (mg/dL) m minutes after 22:00, None where the sensor is silent."""
    if m < 60:
        return 125
    if m < 150:  # 23:00-00:30 a steady fall of 1.4 mg/dL/min to 48
        return 125 - (m - 60) * 86 // 100
    if m < 175:
        return 48
    if m < 240:  # recovery to 110
        return 48 + (m - 175)
    if m < 270:
        return 110
    if m < 360:  # 02:30-04:00 the sensor is silent
        return None
    if m < 400:
        return 112
    if m < 480:  # 04:40-06:00 rising to 270
        return 112 + (m - 400) * 2
    return 272


events = {}
log = []
sounds = {}
prev = None
button_at = (128, 152, 330, 338)  # minutes: during low, urgent low, no data, no data
last_sgv = None
m = 0
live = 0


def tick():
    """One simulated minute; False when the night is over."""
    global m, prev, last_sgv, peak, live, clock, BASE, after_init
    if clock is None:
        BASE = gc.mem_alloc()
        cfg_raw = json.loads(CFG_TEXT)
        errs = config.validate(cfg_raw)
        clock = app.Clock(config.with_defaults(cfg_raw, errs), errs)
        after_init = gc.mem_alloc()
        peak = after_init
    used = gc.mem_alloc()  # after the top-level collection: what is really kept
    if used > live:
        live = used
    now = (T0 + m * MIN) * 1000
    if m % 5 == 0:
        g = glucose_at(m)
        if g is not None:
            delta = 0 if last_sgv is None else g - last_sgv
            body = json.dumps({"t": T0 + m * MIN, "sgv": g, "trend": 4, "delta": delta})
            clock.on_message(b"nl/v1/smith/edge-1/clock/glucose", body.encode(), now)
            last_sgv = g
    if m in button_at:
        clock.button(now)
    clock.step(now)
    a = clock.alarms
    state = (a.shown, a.sounding, a.pattern, a.escalation, clock.view.freshness,
             clock.view.screen)
    for k in a.active:
        if k not in events:
            events[k] = m
    if a.sounding is not None:
        sounds.setdefault(a.sounding, []).append(m)
    if state != prev:
        log.append([m] + list(state) + [clock.risk])
        prev = state
    used = gc.mem_alloc()  # before collection: kept + this pass's garbage
    if used > peak:
        peak = used
    m += 1
    return m <= 9 * 60


def finish():
    out = {"events": events, "log": log, "frames": clock.frames, "refreshes": clock.refreshes,
           "sounds": {k: [sounds[k][0], sounds[k][-1], len(sounds[k])] for k in sounds},
           "model": clock.model is not None,
           "heap": {"code": BASE, "after_init": after_init - BASE, "peak": peak - BASE,
                    "live": live - BASE, "peak_total": peak}}
    print(json.dumps(out))


if sys.implementation.name != "micropython":
    while tick():
        pass
    finish()
