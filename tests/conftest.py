"""Shared fixtures: the real MicroPython interpreter, free ports and paths."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MPY_RUNNER = ROOT / "tests" / "mpy" / "run.mjs"


class MicroPythonError(AssertionError):
    """The script raised under MicroPython; the message holds its traceback."""


def run_micropython(script, libs=(), puts=(), heap=256 * 1024, timeout=120):
    """Run a script file under MicroPython (WebAssembly port, Node) and return its stdout.

    libs: folders whose .py files go flat into /lib, as deployed on the board.
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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if found is None:
        raise RuntimeError("mosquitto is not installed: run `make test`, which installs it.")
    return found


class Broker:
    """A real Mosquitto process on a free loopback port, owned by one test."""

    def __init__(self, workdir: Path):
        self.host = "127.0.0.1"
        self.port = free_port()
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} {self.host}\nallow_anonymous true\npersistence false\n"
            "log_dest stderr\nlog_type error\nlog_type warning\n"
        )
        self.proc = None

    def start(self):
        import socket
        import time

        self.proc = subprocess.Popen(
            [_mosquitto_binary(), "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.proc.stderr.read().decode()}")
            with socket.socket() as s:
                if s.connect_ex((self.host, self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on port {self.port} within 10 s")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def mosquitto(tmp_path):
    """A running broker: `.host`, `.port`; `.stop()` and `.start()` for fault tests."""
    broker = Broker(tmp_path).start()
    yield broker
    broker.stop()


class PostgresServer:
    """A private PostgreSQL cluster made with initdb and started with pg_ctl on a free port."""

    def __init__(self):
        import tempfile

        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="nl-pg-"))
        self.data = self.dir / "data"
        self.user = "nightlink"
        self._as = []
        if hasattr(os, "geteuid") and os.geteuid() == 0:  # initdb refuses to run as root
            import pwd

            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *cmd):
        subprocess.run([*self._as, *cmd], check=True, capture_output=True, timeout=120)

    def start(self):
        self._run(_pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", self.user,
                  "--no-sync", "-E", "UTF8")
        opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100")
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-o", opts, "-l",
                  str(self.dir / "log"), "-w", "start")
        return self

    def url(self, dbname="postgres"):
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name):
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self):
        import shutil as _shutil

        try:
            self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        finally:
            _shutil.rmtree(self.dir, ignore_errors=True)


def _pg_bin(name):
    found = shutil.which(name)
    if found:
        return found
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / name).exists():
            return str(d / name)
    return None


@pytest.fixture(scope="session")
def postgres_server():
    """One private PostgreSQL for the session; skipped, saying why, when there is none."""
    if _pg_bin("initdb") is None or _pg_bin("pg_ctl") is None:
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
