"""The desk clock on a PC: device/ code unchanged (runtime.Runner around app.Clock, the clock's
one MqttLink), the host port's shims for machine/network/time/framebuf/umqtt.simple, a real
MQTT broker, and a virtual clock that may run faster than real time. Every time the panel would refresh, the screen is written as a
PNG (OUT/current.png plus a numbered copy) and one JSON line is printed.

    PYTHONPATH=tools/device/hostport python tools/device/hostport/run_emulator.py \\
        --config config.json --out DIR [--speed X] [--minutes N] [--start UNIX_S]
        [--replay cgm.csv [--summary night.json]] [--battery] [--no-broker]

--replay feeds a simulated night's CGM readings (nightlink simulate night) to the app as the
edge's clock feed would, at their virtual times, instead of listening to the broker.
--battery runs the battery duty cycle: deep sleep between wake-ups (state in RTC memory),
one wake every power.wake_s, and prints the battery life estimate at the end.
"""

import argparse
import csv
import json
import os
import sys
import time
import urllib.error
import urllib.request

import board

board.install()

import machine  # noqa: E402
import png  # noqa: E402
from umqtt.simple import MQTTClient, MQTTException  # noqa: E402

from nightlink.device import alarms, annunciator, app, config, power, render, runtime  # noqa: E402
from nightlink.device.mqtt_link import MqttLink  # noqa: E402
from nightlink.shared import topics, units  # noqa: E402


def emit(event):
    """One JSON line on stdout (the emulator's output protocol)."""
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def hm(pair):
    return f"{pair[0]:02d}:{pair[1]:02d}"


class HostPanel:
    """Stands where the SSD1680 is: writes each refreshed image as a PNG."""

    def __init__(self, out, clock_ref):
        self.out = out
        self.clock_ref = clock_ref
        self.n = 0
        self.fulls = 0
        self.partials = 0
        os.makedirs(out, exist_ok=True)

    def show(self, buf, full):
        self.n += 1
        if full:
            self.fulls += 1
        else:
            self.partials += 1
        c = self.clock_ref[0]
        v = c.view
        data = png.encode(png.rows_from_vlsb(buf, render.W, render.H))
        name = f"screen-{self.n:04d}-{hm(v.now_hm).replace(':', '')}.png"
        for path in (os.path.join(self.out, name), os.path.join(self.out, "current.png")):
            with open(path + ".tmp", "wb") as f:
                f.write(data)
            os.replace(path + ".tmp", path)
        line = {"event": "screen", "n": self.n, "file": name, "full": bool(full),
                "time": hm(v.now_hm), "screen": v.screen, "sgv": v.sgv,
                "freshness": v.freshness, "alarm": v.alarm,
                "sounding": c.alarms.sounding, "pattern": c.alarms.pattern}
        emit(line)


# CONNACK return codes umqtt.simple raises as MQTTException, in words.
REFUSALS = {1: "unsupported protocol version", 2: "client id refused", 3: "server unavailable",
            4: "bad user name or password", 5: "not authorised"}
broker_trouble = {"refused": 0, "unreachable": 0}


class ReportingClient(MQTTClient):
    """The host port's umqtt.simple client, telling the emulator's output when the broker
    refuses the clock's login or cannot be reached: on the panel both look like missing
    data, so without this a wrong password would pass for quiet hours."""

    def connect(self, clean_session=True, timeout=None):
        where = f"{self.server}:{self.port}"
        try:
            return super().connect(clean_session, timeout)
        except MQTTException as exc:
            code = exc.args[0] if exc.args else 0
            broker_trouble["refused"] += 1
            emit({"event": "broker_refused", "broker": where, "user": self._user or "",
                  "code": code, "reason": REFUSALS.get(code, f"return code {code}")})
            raise
        except OSError as exc:
            broker_trouble["unreachable"] += 1
            emit({"event": "broker_unreachable", "broker": where, "error": str(exc)})
            raise


def make_link(cfg):
    """The clock's one MQTT link, as device/main.py makes it; the PC's network is up."""
    m = cfg["mqtt"]
    return MqttLink(ReportingClient, "nl-clock-" + cfg["device"]["id"], m["host"], m["port"],
                    user=m.get("user"), password=m.get("password"), tls=m.get("tls", False),
                    keepalive_s=60, refused=MQTTException)


def http_get(url, headers):
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, b""
    except (urllib.error.URLError, TimeoutError) as e:
        raise OSError(str(e)) from None


def read_cgm(path):
    """(t_ms, sgv) of a simulated night's cgm.csv; error codes kept as sgv < 39."""
    out = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            code = row.get("error_code") or ""
            sgv = int(code) if code else int(float(row["sgv_mgdl"]))
            out.append((int(row["epoch_ms"]), sgv))
    return out


