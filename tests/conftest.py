"""Shared fixtures: the real MicroPython interpreter, free ports and paths."""

import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Before any nightlink module is imported: a database statement or password hash on an event
# loop's thread raises (nightlink/sql.py off_loop), here and in the servers tests start.
os.environ["NIGHTLINK_STRICT_LOOP"] = "1"

from tests.support.micropython import run_micropython
from tests.support.services import Broker, PostgresServer, free_port  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
# Mail the cloud sends while tested (sign-ups, invitations, also from fuzzed requests) goes
# into a folder of this session, never into the working directory; tests that read mail give
# their own NIGHTLINK_MAIL_DIR.
# The folder is made once, by the process that finds none set (xdist's workers inherit it), and
# removed when that process ends.
if "NIGHTLINK_MAIL_DIR" not in os.environ:
    os.environ["NIGHTLINK_MAIL_DIR"] = tempfile.mkdtemp(prefix="nightlink-test-mail-")
    atexit.register(shutil.rmtree, os.environ["NIGHTLINK_MAIL_DIR"], True)


@pytest.fixture(scope="session")
def micropython():
    """The run_micropython function, for tests marked `micropython`."""
    return run_micropython


@pytest.fixture
def mpy_json(tmp_path):
    """Run a script under MicroPython and parse the last line it prints as JSON."""

    def run(script, **kw):
        out = run_micropython(script, **kw).strip().splitlines()
        assert out, "the MicroPython script printed nothing"
        return json.loads(out[-1])

    return run


@pytest.fixture
def mosquitto(tmp_path):
    """A running broker: `.host`, `.port`; `.stop()` and `.start()` for fault tests."""
    broker = Broker(tmp_path).start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def postgres_server():
    """One private PostgreSQL for the session; skipped, saying why, when there is none."""
    if not PostgresServer.available():
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed; "
                    "the PostgreSQL backend tests are skipped.")
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def cloud_db_url(request, tmp_path):
    """A fresh, empty cloud database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'cloud.db'}"
    server = request.getfixturevalue("postgres_server")
    import uuid

    return server.create_database("t" + uuid.uuid4().hex[:12])


def pytest_terminal_summary(terminalreporter):
    """Print what the fault tests counted (kills survived, rows, duplicates, drops)."""
    lines = [
        f"{rep.nodeid.split('::')[-1]}: {value}"
        for rep in terminalreporter.stats.get("passed", [])
        for key, value in getattr(rep, "user_properties", [])
        if key == "fault_counts"
    ]
    if lines:
        terminalreporter.section("fault-test counts")
        for line in sorted(lines):
            terminalreporter.write_line(line)


@pytest.fixture
def postgres_url(postgres_server):
    """A fresh, empty PostgreSQL database."""
    import uuid

    return postgres_server.create_database("t" + uuid.uuid4().hex[:12])
