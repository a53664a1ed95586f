"""Private Mosquitto and PostgreSQL servers on free loopback ports, for tests and benchmarks."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

_PORT_BASE = 20_000  # below Linux's ephemeral range (32768+), so no outgoing socket takes one
_PORTS_PER_WORKER = 1_000
_next_port = [0]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on, from a block only this test worker
    uses (pytest-xdist's PYTEST_XDIST_WORKER gwN takes the Nth block): a server started on
    it next cannot lose it to another worker picking the same free port at the same time.
    NIGHTLINK_PORT_BLOCK shifts the blocks, so two test sessions on one machine stay apart."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    shift = os.environ.get("NIGHTLINK_PORT_BLOCK", "0")
    block = ((int(worker) if worker.isdecimal() else 0)
             + (int(shift) if shift.isdecimal() else 0)) % 12
    for _ in range(_PORTS_PER_WORKER):
        port = _PORT_BASE + block * _PORTS_PER_WORKER + _next_port[0] % _PORTS_PER_WORKER
        _next_port[0] += 1
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in this worker's block from {_PORT_BASE}")


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )


class Broker:
    """A real Mosquitto process on a free loopback port. `extra` adds config lines."""

    def __init__(self, workdir: Path, extra: str = "", anonymous: bool = True):
        self.host = "127.0.0.1"
        self.port = free_port()
        self.conf = Path(workdir) / "mosquitto.conf"
        self.log = Path(workdir) / "mosquitto.log"  # never a pipe: a full one would stall it
        self.conf.write_text(
            f"listener {self.port} {self.host}\nallow_anonymous {str(anonymous).lower()}\n"
            "persistence false\nlog_dest stderr\nlog_type error\nlog_type warning\n" + extra
        )
        self.proc = None

    def start(self) -> Broker:
        binary = mosquitto_binary()
        if binary is None:
            raise RuntimeError("mosquitto is not installed: run `make test`, which installs it.")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([binary, "-c", str(self.conf)],
                                         stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log_text()[-2000:]}")
            with socket.socket() as s:
                if s.connect_ex((self.host, self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on port {self.port} within 10 s")

    def log_text(self) -> str:
        """What the broker logged (its stderr), for failure messages."""
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def pg_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / name).exists():
            return str(d / name)
    return None


class PostgresServer:
    """A private PostgreSQL cluster made with initdb and started with pg_ctl on a free port."""

    def __init__(self):
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="nl-pg-"))
        self.data = self.dir / "data"
        self.user = "nightlink"
        self._as: list[str] = []
        if hasattr(os, "geteuid") and os.geteuid() == 0:  # initdb refuses to run as root
            import pwd

            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    @staticmethod
    def available() -> bool:
        return pg_binary("initdb") is not None and pg_binary("pg_ctl") is not None

    def _run(self, *cmd):
        subprocess.run([*self._as, *cmd], check=True, capture_output=True, timeout=120)

    def start(self) -> PostgresServer:
        """Make the cluster (the first time) and start it; after halt(), start it again on
        the same port with what it held."""
        if not self.data.exists():
            self._run(pg_binary("initdb"), "-D", str(self.data), "-A", "trust", "-U",
                      self.user, "--no-sync", "-E", "UTF8")
        opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100")
        self._run(pg_binary("pg_ctl"), "-D", str(self.data), "-o", opts, "-l",
                  str(self.dir / "log"), "-w", "start")
        return self

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def halt(self) -> None:
        """Stop the server as a crash or a lost host would (every session ended without a
        word); its files stay for start()."""
        self._run(pg_binary("pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():  # not already halted
                self.halt()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
