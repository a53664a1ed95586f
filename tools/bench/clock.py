"""`nightlink bench clock-outbox`: the clock's flash outbox under real MicroPython (the
WebAssembly port, run by Node as the tests run it): a backlog of 30-s room epochs written the
way the clock writes them, then drained the way the clock's sync drains it, every record
acknowledged by a broker double (the MQTT client object, the lowest layer the sync sees).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from nightlink.errors import NightlinkError

ROOT = Path(__file__).resolve().parents[2]
RUNNER = ROOT / "tests" / "mpy" / "run.mjs"
METER = Path(__file__).with_name("outbox_meter.py")

# Runs under MicroPython with tests/mpy/run.mjs --steps: tick() is called at the top level
# until it returns False (so the garbage collector can run between steps), then finish().
_SCRIPT = r"""
import gc
import json
import os
import time

import outbox_meter

from nightlink.device import outbox as outbox_mod
from nightlink.device import sensors
from nightlink.device.clock_sync import ClockSync
from nightlink.device.mqtt_link import MqttLink
from nightlink.shared import codec, features

DAYS = %(days)d
EPOCHS = DAYS * 2880
SAMPLES = 6  # the main loop samples the room every ~5 s: six samples per 30-s epoch
FILL_PER_TICK = 20
PASSES_PER_TICK = 1
T0 = 1768510800  # on the 30-s grid
DEV = "a4cf12b0c3d4"
TENANT = "fam-1"
outbox_meter.install()
count = outbox_meter.count


class Broker:
    # umqtt.simple's MQTTClient calls; every data record is acknowledged by the next
    # check_msg(), one high-water-mark ack per message as the cloud's ingest sends them.

    def __init__(self):
        self.cb = None
        self.acks = []
        self.published = 0
        self.connects = 0

    def __call__(self, client_id, server, port=0, user=None, password=None, keepalive=0,
                 ssl=False):
        return self  # the one client the link makes

    def set_callback(self, f):
        self.cb = f

    def connect(self, clean_session=True, timeout=None):
        self.connects += 1
        return False

    def subscribe(self, topic, qos=0):
        pass

    def publish(self, topic, msg, retain=False, qos=0):
        if topic.endswith("/status"):
            return
        self.published += 1
        hwm = codec.last_seq(codec.peek_header(msg))
        ack = topic + "/ack"
        self.acks.append((ack.encode(), ('{"hwm": %%d}' %% hwm).encode()))

    def check_msg(self):
        if not self.acks:
            return None
        topic, body = self.acks.pop(0)
        self.cb(topic, body)
        return 0x30

    def ping(self):
        pass

    def disconnect(self):
        pass


for p in ("/outbox.bin", "/outbox.bin.state", "/outbox.bin.tmp",
          "/outbox.bin.state.tmp"):
    try:
        os.remove(p)
    except OSError:
        pass
box = outbox_mod.Outbox("/outbox.bin", protected=(features.CGM,))
room = sensors.RoomEpochs(box, DEV, 1)
broker = Broker()
link = MqttLink(broker, "nl-clock-" + DEV, "edge.lan")
sync = ClockSync(box, link, TENANT, DEV)
phase = "fill"
written = 0
passes = 0
now_ms = 0
t_fill = t_drain = 0
fill_ms = drain_ms = 0
heap_peak = heap_live = 0
fill_counts = None
full_bytes = 0


def _heap(peak):
    global heap_peak, heap_live
    used = gc.mem_alloc()
    if peak and used > heap_peak:
        heap_peak = used
    if not peak and used > heap_live:
        heap_live = used


def tick():
    global phase, written, passes, now_ms, t_fill, t_drain, fill_ms, drain_ms, fill_counts
    global full_bytes
    _heap(False)
    if phase == "fill":
        if written == 0:
            t_fill = time.ticks_ms()
        for _ in range(FILL_PER_TICK):
            if written >= EPOCHS:
                break
            e = written
            for s in range(SAMPLES):
                room.add(T0 + e * 30 + s * 5, (20.0 + (e %% 40) / 10.0, 45.0 + e %% 10,
                                               float(e %% 5), 600.0 + e %% 300,
                                               30.0 + e %% 10))
            written += 1
        if written >= EPOCHS:
            room.add(T0 + EPOCHS * 30, (None, None, None, None, None))  # closes the last epoch
            fill_ms = time.ticks_diff(time.ticks_ms(), t_fill)
            fill_counts = dict(count)
            full_bytes = box.size
            outbox_meter.reset()
            phase = "drain"
            t_drain = time.ticks_ms()
        _heap(True)
        return True
    for _ in range(PASSES_PER_TICK):
        link.step(now_ms)
        sync.step(now_ms)
        passes += 1
        now_ms += 1000
        if box.all_acked() and not broker.acks:
            drain_ms = time.ticks_diff(time.ticks_ms(), t_drain)
            _heap(True)
            return False
    _heap(True)
    return True


def finish():
    print(json.dumps({"days": DAYS, "records": room.written, "outbox_bytes": full_bytes,
                      "published": broker.published, "passes": passes,
                      "decodes": count["decodes"], "crc_checks": count["crc_checks"],
                      "read_bytes": count["read_bytes"], "write_bytes": count["write_bytes"],
                      "opens": count["opens"], "file_rewrites": count["file_rewrites"],
                      "state_writes": count["state_writes"], "fill": fill_counts,
                      "fill_ms": fill_ms, "drain_ms": drain_ms, "heap_peak": heap_peak,
                      "heap_live_peak": heap_live, "connects": broker.connects}))
"""


def bench_clock_outbox(days: int = 7) -> dict:
    """A `days` backlog of room epochs written into the clock's outbox and drained over a
    broker double that acknowledges everything, under real MicroPython.

    Figures of the drain: passes (of the main loop, 8 records each at most), decodes (full
    record decodes), crc_checks (every CRC32 computed: records and the state file),
    read_bytes / write_bytes / opens (the outbox's own file use), file_rewrites,
    state_writes, published, connects, drain_s; of the fill: fill (the same counters),
    fill_s, records, outbox_bytes. heap_peak: most bytes allocated at the end of one step
    (a pass, or 20 epochs of the fill), garbage included, as this port collects only between
    steps; heap_live_peak: most bytes live after a collection."""
    if days < 1:
        raise NightlinkError("--days must be 1 or more.")
    node = shutil.which("node")
    npm_package = ROOT / "node_modules" / "@micropython"
    if node is None or not RUNNER.is_file() or not npm_package.is_dir():
        raise NightlinkError("The clock benchmark needs Node.js and the MicroPython npm "
                             "package: run `make test` once.")
    with tempfile.TemporaryDirectory(prefix="nl-bench-clock-") as tmp:
        script = Path(tmp) / "bench_outbox.py"
        script.write_text(_SCRIPT % {"days": days})
        cmd = [node, str(RUNNER), "--heap", str(512 * 1024), "--lib", str(ROOT / "shared"),
               "--lib", str(ROOT / "device"), "--put", f"{METER}:/lib/outbox_meter.py",
               "--steps", str(script)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise NightlinkError(f"The clock benchmark failed under MicroPython: {last}")
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    fill, drain = got.pop("fill_ms"), got.pop("drain_ms")
    got["fill_s"] = round(fill / 1000, 2)
    got["drain_s"] = round(drain / 1000, 2)
    return got
