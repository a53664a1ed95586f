"""The edge store on a real SQLite file."""

import os
import sqlite3

import pytest

from nightlink.edge.store import EdgeStore, StoreError
from nightlink.shared import codec, features

ROW = codec.quantize_row(features.ROOM, (21.0, 40.0, 0.0, 600.0, 30.0))


def test_store__wal_and_migrations(store):
    assert store.db.scalar("PRAGMA journal_mode") == "wal"
    assert store.schema_version() == 7


def test_store__migration_3_moves_entries_into_the_nightscout_store(tmp_path, monkeypatch):
    """An edge store from before the Nightscout core keeps its entries, with the `_id` the
    cloud gives the same reading."""
    from nightlink.edge.store import schema
    from nightlink.nightscout.documents import entry_oid

    path = tmp_path / "old.db"
    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:2])
    old = EdgeStore(path)
    old.db.execute(
        "INSERT INTO entries (type, date, sgv, direction, device, doc, created_at) VALUES "
        "('sgv', 1700000000000, 120, 'Flat', 'xDrip', ?, 1700000001.5)",
        ('{"_id":"x","type":"sgv","date":1700000000000,"sgv":120,"direction":"Flat"}',))
    assert old.schema_version() == 2
    old.close()
    monkeypatch.undo()
    new = EdgeStore(path)
    assert new.schema_version() == 7
    [doc] = new.entries(count=5)
    assert doc == {"_id": entry_oid("sgv", 1700000000000), "type": "sgv",
                   "date": 1700000000000, "sgv": 120, "direction": "Flat"}
    assert new.db.scalar("SELECT count(*) FROM sqlite_master WHERE name = 'entries'") == 0
    new.close()


def test_store__append_writes_record_and_outbox_together(store):
    store.start_boot()
    recs = [store.append(features.ROOM, 1000 + i, [ROW]) for i in range(3)]
    assert [r.seq for r in recs] == [1, 2, 3]
    assert store.count_records(features.ROOM) == 3
    out = store.outbox()
    assert [o.seq for o in out] == [1, 2, 3]
    assert codec.decode(out[0].blob) == recs[0]


def test_store__seq_counts_rows_of_multi_epoch_records(store):
    store.start_boot()
    a = store.append(features.ROOM, 1000, [ROW] * 3)
    b = store.append(features.ROOM, 1003, [ROW] * 2)
    c = store.append(features.ROOM, 1005, [ROW])
    assert [a.seq, b.seq, c.seq] == [1, 4, 6]  # the rows' seqs never overlap


def test_store__seq_and_device_survive_reopen(tmp_path):
    s = EdgeStore(tmp_path / "edge.db")
    s.start_boot()
    s.append(features.ROOM, 1, [ROW])
    dev = s.device
    s.close()
    s = EdgeStore(tmp_path / "edge.db")
    assert s.device == dev
    assert s.start_boot() == 2
    rec = s.append(features.ROOM, 2, [ROW])
    assert (rec.boot, rec.seq) == (2, 2)
    s.close()


def test_store__failed_append_leaves_nothing(store):
    with pytest.raises(codec.RangeError):
        store.append(features.ROOM, 1, [(9999, 0, 0, 400, 0)])
    assert store.count_records() == 0 and store.outbox_size() == 0
    # the sequence number was not consumed either
    assert store.append(features.ROOM, 1, [ROW]).seq == 1


def test_store__foreign_record_is_idempotent(store):
    blob = codec.encode(codec.Record(features.ROOM, bytes(6), 1, 9, 5, [ROW]))
    assert store.put_foreign(blob).seq == 9
    assert store.put_foreign(blob) is None
    # kept for local use; the clock's own outbox delivers it to the cloud
    assert store.count_records() == 1 and store.outbox_size() == 0


def test_store__outbox_priority_order(store):
    store.append(features.AUDIO, 1, [tuple(b[0] for b in features.bounds(features.AUDIO))])
    store.append(features.CGM, 1, [tuple(b[0] for b in features.bounds(features.CGM))])
    assert [o.stream for o in store.outbox()] == [features.CGM, features.AUDIO]


def test_store__entries_dedup_on_date_and_type(store):
    e = {"type": "sgv", "date": 1700000000000, "sgv": 120, "direction": "Flat"}
    assert store.add_entries([e, dict(e, sgv=121)]) == (1, 1)
    assert store.entries(count=5)[0]["sgv"] == 120
    # the same reading from another source seconds later is the same reading
    assert store.add_entries([dict(e, date=e["date"] + 20_000, device="phone")]) == (0, 1)


def test_store__prune_keeps_unsent(store):
    store.append(features.ROOM, 0, [ROW])
    old = store.outbox()[0]
    now = 40 * 2880
    assert store.prune(now) == 0  # still in the outbox
    store.mark_sent([old.record_id], 1000.0)
    store.ack(store.device, features.ROOM, old.seq)  # the cloud has it
    assert store.prune(now) == 1


