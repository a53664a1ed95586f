"""`nightlink edge sync` with its store on a full disk (a small tmpfs): one clear sentence and
exit 2, no traceback; the database stays sound, no row leaves the outbox unacknowledged, and
once there is room again the next run delivers every row exactly once."""

import sqlite3
import subprocess
import sys
import time

import pytest

from nightlink.edge.store import EdgeStore
from tests.support import disk
from tests.sync.conftest import TENANT, cloud_digest, edge_digest, fill_backlog

# SQLite's shared-memory index (32 KiB) and a first WAL page fit in what is left; writing
# the sent marks or deleting acknowledged rows does not.
LEFT_FREE = 40 * 1024


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs, mounted for the test (root) and unmounted after it."""
    with disk.small_disk(tmp_path / "disk") as where:
        yield where


def _sync(rig, tmp_path, db, timeout):
    conf = tmp_path / "edge.toml"
    conf.write_text(f'tenant = "{TENANT}"\n[nightscout]\nenabled = false\n[sync]\nenabled = true\n'
                    f'host = "{rig.broker.host}"\nport = {rig.broker.port}\n'
                    "reconnect_min_s = 0.2\nreconnect_max_s = 1.0\n")
    return subprocess.run([sys.executable, "-m", "nightlink", "edge", "sync", "--config",
                           str(conf), "--db", str(db), "--until-empty", "--timeout",
                           str(timeout)], capture_output=True, text=True, timeout=timeout + 60)


def test_full_disk__one_sentence_nothing_lost(rig, tmp_path, small_disk, record_property):
    db = small_disk / "edge.db"
    edge = EdgeStore(db)
    fill_backlog(edge, nights=1)
    produced = edge_digest(edge)
    rig.cloud.add_device(edge.device, TENANT, "edge", f"{TENANT}.{edge.device}", "-")
    edge.close()
    filler = disk.fill(small_disk, LEFT_FREE)

    full = _sync(rig, tmp_path, db, timeout=6)
    assert full.returncode == 2, full.stderr
    assert "Traceback" not in full.stderr
    last = full.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and last.count(". ") == 0, last
    assert "stay in the outbox" in last and "database or disk is full" in last, last
    warnings = [ln for ln in full.stderr.splitlines() if " WARNING " in ln]
    assert warnings and len(warnings) <= 6, full.stderr  # said, without -v, not flooded

    with sqlite3.connect(db) as conn:  # sound, and every row still waits for its ack
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    edge = EdgeStore(db)
    assert edge_digest(edge) == produced
    waiting, device = edge.outbox_size(), edge.device
    edge.close()
    stored = rig.cloud.tenant(TENANT).count_rows()
    assert waiting + stored >= produced[0]  # a row leaves the outbox only once acknowledged

    filler.unlink()  # room again: the next run finishes the job
    again = _sync(rig, tmp_path, db, timeout=60)
    assert again.returncode == 0, again.stderr
    deadline = time.monotonic() + 30
    while rig.cloud.tenant(TENANT).count_rows() < produced[0] and time.monotonic() < deadline:
        time.sleep(0.05)
    rig.worker.drain()
    assert cloud_digest(rig.cloud, device) == produced
    record_property("fault_counts", f"full disk: exit 2 with '{last}'; rows {produced[0]} "
                    f"kept, all delivered once there was room")
