"""The README's "## Deploy" section, run as written: every marked ```sh block goes to bash in
order with the first block's values replaced by temporary folders and free ports. The cloud
on PostgreSQL, its broker with TLS started as root and running as the user `mosquitto`, the
edge with its LAN broker bridged to the cloud, a clock provisioned against the edge, an
uploader's reading posted to the edge and a CGM export imported. Then: the clock's firmware
(the host port, since there is no hardware) shows the reading, the cloud's Nightscout API
gives the rows, and the doctor's portal lists the imported night and opens it.

Long-running blocks start as background processes (what their systemd units run), each
block's output goes to its own log file, and a failing block fails the test with its log."""

import grp
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from hashlib import sha1
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from nightlink.tools.device.build import read_fs_image
from tests.support.readme import blocks, variables
from tests.support.services import free_port, needs_mosquitto_user

VENV_BIN = Path(__file__).resolve().parent.parent / ".venv" / "bin"
PASSWORD = "correct horse battery staple"
EXPORT_TZ = ZoneInfo("Europe/Amsterdam")  # the README's TIMEZONE, the import's --tz


def _needs():
    needs_mosquitto_user()
    for tool in ("openssl", "curl", "sha1sum", "install"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed; the README's commands use it")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait(what: str, ready, log: Path, proc=None, timeout: float = 30.0):
    """Poll ready() until it is true; fail with the service's log if it exits or times out."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what} exited ({proc.returncode}):\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not ready within {timeout:.0f} s:\n{_tail(log)}")
        time.sleep(0.1)


def _tail(path: Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else "(no log)"


def _self_signed(home: Path, host: str) -> None:
    """fullchain.pem and privkey.pem for the broker's name, as an operator makes them for a
    test machine (a real one has them from its CA or certbot)."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
                    f"/CN={host}", "-addext", f"subjectAltName=IP:{host}",
                    "-keyout", str(home / "privkey.pem"), "-out", str(home / "fullchain.pem")],
                   check=True, capture_output=True, timeout=30)


def _clarity_export(path: Path, evening: datetime) -> list[int]:
    """A Dexcom Clarity CSV of one night, 22:00 to 06:00 local, every 5 minutes."""
    lines = ["Index,Timestamp (YYYY-MM-DDThh:mm:ss),Event Type,Event Subtype,Patient Info,"
             "Device Info,Source Device ID,Glucose Value (mg/dL),Insulin Value (u),"
             "Carb Value (grams),Duration (hh:mm:ss),Glucose Rate of Change (mg/dL/min),"
             "Transmitter Time (Long Integer),Transmitter ID"]
    values = []
    for i in range(97):
        t = evening + timedelta(minutes=5 * i)
        value = 110 + (i % 24) * 2
        values.append(value)
        lines.append(f"{i + 1},{t:%Y-%m-%dT%H:%M:%S},EGV,,,,Android G6,{value},,,,,"
                     f"{4012345 + 300 * i},8XXXXX")
    path.write_text("\n".join(lines) + "\n")
    return values


