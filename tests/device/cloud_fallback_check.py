# Runs under MicroPython (and CPython on the host port): the clock's cloud fallback
# (device/runtime.py) with no broker, on the answers a real Nightlink cloud gave to the URLs the
# clock asks: the newest carbs (/flash/carbs.json), then at the next step the readings
# (/flash/cloud.txt, saved by the test), then on an answer that is no list of readings (a captive portal's
# page), then on one with a broken line. Prints one JSON line: the URLs and headers asked, the
# readings kept, the delta, the risk, the carbs' time, the polls and errors, and the heap
# parsing it took, against the same readings as JSON (/flash/cloud.json).
import gc
import json

from nightlink.device import app, config, runtime

with open("/flash/cloud.txt", "rb") as fh:
    BODY = fh.read()
with open("/flash/now.json") as fh:
    NOW = json.load(fh)["now_ms"]
with open("/flash/carbs.json", "rb") as fh:
    CARBS = fh.read()

asked = []
answers = [(200, CARBS), (200, BODY)]


def http_get(url, headers):
    asked.append([url, headers])
    return answers.pop(0)


errs = []
cfg = config.with_defaults({"version": 1, "device": {"id": "a4cf12b0c3d4", "tenant": "fam"},
                            "cloud": {"url": "http://cloud.test/t/fam/",
                                      "api_secret": "a-cloud-secret-1"}}, errs)
clock = app.Clock(cfg, errs)
runner = runtime.Runner(clock, None, http_get)


def allocated(parse, data):
    """Bytes the parse allocated, garbage included (MicroPython; None on CPython)."""
    mem = getattr(gc, "mem_alloc", None)
    if mem is None:
        return None
    gc.collect()
    before = mem()
    got = parse(data)
    used = mem() - before
    del got
    return used


with open("/flash/cloud.json", "rb") as fh:
    as_json = allocated(json.loads, fh.read())  # the same readings as Nightscout's JSON
as_text = allocated(app.entries_text, BODY)
runner.step(NOW)  # the carbs
carbs_ms = clock.alarms.carbs_ms
runner.step(NOW + 1000)  # the readings, a step after the carbs
first = {"readings": len(clock.readings), "newest": list(clock.readings[-1]),
         "oldest": list(clock.readings[0]), "delta": clock.delta, "trend": clock.trend,
         "source": clock.source, "risk": clock.risk, "history": list(clock.history)}
first["carbs_ms"] = carbs_ms
first["errors"] = runner.poll_errors

answers.append((200, CARBS))
answers.append((200, b"<html><body>Sign in to the hotel Wi-Fi</body></html>"))
runner.step(NOW + 61000)
runner.step(NOW + 62000)
portal = {"errors": runner.poll_errors, "readings": len(clock.readings)}

lines = BODY.split(b"\n")
lines[0] = b'"2026-01-01T00:00:00.000Z"\tsoon\t1e999\t"Flat"\t"x"'
answers.append((200, CARBS))
answers.append((200, b"\n".join(lines)))
runner.step(NOW + 122000)
runner.step(NOW + 123000)
broken = {"errors": runner.poll_errors, "readings": len(clock.readings)}
ISO = ["2026-01-15T21:05:00.000Z", "2026-01-15T22:05:00.5+01:00", "2026-01-15T16:05-0500",
       "2026-01-15T21:05:07.123456Z", "2026-01-15", "soon", None, "2026-13-45T99:99:00Z"]
print(json.dumps({"asked": asked, "first": first, "portal": portal, "broken": broken,
                  "iso": [app.iso_ms(x) for x in ISO],
                  "errs": errs, "polls": runner.polls, "text_bytes": as_text,
                  "json_bytes": as_json}))