def feed_body(readings, i):
    """The edge's clock feed message for reading i (same JSON as edge/sync/clock_feed.py)."""
    t, sgv = readings[i]
    prev = None
    for j in range(i - 1, -1, -1):
        if readings[j][1] >= 39 and t - readings[j][0] <= 600000:
            prev = readings[j]
            break
    delta = sgv - prev[1] if prev is not None and sgv >= 39 else None
    rate = None if delta is None else delta / ((t - prev[0]) / 60000)
    recent = [[r[0] // 1000, r[1]] for r in readings[max(0, i - 12):i]
              if t - r[0] <= 3600000]
    return json.dumps({"t": t // 1000, "sgv": sgv, "trend": units.trend(rate), "delta": delta,
                       "recent": recent})


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--speed", type=float, default=1.0)
    ap.add_argument("--minutes", type=float, default=0.0)
    ap.add_argument("--start", type=float, default=0.0)
    ap.add_argument("--step-s", type=float, default=1.0, help="virtual seconds per pass")
    ap.add_argument("--replay", default=None)
    ap.add_argument("--summary", default=None)
    ap.add_argument("--battery", action="store_true")
    ap.add_argument("--no-broker", action="store_true")
    ap.add_argument("--button-at", default="", help="virtual minutes, comma separated")
    ap.add_argument("--broker", default=None, help="HOST:PORT instead of the config's mqtt")
    a = ap.parse_args(argv)

    cfg, errors = config.load(a.config)
    if a.broker:
        host, _, port = a.broker.rpartition(":")
        cfg["mqtt"] = dict(cfg["mqtt"], host=host, port=int(port))
    for e in errors:
        emit({"event": "config_error", "error": e})
    start_ms = int((a.start or time.time()) * 1000)
    readings = read_cgm(a.replay) if a.replay else None
    if readings and not a.start:
        start_ms = readings[0][0] - 60000
    end_ms = start_ms + int(a.minutes * 60000) if a.minutes else None
    buttons = sorted(start_ms + int(float(x) * 60000) for x in a.button_at.split(",") if x)
    summary = open(a.summary).read() if a.summary else None  # noqa: SIM115

    buzzer = machine.Pin(cfg["pins"]["buzzer"], machine.Pin.OUT)
    led = machine.Pin(cfg["pins"]["led"], machine.Pin.OUT)
    ann = annunciator.Annunciator(buzzer, led)
    ref = [None]
    panel = HostPanel(a.out, ref)
    rtc = machine.RTC()
    counts = {"wakes": 0, "wifi": 0, "co2": 0, "mic": 0}
    fed = [0]
    t0 = time.monotonic()

    def virtual_now():
        return start_ms + int((time.monotonic() - t0) * a.speed * 1000)

    def boot():
        clock = app.Clock(cfg, errors, app.Hardware(panel, ann), usb=not a.battery)
        ref[0] = clock
        if summary:
            clock.on_summary(summary)
        power.restore_state(clock, rtc)
        link = None if (a.no_broker or readings is not None) else make_link(cfg)
        return runtime.Runner(clock, link, http_get, wdt=machine.WDT(timeout=30000))

    runner = boot()
    last_pattern = None
    now = start_ms if readings is not None or a.battery else virtual_now()
    while True:
        if readings is not None:
            while fed[0] < len(readings) and readings[fed[0]][0] <= now:
                runner.clock.on_message(topics.clock_feed_topic(
                    cfg["device"]["tenant"], "edge", topics.CLOCK_GLUCOSE),
                    feed_body(readings, fed[0]).encode(), now)
                fed[0] += 1
        while buttons and buttons[0] <= now:
            buttons.pop(0)
            emit({"event": "button", "did": runner.clock.button(now)})
        runner.step(now)
        if a.battery and readings is None and runner.broker_up:
            waited = 0  # a wake-up: give the broker a moment to hand over the retained feed
            while runner.last_lan_ms is None and waited < 20:
                time.sleep(0.05)
                waited += 1
                runner.step(now)
        ann.tick(now)
        c = runner.clock
        if c.alarms.pattern != last_pattern:
            last_pattern = c.alarms.pattern
            emit({"event": "sound", "pattern": c.alarms.pattern, "alarm": c.alarms.sounding,
                  "time": hm(c.view.now_hm)})
        if end_ms is not None and now >= end_ms:
            break
        if readings is not None and fed[0] >= len(readings) and end_ms is None:
            break
        if a.battery:
            counts["wakes"] += 1
            counts["wifi"] += 1
            counts["co2"] += 1 if cfg["sensors"]["co2"] != "none" else 0
            counts["mic"] += 1 if cfg["sensors"]["mic"] else 0
            if c.alarms.pattern != alarms.SILENT:
                now += 60000  # a sounding alarm keeps the clock awake: light sleep a minute
                continue
            power.save_state(c, rtc)
            if runner.link is not None:
                runner.link.close()  # the radio goes off with the board
            try:
                machine.deepsleep(cfg["power"]["wake_s"] * 1000)
            except machine.DeepSleep as sleep:
                now += sleep.args[0]
            runner = boot()  # the board restarts from main.py after deep sleep
            continue
        if readings is not None:
            now += int(a.step_s * 1000)
            continue
        time.sleep(max(0.0, a.step_s / a.speed))
        now = virtual_now()
    result = {"event": "end", "screens": panel.n, "full": panel.fulls,
              "partial": panel.partials, "beeps": ann.beeps,
              "broker_refused": broker_trouble["refused"],
              "broker_unreachable": broker_trouble["unreachable"]}
    if a.battery:
        est = power.estimate(cfg["power"]["battery_mah"], cfg["power"]["wake_s"],
                             counts["wakes"], panel.partials, panel.fulls, counts["wifi"],
                             counts["co2"], counts["mic"])
        result["battery"] = est
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
