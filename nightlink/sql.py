"""SQL for the edge node, the cloud and the Nightscout store: one connection type over SQLite
(WAL, one writer) or PostgreSQL (psycopg 3), and one migrations runner.

Each tier's store package writes its statements once, with `?` placeholders and a portable
subset (ON CONFLICT, RETURNING); the few DDL words that differ are filled in per backend.
"""

from __future__ import annotations

import logging
import os
import select
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

_LOGGER = logging.getLogger(__name__)
SHARE_RETRY_S = 30.0  # a store read alone that another program holds: opened again this late


class DatabaseError(Exception):
    """The database cannot be opened or a statement failed; the message says which."""


# The cloud's event loop never waits on the database: a statement waits for a lock another
# writer holds (SQLite's busy timeout, a PostgreSQL row lock) or for a server that stopped
# answering, and every other request, socket and timer of that process would wait with it.
# The tests run with NIGHTLINK_STRICT_LOOP=1, under which a statement on a database whose
# `loop_guard` is set (the cloud's, and the live edge node's store while it runs), or a
# password hash, on an event loop raises OnEventLoop.
_STRICT_LOOP = os.environ.get("NIGHTLINK_STRICT_LOOP") == "1"


class OnEventLoop(BaseException):
    """Blocking work was called on a thread running an asyncio event loop (strict mode). A
    BaseException, as pytest's own outcomes: the `except Exception` that keeps a worker alive
    must not hide it."""


def off_loop(what: str = "a database statement") -> None:
    """Under NIGHTLINK_STRICT_LOOP=1, raise OnEventLoop when called on an event loop's thread;
    otherwise nothing (the check costs one flag test)."""
    if not _STRICT_LOOP:
        return
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return  # a worker thread, or no loop at all (the CLI, the edge's own threads)
    raise OnEventLoop(f"{what} ran on the event loop; run it in a worker thread "
                      "(asyncio.to_thread or run_in_threadpool)")


class NotThisStore(DatabaseError):
    """The file is another program's database or the other tier's store; a whole sentence."""


class IntegrityError(DatabaseError):
    """A uniqueness or foreign-key rule refused a write."""


class Database:
    """What the repository needs from a backend."""

    kind = ""
    loop_guard = False  # strict mode: a statement on an event loop raises (off_loop)
    # DDL words that differ between backends.
    AUTO_ID = ""
    BLOB = ""
    BIGINT = "BIGINT"

    @property
    def url(self) -> str | None:
        """A URL another process opens this same database with (`connect`), None when no
        other process can (SQLite in memory, or a file opened for this connection alone)."""
        return None

    def execute(self, sql: str, params: Sequence = ()) -> int:
        """Run one statement; return the number of rows it changed."""
        raise NotImplementedError

    def executemany(self, sql: str, rows: Sequence[Sequence]) -> int:
        raise NotImplementedError

    def query(self, sql: str, params: Sequence = ()) -> list[dict]:
        raise NotImplementedError

    def one(self, sql: str, params: Sequence = ()) -> dict | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def scalar(self, sql: str, params: Sequence = ()):
        row = self.one(sql, params)
        return next(iter(row.values())) if row else None

    @contextmanager
    def transaction(self) -> Iterator[None]:
        raise NotImplementedError
        yield

    def close(self) -> None:
        raise NotImplementedError


