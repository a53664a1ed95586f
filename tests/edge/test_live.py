"""The live node with hardware doubled at the lowest layer: microphone (sounddevice) and I2C bus.

Everything else is real: the pipeline, the SQLite store, the Nightscout endpoint on a
real port, and an HTTP upload to it. The node runs on a virtual clock 30x faster.
"""

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest

from nightlink.edge.node.config import load
from nightlink.edge.node.live_node import LiveNode, TimeBase
from nightlink.edge.store import EdgeStore
from nightlink.shared import features
from nightlink.shared.epoch import epoch_index, epoch_start
from nightlink.shared.sensirion import crc8
from nightlink.tools.sim.audio import audio_chunks
from tests.support.services import free_port

SECRET = "bedside-secret-42"
SPEED = 30.0


class FakeInputStream:
    """sounddevice.InputStream replaying simulated audio in 0.5 s blocks, paced by the clock."""

    def __init__(self, clock, audio, samplerate, channels, dtype, blocksize, device, callback):
        assert (samplerate, channels, dtype) == (16000, 1, "int16")
        self.clock, self.audio, self.block, self.callback = clock, audio, blocksize, callback
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        buf = self.audio
        pos, next_t = 0, time.monotonic()
        while not self.stop.is_set() and pos + self.block <= buf.size:
            next_t += self.block / 16000 / self.clock.speed
            time.sleep(max(0.0, next_t - time.monotonic()))
            self.callback(buf[pos : pos + self.block].reshape(-1, 1), self.block, None, None)
            pos += self.block

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(5)


class FakeSounddevice:
    """The simulated night's audio is made before the node starts: made when the stream
    opens, it took seconds on a loaded machine and the first epochs closed without it."""

    def __init__(self, clock):
        self.clock = clock
        self.audio = np.concatenate(list(audio_chunks(5, hours=0.2)))

    def InputStream(self, **kw):  # noqa: N802 - the sounddevice name
        return FakeInputStream(self.clock, self.audio, **kw)


def _words(*values):
    out = b""
    for v in values:
        w = bytes([v >> 8, v & 0xFF])
        out += w + bytes([crc8(w)])
    return out


class FakeI2CBus:
    """An I2C bus with an SCD41 at 0x62 and a BH1750 at 0x23 answering per their datasheets."""

    def __init__(self):
        self.last = {}
        self.started = False

    def i2c_rdwr(self, *msgs):
        for m in msgs:
            data = bytes(m)
            if m.flags == 0:  # write
                self.last[m.addr] = data
                if m.addr == 0x62 and data == b"\x21\xb1":
                    self.started = True
                continue
            if m.addr == 0x62 and self.last[0x62] == b"\xe4\xb8":
                answer = _words(0x8006 if self.started else 0)
            elif m.addr == 0x62 and self.last[0x62] == b"\xec\x05":
                # 812 ppm; 21.5 degC; 45 %RH
                answer = _words(812, round((21.5 + 45) * 65535 / 175), round(0.45 * 65535))
            elif m.addr == 0x23:
                answer = (120).to_bytes(2, "big")  # 100 lux
            else:
                raise OSError(121, "Remote I/O error")
            for i, b in enumerate(answer[: m.len]):
                m.buf[i] = bytes([b])


def run_until(node, done, timeout_s=30.0):
    """Run the node until done() holds (checked every 50 ms, in a worker thread: the node's
    event loop runs no statement on its store), then stop it."""
    stop = asyncio.Event()

    async def main():
        async def stopper():
            while not await asyncio.to_thread(done):
                await asyncio.sleep(0.05)
            stop.set()
        await asyncio.gather(node.run(stop), stopper())

    asyncio.run(asyncio.wait_for(main(), timeout_s))


# A node with no audio and no local Nightscout: what the broker tests add to.
QUIET_NODE = f"""
close_delay_s = 0.5
tenant = "fam-1"
[audio]
enabled = false
[nightscout]
enabled = false
api_secret = "{SECRET}"
"""


def _config(tmp_path, text):
    path = tmp_path / "edge.toml"
    path.write_text(text)
    return load(path, env={})


