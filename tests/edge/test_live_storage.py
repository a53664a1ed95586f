"""The live node with its store on a disk that fills up (a small real tmpfs), the way an SD
card does: nothing stops. The epochs that cannot be written are held in memory and written
once there is room, the clocks' link survives a broker restart while the store refuses
writes, the upload endpoint answers 503 (so the uploader keeps the reading and sends it
again) while the clocks get that reading from memory, and once there is room the next
reading reaches the clocks.

Real: the pipeline, the SQLite store on a tmpfs, the Nightscout endpoint on a real port,
Mosquitto for the clocks' LAN; the I2C bus is the only double (tests/edge/test_live.py)."""

import asyncio
import hashlib
import json
import sqlite3
import threading
import time

import httpx
import paho.mqtt.client as mqtt
import pytest

from nightlink.edge.node.live_node import LiveNode, TimeBase
from nightlink.edge.store import EdgeStore
from nightlink.shared import features, topics
from nightlink.shared.epoch import epoch_index, epoch_start
from tests.edge.test_live import SECRET, SPEED, FakeI2CBus, _config, run_until
from tests.support import disk
from tests.support.services import free_port

HEADERS = {"api-secret": hashlib.sha1(SECRET.encode()).hexdigest()}


def _room_and_endpoint(port: int) -> str:
    """A node with room sensors and its Nightscout endpoint on `port`, no microphone."""
    return f"""
close_delay_s = 0.5
tenant = "fam-1"
[audio]
enabled = false
[room]
enabled = true
[nightscout]
host = "127.0.0.1"
port = {port}
api_secret = "{SECRET}"
"""


def test_live__a_full_disk_holds_the_epochs_and_stops_nothing(tmp_path, mosquitto, caplog):
    port = free_port()
    cfg = _config(tmp_path, _room_and_endpoint(port) + f"""
[clocks]
enabled = true
host = "{mosquitto.host}"
port = {mosquitto.port}
""")
    glucose: list[int] = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    sub.on_message = lambda c, u, m: glucose.append(json.loads(m.payload)["sgv"]) \
        if m.topic.endswith("/" + topics.CLOCK_GLUCOSE) else None
    # subscribed again on every connection: the broker is restarted below
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe(topics.clock_feed_filter("fam-1"), qos=1)
    with disk.small_disk(tmp_path / "disk", "8m") as where:
        store = EdgeStore(where / "edge.db")
        clock = TimeBase(speed=SPEED, t0=epoch_start(58950540) + 25.0)
        node = LiveNode(cfg, store, clock=clock, i2c_bus=FakeI2CBus())
        url = f"http://127.0.0.1:{port}/api/v1/entries"
        seen: dict = {}

        def upload(sgv: int) -> int:
            entry = {"type": "sgv", "sgv": sgv, "date": int(clock.now() * 1000),
                     "device": "xDrip-DexcomG6", "direction": "Flat"}
            return httpx.post(url, json=[entry], headers=HEADERS, timeout=10).status_code

        async def until(done, what: str, timeout: float = 30.0) -> None:
            async with asyncio.timeout(timeout):
                while not await asyncio.to_thread(done):  # no statement on the loop
                    await asyncio.sleep(0.05)
            seen[what] = True

        async def scenario(stop: asyncio.Event) -> None:
            try:
                await until(lambda: node.server_port is not None and
                            store.sources().get("clocks", {}).get("state") == "subscribed",
                            "up")
                sub.connect(mosquitto.host, mosquitto.port)
                sub.loop_start()
                assert await asyncio.to_thread(upload, 101) == 200
                await until(lambda: 101 in glucose, "first reading")

                filler = disk.fill(where, 16 * 1024)
                held = node.pipeline.epoch
                await asyncio.sleep(4 * 30 / SPEED)  # four epochs' time
                seen["held"] = node.pipeline.epoch - held <= 1  # one may fit in what is left
                mosquitto.stop()  # the clocks' link fails while the store refuses writes
                mosquitto.start()
                seen["refused upload"] = await asyncio.to_thread(upload, 102)
                # refused by the store, the reading still reaches the clocks, from memory
                await until(lambda: 102 in glucose, "refused reading to the clocks")
                await asyncio.sleep(2 * 30 / SPEED)

                filler.unlink()  # room again: the node goes on by itself
                await until(lambda: node.pipeline.epoch >= epoch_index(clock.now()) - 1,
                            "caught up")
                await until(lambda: store.sources().get("clocks", {}).get("state") ==
                            "subscribed", "clocks back")
                assert await asyncio.to_thread(upload, 103) == 200
                await until(lambda: 103 in glucose, "reading after")
            finally:
                stop.set()

        async def main():
            stop = asyncio.Event()
            await asyncio.gather(node.run(stop), scenario(stop))

        try:
            asyncio.run(asyncio.wait_for(main(), 120))
        finally:
            sub.loop_stop()
            sub.disconnect()
        first, last = node.first_epoch, node.last_closed
        room = store.epoch_values(features.ROOM, first, last + 1)
        states = store.sources()
        store.close()
        with sqlite3.connect(where / "edge.db") as conn:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert seen["held"] and seen["refused upload"] == 503
    refused = [r.getMessage() for r in caplog.records
               if r.getMessage().startswith("the store refused the epoch")]
    assert len(refused) == 1, refused  # said once, with the cause, not at every try
    assert f"the filesystem holding {where} is full (" in refused[0]
    assert any("the store takes writes again" in r.getMessage() for r in caplog.records)
    # Every epoch from the first to the last is stored, those held in memory included.
    assert sorted(room) == list(range(first, last + 1))
    # CO2 in every epoch once the sensor has started (the SCD41's first reading may miss the
    # node's first epoch on a busy machine), those held in memory included
    assert all(room[e][3] == 812 for e in room if e >= first + 2), \
        [(e - first, room[e]) for e in room if room[e][3] != 812]
    assert states["store"]["state"] == "stopped"  # and the refusal was said (above)
    assert states["clocks"]["state"] == "stopped" and states["nightscout"]["state"] == "stopped"