class SQLiteDatabase(Database):
    """One file, WAL, one writer at a time (a lock), reads from any thread.

    A SELECT outside the calling thread's own transaction runs on a connection of that
    thread's (query_only): WAL lets it read the last commit while a write is under way, so a
    read never waits for another thread's write, nor for another program holding the write
    lock, nor for a durable commit reaching an SD card. A thread's reads inside its own
    transaction, and every read of a file opened alone (`alone`) or in memory, go through the
    one writing connection, under its lock, as writes do."""

    kind = "sqlite"
    AUTO_ID = "INTEGER PRIMARY KEY AUTOINCREMENT"
    BLOB = "BLOB"
    BIGINT = "INTEGER"

    def __init__(self, path: Path | str, *, durable: bool = False,
                 alone_when_full: bool = False):
        """`durable`: every commit reaches the disk before it returns (synchronous=FULL), so
        a power cut loses nothing already answered for (a Pi's SD card); otherwise a power
        cut may lose the last commits, never the file's soundness (synchronous=NORMAL).

        `alone_when_full` (the live edge node's): a WAL file cannot even be read on a
        filesystem too full for its shared-memory index (`-shm`, 32 KB): it is then opened
        for this connection alone (an exclusive lock, the index in this process's memory;
        `alone` says so), or, when not even the `-wal` can be made (no inode left) and none
        is there, read-only as it is on disk (`alone` = "read-only"). `share()` opens it
        again as usual once there is room."""
        self.path = str(path)
        self._durable = durable
        self.alone = ""  # "exclusive" or "read-only" when opened alone on a full filesystem
        self._owner: int | None = None  # the thread whose transaction is under way
        self._local = threading.local()  # each thread's reading connection
        self._readers: list[sqlite3.Connection] = []  # all of them, closed with the file
        self._readers_lock = threading.Lock()
        self._generation = 0  # the writing connection's: readers of an older one are closed
        self._closed = False
        if self.path != ":memory:":
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            except (FileExistsError, NotADirectoryError):
                raise DatabaseError(f"{self.path} cannot be made: a part of its folder's path "
                                    "is a file, not a folder.") from None
        try:
            self._connect()
        except sqlite3.DatabaseError as exc:
            why = storage_problem(self.path)
            if not (alone_when_full and why and self._connect_alone()):
                raise DatabaseError(
                    f"{self.path} cannot be opened: {why}." if why else
                    f"{self.path} is not a usable SQLite database ({exc}): it is damaged, or "
                    f"not a Nightlink database. {recovery(self.path).capitalize()}.") from None
        self._lock = threading.RLock()
        self._depth = 0
        self._undo: list[Callable[[], None]] = []  # on_rollback's, in the transaction under way

    def _connect(self, alone: str = "", *, wait_s: float = 5.0) -> None:
        if alone == "read-only":  # nothing written, not even a -wal: only while there is none
            conn = sqlite3.connect(f"{Path(self.path).absolute().as_uri()}?immutable=1",
                                   uri=True, check_same_thread=False, isolation_level=None)
        else:
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                   timeout=wait_s)
        try:
            conn.row_factory = sqlite3.Row
            if alone == "exclusive":  # before WAL is used: no -shm, the index in memory
                conn.execute("PRAGMA locking_mode=EXCLUSIVE")
            if alone != "read-only":
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={'FULL' if self._durable else 'NORMAL'}")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=10000")
            if alone:
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # a first read
        except sqlite3.DatabaseError:
            conn.close()
            raise
        self.conn, self.alone = conn, alone
        self._seen, self._retry_at = self._file_state(), 0.0
        self._close_readers()  # opened again, or alone now: no reader of the one before

    def _close_readers(self) -> None:
        with self._readers_lock:
            readers, self._readers = self._readers, []
            self._generation += 1
        for conn in readers:
            conn.close()

    def _reader(self, sql: str) -> sqlite3.Connection | None:
        """The calling thread's reading connection for sql, or None: the writing one reads it
        (not a SELECT, the thread's own transaction, a file opened alone or in memory)."""
        if (self.alone or self._closed or self.path == ":memory:"
                or sql.lstrip()[:6].upper() != "SELECT"
                or (self._depth and self._owner == threading.get_ident())):
            return None
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is not None and local.generation == self._generation:
            return conn
        try:
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                   timeout=10.0)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA query_only=ON")
            conn.execute("PRAGMA busy_timeout=10000")
        except sqlite3.DatabaseError:
            return None  # the writing connection reads it, as before
        with self._readers_lock:
            if self.alone or self._closed:  # opened alone, or closed, meanwhile
                conn.close()
                return None
            self._readers.append(conn)
            local.conn, local.generation = conn, self._generation
        return conn

    def _file_state(self) -> tuple:
        """What tells that another program wrote the file: its size and time, a -wal."""
        try:
            st = os.stat(self.path)
        except OSError:
            return ()
        return st.st_size, st.st_mtime_ns, os.path.exists(self.path + "-wal")

    def _written_since(self) -> bool:
        now = self._file_state()
        return bool(now) and now != self._seen and time.monotonic() >= self._retry_at

    def _connect_alone(self) -> bool:
        """Open the file for this connection alone (the filesystem is full); whether it is."""
        return self._connect_first("exclusive")

    def _connect_first(self, *modes: str, wait_s: float = 5.0) -> bool:
        """Open the file in the first of these modes that works, then read-only as it is on
        disk, but only while no -wal holds commits not yet in the file (read as it is, they
        would be missed); whether one worked."""
        for alone in (*modes, "read-only"):
            if alone == "read-only" and os.path.exists(self.path + "-wal"):
                break
            try:
                self._connect(alone, wait_s=wait_s)
                return True
            except sqlite3.DatabaseError:
                continue
        return False

    def share(self, *, force: bool = False) -> bool:
        """A file opened alone (`alone`) on a full filesystem: open it again as usual, for
        other processes too (`nightlink edge status`, a backup), once there is room (with
        `force`, whatever the room: another program wrote it); whether it is shared now
        (else it is tried again at the next call)."""
        with self._lock:
            if not self.alone:
                return True
            if self._depth or (storage_problem(self.path) and not force):
                return False
            was = self.alone
            self.conn.close()  # its WAL checkpointed into the file when there is room
            # as alone as it must; briefly when forced: the node's loop waits on this lock
            if not self._connect_first("", "exclusive", wait_s=0.5 if force else 5.0):
                # another program holds it (a write under way): as before, tried later
                seen = self._seen
                self._connect(was)
                self._seen, self._retry_at = seen, time.monotonic() + SHARE_RETRY_S
            return not self.alone

    def _run(self, fn):
        if self.loop_guard:
            off_loop()
        with self._lock:
            if self.alone == "read-only" and not self._depth and self._written_since():
                # another program had room to write it (an import): read it as it is now,
                # not as the immutable connection took it
                self.share(force=True)
            try:
                return fn()
            except sqlite3.IntegrityError as exc:
                raise IntegrityError(str(exc)) from None
            except sqlite3.DatabaseError as exc:
                raise DatabaseError(self._explained(exc)) from None

    def _explained(self, exc: sqlite3.DatabaseError) -> str:
        """SQLite's words, and what they mean for this file: a full or read-only filesystem
        (SQLite says "disk I/O error" when the kernel turned it read-only), a damaged file."""
        text = str(exc)
        if isinstance(exc, sqlite3.OperationalError) or "malformed" in text:
            why = storage_problem(self.path)
            if why:
                return f"{text}: {why}"
        if "malformed" in text or "not a database" in text:
            return f"{text}: {self.path} is damaged; {recovery(self.path)}"
        return text

    @property
    def url(self) -> str | None:
        if self.path == ":memory:" or self.alone:
            return None
        return f"sqlite:///{Path(self.path).absolute()}"

    def execute(self, sql, params=()):
        return self._run(lambda: self.conn.execute(sql, tuple(params)).rowcount)

    def executemany(self, sql, rows):
        return self._run(lambda: self.conn.executemany(sql, rows).rowcount)

    def query(self, sql, params=()):
        reader = self._reader(sql)
        if reader is None:
            return self._run(
                lambda: [dict(r) for r in self.conn.execute(sql, tuple(params)).fetchall()]
            )
        if self.loop_guard:
            off_loop()
        try:
            return [dict(r) for r in reader.execute(sql, tuple(params)).fetchall()]
        except sqlite3.DatabaseError as exc:
            raise DatabaseError(self._explained(exc)) from None

    @contextmanager
    def transaction(self):
        """BEGIN … COMMIT; a failing BEGIN or COMMIT (a full disk, an I/O error) raises
        DatabaseError like any statement, with the transaction rolled back."""
        if self.loop_guard:
            off_loop()
        with self._lock:
            outer = self._depth == 0
            if outer:
                self._run(lambda: self.conn.execute("BEGIN IMMEDIATE"))
                self._undo = []
                self._owner = threading.get_ident()
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth -= 1
                if outer:
                    self._rollback()
                raise
            self._depth -= 1
            if outer:
                try:
                    self._run(lambda: self.conn.execute("COMMIT"))
                except DatabaseError:
                    self._rollback()
                    raise
                self._undo = []

    def on_rollback(self, undo: Callable[[], None]) -> None:
        """Call undo if the transaction under way is rolled back (its COMMIT refused too):
        what the caller changed in memory with it."""
        self._undo.append(undo)

    def _rollback(self) -> None:
        """Roll back what is still open: SQLite may have done it already (SQLITE_FULL), and
        a second ROLLBACK would hide the error that caused it."""
        if self.conn.in_transaction:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.DatabaseError:
                pass
        undo, self._undo = self._undo, []
        for fn in reversed(undo):
            fn()

    def close(self):
        with self._lock:
            self._closed = True  # a read after this fails, as on the writing connection
            self.conn.close()
            self._close_readers()


