"""The edge's operator commands: `edge id`, what `broker-config` and `broker-files` need,
and the failures `edge run` and `edge replay` report in one sentence (a real occupied port,
a real missing folder, the real sounddevice without PortAudio)."""

import ctypes.util
import os
import socket
import subprocess
import sys

import pytest
from click.testing import CliRunner

from nightlink.cli import main
from nightlink.edge.store import EdgeStore
from tests.support.services import free_port

SYNC = '[sync]\nenabled = true\nhost = "cloud.example.org"\nport = 8883\ntls = true\n'
ACCOUNT = 'username = "home.0123456789ab"\npassword = "edge-password-0123456789"\n'


def edge(*args):
    return CliRunner().invoke(main, ["edge", *args], env={"NIGHTLINK_EDGE_API_SECRET": ""})


def nightlink(*args, timeout=60):
    """The real command in a child process: what an operator sees on stderr."""
    return subprocess.run([sys.executable, "-m", "nightlink", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_edge_id__prints_the_store_device_and_makes_the_store(tmp_path):
    db = tmp_path / "new" / "edge.db"
    first = edge("id", "--db", str(db))
    assert first.exit_code == 0, first.output
    again = edge("id", "--db", str(db))
    store = EdgeStore(db)
    assert first.output == again.output == store.device + "\n"
    store.close()


@pytest.mark.parametrize("text, error", [
    (None, "The LAN broker's configuration needs the edge's configuration file: give --config "
           "FILE with a [sync] section (the cloud broker's host and this edge's MQTT account)."),
    ("", "{path}: [sync] is not enabled; the bridge needs enabled = true and the cloud broker's "
         "host."),
    (SYNC, "{path}: [sync] username and password are not set; they are this edge's MQTT "
           "account, minted when the edge was registered with the cloud (its device id: "
           "`nightlink edge id`)."),
])
def test_broker_config__says_what_is_missing(tmp_path, text, error):
    args = ["broker-config", "--db", str(tmp_path / "edge.db")]
    path = tmp_path / "edge.toml"
    if text is not None:
        path.write_text(text)
        args += ["--config", str(path)]
    r = edge(*args)
    assert r.exit_code == 2
    assert r.output == f"error: {error.format(path=path)}\n"


def test_broker_config__logins_from_the_files_and_the_bridge(tmp_path):
    path = tmp_path / "edge.toml"
    path.write_text('tenant = "home"\n' + SYNC + ACCOUNT)
    db = tmp_path / "edge.db"
    r = edge("broker-config", "--config", str(path), "--db", str(db))
    assert r.exit_code == 0, r.output
    store = EdgeStore(db)
    lines = r.output.splitlines()
    assert lines[1:9] == ["per_listener_settings false", "allow_anonymous false",
                          "password_file /etc/mosquitto/nightlink.passwd",
                          "acl_file /etc/mosquitto/nightlink.acl", "max_packet_size 4202496",
                          "listener 1883 0.0.0.0", "persistence true",
                          "persistence_location /var/lib/mosquitto/"]
    assert f"remote_clientid nl-bridge-{store.device}" in lines
    assert "remote_username home.0123456789ab" in lines
    assert "bridge_capath /etc/ssl/certs" in lines
    store.close()


@pytest.mark.parametrize("option", ["--listen", "--persistence"])
def test_broker_config__a_line_break_cannot_add_a_setting(tmp_path, option):
    """`--persistence $'/y\\nlistener 1884\\nallow_anonymous true'` added an anonymous
    listener to the LAN broker (found by an audit); refused in one sentence."""
    path = tmp_path / "edge.toml"
    path.write_text('tenant = "home"\n' + SYNC + ACCOUNT)
    r = edge("broker-config", "--config", str(path), "--db", str(tmp_path / "edge.db"),
             option, "/y\nlistener 1884\nallow_anonymous true")
    assert r.exit_code == 2 and r.output.count("\n") == 1
    assert r.output.startswith(f"error: {option} holds a line break")
    conf = tmp_path / "m.conf"
    r = edge("broker-files", "--cloud", f"http://127.0.0.1:{free_port()}", "--config",
             str(path), "--passwd", str(tmp_path / "passwd"), "--acl", str(tmp_path / "acl"),
             "--conf", str(conf), option, "0.0.0.0\nallow_anonymous true")
    assert r.exit_code == 2 and "line break" in r.output  # before the cloud is asked
    assert not conf.exists() and not (tmp_path / "passwd").exists()


def test_broker_files__cloud_down_is_one_sentence(tmp_path):
    path = tmp_path / "edge.toml"
    path.write_text(SYNC + ACCOUNT)
    port = free_port()  # nothing listens there
    r = edge("broker-files", "--cloud", f"http://127.0.0.1:{port}", "--config", str(path),
             "--passwd", str(tmp_path / "passwd"), "--acl", str(tmp_path / "acl"))
    assert r.exit_code == 2
    assert r.output.startswith(f"error: Cannot reach the cloud at http://127.0.0.1:{port} (")
    assert r.output.count("\n") == 1
    assert not (tmp_path / "passwd").exists()


def test_broker_files__another_persons_broker_files_are_not_written_over(tmp_path):
    """Two children on one Pi: the second child's edge wrote its LAN broker files over the
    first's, and the first child's clock and edge were refused from then on, unsaid."""
    path = tmp_path / "edge.toml"
    path.write_text('tenant = "bea"\n' + SYNC + ACCOUNT)
    passwd = tmp_path / "passwd"
    passwd.write_text("alex.0123456789ab:$7$101$abc$def\nalex.a4cf12b0c3d4:$7$101$abc$def\n")
    r = edge("broker-files", "--cloud", f"http://127.0.0.1:{free_port()}", "--config", str(path),
             "--passwd", str(passwd), "--acl", str(tmp_path / "acl"))
    assert r.exit_code == 2
    assert r.output == (f"error: {passwd} holds the LAN broker accounts of tenant 'alex', not "
                        "'bea': one LAN broker serves one person's clocks, so give this edge a "
                        "broker of its own (--passwd, --acl and --conf in a folder of their "
                        "own, and another listener port), or remove the file if that edge is "
                        "gone.\n")
    assert passwd.read_text().startswith("alex.")


def test_edge_run__a_port_in_use_is_one_sentence(tmp_path):
    port = free_port()
    path = tmp_path / "edge.toml"
    path.write_text(f'[audio]\nenabled = false\n[nightscout]\nhost = "127.0.0.1"\nport = {port}\n'
                    'api_secret = "bedside-secret-42"\n')
    with socket.socket() as holder:  # another program on the port
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", port))
        holder.listen()
        proc = nightlink("edge", "run", "--config", str(path), "--db", str(tmp_path / "e.db"))
    assert proc.returncode == 2
    assert proc.stderr == (f"error: Port {port} on 127.0.0.1 (the [nightscout] port) is in use; "
                           "stop the program listening there or set another port.\n")


@pytest.mark.skipif(ctypes.util.find_library("portaudio") is not None,
                    reason="PortAudio is installed here, so live audio would start")
def test_edge_run__live_audio_without_portaudio_is_one_sentence(tmp_path):
    path = tmp_path / "edge.toml"
    path.write_text('[nightscout]\nenabled = false\napi_secret = "bedside-secret-42"\n')
    proc = nightlink("edge", "run", "--config", str(path), "--db", str(tmp_path / "e.db"))
    assert proc.returncode == 2
    assert proc.stderr == ("error: Live audio needs the PortAudio library, which is not "
                           "installed: apt-get install libportaudio2 (or set [audio] enabled = "
                           "false).\n")


def test_edge_replay__a_missing_folder_is_named(tmp_path):
    missing = tmp_path / "no-such-night"
    r = edge("replay", str(missing), "--db", str(tmp_path / "e.db"))
    assert r.exit_code == 2
    assert r.output == f"error: No such folder: {missing}.\n"
    assert not os.path.exists(tmp_path / "e.db")


@pytest.mark.parametrize(("args", "files", "says"), [
    (["simulate", "night", "--out", "s", "--seed", "-1", "--hours", "0.1", "--no-audio"], {},
     "Invalid value for '--seed'"),
    (["edge", "run", "--config", "bin.toml"], {"bin.toml": b"\xff\xfe\x00garbage"},
     "bin.toml: not a UTF-8 text file"),
    (["edge", "sync", "--config", "folder"], {"folder/x": b""}, "'folder' is a directory"),
    (["edge", "sync", "--timeout", "nan"], {}, "--timeout must be a number of seconds"),
    (["cloud", "--env-file", "bin.env", "accounts", "list"], {"bin.env": b"\xff\xfe\x00"},
     "bin.env: not a UTF-8 text file"),
    (["cloud", "serve", "--port", "99999", "--api-only"], {}, "Invalid value for '--port'"),
    (["device", "register-edge", "--cloud", "http://127.0.0.1:abc", "--tenant", "t",
      "--email", "a@b.example", "--edge-id", "0123456789ab"], {},
     "The cloud address 'http://127.0.0.1:abc' is not a URL"),
    (["device", "build", "--out", "d", "--flash-size", "2MB"], {}, "leaves no room for files"),
    (["cloud", "create-tenant", "--database-url", "foo://", "t"], {},
     "--database-url: must start with sqlite:/// or postgresql://."),
    (["cloud", "broker-files", "--acl", "x", "--passwd", "x"], {},
     "must be three different files"),
    # found by an audit: a typo left sign-up on, unsaid; sqlite:/// stored in memory
    (["cloud", "--env-file", "typo.env", "accounts", "list"],
     {"typo.env": b"NIGHTLINK_DATABASE_URL=sqlite:///c.db\nNIGHTLINK_SIGNUP_ENABLD=false\n"},
     "typo.env: NIGHTLINK_SIGNUP_ENABLD is not a setting; did you mean "
     "NIGHTLINK_SIGNUP_ENABLED?"),
    (["cloud", "create-tenant", "--database-url", "sqlite:///", "t1"], {},
     "sqlite:/// names no file"),
    (["device", "provision", "--cloud", "http://127.0.0.1:9", "--tenant", "t", "--email",
      "a@b.example", "--wifi", "home:pw", "--name", "n", "--mqtt-port", "0"], {},
     "Invalid value for '--mqtt-port': 0 is not in the range 1<=x<=65535"),
    (["device", "provision", "--cloud", "http://127.0.0.1:9", "--tenant", "t", "--email",
      "a@b.example", "--wifi", "home:pw", "--name", "n", "--edge", "10.0.0.2\nx"], {},
     "is not a host name or address"),
])
def test_cli__bad_input_is_one_sentence_and_exit_2(tmp_path, args, files, says):
    """Inputs that ended in a traceback (exit 1): each is one sentence naming what is wrong."""
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    env = {**os.environ, "NIGHTLINK_PASSWORD": "x" * 12, "NIGHTLINK_ENV": "development"}
    got = subprocess.run([sys.executable, "-m", "nightlink", *args], capture_output=True,
                         text=True, timeout=120, cwd=tmp_path, env=env)
    assert got.returncode == 2, got.stderr
    assert says in got.stderr and "Traceback" not in got.stderr, got.stderr


@pytest.mark.parametrize(("args", "says"), [
    (["edge", "import", "."], "error: Invalid value for 'PATH': File '.' is a directory (see "
                              "'nightlink edge import --help')."),
    (["edge", "import"], "error: Missing argument 'PATH' (see 'nightlink edge import --help')."),
    (["edge", "status", "--bogus"], "error: No such option '--bogus' (see 'nightlink edge status "
                                    "--help')."),
    (["bench"], "error: Missing argument '{api|classify|clock-outbox|codec|edge-audio|edge-night"
                "|import|ingest|live|report|simulate|sync}'. Choose from: api, classify, "
                "clock-outbox, codec, edge-audio, edge-night, import, ingest, live, report, "
                "simulate, sync (see 'nightlink bench --help')."),  # its choices were one a line
])
def test_cli__a_usage_error_is_one_line_and_exit_2(tmp_path, args, says):
    """Click's usage errors were three lines (usage, hint, error); a bad argument is one
    sentence like every other CLI error."""
    got = subprocess.run([sys.executable, "-m", "nightlink", *args], capture_output=True,
                         text=True, timeout=120, cwd=tmp_path)
    assert got.returncode == 2 and got.stderr == says + "\n", got.stderr


def test_cli__no_terminal_to_ask_the_password_on_is_one_sentence(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "NIGHTLINK_PASSWORD"}
    got = subprocess.run([sys.executable, "-m", "nightlink", "device", "register-edge",
                          "--cloud", "http://127.0.0.1:9", "--tenant", "t", "--email",
                          "a@b.example", "--edge-id", "0123456789ab"], capture_output=True,
                         text=True, timeout=60, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL)
    assert got.returncode == 2 and "Give the cloud password with --password" in got.stderr
    assert "Traceback" not in got.stderr and "Aborted" not in got.stderr
    piped = subprocess.run([sys.executable, "-m", "nightlink", "device", "register-edge",
                            "--cloud", "http://127.0.0.1:9", "--tenant", "t", "--email",
                            "a@b.example", "--edge-id", "0123456789ab"], capture_output=True,
                           text=True, timeout=60, cwd=tmp_path, env=env,
                           input="a-piped-password\n")
    # the password taken from the pipe: the command goes on to the (absent) cloud
    assert piped.returncode == 2 and "Cannot reach the cloud" in piped.stderr, piped.stderr


def test_edge_status__says_how_the_links_stand(tmp_path):
    """`nightlink edge status` reads a node's store (running or not): each source's state
    and why, the outbox, the last night and the newest dead letter."""
    db = tmp_path / "edge.db"
    store = EdgeStore(db)
    store.set_source("sync", "mqtt", "connecting: cannot reach cloud.example:8883 (Connection "
                     "refused)", "cloud.example:8883")
    store.set_source("clocks", "mqtt", "subscribed", "nl/v1/home/+/+")
    store.put_night("2026-01-15", {"breathing": {}})
    store.dead_letter("mqtt:nl/v1/home/x/room", "not a record")
    store.close()
    r = CliRunner().invoke(main, ["edge", "status", "--db", str(db)])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].startswith("Edge ") and str(db) in lines[0]
    assert "  sync       mqtt        connecting: cannot reach cloud.example:8883 (Connection " \
           "refused)  (cloud.example:8883)" in lines
    assert "Outbox: 0 rows and 0 treatment changes waiting for the cloud" in lines
    assert any(x.startswith("Last night summarized: 2026-01-15") for x in lines)
    assert lines[-1] == "Dead letters: 1; the newest: mqtt:nl/v1/home/x/room: not a record"
    r = CliRunner().invoke(main, ["edge", "status", "--db", str(tmp_path / "none.db")])
    assert r.exit_code == 2 and "There is no edge store at" in r.output


def test_edge_status__says_when_the_states_are_old(tmp_path):
    """A node killed (or whose store refuses writes) leaves its states as they were: the
    newest epoch it stored tells."""
    import time

    from nightlink.shared import features
    from nightlink.shared.epoch import epoch_index

    db = tmp_path / "edge.db"
    store = EdgeStore(db)
    store.set_source("clocks", "mqtt", "subscribed", "nl/v1/home/+/+")
    row = tuple(b[0] for b in features.bounds(features.ROOM))
    store.append(features.ROOM, epoch_index(time.time()) - 21, [row])  # 10 min ago
    store.db.execute("UPDATE sources SET updated_at = ?", (time.time() - 700,))
    store.close()
    r = CliRunner().invoke(main, ["edge", "status", "--db", str(db)])
    assert r.exit_code == 0, r.output
    assert "The node has stored nothing for 10 min: it is not running (the states above are " \
        "from when it stopped) or its store refuses writes (see its log)." in r.output
    store = EdgeStore(db)
    store.append(features.ROOM, epoch_index(time.time()) - 1, [row])  # running: just now
    store.close()
    r = CliRunner().invoke(main, ["edge", "status", "--db", str(db)])
    assert "stored nothing" not in r.output and "Storage:" not in r.output
    store = EdgeStore(db)  # started a minute ago after hours down: no epoch yet, not stale
    store.db.execute("DELETE FROM records")
    store.append(features.ROOM, epoch_index(time.time()) - 600, [row])
    store.set_source("night", "schedule", "running", "22:00-07:30")
    store.close()
    r = CliRunner().invoke(main, ["edge", "status", "--db", str(db)])
    assert "stored nothing" not in r.output


def test_edge_status__answers_while_another_process_holds_the_write_lock(tmp_path):
    """An up-to-date store opens without the write lock (a long import or a busy node holds
    it); a store that fails a read is one sentence, exit code 2, not a traceback."""
    import sqlite3

    db = tmp_path / "edge.db"
    EdgeStore(db).close()
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        r = subprocess.run([sys.executable, "-m", "nightlink", "edge", "status", "--db", str(db)],
                           capture_output=True, text=True, timeout=8)
    finally:
        other.execute("ROLLBACK")
    assert r.returncode == 0 and r.stdout.startswith("Edge "), r.stderr
    other.execute("DROP TABLE sources")
    other.close()
    r = CliRunner().invoke(main, ["edge", "status", "--db", str(db)])
    assert r.exit_code == 2
    assert r.output.splitlines()[-1] == "error: the database refused: no such table: sources."


def test_a_store_is_not_made_inside_another_programs_or_the_other_tiers_database(tmp_path):
    """`edge id --db other.sqlite` added 20 edge tables to a stranger's database, and
    `cloud purge --database-url sqlite:///edge.db` half a cloud schema to the edge's store,
    then failed (an audit found both). Each is refused in one sentence, no table added."""
    import sqlite3

    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE notes (x)")
    env = {**os.environ, "NIGHTLINK_ENV": "development"}
    edge_db = tmp_path / "edge.db"
    assert edge("id", "--db", str(edge_db)).exit_code == 0
    for args, says in (
            (["edge", "id", "--db", str(other)], "is another program's (notes…), not a "
                                                 "Nightlink edge store"),
            (["cloud", "purge", "--database-url", f"sqlite:///{edge_db}"],
             "is a Nightlink edge store, not a Nightlink cloud database")):
        before = {p: _tables(p) for p in (other, edge_db)}
        got = subprocess.run([sys.executable, "-m", "nightlink", *args], capture_output=True,
                             text=True, timeout=120, cwd=tmp_path, env=env)
        assert got.returncode == 2 and says in got.stderr, got.stderr
        assert got.stderr.count("\n") == 1
        assert {p: _tables(p) for p in before} == before
    assert _tables(other) == ["notes"]


def _tables(path) -> list[str]:
    import sqlite3

    with sqlite3.connect(path) as conn:
        return sorted(r[0] for r in conn.execute("SELECT name FROM sqlite_master"))


def test_cli__a_group_without_its_command_shows_its_help(tmp_path):
    """`nightlink cloud` printed its whole help as an "error:" (an audit found it): the help,
    on stdout, as asked."""
    got = subprocess.run([sys.executable, "-m", "nightlink", "cloud", "accounts"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert got.returncode == 0 and got.stderr == ""
    assert got.stdout.startswith("Usage: nightlink cloud accounts [OPTIONS] COMMAND")


def test_edge_import__a_refused_file_leaves_no_new_store_behind(tmp_path):
    """A refused import left an empty store, a new edge identity with it, where none was
    (an audit found it); a store that was there stays."""
    bad = tmp_path / "g.csv"
    bad.write_bytes(b"garbage\x00\x01")
    db = tmp_path / "i.db"
    r = edge("import", str(bad), "--db", str(db))
    assert r.exit_code == 2 and "is none of the exports" in r.output
    assert not list(tmp_path.glob("i.db*"))
    assert edge("id", "--db", str(db)).exit_code == 0
    assert edge("import", str(bad), "--db", str(db)).exit_code == 2
    assert db.exists()