def test_live__a_damaged_store_is_said_at_start_with_what_to_do(tmp_path, caplog):
    """A page of the Nightscout documents' table overwritten (an SD card's bad block): the
    node starts (its other tables are sound), and says at once that the store is damaged
    and how to recover, in the log and in `edge status`."""
    import os

    path = tmp_path / "edge.db"
    store = EdgeStore(path)
    store.add_entries([{"type": "sgv", "sgv": 100 + i % 50, "date": 1_700_000_000_000 + i * 300_000,
                        "device": "xDrip-DexcomG6"} for i in range(3000)])
    store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        leaf = conn.execute("SELECT max(pageno) FROM dbstat WHERE name = 'ns_docs' "
                            "AND pagetype = 'leaf'").fetchone()[0]
    data = bytearray(path.read_bytes())
    data[(leaf - 1) * page:leaf * page] = os.urandom(page)
    path.write_bytes(bytes(data))

    cfg = _config(tmp_path, f"""
close_delay_s = 0.5
[audio]
enabled = false
[nightscout]
enabled = false
api_secret = "{SECRET}"
[room]
enabled = true
""")
    store = EdgeStore(path)
    node = LiveNode(cfg, store, clock=TimeBase(speed=SPEED, t0=epoch_start(58950540) + 25.0),
                    i2c_bus=FakeI2CBus())
    run_until(node, lambda: store.sources().get("store", {}).get("state") == "damaged", 30)
    detail = store.sources()["store"]["detail"]
    store.close()
    said = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(said) == 1 and said[0].startswith(f"the store {path} is damaged (")
    assert f"`sqlite3 {path} .recover`" in said[0] and detail in said[0]


def _run_and_upload(tmp_path, db, reserve_mb: int = 1) -> str:
    """`nightlink edge run` on the store, one upload answered 200; what it logged."""
    import os
    import subprocess
    import sys
    import time

    port = free_port()
    conf = tmp_path / "edge.toml"
    conf.write_text(f'tenant = "fam-1"\nreserve_mb = {reserve_mb}\n[audio]\nenabled = false\n'
                    f'[nightscout]\nhost = "127.0.0.1"\nport = {port}\n'
                    f'api_secret = "{SECRET}"\n')
    log_path = tmp_path / "run.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "nightlink", "edge", "run", "--config",
                                 str(conf), "--db", str(db)], stderr=log, stdout=log,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            entry = {"type": "sgv", "sgv": 123, "date": int(time.time() * 1000),
                     "direction": "Flat", "device": "xDrip-DexcomG6"}
            deadline = time.monotonic() + 60
            status = None
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    status = httpx.post(f"http://127.0.0.1:{port}/api/v1/entries",
                                        json=[entry], headers=HEADERS, timeout=5).status_code
                    break
                except httpx.TransportError:
                    time.sleep(0.2)
            assert status == 200, (status, log_path.read_text())
        finally:
            proc.terminate()
            proc.wait(30)
    said = log_path.read_text()
    assert "Traceback" not in said, said
    return said