class Operator:
    """Runs the README's blocks in one environment, each with its own log file."""

    def __init__(self, home: Path, logs: Path, env: dict):
        self.home, self.logs, self.env = home, logs, env
        self.services: dict[str, subprocess.Popen] = {}

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def run(self, block) -> str:
        with open(self.log(block.name), "wb") as out:
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", block.text], cwd=self.home,
                                  env=self.env, stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=subprocess.STDOUT, timeout=120)
        text = _tail(self.log(block.name), 100_000)
        assert done.returncode == 0, (f"README block {block.name} failed "
                                      f"({done.returncode}):\n{block.text}\n---\n{text}")
        return text

    def start(self, block) -> subprocess.Popen:
        assert "\n" not in block.text.strip(), f"{block.name}: a service is one command"
        with open(self.log(block.name), "wb") as out:
            proc = subprocess.Popen(["bash", "-c", "exec " + block.text], cwd=self.home,
                                    env=self.env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.services[block.name] = proc
        return proc

    def stop_all(self) -> None:
        for proc in reversed(list(self.services.values())):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.services.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def test_readme_deploy__operator_and_flasher_steps_as_written(postgres_server, record_property):
    _needs()
    t0 = time.monotonic()
    steps = blocks("Deploy", "deploy")
    assert steps[0].kind == "yours", "the Deploy section starts with the reader's settings"
    work = Path(tempfile.mkdtemp(prefix="nl-readme-", dir="/tmp"))
    work.chmod(0o711)  # the user mosquitto reaches its files below (pytest's tmp is root's)
    home, logs = work / "home", work / "logs"
    home.mkdir()
    logs.mkdir()
    api_port, mqtt_port, lan_port, ns_port = (free_port() for _ in range(4))
    tenant, admin, doctor = "smith", "admin@example.org", "doctor@example.org"
    api_secret = "readme-" + uuid.uuid4().hex
    settings = {
        "ETC": str(work / "etc"), "DATA": str(work / "var"),
        "CLOUD": f"http://127.0.0.1:{api_port}", "API_PORT": str(api_port),
        "MQTT_HOST": "127.0.0.1", "MQTT_PORT": str(mqtt_port),
        "NIGHTLINK_DATABASE_URL": postgres_server.create_database("t" + uuid.uuid4().hex[:12]),
        "ADMIN": admin, "DOCTOR": doctor, "TENANT": tenant, "EDGE_HOST": "127.0.0.1",
        "LAN_PORT": str(lan_port), "NS_PORT": str(ns_port), "API_SECRET": api_secret,
        # The test's broker certificate is its own CA, as a private CA's would be.
        "CA_FILE": str(home / "fullchain.pem"),
        # The units' user: here the one running the test (root, for the brokers), since the
        # venv and the test's PostgreSQL (trust over TCP) are its own.
        "SERVICE_USER": pwd.getpwuid(os.geteuid()).pw_name,
        "TIMEZONE": str(EXPORT_TZ),
    }
    assert variables(steps[0]) == set(settings), "the README's settings changed: update the test"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NIGHTLINK_")}
    env.update(settings, PATH=f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}",
               HOME=str(home), XDG_DATA_HOME=str(work / "xdg"), NIGHTLINK_PASSWORD=PASSWORD)
    _self_signed(home, settings["MQTT_HOST"])
    # The latest night (22:00-06:00 local) that has wholly passed an hour ago: run between
    # 22:00 and 07:00, "yesterday evening" would still lie partly in the future, and readings
    # from the future are not data.
    ended_by = (datetime.now(EXPORT_TZ) - timedelta(hours=9)).date()
    evening = datetime.combine(ended_by - timedelta(days=1), datetime.min.time()).replace(
        hour=22, tzinfo=EXPORT_TZ)
    assert evening + timedelta(hours=8, minutes=5) < datetime.now(EXPORT_TZ) - timedelta(hours=1)
    night = evening.date().isoformat()
    imported = _clarity_export(home / "clarity.csv", evening.replace(tzinfo=None))
    op = Operator(home, logs, env)
    cloud = settings["CLOUD"]
    secret_hash = None
    timings = {}
    try:
        for block in steps[1:]:
            started = time.monotonic()
            if block.kind == "service":
                proc = op.start(block)
                ready = {
                    "cloud-broker-run": lambda: _port_open(mqtt_port),
                    "cloud-run": lambda: _ready(cloud),
                    "edge-broker-run": lambda: _port_open(lan_port),
                    "edge-run": lambda: _port_open(ns_port),
                }[block.name]
                _wait(block.name, ready, op.log(block.name), proc)
            elif block.kind == "reload":
                _reload(op, block.target)
            else:
                out = op.run(block)
                if block.name == "cloud-people":
                    secret = re.search(r"API secret \(shown once\): (\S+)", out)[1]
                    secret_hash = sha1(secret.encode()).hexdigest()
                if block.name == "check-upload":
                    # The cloud has it once the edge has closed the epoch it belongs to (30 s,
                    # then close_delay_s) and synced it.
                    _wait("the uploaded reading in the cloud",
                          lambda h=secret_hash: 123 in _sgvs(cloud, tenant, h, "count=1"),
                          op.log("edge-run"), op.services["edge-run"], timeout=90)
                if block.name == "clock-try":
                    _clock_shows(out, op, lan_port, home)
                if block.name == "check-cloud":
                    assert json.loads(out.strip().splitlines()[-1])[0]["sgv"] == 123, out
            timings[block.name] = round(time.monotonic() - started, 1)
        _broker_files_are_the_brokers_own(settings, op)
        # The first-install blocks pasted again (an upgrade, a new shell) lose nothing: the
        # edge's [sync] account and the cloud's secrets exist nowhere else.
        etc = Path(settings["ETC"])
        kept = {name: (etc / name).read_bytes() for name in ("cloud.env", "edge.toml")}
        for block in steps:
            if block.name in ("cloud-env", "edge-config"):
                assert "is kept as it is" in op.run(block), block.name
        assert {name: (etc / name).read_bytes() for name in kept} == kept
        # The LAN broker's bridge trusts the cloud broker through CA_FILE, as the sync does.
        cloud_log = _tail(op.log("cloud-broker-run"), 10**7)
        assert "unknown ca" not in cloud_log and "certificate verify failed" not in cloud_log, \
            cloud_log[-2000:]
        # The imported night reached the cloud through the edge's sync ...
        a, b = (int(t.timestamp() * 1000) for t in (evening, evening + timedelta(hours=8, minutes=1)))
        query = f"find[date][$gte]={a}&find[date][$lt]={b}&count=500"
        _wait("the imported night in the cloud",
              lambda: len(_sgvs(cloud, tenant, secret_hash, query)) == len(imported),
              op.log("edge-run"), op.services["edge-run"])
        assert sorted(_sgvs(cloud, tenant, secret_hash, query)) == sorted(imported)
        # ... and the doctor's portal lists it and opens it.
        _portal_shows_night(cloud, tenant, doctor, night)
        record_property("readme_deploy", f"{len(steps)} blocks in "
                        f"{time.monotonic() - t0:.1f} s; {timings}")
    finally:
        op.stop_all()
        shutil.rmtree(work, ignore_errors=True)