def _live_run(node, store, last: int) -> int | None:
    """The first of three closed epochs in a row, after `last`, with audio and CO2."""
    if node.first_epoch is None:
        return None
    closed = node.pipeline.epoch  # the next epoch to close
    audio = store.epoch_values(features.AUDIO, node.first_epoch, closed)
    room = store.epoch_values(features.ROOM, node.first_epoch, closed)
    co2 = features.names(features.ROOM).index("co2_ppm")
    full = [e for e in range(node.first_epoch, closed)
            if e in audio and audio[e][0] is not None and e in room and room[e][co2] is not None]
    return next((e for e in full if e > last and e + 1 in full and e + 2 in full), None)


def test_live__audio_room_and_uploaded_glucose_become_epochs(tmp_path):
    cfg = _config(tmp_path, f"""
close_delay_s = 1.0
timezone = "UTC"  # 22:30 here is inside the default schedule (22:00-07:30)
[audio]
enabled = true
[nightscout]
host = "127.0.0.1"
port = 0
api_secret = "{SECRET}"
[room]
enabled = true
""")
    store = EdgeStore(tmp_path / "edge.db")
    clock = TimeBase(speed=SPEED, t0=epoch_start(58950540) + 20.0)
    node = LiveNode(cfg, store, clock=clock, audio_backend=FakeSounddevice(clock),
                    i2c_bus=FakeI2CBus())
    stop = asyncio.Event()
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_until_complete, args=(node.run(stop),))
    runner.start()
    try:
        deadline = time.monotonic() + 30
        while node.server_port is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert node.server_port, "the Nightscout endpoint did not start"
        entries = [{"type": "sgv", "sgv": 101 + i, "direction": "Flat", "device": "xDrip-G6",
                    "date": int((clock.now() - 60 * (2 - i)) * 1000)} for i in range(3)]
        r = httpx.post(f"http://127.0.0.1:{node.server_port}/api/v1/entries", json=entries,
                       headers={"api-secret": hashlib.sha1(SECRET.encode()).hexdigest()})
        assert r.status_code == 200, r.text
        # The node starts on the epoch after it is up, and its sources join over the next
        # seconds (later on a loaded machine, and 30x virtual time magnifies that): wait for
        # three epochs in a row with audio and the room sensors, past the last reading.
        last = epoch_index(entries[-1]["date"] / 1000)
        reader = EdgeStore(tmp_path / "edge.db")  # its own connection: the node writes on its
        try:
            while time.monotonic() < deadline and _live_run(node, reader, last) is None:
                time.sleep(0.1)
        finally:
            reader.close()
    finally:
        loop.call_soon_threadsafe(stop.set)
        runner.join(15)
    run = _live_run(node, store, last)
    assert run is not None, "no three epochs in a row with audio and room data within 30 s"
    audio = store.epoch_values(features.AUDIO, run, run + 3)
    assert all(audio[e][0] is not None for e in range(run, run + 3)), audio
    names = features.names(features.ROOM)
    got = dict(zip(names, store.epoch_values(features.ROOM, run, run + 1)[run], strict=True))
    assert got["co2_ppm"] == 812 and got["temp_c"] == pytest.approx(21.5, abs=0.01)
    assert got["light_lux"] == 100 and got["noise_dba"] is not None
    cgm = store.epoch_values(features.CGM, last + 1, last + 2)
    assert cgm[last + 1][0] == 103  # the last reading, carried into the next epoch
    statuses = store.sources()
    assert statuses["audio"]["state"] == "stopped" and statuses["nightscout"]["state"] == "stopped"
    summary = store.night("2026-01-15")
    # what there is of the night so far: from the first epoch the microphone recorded (on a
    # loaded machine the first epoch closed can come before its first frames) to the last
    from nightlink.edge.node.nights import recorded_span

    span = recorded_span(store, node.first_epoch, node.last_closed + 1)
    assert (summary["first_epoch"], summary["epochs"]) == (span[0], span[1] - span[0])
    assert span[1] - span[0] >= 3 and summary["cgm"]["max"] == 103
    # Raw audio was never written: only the store's own files are there.
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "edge.toml") == [
        "edge.db", "edge.db-shm", "edge.db-wal"]
    store.close()


