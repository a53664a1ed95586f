"""The cloud repository on both backends (SQLite file and a private PostgreSQL)."""

import pytest

from nightlink.cloud.store import ConflictError, NotFoundError, Store, unpack_row
from nightlink.cloud.store.schema import MIGRATIONS
from nightlink.shared import codec, features
from tests.support.cloud import two_tenants

LATEST = MIGRATIONS[-1][0]  # the schema version a fresh store reaches

DEV = "a4cf12b0c3d4"
ROW = codec.quantize_row(features.ROOM, (21.0, 40.0, 0.0, 600.0, 30.0))


@pytest.fixture
def store(cloud_db_url):
    s = two_tenants(cloud_db_url, names=("Family one", "Family two"))
    yield s
    s.close()


def _rec(seq, epoch, n=1, boot=1, dev=DEV):
    return codec.Record(features.ROOM, codec.device_id(dev), boot, seq, epoch, [ROW] * n)


def test_repo__migrations_are_idempotent(cloud_db_url):
    a = Store.open(cloud_db_url)
    b = Store.open(cloud_db_url)  # a second process starting on the same database
    assert a.version == b.version == LATEST
    a.close()
    b.close()


def test_repo__a_database_from_a_newer_version_is_refused_before_anything_is_written(
        cloud_db_url, tmp_path):
    """Older code on a newer database would misread it (a table it does not know moved): it
    stops with one sentence, on both backends, and the edge store the same way."""
    from click.testing import CliRunner

    from nightlink.cli import main
    from nightlink.edge.store import EdgeStore, StoreError
    from nightlink.sql import DatabaseError

    s = Store.open(cloud_db_url)
    s.db.execute("INSERT INTO schema_migrations (id, name, applied_at) VALUES (?, ?, ?)",
                 (LATEST + 1, "a table of the future", 0.0))
    s.close()
    with pytest.raises(DatabaseError, match=f"holds migration {LATEST + 1} "):
        Store.open(cloud_db_url)
    result = CliRunner().invoke(main, ["cloud", "create-tenant", "later",
                                       "--database-url", cloud_db_url])
    assert result.exit_code == 2
    assert result.output.startswith("error: the cloud database holds migration")
    assert "newer version" in result.output and "Traceback" not in result.output
    path = tmp_path / "edge.db"
    EdgeStore(path).close()
    import sqlite3

    with sqlite3.connect(path) as con:
        con.execute("UPDATE _migrations SET name = 'renamed' WHERE id = 1")
    with pytest.raises(StoreError, match="holds migration 1 \\(renamed\\)"):
        EdgeStore(path)


def test_repo__migration_7_moves_nightscout_rows_into_the_core_store(cloud_db_url,
                                                                     monkeypatch):
    """A cloud from before the Nightscout core keeps its entries, treatments, statuses,
    profiles and read tokens: same `_id`s, an app's identifier kept, tokens still valid."""
    import hashlib

    from nightlink.cloud.store import schema
    from nightlink.nightscout.store import find_token
    from nightlink.sql import connect

    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:6])
    old = Store.open(cloud_db_url)
    old.create_tenant("fam-1", "One")
    db = old.db
    db.execute("INSERT INTO entries (tenant_id, type, date, sgv, direction, device, doc, "
               "created_at) VALUES ('fam-1', 'sgv', 1700000000000, 120, 'Flat', 'x', ?, 1.0)",
               ('{"_id":"abcdefabcdefabcdefabcdef","type":"sgv","date":1700000000000,'
                '"sgv":120}',))
    computed = hashlib.sha1(b"treatment:1700000000000:Note").hexdigest()[:24]
    for ident, event in ((computed, "Note"), ("loop-1", "Carb Correction")):
        db.execute("INSERT INTO treatments (tenant_id, identifier, created_at_ms, event_type, "
                   "doc, stored_at) VALUES ('fam-1', ?, 1700000000000, ?, ?, 2.0)",
                   (ident, event, f'{{"_id":"{ident[:24].ljust(24, "0")}","eventType":'
                                  f'"{event}","identifier":"{ident}","created_at_ms":1}}'))
    db.execute("INSERT INTO api_secrets (tenant_id, secret_hash, kind, label, created_at) "
               "VALUES ('fam-1', ?, 'token', 'clock', 3.0)",
               (hashlib.sha256(b"clock-token-1").hexdigest(),))
    old.close()
    monkeypatch.undo()
    new = Store(connect(cloud_db_url))
    assert new.version == LATEST
    t = new.tenant("fam-1")
    assert t.entries(count=5)[0]["_id"] == "abcdefabcdefabcdefabcdef"
    docs = {d["eventType"]: d for d in t.documents("treatments", count=5)}
    assert "identifier" not in docs["Note"] and docs["Carb Correction"]["identifier"] == "loop-1"
    assert "created_at_ms" not in docs["Note"]
    assert find_token(new.db, "clock-token-1").site_key == "fam-1"
    # a treatment without identity re-sent after the move is the same treatment
    stored, dupes = t.add_documents("treatments", [{"eventType": "Note",
                                                    "created_at": 1700000000000}])
    assert (stored, dupes) == ([], 1)
    new.close()