def test_store__not_a_database(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a usable SQLite database"):
        EdgeStore(bad)


def test_store__a_read_only_filesystem_is_named_as_the_cause(tmp_path):
    """An SD card the kernel remounted read-only after errors: SQLite says "attempt to write
    a readonly database"; the error says which filesystem and what to look at."""
    import subprocess

    from tests.support import disk

    with disk.small_disk(tmp_path / "card", "2m") as card:
        EdgeStore(card / "edge.db").close()
        # (a filesystem with files open cannot be remounted here; the kernel can)
        subprocess.run(["mount", "-o", "remount,ro", str(card)], check=True)
        with pytest.raises(StoreError) as at_start:
            EdgeStore(card / "edge.db")
    assert str(at_start.value).startswith(f"{card / 'edge.db'} cannot be opened: the "
                                          f"filesystem holding {card} is read-only")
    assert "check `dmesg`" in str(at_start.value)


def test_store__a_full_disk_is_named_as_the_cause_at_start(tmp_path):
    from tests.support import disk

    with disk.small_disk(tmp_path / "card", "2m") as card:
        EdgeStore(card / "edge.db").close()
        disk.fill(card, 0)
        with pytest.raises(StoreError) as err:
            EdgeStore(card / "edge.db")
    assert str(err.value).startswith(f"{card / 'edge.db'} cannot be opened: the filesystem "
                                     f"holding {card} is full (0 KB free)"), err.value


def test_store__a_damaged_file_says_how_to_recover(tmp_path):
    path = tmp_path / "edge.db"
    EdgeStore(path).close()
    data = bytearray(path.read_bytes())
    page = 4096
    data[page * 2:page * 3] = os.urandom(page)  # a page of the schema's tables gone
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError) as err:
        EdgeStore(path)
    assert "is damaged; put back a copy (docs/deploy.md: with the program stopped, and " \
        "edge.db-wal and -shm removed from beside it first) or recover what it holds with " \
        f"`sqlite3 {path} .recover`" in str(err.value), err.value


def test_store__an_empty_file_is_said_to_make_a_new_device(tmp_path, caplog):
    path = tmp_path / "edge.db"
    path.touch()
    EdgeStore(path).close()
    assert f"{path} is empty: a new store is made, with a new device id" in caplog.text


def test_store__concurrent_reader_sees_committed_only(store, tmp_path):
    store.append(features.ROOM, 1, [ROW])
    other = sqlite3.connect(tmp_path / "edge.db")
    assert other.execute("SELECT count(*) FROM records").fetchone()[0] == 1
    other.close()


def test_store__ack_removes_up_to_the_mark(store):
    for i in range(5):
        store.append(features.ROOM, 100 + i, [ROW])
    store.mark_sent([o.record_id for o in store.outbox()][:2], 1000.0)
    # A mark over a row never sent names another row under its seq: that one stays.
    assert store.ack(store.device, features.ROOM, 3) == 2
    assert [o.seq for o in store.outbox()] == [3, 4, 5]
    store.mark_sent([o.record_id for o in store.outbox()], 1000.0)
    assert store.ack(store.device, features.ROOM, 3) == 1
    assert [o.seq for o in store.outbox()] == [4, 5]
    assert store.ack(store.device, features.ROOM, 3) == 0


def test_store__due_and_resend(store):
    for i in range(3):
        store.append(features.ROOM, 100 + i, [ROW])
    ids = [o.record_id for o in store.due(resend_after_s=60, now=1000.0)]
    store.mark_sent(ids, 1000.0)
    assert store.due(resend_after_s=60, now=1030.0) == []
    assert len(store.due(resend_after_s=60, now=1061.0)) == 3  # no ack in time: again
    store.mark_sent(ids, 2000.0)
    assert store.resend_range(store.device, features.ROOM, 2, 2) == 1
    assert [o.seq for o in store.due(resend_after_s=60, now=2001.0)] == [2]


def test_store__rows_acknowledged_then_asked_for_again_go_again_or_are_given_up(store):
    """A cloud restored from a backup asks again for rows it had acknowledged: those the
    store still holds go back in the outbox; those pruned since are given up as dropped
    ranges (the cloud's mark steps over them), once, however often it asks."""
    for i in range(6):
        store.append(features.ROOM, 100 + i, [ROW])
    store.mark_sent([o.record_id for o in store.outbox()], 1000.0)
    assert store.ack(store.device, features.ROOM, 6) == 6 and store.outbox_size() == 0
    store.prune(100 + 30 * 2880 + 2)  # past retention: the first two are pruned
    assert store.resend_range(store.device, features.ROOM, 1, 5) == 3
    assert [o.seq for o in store.outbox()] == [3, 4, 5]
    assert store.dropped_ranges(store.device) == {features.ROOM: [[1, 2]]}
    assert store.resend_range(store.device, features.ROOM, 1, 5) == 3  # asked again
    assert [o.seq for o in store.outbox()] == [3, 4, 5]
    assert store.db.scalar("SELECT count(*) FROM dropped_ranges") == 1
    # Seqs never issued are not given up: the cloud cannot be missing them.
    store.resend_range(store.device, features.ROOM, 7, 9)
    assert store.dropped_ranges(store.device) == {features.ROOM: [[1, 2]]}