def storage_problem(path: str, *, low_bytes: int = 1 << 20) -> str | None:
    """Why a database file may not be written, in words, or None: the filesystem holding it
    is read-only or (nearly) full, or this user may not write the file or its folder."""
    if path == ":memory:":
        return None
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fs = os.statvfs(folder)
    except OSError:
        return None
    if fs.f_flag & os.ST_RDONLY:
        return f"the filesystem holding {folder} is read-only (an SD card the kernel " \
               "remounted read-only after errors? check `dmesg`)"
    free = fs.f_bavail * fs.f_frsize
    if free < low_bytes:
        return f"the filesystem holding {folder} is full ({free // 1024} KB free)"
    if fs.f_files and not fs.f_favail:
        return f"the filesystem holding {folder} has no inode left for a new file (`df -i`)"
    for target in (path, path + "-wal", path + "-shm", folder):  # SQLite writes all three
        if os.path.exists(target) and not os.access(target, os.W_OK):
            return f"{target} may not be written by this user"
    return None


def recovery(path: str) -> str:
    """What to do with a damaged SQLite database file, in words."""
    return (f"put back a copy (docs/deploy.md: with the program stopped, and "
            f"{Path(path).name}-wal and -shm removed from beside it first) or recover what it "
            f"holds with `sqlite3 {path} .recover`")


