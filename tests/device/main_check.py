# device/main.py's own wiring (one MqttLink for the edge's feed and the outbox sync, the
# sensors, the panel) through a simulated night on a fast clock: one pass of the main loop is
# a minute. Under MicroPython the doubles are the pins and buses (tools/device/hostport's
# machine), Wi-Fi, the clock and the broker behind the real umqtt.simple's socket; on the host
# port (CPython: ROOT HOST PORT as arguments) the broker is a real Mosquitto. Prints JSON.
import json
import sys

MPY = sys.implementation.name == "micropython"
T0 = 1768510800  # 2026-01-15 21:00 UTC
SPEED = 60  # the main loop sleeps a second per pass: a minute of the night
HOURS = 8
DEV = "a4cf12b0c3d4"
TENANT = "smith"
EDGE = "ed9e00000001"
FEED = "nl/v1/" + TENANT + "/" + EDGE + "/clock/glucose"


def reading(k):
    """The edge's k-th glucose message: every 30 minutes, falling into a low and back."""
    sgv = 130 - 9 * k if k < 8 else 58 + 12 * (k - 8)
    return json.dumps({"t": T0 + 1800 * k + 60, "sgv": sgv, "trend": 4, "delta": 0})


if MPY:
    import os
    import time

    from mqtt_broker import BROKER

    time.set_clock(T0, SPEED)
    root = "/clock/"
    host, port = "edge.lan", 1883
    try:
        os.mkdir("/clock")
    except OSError:
        pass
    BROKER.publish(FEED, reading(0).encode())
    for k in range(1, 2 * HOURS):
        BROKER.schedule(T0 + 1800 * k + 60, FEED, reading(k).encode())
else:
    import board

    board.fast_clock(T0, SPEED)
    root, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])

import machine  # noqa: E402  (the board's, or the host port's)

from nightlink.device import main as clock_main  # noqa: E402
from nightlink.shared.sensirion import crc8  # noqa: E402

CONFIG = {"version": 1, "device": {"id": DEV, "name": "Nightstand", "tenant": TENANT},
          "wifi": [{"ssid": "home", "password": "correct horse"}],
          "mqtt": {"host": host, "port": port}, "tz": "UTC0",
          "sensors": {"temp": "sht4x", "light": "bh1750", "co2": "none", "mic": False}}
with open(root + "config.json", "w") as f:
    f.write(json.dumps(CONFIG))


def frame(*words):
    out = bytearray()
    for w in words:
        b = bytes(((w >> 8) & 0xFF, w & 0xFF))
        out += b + bytes((crc8(b),))
    return bytes(out)


class Chip:
    """An I2C chip that answers every read with the same bytes."""

    def __init__(self, answer):
        self.answer = answer

    def writeto(self, data):
        pass

    def readfrom(self, n):
        return self.answer[:n]


machine.I2C.devices = {0x44: Chip(frame(0x6666, 0x8000)), 0x23: Chip(b"\x01\xf4")}
machine.Pin.levels = {0: 1, 36: 1}  # button released (pull-up), USB power present
runner, room = clock_main.main(root=root, passes=HOURS * 60)
link, sync, clock = runner.link, runner.sync, runner.clock
out = {"client_id": link.client_id, "connects": link.connects, "failures": link.failures,
       "received": link.received, "wifi": clock.link.get("Wi-Fi"),
       "readings": [[t // 1000, sgv] for t, sgv in clock.readings],
       "sounded": clock.alarms.sounding, "written": room.written,
       "published": sync.published, "acks": sync.acks, "unacked": sync.outbox.unacked(),
       "refreshes": clock.refreshes}
if MPY:
    out["broker"] = {"log": BROKER.log, "data": BROKER.data, "pings": BROKER.pings,
                     "sessions": list(BROKER.sessions)}
print(json.dumps(out))
