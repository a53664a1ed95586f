"""Shared fixtures: the real MicroPython interpreter, free ports and paths."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.services import Broker, PostgresServer, free_port  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
MPY_RUNNER = ROOT / "tests" / "mpy" / "run.mjs"


class MicroPythonError(AssertionError):
    """The script raised under MicroPython; the message holds its traceback."""


def run_micropython(script, libs=(), puts=(), heap=256 * 1024, timeout=120):
    """Run a script file under MicroPython (WebAssembly port, Node) and return its stdout.

    libs: folders (shared/, device/) that become the packages /lib/nightlink/<folder name>,
    as the clock's image lays them out.
    puts: (source path, destination path) pairs copied into the virtual file system.
    """
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("Node.js is needed to run MicroPython tests; install nodejs.")
    if not (ROOT / "node_modules" / "@micropython").is_dir():
        raise RuntimeError("The MicroPython npm package is missing: run `make test` (npm ci).")
    cmd = [node, str(MPY_RUNNER), "--heap", str(heap)]
    for lib in libs:
        cmd += ["--lib", str(lib)]
    for src, dest in puts:
        cmd += ["--put", f"{src}:{dest}"]
    cmd.append(str(script))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if proc.returncode != 0:
        raise MicroPythonError(f"MicroPython failed:\n{proc.stderr}\n{proc.stdout}")
    return proc.stdout


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