def _ready(cloud: str) -> bool:
    try:
        return httpx.get(f"{cloud}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _reload(op: Operator, service: str) -> None:
    """What `systemctl reload nightlink-mosquitto@…` does (its ExecReload): SIGHUP."""
    proc = op.services[service]
    log = op.log(service)
    before = _tail(log, 10**7).count("Reloading config")
    proc.send_signal(signal.SIGHUP)
    _wait(f"{service} reloading", lambda: _tail(log, 10**7).count("Reloading config") > before,
          log, proc, timeout=10)


def _sgvs(cloud: str, tenant: str, secret_hash: str, query: str) -> list[int]:
    r = httpx.get(f"{cloud}/t/{tenant}/api/v1/entries.json?{query}",
                  headers={"api-secret": secret_hash}, timeout=5)
    assert r.status_code == 200, r.text
    return [e["sgv"] for e in r.json() if e.get("type") == "sgv"]


def _broker_files_are_the_brokers_own(settings: dict, op: Operator) -> None:
    """Both brokers run as mosquitto, and every file they read is theirs by group only."""
    for name in ("cloud-broker-run", "edge-broker-run"):
        pid = op.services[name].pid
        uid = int(Path(f"/proc/{pid}/status").read_text().split("\nUid:")[1].split()[0])
        assert uid == pwd.getpwnam("mosquitto").pw_uid, f"{name} runs as uid {uid}"
    group = grp.getgrnam("mosquitto").gr_gid
    etc = Path(settings["ETC"])
    for path in [etc / "broker-cloud" / n for n in ("passwd", "acl", "privkey.pem")] + [
            etc / "broker-edge" / n for n in ("passwd", "acl", "mosquitto.conf")]:
        st = path.stat()
        assert (st.st_gid, st.st_mode & 0o777) == (group, 0o640), path


def _clock_shows(out: str, op: Operator, lan_port: int, home: Path) -> None:
    """The provisioned clock's firmware (host port, `device emulate` on the image) signed in
    at the edge's LAN broker with the account baked into its image and showed the uploaded
    reading (`out`: what the README's block printed)."""
    image = next((home / "out" / "clock").glob("fs-*.img")).read_bytes()
    config = json.loads(read_fs_image(image)["config.json"])
    assert (config["mqtt"]["host"], config["mqtt"]["port"]) == ("127.0.0.1", lan_port)
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    shown = [e["sgv"] for e in events if e.get("event") == "screen" and e["sgv"] is not None]
    assert shown and shown[-1] == 123, (out, _tail(op.log("edge-broker-run")))
    end = next(e for e in reversed(events) if e.get("event") == "end")
    assert end["broker_refused"] == 0 and end["broker_unreachable"] == 0, end
    assert (home / "out" / "screens" / "current.png").exists()
    assert not (home / "out" / "clock" / "config.json").exists()  # its passwords stay inside


def _portal_shows_night(cloud: str, tenant: str, doctor: str, night: str) -> None:
    with httpx.Client(base_url=cloud, timeout=30) as http:
        r = http.post("/portal/login", data={"email": doctor, "password": PASSWORD})
        assert r.status_code == 303, r.text
        # Production cookies are Secure: a browser sends them back over the TLS proxy; here
        # the test does, over plain HTTP.
        cookie = "; ".join(f"{k}={v}" for k, v in r.cookies.items())
        r = http.get(f"/portal/p/{tenant}", headers={"Cookie": cookie})
        assert r.status_code == 200, r.text[:500]
        assert f'href="/portal/p/{tenant}/nights/{night}"' in r.text
        r = http.get(f"/portal/p/{tenant}/nights/{night}", headers={"Cookie": cookie})
        assert r.status_code == 200, r.text[:500]
        assert night in r.text