def test_live__the_node_starts_on_a_full_disk_by_deleting_its_reserve(tmp_path):
    """An SD card filled to the last byte while the node was down (logs, another program):
    the store cannot even be opened. `edge run` keeps a reserve file beside the store and
    deletes it to start, saying so without -v; uploads are then stored. Without the reserve
    it could only say why and stop."""
    from nightlink.edge.cli import open_store
    from nightlink.edge.store import reserve_path
    from nightlink.errors import NightlinkError

    with disk.small_disk(tmp_path / "disk", "8m") as where:
        db = where / "edge.db"
        open_store(db, reserve_mb=1).close()  # the node's first start made its reserve
        assert reserve_path(db).stat().st_size == 1 << 20
        filler = disk.fill(where, 0)
        try:
            open_store(db)  # another command: one sentence, and the reserve left alone
            raise AssertionError("the store opened on a full disk")
        except NightlinkError as exc:
            assert "is full (0 KB free)" in str(exc), exc
        assert reserve_path(db).exists()
        said = _run_and_upload(tmp_path, db)
        assert "has 0 KB free: the node deleted its reserve" in said, said
        assert not reserve_path(db).exists()
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT count(*) FROM ns_docs").fetchone()[0] >= 1
        # room again: the reserve is made again (hourly by the node; here by the store)
        filler.unlink()
        EdgeStore(db, reserve_bytes=1 << 20).close()
        assert reserve_path(db).stat().st_size == 1 << 20
        EdgeStore(db, reserve_bytes=0).close()  # reserve_mb = 0: none kept
        assert not reserve_path(db).exists()


def test_live__a_node_killed_on_a_full_disk_starts_again(tmp_path):
    """The likelier way: the card fills while the node runs, and it is killed (a power cut)
    with its write-ahead log and shared-memory index left behind. The store then opens, but
    the first write fails: the reserve goes before the store opens, since less than it is
    free."""
    import subprocess
    import sys

    from nightlink.edge.store import reserve_path

    with disk.small_disk(tmp_path / "disk", "8m") as where:
        db = where / "edge.db"
        crash = ("import os, time\n"
                 "from nightlink.edge.store import EdgeStore\n"
                 f"s = EdgeStore({str(db)!r}, reserve_bytes=1 << 20)\n"
                 "s.add_entries([{'type': 'sgv', 'sgv': 100 + k, 'date': 1_700_000_000_000 + "
                 "k * 300_000} for k in range(50)])\n"
                 "os._exit(0)\n")  # no close: the WAL is not checkpointed
        subprocess.run([sys.executable, "-c", crash], check=True, timeout=60)
        assert (where / "edge.db-wal").exists() and reserve_path(db).exists()
        disk.fill(where, 0)
        said = _run_and_upload(tmp_path, db)
        assert "has 0 KB free: the node deleted its reserve" in said, said
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT count(*) FROM ns_docs").fetchone()[0] >= 51


def test_live__a_running_node_uses_its_reserve_when_the_disk_fills(tmp_path, caplog):
    """The card fills while the node runs: the first refused epoch deletes the reserve, said
    once, and the epochs go on being stored at once rather than held in memory."""
    import logging

    from nightlink.edge.store import reserve_path

    caplog.set_level(logging.INFO)
    cfg = _config(tmp_path, 'close_delay_s = 0.5\ntenant = "fam-1"\nreserve_mb = 1\n'
                  '[audio]\nenabled = false\n[nightscout]\nenabled = false\n'
                  f'api_secret = "{SECRET}"\n[room]\nenabled = true\n')
    with disk.small_disk(tmp_path / "disk", "8m") as where:
        store = EdgeStore(where / "edge.db", reserve_bytes=1 << 20)
        assert reserve_path(store.path).exists()
        clock = TimeBase(speed=SPEED, t0=epoch_start(58950540) + 25.0)
        node = LiveNode(cfg, store, clock=clock, i2c_bus=FakeI2CBus())
        marks: dict = {}

        def progress() -> bool:
            if node.last_closed is None:
                return False
            if "full" not in marks and node.epochs_closed >= 2:
                disk.fill(where, 0)
                marks["full"] = node.last_closed
            return "full" in marks and node.last_closed >= marks["full"] + 4

        run_until(node, progress, timeout_s=60)
        said = [r.getMessage() for r in caplog.records]
        used = [m for m in said if "the node deleted its reserve" in m]
        assert len(used) == 1 and used[0].startswith("the store refused the epoch of"), said
        assert not any(m.startswith("the store refused the epoch") and "kept in memory" in m
                       for m in said), said
        room = store.epoch_values(features.ROOM, marks["full"], node.last_closed + 1)
        assert sorted(room) == list(range(marks["full"], node.last_closed + 1))
        assert not reserve_path(store.path).exists()
        store.close()


