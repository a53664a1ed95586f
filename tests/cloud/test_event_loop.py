"""A database that makes the cloud wait (a lock held by another program, a PostgreSQL table an
operator locked) holds only the requests that need it: the event loop answers everything else
meanwhile (API versions, the health check, the websocket's pings), and the waiting request is
answered once the lock goes (nightlink/sql.py, `off_loop`; docs/deploy.md)."""

import sqlite3
import threading
import time

import httpx
import psycopg
import pytest

from tests.support.nightscout import SECRET_SHA1, cloud_site, now_ms

# How long the other program holds the lock. An answer that needs no database must come
# while the lock is still held: one the event loop held up waiting on the database comes only
# after the release, so the test tells the two apart by that, not by a time limit a busy
# machine (three test workers on two cores) can overrun.
HELD_S = 4.0


def _while_locked(site, lock, release, requests, reads=()):
    """Hold the lock, and release it from a timer HELD_S later; meanwhile start each of
    `requests` (name, function; each needs the locked data) in a thread, 0.2 s apart, then
    run each of `reads` (name, function: a read that needs no lock) and ask what needs no
    database. Returns (path, status, seconds, before the release) of the free answers,
    {name: (reply, seconds, before the release)} of the requests and of the reads."""
    lock()
    released: list[float] = []

    def let_go():
        release()
        released.append(time.monotonic())

    timer = threading.Timer(HELD_S, let_go)
    timer.start()
    replies, threads, free, read = {}, [], [], {}

    def run(name, fn):
        started = time.monotonic()
        reply = fn()
        replies[name] = (reply, time.monotonic() - started, time.monotonic())

    try:
        for name, fn in requests:
            threads.append(threading.Thread(target=run, args=(name, fn)))
            threads[-1].start()
            time.sleep(0.2)
        time.sleep(0.3)  # the requests are waiting on the lock now
        for name, fn in reads:
            started = time.monotonic()
            reply = fn()
            read[name] = (reply, time.monotonic() - started, time.monotonic())
        with httpx.Client(timeout=2 * HELD_S) as client:
            for path in ("/api/versions", "/healthz", "/api/v3/version"):
                started = time.monotonic()
                try:
                    status = client.get(f"{site.root}{path}").status_code
                except httpx.TimeoutException:
                    status = None  # the event loop is waiting on the database
                free.append((path, status, time.monotonic() - started, time.monotonic()))
    finally:
        timer.join()
        for thread in threads:
            thread.join(30)
    at = released[0]
    return ([(p, st, s, done < at) for p, st, s, done in free],
            {k: (r, s, done < at) for k, (r, s, done) in replies.items()},
            {k: (r, s, done < at) for k, (r, s, done) in read.items()})


def _prompt(free):
    for path, status, seconds, early in free:
        assert status == 200 and early, \
            f"{path}: {status} after {seconds:.1f} s, once the lock was released: the event " \
            "loop waited on the database"


def test_sqlite_writer_of_another_program_holds_only_what_needs_the_database(tmp_path):
    with cloud_site(tmp_path) as site:
        headers = {"api-secret": SECRET_SHA1}
        assert site.get("/api/v1/entries.json?count=1", headers=headers).status_code == 200
        # released from the test's timer thread
        other = sqlite3.connect(tmp_path / "cloud.db", isolation_level=None,
                                check_same_thread=False)

        def upload():  # xDrip+'s upload: waits for the other program's write to end
            return httpx.post(f"{site.root}/t/fam-1/api/v1/entries", headers=headers,
                              timeout=30, json=[{"type": "sgv", "sgv": 104, "date": now_ms(),
                                                 "device": "xDrip"}])

        def poll():  # a clock's poll: a read, not behind the upload (a reading connection)
            return httpx.get(f"{site.root}/t/fam-1/api/v1/entries.json?count=5",
                             headers=headers, timeout=30)

        free, replies, read = _while_locked(site, lambda: other.execute("BEGIN IMMEDIATE"),
                                            lambda: other.execute("COMMIT"),
                                            [("upload", upload)], [("poll", poll)])
        other.close()
        _prompt(free)
        reply, took, early = replies["upload"]
        assert reply.status_code == 200, reply.text
        assert reply.json()[0]["sgv"] == 104
        assert not early, took  # it did wait for the other program's write
        reply, took, early = read["poll"]
        assert reply.status_code == 200 and early, (reply.text, took)
        assert reply.json() == []  # the upload waiting for the lock is not stored yet
        assert site.docs.count("entries") == 1


def test_postgresql_table_lock_holds_only_what_needs_the_table(postgres_url, tmp_path):
    url = postgres_url
    with cloud_site(tmp_path, url) as site:
        headers = {"api-secret": SECRET_SHA1}
        r = site.post("/api/v1/entries", headers=headers,
                      json=[{"type": "sgv", "sgv": 98, "date": now_ms(), "device": "xDrip"}])
        assert r.status_code == 200, r.text
        admin = psycopg.connect(url, autocommit=True)

        def lock():  # an operator's maintenance: ALTER TABLE, VACUUM FULL, a manual LOCK
            admin.execute("BEGIN")
            admin.execute("LOCK TABLE ns_docs IN ACCESS EXCLUSIVE MODE")

        def poll():
            return httpx.get(f"{site.root}/t/fam-1/api/v1/entries/sgv.json?count=1",
                             headers=headers, timeout=30)

        free, replies, _ = _while_locked(site, lock, lambda: admin.execute("ROLLBACK"),
                                         [("poll", poll)])
        admin.close()
        _prompt(free)
        reply, took, early = replies["poll"]
        assert reply.status_code == 200, reply.text
        assert reply.json()[0]["sgv"] == 98
        assert not early, took  # it did wait for the lock


def test_strict_mode__a_statement_or_password_check_on_the_event_loop_raises(tmp_path):
    """The guard the tests run under (tests/conftest.py sets NIGHTLINK_STRICT_LOOP=1): what
    makes every cloud test fail where a route, the alert worker or a socket handler would
    make the event loop wait."""
    import asyncio

    from nightlink import sql
    from nightlink.cloud import auth

    guarded, other = (sql.connect(f"sqlite:///{tmp_path / name}") for name in ("a.db", "b.db"))
    guarded.loop_guard = True
    digest = auth.hash_password("a long enough password")

    async def run():
        with pytest.raises(sql.OnEventLoop, match="database statement ran on the event loop"):
            guarded.query("SELECT 1 AS one")
        with pytest.raises(sql.OnEventLoop):
            with guarded.transaction():
                pass
        with pytest.raises(sql.OnEventLoop, match="password check"):
            auth.verify_password(digest, "a long enough password")
        assert other.query("SELECT 1 AS one") == [{"one": 1}]  # (not the cloud's: the edge's)
        assert await asyncio.to_thread(guarded.query, "SELECT 1 AS one") == [{"one": 1}]
        assert await asyncio.to_thread(auth.verify_password, digest, "a long enough password")

    asyncio.run(run())
    assert guarded.query("SELECT 1 AS one") == [{"one": 1}]  # no event loop here
    guarded.close()
    other.close()