def test_store__a_wider_gap_after_more_pruning_and_rows_the_quota_dropped(store):
    """Asked again for a gap after more rows were pruned, the range given up grows (a second
    row with the same first seq stopped the sync: UNIQUE failed); rows the quota dropped are
    not queued again (the cloud learns of them from the status report)."""
    for i in range(6):
        store.append(features.ROOM, 100 + i, [ROW])
    store.mark_sent([o.record_id for o in store.outbox()], 1000.0)
    store.ack(store.device, features.ROOM, 6)
    store.prune(100 + 30 * 2880 + 2)
    store.resend_range(store.device, features.ROOM, 1, 5)
    store.mark_sent([o.record_id for o in store.outbox()], 1000.0)
    store.ack(store.device, features.ROOM, 6)
    store.prune(100 + 30 * 2880 + 5)
    assert store.resend_range(store.device, features.ROOM, 1, 5) == 0
    assert store.dropped_ranges(store.device) == {features.ROOM: [[1, 5]]}
    audio = tuple(b[0] for b in features.bounds(features.AUDIO))
    for i in range(10):
        store.append(features.AUDIO, 100 + i, [audio])
    store.enforce_quota(5)
    assert store.resend_range(store.device, features.AUDIO, 1, 5) == 0
    assert store.outbox_size() == 5


def test_store__quota_drops_low_priority_first_never_glucose(store):
    audio = tuple(b[0] for b in features.bounds(features.AUDIO))
    cgm = tuple(b[0] for b in features.bounds(features.CGM))
    for i in range(4):
        store.append(features.AUDIO, 100 + i, [audio])
        store.append(features.ROOM, 100 + i, [ROW])
        store.append(features.CGM, 100 + i, [cgm])
    assert store.enforce_quota(6) == {features.AUDIO: 4, features.ROOM: 2}
    assert store.drops() == {features.AUDIO: 4, features.ROOM: 2}
    assert store.enforce_quota(2) == {features.ROOM: 2}  # glucose is kept even over the quota
    assert sorted({o.stream for o in store.outbox()}) == [features.CGM]
    assert store.drops()[features.ROOM] == 4


def test_store__a_start_the_store_refused_is_counted_with_the_first_record_committed(tmp_path):
    """The live node started on a full disk (LiveNode.run): its start is counted in the
    transaction of the first record that commits, so no record of it carries an earlier
    start's boot (an import's, which undoing the import would delete), not even when that
    transaction, or one around it, is rolled back (a refused COMMIT)."""
    from nightlink.sql import DatabaseError

    store = EdgeStore(tmp_path / "edge.db")
    before = store.start_boot()  # an import's, say
    store.boot_due = True  # the node's own start refused
    with pytest.raises(DatabaseError):
        with store.transaction():  # the pipeline's epoch: several records in one transaction
            store.append(features.ROOM, 100, [ROW])
            raise DatabaseError("database or disk is full")
    assert store.boot_due and store.meta("boot") == str(before)
    with store.transaction():
        store.append(features.ROOM, 100, [ROW])
        store.append(features.ROOM, 101, [ROW])  # one start, counted once
    assert not store.boot_due and store.meta("boot") == str(before + 1)
    assert {r.boot for r in store.records(features.ROOM)} == {before + 1}
    store.close()


def test_store__a_file_that_is_no_database_says_what_to_do(tmp_path):
    """A copy cut short, or another file put in its place: the error says to put back a copy
    (with the write-ahead log removed first: a copy laid beside the old -wal reads as
    damaged) or to recover it, not only SQLite's "file is not a database"."""
    path = tmp_path / "edge.db"
    EdgeStore(path).close()
    path.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(StoreError) as err:
        EdgeStore(path)
    assert "it is damaged, or not a Nightlink database. Put back a copy (docs/deploy.md: with " \
        "the program stopped, and edge.db-wal and -shm removed from beside it first) or " \
        f"recover what it holds with `sqlite3 {path} .recover`." in str(err.value), err.value


def test_store__a_path_through_a_file_is_said_so(tmp_path):
    (tmp_path / "lib").write_text("not a folder")
    with pytest.raises(StoreError, match="a part of its folder's path is a file, not a folder"):
        EdgeStore(tmp_path / "lib" / "nightlink" / "edge.db")