@pytest.mark.parametrize("full", ["bytes", "inodes"])
def test_live__a_node_without_its_reserve_starts_on_a_full_disk(tmp_path, caplog, full):
    """The reserve already used up (the card filled while the node ran, and the room never came
    back) and the node restarted on the card full to the last byte: it starts all the same,
    the store read on a connection of its own (no room for SQLite's shared-memory index),
    uploads answered 503 with Retry-After, the epochs held in memory. Once there is room the
    epochs held are written, under a start counted then, the schedule with them, and the
    store is open to other programs again. With no inode left for the write-ahead log
    either, the store is read as it is on disk."""
    import logging
    import threading

    from nightlink.edge.store import reserve_path

    caplog.set_level(logging.INFO)
    port = free_port()
    cfg = _config(tmp_path, 'close_delay_s = 0.5\ntenant = "fam-1"\nreserve_mb = 1\n'
                  '[audio]\nenabled = false\n[room]\nenabled = true\n[night]\n'
                  'bedtime = "21:00"\nwake = "06:00"\n'
                  f'[nightscout]\nhost = "127.0.0.1"\nport = {port}\napi_secret = "{SECRET}"\n')
    with disk.small_disk(tmp_path / "disk", "8m,nr_inodes=64") as where:
        db = where / "edge.db"
        store = EdgeStore(db, reserve_bytes=1 << 20)
        boot = store.start_boot()  # an earlier start (or an import, undone with its boot)
        store.add_entries([{"type": "sgv", "sgv": 140, "date": int(epoch_start(58950540) * 1000),
                            "device": "xDrip-DexcomG6"}])
        store.close()
        reserve_path(db).unlink()  # used up before
        fillers = [disk.fill(where, 0)] if full == "bytes" else _take_inodes(where)
        store = EdgeStore(db, reserve_bytes=1 << 20)  # before: StoreError, the disk is full
        assert store.db.alone == ("exclusive" if full == "bytes" else "read-only")
        assert store.entries(count=1)[0]["sgv"] == 140  # read
        clock = TimeBase(speed=SPEED, t0=epoch_start(58950540) + 25.0)
        node = LiveNode(cfg, store, clock=clock, i2c_bus=FakeI2CBus())
        marks: dict = {}

        def upload() -> None:  # off the event loop, which serves it
            entry = {"type": "sgv", "sgv": 101, "date": int(clock.now() * 1000),
                     "device": "xDrip-DexcomG6", "direction": "Flat"}
            r = httpx.post(f"http://127.0.0.1:{port}/api/v1/entries", json=[entry],
                           headers=HEADERS, timeout=10)
            marks["refused"] = (r.status_code, r.headers.get("retry-after"))

        def progress() -> bool:
            if node.server_port is None or node.pipeline is None:
                return False
            if "from" not in marks:
                marks["from"] = node.pipeline.epoch
                threading.Thread(target=upload, daemon=True).start()
            if "room" not in marks and epoch_index(clock.now()) >= marks["from"] + 4:
                marks["held"] = node.pipeline.epoch == marks["from"]  # nothing stored yet
                for filler in fillers:
                    filler.unlink()
                marks["room"] = epoch_index(clock.now())
            return "room" in marks and "refused" in marks and node.last_closed is not None and \
                node.last_closed >= marks["room"] + 2

        run_until(node, progress, timeout_s=90)
        first, last = node.first_epoch, node.last_closed
        room = store.epoch_values(features.ROOM, first, last + 1)
        boots = {r.boot for r in store.records(features.ROOM, first, last + 1)}
        assert store.db.alone == ""  # shared again
        with sqlite3.connect(db, timeout=1) as other:  # another program reads it
            meta = dict(other.execute("SELECT key, value FROM meta").fetchall())
        store.close()
    assert marks["refused"] == (503, "10") and marks["held"], marks
    assert sorted(room) == list(range(first, last + 1))  # those held in memory too
    assert boots == {boot + 1} and meta["boot"] == str(boot + 1)  # never an earlier boot
    assert meta["night_schedule"] == "21:00-06:00"
    said = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("the store refused the start (") for m in said), said
    assert any("the store takes writes again" in m for m in said), said
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], said


def _take_inodes(where) -> list:
    """Take every inode left on the filesystem (empty files); the files, to delete."""
    taken = []
    try:
        while True:
            taken.append(where / f"i{len(taken)}")
            taken[-1].touch()
    except OSError:
        taken.pop()
    return taken