def test_live__a_failing_source_is_retried_and_the_rest_go_on(tmp_path):
    cfg = _config(tmp_path, f"""
close_delay_s = 0.5
[audio]
enabled = true
[nightscout]
enabled = false
api_secret = "{SECRET}"
[room]
enabled = true
""")

    class NoMicrophone:
        def InputStream(self, **kw):  # noqa: N802
            raise OSError("no default input device")

    store = EdgeStore(tmp_path / "edge.db")
    clock = TimeBase(speed=SPEED, t0=epoch_start(58950540) + 25.0)
    node = LiveNode(cfg, store, clock=clock, audio_backend=NoMicrophone(), i2c_bus=FakeI2CBus())
    seen = []
    run_until(node, lambda: node.epochs_closed >= 2
              and not seen.append(store.sources()["audio"]["state"]), 20)
    assert seen[-1] == "retrying"
    first = 58950541
    room = store.epoch_values(features.ROOM, first, first + 2)
    assert room[first][3] == 812  # CO2 kept flowing while the microphone failed
    assert store.epoch_values(features.AUDIO, first, first + 1)[first][0] is None
    store.close()


def test_edge_run__bad_config_names_the_key(tmp_path):
    path = tmp_path / "edge.toml"
    path.write_text("[audio]\nsample_rate = 4000\n")
    proc = subprocess.run([sys.executable, "-m", "nightlink", "edge", "run", "--config",
                           str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"error: {path}: [audio] sample_rate must be between 8000 and "
                                   "192000 Hz (the features are computed at 16000 after "
                                   "resampling), not 4000.")


def test_edge_run__default_secret_refused(tmp_path):
    path = tmp_path / "edge.toml"
    path.write_text('[nightscout]\napi_secret = "changeme"\n')
    proc = subprocess.run([sys.executable, "-m", "nightlink", "edge", "run", "--config",
                           str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "default or shorter than 12" in proc.stderr


def test_edge_run__sigterm_stops_cleanly(tmp_path):
    port = free_port()
    path = tmp_path / "edge.toml"
    path.write_text(f'[audio]\nenabled = false\n[nightscout]\nhost = "127.0.0.1"\nport = {port}\n'
                    f'api_secret = "{SECRET}"\ntitle = "Alex"\n')
    proc = subprocess.Popen([sys.executable, "-m", "nightlink", "edge", "run", "--config",
                             str(path), "--db", str(tmp_path / "e.db")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    # SIGTERM once the node is up (its Nightscout endpoint answers), not after a guessed
    # delay: on a loaded machine the start alone can take longer than any fixed sleep.
    deadline = time.monotonic() + 60
    status = None
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            status = httpx.get(f"http://127.0.0.1:{port}/api/v1/status.json", timeout=2,
                               headers={"api-secret": hashlib.sha1(SECRET.encode()).hexdigest()})
            break
        except httpx.TransportError:
            time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    # Two children's edges in one home are told apart in the apps by [nightscout] title.
    assert status is not None and status.json()["settings"]["customTitle"] == "Alex"
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Stopped" in err
    store = EdgeStore(tmp_path / "e.db")
    assert store.sources()["nightscout"]["state"] == "stopped"
    store.close()


class PacedWearable:
    """A heart-rate strap on the far side of the test radio: one beat a second, virtual time."""

    def __init__(self, clock):
        from nightlink.edge.sources import ble

        self.clock = clock
        self.profile = {ble.HEART_RATE_SERVICE: [ble.HEART_RATE_MEASUREMENT]}
        self.uuid = ble.HEART_RATE_MEASUREMENT

    def attach(self, radio):
        from tests.edge.test_ble import gatt

        radio.services = gatt(self.profile)
        radio.connected = True
        asyncio.get_running_loop().create_task(self.play(radio))

    async def play(self, radio):
        await radio.subscribed.wait()
        while radio.connected:
            # flags: uint8 HR, RR present; HR 60 bpm; one RR of 1024/1024 s
            radio.callbacks[self.uuid](bytearray([0x10, 60, 0x00, 0x04]))
            await asyncio.sleep(1.0 / self.clock.speed)


def test_live__ble_heart_rate_becomes_wearable_epochs(tmp_path):
    from bleak import BleakClient

    from tests.edge.test_ble import FakeRadio

    cfg = _config(tmp_path, f"""
close_delay_s = 0.5
timezone = "UTC"
[audio]
enabled = false
[nightscout]
enabled = false
api_secret = "{SECRET}"
[wearable]
enabled = true
address = "C0:FF:EE:00:00:01"
""")
    store = EdgeStore(tmp_path / "edge.db")
    clock = TimeBase(speed=SPEED, t0=epoch_start(58950540) + 25.0)
    strap = PacedWearable(clock)
    writes = []  # the beats' writes to the store (each a durable commit on the SD card)
    keep = store.add_beats
    store.add_beats = lambda beats: (writes.append(len(beats)), keep(beats))[1]
    node = LiveNode(cfg, store, clock=clock, wearable_client_factory=lambda address, **kw:
                    BleakClient(address, backend=FakeRadio, wearable=strap, **kw))
    run_until(node, lambda: node.epochs_closed >= 3)
    # written once an epoch (and at the stop), not at every pass of the loop
    assert 0 < len(writes) <= node.epochs_closed + 1 and sum(writes) >= 60, writes
    first = 58950541
    wear = store.epoch_values(features.WEARABLE, first, first + 3)
    hr = dict(zip(features.names(features.WEARABLE), wear[first + 1], strict=True))
    assert hr["hr_mean_bpm"] == pytest.approx(60000 / 1000, abs=0.5)
    assert hr["spo2_mean_pct"] is None  # a strap without an oximeter: missing, not zero
    # its beats are kept for the night's heart-rhythm apnea screen (the beats head)
    t, rr = store.beats_between(epoch_start(first), epoch_start(first + 2))
    assert t.size >= 40 and set(rr.tolist()) == {1000.0}
    store.close()


def test_live__clock_room_records_over_a_real_broker(tmp_path, mosquitto):
    import paho.mqtt.client as mqtt

    from nightlink.shared import codec, topics

    cfg = _config(tmp_path, QUIET_NODE + f"""
[clocks]
enabled = true
host = "{mosquitto.host}"
port = {mosquitto.port}
""")
    store = EdgeStore(tmp_path / "edge.db")
    clock = TimeBase(speed=SPEED)
    node = LiveNode(cfg, store, clock=clock)
    clock_dev = bytes.fromhex("a4cf12b0c3d4")
    row = codec.quantize_row(features.ROOM, (20.5, 41.0, 2.0, 640.0, 33.0))
    rec = codec.Record(features.ROOM, clock_dev, 7, 100, 58950540, [row, row, row])
    topic = topics.data_topic("fam-1", "a4cf12b0c3d4", "room")
    good = codec.encode_batch([rec])
    bad_crc = bytearray(codec.encode(rec))
    bad_crc[30] ^= 0xFF
    spoofed = codec.encode(codec.Record(features.ROOM, bytes(6), 1, 1, 58950540, [row]))
    wrong_stream = codec.encode(codec.Record(features.CGM, clock_dev, 1, 1, 58950540,
                                             [tuple(b[0] for b in features.bounds(features.CGM))]))
    stop = asyncio.Event()

    async def main():
        async def publisher():
            while (await asyncio.to_thread(store.sources)).get("clocks", {}).get(
                    "state") != "subscribed":  # the node's loop runs no statement
                await asyncio.sleep(0.05)
            pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
            pub.connect(mosquitto.host, mosquitto.port)
            pub.loop_start()
            for payload in (good, good, bytes(bad_crc), spoofed):
                pub.publish(topic, payload, qos=1).wait_for_publish(5)
            pub.publish(topics.data_topic("fam-1", "a4cf12b0c3d4", "room"), wrong_stream,
                        qos=1).wait_for_publish(5)
            pub.loop_stop()
            pub.disconnect()
            while len(await asyncio.to_thread(store.dead_letters)) < 3:
                await asyncio.sleep(0.05)
            stop.set()
        await asyncio.gather(node.run(stop), publisher())

    asyncio.run(asyncio.wait_for(main(), 30))
    rows = list(store.records(features.ROOM, device="a4cf12b0c3d4"))
    assert [(r.boot, r.seq, r.epoch) for r in rows] == [(7, 100, 58950540), (7, 101, 58950541),
                                                        (7, 102, 58950542)]
    assert node.clock_rows == 3  # the second copy added nothing
    reasons = [d["reason"] for d in store.dead_letters()]
    assert reasons[0].startswith("CrcError")
    assert "is not the topic's device a4cf12b0c3d4" in reasons[1]
    assert "a cgm record on the room topic" in reasons[2]
    assert store.dead_letters()[0]["payload"] == bytes(bad_crc)
    store.close()


def test_live__node_syncs_its_epochs_to_the_cloud(tmp_path, mosquitto):
    from nightlink.cloud.config import Settings
    from nightlink.cloud.ingest import IngestWorker
    from nightlink.cloud.store import Store

    cfg = _config(tmp_path, QUIET_NODE + f"""
[room]
enabled = true
[sync]
enabled = true
host = "{mosquitto.host}"
port = {mosquitto.port}
""")
    store = EdgeStore(tmp_path / "edge.db")
    cloud = Store.open(f"sqlite:///{tmp_path / 'cloud.db'}")
    cloud.create_tenant("fam-1", "One")
    cloud.add_device(store.device, "fam-1", "edge", "fam-1.edge", "-")
    worker = IngestWorker(cloud, Settings(env="test", jwt_secret="x" + "0123456789abcdef" * 3,
                                          mqtt_host=mosquitto.host, mqtt_port=mosquitto.port))
    worker.start()
    assert worker.connected.wait(10)
    clock = TimeBase(speed=SPEED, t0=epoch_start(58950540) + 25.0)
    node = LiveNode(cfg, store, clock=clock, i2c_bus=FakeI2CBus())
    states = []  # what `edge status` shows while the node runs
    run_until(node, lambda: node.epochs_closed >= 3
              and cloud.tenant("fam-1").count_rows(features.ROOM) >= 3
              and states.append(store.sources().get("sync", {}).get("state")) is None
              and states[-1] == "connected")
    worker.stop()
    assert cloud.tenant("fam-1").count_rows(features.ROOM) >= 3
    assert node.sync_client.stats.acked_rows >= 3
    cloud.close()
    store.close()


def test_live__the_night_is_closed_once_when_its_wake_time_passes(tmp_path):
    """A night recorded inside the schedule is staged by the classifiers (stream 5, which the
    cloud's report reads) once its wake time has passed, exactly as a replay would stage it;
    a node started again later does not classify it a second time."""
    from nightlink.edge.node.nights import is_closed
    from nightlink.edge.node.replay import replay
    from nightlink.tools.sim.night import simulate_night

    night = tmp_path / "night"
    simulate_night(night, seed=5, hours=1.5, audio_format=None)  # 22:30 to 24:00 UTC
    store = EdgeStore(tmp_path / "edge.db")
    result = replay(night, store, classify=False)  # recorded, not yet classified
    replay_ref = EdgeStore(tmp_path / "with-audio.db")
    expected = replay(night, replay_ref).summary
    assert not is_closed(store.night("2026-01-15"))
    cfg = _config(tmp_path, 'timezone = "UTC"\nclose_delay_s = 1.0\n[audio]\nenabled = false\n'
                            '[nightscout]\nenabled = false\n'
                            '[night]\nbedtime = "22:00"\nwake = "07:30"\n')
    node = LiveNode(cfg, store, clock=TimeBase(speed=SPEED, t0=_utc_s("2026-01-16T07:29:40")))
    run_until(node, lambda: is_closed(store.night("2026-01-15")), timeout_s=60)
    summary = store.night("2026-01-15")
    first, count = result.first_epoch, result.epochs
    stage = features.names(features.INFER).index("sleep_stage")
    got = store.epoch_values(features.INFER, first, first + count)
    want = replay_ref.epoch_values(features.INFER, first, first + count)
    assert len(got) == count and [got[e][stage] for e in sorted(got)] == [
        want[e][stage] for e in sorted(want)]
    assert summary["sleep"]["tst_min"] == expected["sleep"]["tst_min"] > 0
    assert summary["sleep"]["sleep_inputs"] == expected["sleep"]["sleep_inputs"]
    rows = store.count_records(features.INFER)
    # started again in the afternoon: the night is already closed
    again = LiveNode(cfg, store, clock=TimeBase(speed=SPEED, t0=_utc_s("2026-01-16T13:00:00")))
    run_until(again, lambda: again.epochs_closed >= 3)
    assert store.count_records(features.INFER) == rows
    replay_ref.close()
    store.close()


def test_live__a_night_missed_while_down_is_closed_when_the_node_starts(tmp_path):
    from nightlink.edge.node.nights import is_closed
    from nightlink.edge.node.replay import replay
    from nightlink.tools.sim.night import simulate_night

    night = tmp_path / "night"
    simulate_night(night, seed=5, hours=1.5, audio_format=None)
    store = EdgeStore(tmp_path / "edge.db")
    replay(night, store, classify=False)
    cfg = _config(tmp_path, 'timezone = "UTC"\n[audio]\nenabled = false\n'
                            '[nightscout]\nenabled = false\n')
    node = LiveNode(cfg, store, clock=TimeBase(speed=SPEED, t0=_utc_s("2026-01-17T09:00:00")))
    run_until(node, lambda: node.epochs_closed >= 1)
    assert is_closed(store.night("2026-01-15"))
    store.close()


def _utc_s(text: str) -> float:
    from datetime import UTC, datetime

    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


# -- the system clock moving under a running node ------------------------------------------------


def test_timebase__the_default_clock_is_the_system_clock_and_follows_its_corrections(monkeypatch):
    from nightlink.edge.node import live_node

    now = [1_700_000_000.0]
    monkeypatch.setattr(live_node.time, "time", lambda: now[0])
    clock = TimeBase()
    assert clock.wall and clock.now() == now[0]
    now[0] += 3600.0  # NTP sets the clock an hour on
    assert clock.now() == now[0]
    assert not TimeBase(t0=now[0]).wall and not TimeBase(speed=SPEED).wall


def _quiet(tmp_path):
    return _config(tmp_path, 'timezone = "UTC"\nclose_delay_s = 0.5\n[audio]\nenabled = false\n'
                             '[nightscout]\nenabled = false\n')


def test_live__a_clock_set_forward_is_followed_and_the_skipped_span_left_as_a_gap(tmp_path):
    store = EdgeStore(tmp_path / "edge.db")
    clock = TimeBase(speed=SPEED, t0=epoch_start(58950540) + 25.0)
    node = LiveNode(_quiet(tmp_path), store, clock=clock, i2c_bus=FakeI2CBus())
    stepped = []

    def done():
        if node.epochs_closed >= 2 and not stepped:
            stepped.append(node.pipeline.epoch)
            clock.t0 += 3600.0  # the system clock is set an hour on
        return bool(stepped) and node.epochs_closed >= 4

    run_until(node, done)
    (gap,) = store.gaps("node")
    assert gap["reason"] == "clock stepped forward"
    assert gap["start_epoch"] in (stepped[0], stepped[0] + 1)
    assert gap["end_epoch"] >= gap["start_epoch"] + 118  # the hour, not closed epoch by epoch
    assert node.epochs_closed < 10
    stored = store.epoch_values(features.ROOM, node.first_epoch, node.pipeline.epoch)
    assert not any(gap["start_epoch"] <= e < gap["end_epoch"] for e in stored)
    assert max(stored) >= gap["end_epoch"]  # recording went on at the new time
    assert store.meta("timezone") == "UTC"  # the configured zone, for the status report
    assert store.meta("night_schedule") == "22:00-07:30"  # and [night], for imports here
    store.close()


def test_live__a_restart_on_a_clock_set_back_never_stores_an_epoch_twice(tmp_path):
    store = EdgeStore(tmp_path / "edge.db")
    t0 = epoch_start(58950540) + 25.0
    node = LiveNode(_quiet(tmp_path), store, clock=TimeBase(speed=SPEED, t0=t0),
                    i2c_bus=FakeI2CBus())
    run_until(node, lambda: node.epochs_closed >= 4)
    last = store.last_own_epoch()
    assert last == node.last_closed
    # started again with the clock 90 s earlier than where the first run stopped
    again = LiveNode(_quiet(tmp_path), store, clock=TimeBase(speed=SPEED, t0=t0 + 30.0),
                     i2c_bus=FakeI2CBus())
    run_until(again, lambda: again.epochs_closed >= 2)
    assert again.first_epoch == last + 1
    epochs = [e for rec in store.records(features.ROOM) for e in range(rec.epoch,
                                                                       rec.epoch + rec.count)]
    assert len(epochs) == len(set(epochs)) == node.epochs_closed + again.epochs_closed
    store.close()


def test_live__a_slow_node_catches_up_epoch_by_epoch_and_loses_nothing(tmp_path):
    """A close that holds the loop up (a slow classifier run on a Pi) is not a clock step:
    the epochs behind are closed one by one and no gap is made up."""
    store = EdgeStore(tmp_path / "edge.db")
    clock = TimeBase(speed=100.0, t0=epoch_start(58950540) + 25.0)
    node = LiveNode(_quiet(tmp_path), store, clock=clock, i2c_bus=FakeI2CBus())
    stalled = []

    def done():
        if node.epochs_closed >= 2 and not stalled:
            stalled.append(node.pipeline.epoch)
            time.sleep(4.0)  # 400 s of this clock with the loop held up
        return bool(stalled) and node.epochs_closed >= 18

    run_until(node, done)
    assert store.gaps("node") == []
    stored = store.epoch_values(features.ROOM, node.first_epoch, node.pipeline.epoch)
    assert sorted(stored) == list(range(node.first_epoch, node.pipeline.epoch))
    store.close()


def test_live__the_follower_outlives_any_failure_and_a_restart_does_not_fetch_again(tmp_path,
                                                                                  caplog):
    """An unexpected error in a poll (a reply the code did not foresee) is logged and retried
    after a back-off; polling goes on and the readings arrive. Started again, the follower
    asks only for what came after the newest reading stored."""
    t0 = epoch_start(58950540) + 25.0
    seen = []

    def handler(request):
        seen.append(request)
        if len(seen) == 1:
            raise KeyError("a reply nobody foresaw")
        t = int(t0 * 1000) - 10 * 60_000
        return httpx.Response(200, json=[{"type": "sgv", "date": t + k * 300_000, "sgv": 90 + k}
                                         for k in range(2)])

    cfg = _config(tmp_path, 'timezone = "UTC"\nclose_delay_s = 0.5\n[audio]\nenabled = false\n'
                            '[nightscout]\nenabled = false\n[follower]\nenabled = true\n'
                            'url = "https://ns.example/api/v1/"\ninterval_s = 10\n')
    store = EdgeStore(tmp_path / "edge.db")
    client = httpx.Client(transport=httpx.MockTransport(handler))
    node = LiveNode(cfg, store, clock=TimeBase(speed=SPEED, t0=t0), follower_client=client)
    with caplog.at_level("WARNING"):
        run_until(node, lambda: len(store.entries(count=5, type_="sgv")) == 2)
    assert "follower: https://ns.example: KeyError" in caplog.text
    assert "answers again" in caplog.text
    newest = store.entries(count=1, type_="sgv")[0]["date"]
    seen.clear()
    again = LiveNode(cfg, store, clock=TimeBase(speed=SPEED, t0=t0 + 60), follower_client=client)
    run_until(again, lambda: len(seen) >= 1)
    assert seen[0].url.params["find[date][$gt]"] == str(newest)
    store.close()


def test_live__an_uploaded_reading_dated_ahead_does_not_hide_the_real_ones(tmp_path):
    """A phone with its clock two hours ahead uploads one reading: the epochs still carry the
    real readings that come after it (the mark used to jump past them all)."""
    from nightlink.edge.sources.cgm import glucose_to_entry
    from nightlink.edge.sources.samples import Glucose

    t0 = epoch_start(58950540) + 25.0
    store = EdgeStore(tmp_path / "edge.db")
    store.add_entries([glucose_to_entry(Glucose(t0 + 7200, 300), "phone"),
                       glucose_to_entry(Glucose(t0 - 300, 90), "g6")])
    node = LiveNode(_quiet(tmp_path), store, clock=TimeBase(speed=SPEED, t0=t0),
                    i2c_bus=FakeI2CBus())
    added = []

    def done():
        if node.epochs_closed >= 1 and not added:
            store.add_entries([glucose_to_entry(Glucose(node.clock.now() - 5, 77), "g6")])
            added.append(node.pipeline.epoch)
        return bool(added) and node.epochs_closed >= 4

    run_until(node, done)
    cgm = store.epoch_values(features.CGM, node.first_epoch, node.pipeline.epoch)
    values = [cgm[e][0] for e in sorted(cgm)]
    assert values[0] == 90 and values[-1] == 77 and 300 not in values
    store.close()


def test_live__readings_that_come_after_their_epochs_closed_reach_the_records(tmp_path):
    """A phone back on the Wi-Fi uploads the readings it kept, oldest first, all at once;
    later an older one alone (xDrip+'s backfill). Only the newest was carried by an epoch
    record, and the cloud's entries come from the records: the others never reached the
    cloud. Each now gets a record of its own epoch, dated to the half minute."""
    from nightlink.cloud.ingest import glucose_entries
    from nightlink.edge.sources.cgm import glucose_to_entry
    from nightlink.edge.sources.samples import Glucose

    t0 = epoch_start(58950540) + 25.0
    store = EdgeStore(tmp_path / "edge.db")
    store.add_entries([glucose_to_entry(Glucose(t0 - 900, 190), "xdrip")])
    node = LiveNode(_quiet(tmp_path), store, clock=TimeBase(speed=SPEED, t0=t0),
                    i2c_bus=FakeI2CBus())
    sent: dict[str, list] = {}

    def done():
        if node.epochs_closed >= 12 and "batch" not in sent:
            now = node.clock.now()
            sent["batch"] = [Glucose(now - 300 + k, v) for k, v in ((0, 182), (100, 181),
                                                                    (200, 180))]
            sent["batch"].append(Glucose(now - 2, 179))
            store.add_entries([glucose_to_entry(g, "xdrip") for g in sent["batch"]])
            # Juggluco on the same sensor sends each reading too, dated 30 s later.
            store.add_entries([glucose_to_entry(Glucose(g.t + 30, g.sgv), "juggluco")
                               for g in sent["batch"][:3]])
        elif "batch" in sent and "old" not in sent and node.epochs_closed >= 16:
            sent["old"] = [Glucose(sent["batch"][0].t - 150, 185)]
            store.add_entries([glucose_to_entry(g, "xdrip") for g in sent["old"]])
        return "old" in sent and node.epochs_closed >= 20

    run_until(node, done)
    late = [*sent["batch"][:3], *sent["old"]]
    cgm = store.epoch_values(features.CGM, node.first_epoch - 40, node.pipeline.epoch)
    assert [cgm[epoch_index(g.t)][0] for g in late] == [182, 181, 180, 185]
    assert node.late_readings == 4
    dates = {e["date"] // 1000: e["sgv"] for rec in store.records(features.CGM)
             for e in glucose_entries(rec, store.device)}
    for g in [*late, sent["batch"][3]]:  # what the cloud serves: each reading once
        near = [v for d, v in dates.items() if abs(d - g.t) <= 40]
        assert near == [g.sgv], (g, near)
    # Started again, the node reads the last hours again: nothing is recorded twice.
    records = store.count_records(features.CGM)
    again = LiveNode(_quiet(tmp_path), store, clock=TimeBase(speed=SPEED,
                                                            t0=node.clock.now() + 5),
                     i2c_bus=FakeI2CBus())
    run_until(again, lambda: again.epochs_closed >= 3)
    assert again.late_readings == 0
    assert store.count_records(features.CGM) == records + again.epochs_closed
    store.close()


def test_live__two_uploaders_far_apart_are_said_in_the_status(tmp_path, caplog):
    """Two children's phones set up with one edge: each reading is stored and the clock
    would alarm on the sibling's lows. The node says so in its log and `edge status`."""
    from nightlink.edge.sources.cgm import glucose_to_entry
    from nightlink.edge.sources.samples import Glucose

    t0 = epoch_start(58950540) + 25.0
    store = EdgeStore(tmp_path / "edge.db")
    node = LiveNode(_quiet(tmp_path), store, clock=TimeBase(speed=SPEED, t0=t0),
                    i2c_bus=FakeI2CBus())
    sent = []

    def done():
        if node.epochs_closed >= len(sent) * 2 + 1 and len(sent) < 4:
            now = node.clock.now()
            store.add_entries([glucose_to_entry(Glucose(now - 20, 140 + len(sent)), "xdrip-alex"),
                               glucose_to_entry(Glucose(now - 8, 62), "juggluco-bea")])
            sent.append(now)
        return len(sent) == 4 and "glucose" in store.sources()

    caplog.set_level("WARNING", logger="nightlink.edge.node.live_node")
    run_until(node, done)
    status = store.sources()["glucose"]
    assert status["state"] == "disagree" and "two uploaders send different glucose" in \
        status["detail"]
    assert sum("two uploaders" in r.getMessage() for r in caplog.records) == 1
    store.close()


def test_live__a_microphone_below_16_khz_is_said_to_serve_snoring_only(tmp_path, caplog):
    class Opened:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    class Backend:
        def __init__(self):
            self.opened = []

        def InputStream(self, **kw):  # noqa: N802 - the sounddevice name
            self.opened.append(kw)
            return Opened()

    cfg = _config(tmp_path, '[audio]\nenabled = true\nsample_rate = 8000\n'
                            '[nightscout]\nenabled = false\n')
    backend = Backend()
    store = EdgeStore(tmp_path / "edge.db")
    node = LiveNode(cfg, store, audio_backend=backend)
    stop = asyncio.Event()
    stop.set()
    with caplog.at_level("WARNING"):
        asyncio.run(node._audio(stop))
    assert backend.opened[0]["samplerate"] == 8000
    assert "[audio] sample_rate 8000 Hz: below 16000 Hz the features that need the whole" in caplog.text
    store.close()