def test_repo__rows_upsert_once(store):
    t = store.tenant("fam-1")
    assert t.put_rows([_rec(1, 100, n=3)]) == 3
    assert t.put_rows([_rec(1, 100, n=3), _rec(4, 103)]) == 1  # resent rows change nothing
    rows = t.rows(features.ROOM, 0, 10**9)
    assert [(r.seq, r.epoch) for r in rows] == [(1, 100), (2, 101), (3, 102), (4, 103)]
    assert unpack_row(features.ROOM, rows[0].nfeat, rows[0].row_data) == ROW


def test_repo__cursor_pages_cover_everything_once(store):
    t = store.tenant("fam-1")
    t.put_rows([_rec(1, 100, n=50), _rec(1, 100, n=50, dev="0123456789ab")])
    seen, after = [], None
    while True:
        page = t.rows(features.ROOM, 0, 10**9, after=after, limit=7)
        if not page:
            break
        seen += [(r.epoch, r.device, r.seq) for r in page]
        last = page[-1]
        after = (last.epoch, last.device, last.boot, last.seq)
    assert len(seen) == 100 == len(set(seen))
    assert seen == sorted(seen)


def test_repo__high_water_mark_stops_at_gaps(store):
    t = store.tenant("fam-1")
    t.put_rows([_rec(1, 100, n=5), _rec(8, 107, n=2)])
    assert store.advance_hwm(DEV, features.ROOM) == 5
    assert store.missing_seqs(DEV, features.ROOM) == [(6, 7)]
    t.put_rows([_rec(6, 105, n=2)])
    assert store.advance_hwm(DEV, features.ROOM) == 9
    assert store.missing_seqs(DEV, features.ROOM) == []


def test_repo__tenant_handles_see_only_their_own(store):
    a, b = store.tenant("fam-1"), store.tenant("fam-2")
    a.put_rows([_rec(1, 100, n=2)])
    a.add_entries([{"type": "sgv", "date": 1_700_000_000_000, "sgv": 120}])
    a.put_night("2026-01-15", {"tst_min": 420})
    assert b.count_rows() == 0 and b.rows(features.ROOM, 0, 10**9) == []
    assert b.entries(count=10) == [] and b.nights() == []
    with pytest.raises(NotFoundError):
        b.night("2026-01-15")
    # The same (date, type) in another tenant is its own entry, not a duplicate.
    stored, dupes = b.add_entries([{"type": "sgv", "date": 1_700_000_000_000, "sgv": 99}])
    assert (len(stored), dupes) == (1, 0)
    assert a.entries()[0]["sgv"] == 120 and b.entries()[0]["sgv"] == 99


def test_repo__entries_filters_and_duplicates(store):
    t = store.tenant("fam-1")
    docs = [{"type": "sgv", "date": 1_700_000_000_000 + i * 300_000, "sgv": 100 + i}
            for i in range(10)]
    stored, dupes = t.add_entries(docs + docs[:2])
    assert (len(stored), dupes) == (10, 2)
    got = t.entries(count=3, where=[("date", ">=", docs[5]["date"])])
    assert [d["sgv"] for d in got] == [109, 108, 107]
    with pytest.raises(ValueError):
        t.entries(where=[("doc", "=", "x")])


def test_repo__users_roles_and_revocation(store):
    u = store.create_user("Doc@Example.org", "hash", name="Dr Who")
    with pytest.raises(ConflictError):
        store.create_user("doc@example.org", "hash")
    store.grant("fam-1", u["id"], "doctor", by=None)
    assert store.role("fam-1", u["id"]) == "doctor" and store.role("fam-2", u["id"]) is None
    assert store.revoke("fam-1", u["id"])
    assert store.role("fam-1", u["id"]) is None
    with pytest.raises(ValueError):
        store.grant("fam-1", u["id"], "superuser", by=None)


def test_repo__secrets_kept_hashed(store):
    store.add_api_secret("fam-1", "0" * 40)
    assert store.api_secret("0" * 40)["tenant_id"] == "fam-1"
    assert store.api_secret("1" * 40) is None
    assert "0" * 40 not in str(store.db.query("SELECT * FROM api_secrets"))


def test_repo__refresh_token_single_use(store):
    u = store.create_user("p@example.org", "hash")
    store.add_refresh_token("jti-1", u["id"], 9e12)
    assert store.use_refresh_token("jti-1") == (u["id"], "jti-1")
    assert store.use_refresh_token("jti-1") is None


def test_repo__purge_removes_only_that_tenant(store):
    a, b = store.tenant("fam-1"), store.tenant("fam-2")
    a.put_rows([_rec(1, 100, n=3)])
    b.put_rows([_rec(1, 100, n=3, dev="0123456789ab")])
    assert a.purge() == 3
    assert a.count_rows() == 0 and b.count_rows() == 3


def test_repo__dropped_rows_are_accounted_for(store):
    t = store.tenant("fam-1")
    t.put_rows([_rec(1, 100, n=3), _rec(10, 109, n=2)])
    assert store.advance_hwm(DEV, features.ROOM) == 3
    store.add_dropped(DEV, features.ROOM, [(4, 6)])
    assert store.missing_seqs(DEV, features.ROOM) == [(7, 9)]  # dropped rows are not asked for
    store.add_dropped(DEV, features.ROOM, [(7, 9)])
    assert store.advance_hwm(DEV, features.ROOM) == 11
    assert store.dropped_count(DEV) == 6