def quick_check(path: str) -> str | None:
    """What SQLite's quick_check finds wrong with a database file, or None when it is sound.
    On a connection of its own, read-only: the file's writers are not held up."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.DatabaseError as exc:
        return str(exc)
    try:
        rows = [r[0] for r in conn.execute("PRAGMA quick_check(3)").fetchall()]
    except sqlite3.DatabaseError as exc:
        return str(exc)
    finally:
        conn.close()
    return None if rows == ["ok"] else "; ".join(rows)


def connect_problem(where: str, error: str, role: str | None = None) -> str:
    """One sentence for a PostgreSQL server that could not be used: unreachable, reached and
    refusing the login (a peer login lets in only the system user of the role's name), or
    reached without the role or database the URL names."""
    detail = " ".join(error.split())
    if any(refused in detail for refused in ("authentication failed", "no password supplied",
                                             "no pg_hba.conf entry")):
        return (f"PostgreSQL at {where} refused the login ({detail}): run the command as the "
                f"system user the role is named after (runuser -u {role or 'nightlink'} -- ...) "
                "for a peer login, or give the role's password in the URL; pg_hba.conf says "
                "which the server takes.")
    if "does not exist" in detail:
        return (f"PostgreSQL at {where} answered, but {detail.rsplit('FATAL: ', 1)[-1]}: create "
                "it as the user postgres (createuser; createdb -O ROLE NAME) or correct the "
                "URL.")
    return f"PostgreSQL at {where} cannot be reached ({detail})."


def _role(dsn: str) -> str | None:
    """The role a PostgreSQL URL logs in as, if it names one."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        return conninfo_to_dict(dsn).get("user")
    except Exception:  # noqa: BLE001 - a URL psycopg cannot read names no role
        return None


# A server that takes the connection and never answers (frozen, its host gone, a firewall
# dropping packets) would hold a request, and the event loop serving it, for minutes: libpq
# waits as long as TCP does. These bound it; a URL that sets one keeps its own.
CONNECT_DEFAULTS = {
    "connect_timeout": "5",  # seconds to connect and log in
    "keepalives": "1", "keepalives_idle": "30", "keepalives_interval": "10",
    "keepalives_count": "3",  # an idle connection to a vanished host is noticed in a minute
    "tcp_user_timeout": "30000",  # ms a sent statement may wait for the host's TCP ack
}


def _connect_options(dsn: str) -> dict:
    """CONNECT_DEFAULTS that the URL does not set itself."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        given = conninfo_to_dict(dsn)
    except Exception:  # noqa: BLE001 - psycopg.connect says what is wrong with the URL
        return {}
    return {k: v for k, v in CONNECT_DEFAULTS.items() if k not in given}


def _spoke_while_idle(conn) -> bool:
    """Whether an idle PostgreSQL connection's socket has something to read: the server's
    end of the session, or a last message before it (nothing is awaited from it)."""
    try:
        return bool(select.select([conn.fileno()], [], [], 0)[0])
    except (OSError, ValueError):
        return True


class PostgresDatabase(Database):
    """A psycopg 3 connection pool; each thread's statements run on a pooled connection."""

    kind = "postgres"
    AUTO_ID = "BIGSERIAL PRIMARY KEY"
    BLOB = "BYTEA"
    BIGINT = "BIGINT"

    def __init__(self, dsn: str, *, pool_size: int = 8):
        import psycopg
        from psycopg.rows import dict_row

        self._psycopg = psycopg
        self.dsn = dsn
        self._local = threading.local()
        self._dict_row = dict_row
        self._all: list = []
        self._lock = threading.Lock()
        self.pool_size = pool_size
        self._options = _connect_options(dsn)
        try:
            self._conn()
        except psycopg.Error as exc:
            raise DatabaseError(connect_problem(_safe_dsn(dsn), str(exc), _role(dsn))) from None

    def _conn(self):
        conn = getattr(self._local, "conn", None)
        if conn is not None and not conn.closed and not getattr(self._local, "depth", 0) \
                and _spoke_while_idle(conn):
            # A server that crashed or restarted ended this session without a word: the
            # socket reads its end (or a last error) while nothing was asked. A new
            # connection now costs the request nothing; the old one would fail it.
            self._forget(conn)
            conn = None
        if conn is None or conn.closed:
            conn = self._psycopg.connect(self.dsn, autocommit=True, row_factory=self._dict_row,
                                         **self._options)
            self._local.conn = conn
            self._local.depth = 0
            with self._lock:
                self._all.append(conn)
        return conn

    @staticmethod
    def _sql(sql: str) -> str:
        return sql.replace("?", "%s")

    def _run(self, fn):
        """fn on this thread's connection. A connection the server ended while it sat idle
        (PostgreSQL restarted: "terminating connection due to administrator command") fails
        its next statement, which did not run; outside a transaction that statement is run
        once more on a new connection, so a restart costs no request an error."""
        if self.loop_guard:
            off_loop()
        psycopg = self._psycopg
        for attempt in (1, 2):
            conn = None
            try:
                conn = self._conn()
                return fn(conn)
            except psycopg.errors.IntegrityError as exc:
                raise IntegrityError(str(exc)) from None
            except psycopg.Error as exc:
                lost = conn is not None and (conn.broken or conn.closed)
                if lost:
                    self._forget(conn)
                # Only a session the server ended while it sat idle (SQLSTATE 57P01, admin
                # shutdown) ran nothing of the statement: anything else may have, and a write
                # run twice is worse than an error.
                if not (lost and attempt == 1 and exc.sqlstate == "57P01"
                        and not getattr(self._local, "depth", 0)):
                    raise DatabaseError(str(exc)) from None
        raise AssertionError("unreachable")

    def _forget(self, conn) -> None:
        """Drop a connection the server closed; the next statement opens a new one."""
        self._local.conn = None
        with self._lock:
            if conn in self._all:
                self._all.remove(conn)
        try:
            conn.close()
        except self._psycopg.Error:
            pass

    @staticmethod
    def _params(params: Sequence) -> tuple:
        """PostgreSQL's text holds no NUL character: one in a query's text (a `%00` in an
        address, a sign-in's e-mail) would fail the statement and answer 503 as if the
        database were down. It becomes U+FFFD, so it matches nothing stored, as on SQLite."""
        return tuple(p.replace("\x00", "\ufffd") if isinstance(p, str) and "\x00" in p else p
                     for p in params)

    @property
    def url(self) -> str | None:
        return self.dsn

    def execute(self, sql, params=()):
        return self._run(lambda c: c.execute(self._sql(sql), self._params(params)).rowcount)

    def executemany(self, sql, rows):
        def run(c):
            with c.cursor() as cur:
                cur.executemany(self._sql(sql), [self._params(r) for r in rows])
                return cur.rowcount

        return self._run(run)

    def query(self, sql, params=()):
        return self._run(lambda c: list(c.execute(self._sql(sql),
                                                  self._params(params)).fetchall()))

    @contextmanager
    def transaction(self):
        conn = self._run(lambda c: c)  # a lost server raises DatabaseError here
        if self._local.depth:
            self._local.depth += 1
            try:
                yield
            finally:
                self._local.depth -= 1
            return
        self._local.depth = 1
        entered = False
        try:
            for attempt in (1, 2):
                try:
                    with conn.transaction():
                        entered = True
                        yield
                    break
                except self._psycopg.errors.IntegrityError:
                    raise
                except self._psycopg.Error:
                    # BEGIN on a connection the server dropped while idle: once more on a
                    # new one (nothing of the body ran); anything later is the caller's
                    if entered or attempt == 2 or not (conn.broken or conn.closed):
                        raise
                    self._forget(conn)
                    conn = self._conn()
                    self._local.depth = 1  # _conn() starts a new connection at depth 0
        except self._psycopg.errors.IntegrityError as exc:
            raise IntegrityError(str(exc)) from None
        except self._psycopg.Error as exc:  # BEGIN or COMMIT failed (the server went away)
            raise DatabaseError(str(exc)) from None
        finally:
            self._local.depth = 0

    def close(self):
        with self._lock:
            for c in self._all:
                c.close()
            self._all.clear()


def _safe_dsn(dsn: str) -> str:
    """The DSN without its password, for messages."""
    import re

    return re.sub(r"(password=)\S+|(://[^:/@]+:)[^@]+@", lambda m: (m.group(1) or m.group(2))
                  + "***" + ("" if m.group(1) else "@"), dsn)


def connect(url: str) -> Database:
    """A database from a URL: `sqlite:///path/to/file.db` or `postgresql://…`."""
    if url.startswith("sqlite:///"):
        if not url[len("sqlite:///"):]:  # silently in memory, everything "stored" lost
            raise DatabaseError("The database URL sqlite:/// names no file; write "
                                "sqlite:///path/to/the.db.")
        return SQLiteDatabase(url[len("sqlite:///"):])
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresDatabase(url)
    raise DatabaseError(
        f"The database URL must start with sqlite:/// or postgresql://, not {url.split(':')[0]!r}."
    )


# A migration step: one statement (DDL words as {AUTO_ID}, {BLOB}, {BIGINT}) or a function
# that moves data with the database it is given.
Step = str | Callable[[Database], None]


# Each store's own record of its migrations: a file holding the other's is the other store.
MIGRATION_TABLES = {"schema_migrations": "cloud database", "_migrations": "edge store"}


def _not_anothers(db: Database, table: str, label: str) -> None:
    """DatabaseError when a SQLite file without this store's migrations already holds tables:
    another program's database, or the other tier's store (the edge's given as the cloud's),
    would otherwise get this store's tables added to it, and half of them on a clash."""
    names = [r["name"] for r in db.query(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY name")]
    if not names or table in names:
        return
    other = next((what for t, what in MIGRATION_TABLES.items() if t in names and t != table),
                 None)
    what = f"a Nightlink {other}" if other else f"another program's ({', '.join(names[:3])}…)"
    mine = MIGRATION_TABLES.get(table, f"{label} database".strip())
    raise NotThisStore(f"{db.path} is {what}, not a Nightlink {mine}; give a new file or the "
                       "right one.")


def migrate(db: Database, migrations: Sequence[tuple[int, str, Sequence[Step]]], *,
            table: str = "schema_migrations", lock_key: int = 7242024, label: str = "") -> int:
    """Apply every numbered migration not yet applied, each in its own transaction; return the
    schema version.

    Migrations are append-only. Several processes may start at once (API and ingest workers):
    PostgreSQL serialises them with an advisory lock, SQLite with its write lock, and each
    re-reads what is done inside its transaction. A database holding a migration this code
    does not have under that number and name (a newer Nightlink's, or one withdrawn) is
    refused with DatabaseError before anything is written: older code would misread it.
    """
    if db.kind == "sqlite":
        _not_anothers(db, table, label)
    db.execute(f"CREATE TABLE IF NOT EXISTS {table} "
               "(id INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)")
    # Read first: a database already up to date opens without waiting for the write lock (a
    # long import or a busy node holding it would otherwise stop `edge status`).
    done = {r["id"]: r["name"] for r in db.query(f"SELECT id, name FROM {table}")}
    known = {number: name for number, name, _ in migrations}
    strange = sorted((n, name) for n, name in done.items() if known.get(n) != name)
    if strange:
        number, name = strange[0]
        raise DatabaseError(
            f"the {label + ' ' if label else ''}database holds migration {number} ({name}), "
            f"which this version of Nightlink does not have (it knows up to "
            f"{max(known, default=0)}): it was written by a newer version; run that version, "
            "or restore a backup made before it")
    for number, name, steps in migrations:
        if number in done:
            continue
        with db.transaction():
            if db.kind == "postgres":
                db.execute("SELECT pg_advisory_xact_lock(?)", (lock_key,))
            if db.one(f"SELECT id FROM {table} WHERE id = ?", (number,)):
                continue
            for step in steps:
                if callable(step):
                    step(db)
                else:
                    db.execute(step.format(AUTO_ID=db.AUTO_ID, BLOB=db.BLOB, BIGINT=db.BIGINT))
            db.execute(f"INSERT INTO {table} (id, name, applied_at) VALUES (?, ?, ?)",
                       (number, name, time.time()))
        _LOGGER.info("applied %smigration %d (%s)", f"{label} " if label else "", number, name)
    return max((n for n, _, _ in migrations), default=0)


def statements(script: str) -> list[str]:
    """A `;`-separated DDL script as its statements (for migrations written as one script)."""
    return [s.strip() for s in script.split(";") if s.strip()]
