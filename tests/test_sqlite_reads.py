"""SQLite reads (nightlink/sql.py, the edge store's and a one-machine cloud's): a SELECT runs
on a connection of the reading thread's, so it never waits for a write under way, and never
sees half of one; a thread's reads inside its own transaction see what it wrote."""

import sqlite3
import threading
import time

from nightlink.sql import DatabaseError, SQLiteDatabase


def _db(tmp_path):
    db = SQLiteDatabase(tmp_path / "reads.db", durable=True)
    db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
    db.execute("INSERT INTO t (k, v) VALUES (1, 'one')")
    return db


def _in_thread(fn):
    out: dict = {}

    def run():
        began = time.monotonic()
        try:
            out["value"] = fn()
        except Exception as exc:  # noqa: BLE001 - handed to the test
            out["error"] = exc
        out["s"] = time.monotonic() - began

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def test_reads__do_not_wait_for_a_write_waiting_on_another_program(tmp_path):
    """Another program holds the write lock; this process's write waits for it (up to the
    busy timeout) holding the writing connection; a read meanwhile answers at once."""
    db = _db(tmp_path)
    other = sqlite3.connect(tmp_path / "reads.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO t (k, v) VALUES (3, 'not yet')")
    writer, wrote = _in_thread(lambda: db.execute("INSERT INTO t (k, v) VALUES (2, 'two')"))
    time.sleep(0.3)  # the write is waiting on the lock now
    reader, read = _in_thread(lambda: db.query("SELECT k, v FROM t ORDER BY k"))
    reader.join(5)
    assert read.get("value") == [{"k": 1, "v": "one"}], read  # the other's half not seen
    assert read["s"] < 1.0, read  # before: as long as the lock was held (2 s here)
    time.sleep(2.0 - 0.3 - read["s"])
    other.execute("COMMIT")
    writer.join(10)
    assert wrote.get("value") == 1, wrote
    assert [r["k"] for r in db.query("SELECT k FROM t ORDER BY k")] == [1, 2, 3]
    other.close()
    db.close()


def test_reads__inside_a_transaction_see_its_own_writes_and_others_see_them_at_commit(tmp_path):
    db = _db(tmp_path)
    seen_outside: list = []
    with db.transaction():
        db.execute("INSERT INTO t (k, v) VALUES (2, 'two')")
        assert db.scalar("SELECT count(*) FROM t") == 2  # the thread's own, uncommitted
        thread, out = _in_thread(lambda: db.scalar("SELECT count(*) FROM t"))
        thread.join(5)
        seen_outside.append(out)
    assert seen_outside[0].get("value") == 1 and seen_outside[0]["s"] < 1.0, seen_outside
    thread, out = _in_thread(lambda: db.scalar("SELECT count(*) FROM t"))
    thread.join(5)
    assert out.get("value") == 2
    # a write that returns rows goes through the writing connection
    assert db.query("INSERT INTO t (k, v) VALUES (4, 'four') RETURNING k") == [{"k": 4}]
    db.close()


def test_reads__a_closed_database_closes_every_threads_reader_and_reads_no_more(tmp_path):
    db = _db(tmp_path)
    threads = [_in_thread(lambda: db.scalar("SELECT v FROM t WHERE k = 1")) for _ in range(3)]
    for thread, out in threads:
        thread.join(5)
        assert out.get("value") == "one"
    assert len(db._readers) == 3
    db.close()
    assert db._readers == []
    thread, out = _in_thread(lambda: db.scalar("SELECT v FROM t WHERE k = 1"))
    thread.join(5)
    assert isinstance(out.get("error"), DatabaseError), out  # no reader opened again
    assert db._readers == []