def test_store__read_only_on_a_full_disk_reads_what_another_program_wrote(tmp_path):
    """The node opened its store read-only (no inode left even for a write-ahead log). Once
    files can be made again, another program (an import, an undo) writes the store: the
    node then reads the store as it is, not the stale copy an immutable connection keeps
    (which counted 300 records against 2,100 on disk and failed integrity_check)."""
    from nightlink.edge.features.reducers import to_raw

    row = to_raw(features.ROOM, (21.0, 40.0, 0.0, 600.0, 30.0))
    with disk.small_disk(tmp_path / "disk", "16m,nr_inodes=64") as where:
        db = where / "edge.db"
        store = EdgeStore(db, reserve_bytes=0)
        store.start_boot()
        for e in range(300):
            store.append(features.ROOM, 1000 + e, [row])
        store.close()
        fillers = _take_inodes(where)
        node = EdgeStore(db, reserve_bytes=1 << 20)  # the live node's
        assert node.db.alone == "read-only" and node.count_records() == 300
        for f in fillers[:4]:  # room for the other program's -wal and -shm
            f.unlink()
        other = EdgeStore(db)
        other.start_boot()
        other.db.execute("DELETE FROM outbox")
        other.db.execute("DELETE FROM records WHERE epoch < 1200")
        for e in range(2000):
            other.append(features.ROOM, 5000 + e, [row])
        other.close()
        try:
            assert node.count_records() == 2100 and node.outbox_size() == 2000
            assert node.db.query("PRAGMA integrity_check")[0]["integrity_check"] == "ok"
        finally:
            node.close()


def test_live__another_program_writing_the_store_holds_neither_the_loop_nor_the_endpoint(
        tmp_path):
    """A backup tool, `sqlite3` or an import writing the store: while it holds the write lock
    the node's event loop (the sources' links, the endpoint's sockets) goes on, the endpoint's
    reads are answered, and once it lets go every epoch of that time is stored."""
    port = free_port()
    cfg = _config(tmp_path, _room_and_endpoint(port))
    store = EdgeStore(tmp_path / "edge.db")
    node = LiveNode(cfg, store, clock=TimeBase(speed=SPEED, t0=epoch_start(58950540) + 25.0),
                    i2c_bus=FakeI2CBus())
    seen: dict = {"gap": 0.0, "answers": []}

    def hold(seconds: float) -> None:  # another program's write transaction
        other = sqlite3.connect(tmp_path / "edge.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            seen["holding"] = True
            threading.Event().wait(seconds)
        finally:
            other.execute("ROLLBACK")
            other.close()
            seen["holding"] = False

    def versions() -> float:  # what needs no store, and a clock's poll, which reads it
        began = time.monotonic()
        got = httpx.get(f"http://127.0.0.1:{port}/api/versions", timeout=10)
        polled = httpx.get(f"http://127.0.0.1:{port}/api/v1/entries.json?count=1",
                           headers=HEADERS, timeout=10)
        assert got.status_code == 200 and polled.status_code == 200
        return time.monotonic() - began

    async def scenario(stop: asyncio.Event) -> None:
        while node.server_port is None or node.last_closed is None:
            await asyncio.sleep(0.05)
        held = asyncio.create_task(asyncio.to_thread(hold, 4.0))
        while not seen.get("holding"):
            await asyncio.sleep(0.01)
        held_at = time.monotonic()
        while seen["holding"]:  # the loop's longest pause, and the endpoint, meanwhile
            began = time.monotonic()
            await asyncio.sleep(0.02)
            seen["gap"] = max(seen["gap"], time.monotonic() - began - 0.02)
            # asked at 1.5, 2.5 and 3.5 s: by then an epoch's write waits for the lock
            if time.monotonic() - held_at > 1.5 + len(seen["answers"]) and \
                    len(seen["answers"]) < 3 and not seen.get("asking"):
                seen["asking"] = True
                seen["answers"].append(await asyncio.to_thread(versions))
                seen["asking"] = False
        await held
        seen["after"] = node.clock.now()
        while node.last_closed is None or epoch_start(node.last_closed) < seen["after"]:
            await asyncio.sleep(0.05)
        stop.set()

    async def main():
        stop = asyncio.Event()
        await asyncio.gather(node.run(stop), scenario(stop))

    asyncio.run(asyncio.wait_for(main(), 60))
    assert seen["gap"] < 1.0, seen  # before: the loop waited out the lock (4 s)
    assert seen["answers"] and max(seen["answers"]) < 1.5, seen
    stored = store.epoch_values(features.ROOM, node.first_epoch, node.pipeline.epoch)
    assert sorted(stored) == list(range(node.first_epoch, node.pipeline.epoch))
    assert all(values[0] is not None for values in stored.values())
    store.close()
