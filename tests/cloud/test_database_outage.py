"""PostgreSQL lost under a running cloud (the server crashed, its host rebooted): the apps'
polls, which the Nightscout edge middleware may answer from its cache of unchanged replies,
get 503 with Retry-After, never a 500 with a traceback, and the first poll after the
database is back is answered (docs/deploy.md, "When PostgreSQL goes away")."""

import logging

import psycopg
import pytest

from tests.support.nightscout import SECRET_SHA1, cloud_site, now_ms
from tools.services import PostgresServer

# What the apps poll every few minutes (each from its client's own requests, see the
# test_clients_* modules): xDrip+ and Loop, nightscout-clock, AAPS (v3), the status that
# every app reads first, Nightscout Reporter's profile.
POLLS = [
    "/api/v1/entries/sgv.json?count=24",
    "/api/v1/entries.json?count=1",
    "/api/v1/treatments.json?count=10",
    "/api/v1/status.json",
    "/api/v1/profile.json",
    "/api/v3/entries?limit=10&sort$desc=date",
    "/api/v2/properties",
]

# What needs no stored document may still be answered from what the site holds in memory.
FROM_MEMORY = {"/api/v1/status.json", "/api/v2/properties"}


@pytest.fixture
def pg():
    if not PostgresServer.available():
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    server = PostgresServer().start()
    yield server
    server.stop()


def _poll(site, path, jwt):
    """As the apps sign in: v1 and v2 with the hashed API secret, v3 (AAPS) with the JWT it
    was given for its access token before the outage."""
    if path.startswith("/api/v3/"):
        return site.get(path, headers={"Authorization": f"Bearer {jwt}"})
    return site.get(path, headers={"api-secret": SECRET_SHA1})


def test_polls_get_503_while_postgresql_is_down_and_answers_once_it_is_back(
        pg, tmp_path, caplog):
    url = pg.create_database("outage")
    with cloud_site(tmp_path, url) as site:
        r = site.post("/api/v1/entries", headers={"api-secret": SECRET_SHA1},
                      json=[{"type": "sgv", "sgv": 112, "date": now_ms(), "device": "xDrip"}])
        assert r.status_code == 200, r.text
        jwt = site.get(f"{site.root}/api/v2/authorization/request/{site.read_token}").json()[
            "token"]
        for path in POLLS * 2:  # the second round is remembered by the edge middleware
            assert _poll(site, path, jwt).status_code == 200, path

        with psycopg.connect(pg.url(), autocommit=True) as admin:
            # The test cluster runs with synchronous_commit off; a real one would have the
            # entry on disk already.
            admin.execute("CHECKPOINT")
        pg.halt()
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            for path in POLLS * 2:
                r = _poll(site, path, jwt)
                if path in FROM_MEMORY and r.status_code == 200:
                    continue
                assert r.status_code == 503, (path, r.status_code, r.text[:300])
                assert int(r.headers["Retry-After"]) >= 1, path
                assert "database" in r.json()["message"], path
        assert not [rec for rec in caplog.records if rec.exc_info], \
            "a lost database is logged as a warning, not a traceback"
        said = [rec.getMessage() for rec in caplog.records if "database" in rec.getMessage()]
        assert len(said) == 1, said  # one line, not one per poll
        assert site.get(f"{site.root}/healthz").status_code == 200  # alive, only not ready
        assert site.get(f"{site.root}/readyz").status_code == 503

        pg.start()
        for path in POLLS:
            r = _poll(site, path, jwt)
            assert r.status_code == 200, (path, r.status_code, r.text[:300])

        # A restart between two polls: every idle connection was ended without a word (a
        # crash sends no "terminating connection"); each is noticed before it is used, so the
        # first poll after it is answered, not refused once more.
        pg.halt()
        pg.start()
        for path in POLLS:
            r = _poll(site, path, jwt)
            assert r.status_code == 200, (path, r.status_code, r.text[:300])
        got = _poll(site, POLLS[0], jwt)
        assert [e["sgv"] for e in got.json()] == [112], got.text


def test_a_server_that_never_answers_is_given_up_on_in_seconds():
    """A frozen PostgreSQL (or a firewall dropping its packets) takes the TCP connection and
    never answers the login: libpq alone would wait as long as TCP does. The connection's
    defaults (nightlink/sql.py CONNECT_DEFAULTS) give up after 5 s with one sentence."""
    import socket
    import time

    from nightlink.sql import DatabaseError, connect
    from tools.services import free_port

    with socket.socket() as mute:
        port = free_port()
        mute.bind(("127.0.0.1", port))
        mute.listen(8)  # the kernel completes the handshake; nothing ever reads or answers
        started = time.monotonic()
        with pytest.raises(DatabaseError, match=r"cannot be reached \(.*timeout"):
            connect(f"postgresql://nightlink@127.0.0.1:{port}/nightlink")
        took = time.monotonic() - started
        assert 4 <= took < 12, took
