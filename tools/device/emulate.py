"""`nightlink device emulate`: the desk clock's firmware on this PC (CPython host port).

The device code runs unchanged in a child Python process: `nightlink.device` and
`nightlink.shared` import as on the board (packages under /lib/nightlink there, the installed
package here), and the host port's shims (`tools/device/hostport`: machine, network,
framebuf, umqtt.simple) stand where the board's built-in modules are. It talks to a real MQTT
broker, writes the current screen as a PNG whenever it changes, and prints one JSON line per
screen or sound change.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

from nightlink.errors import NightlinkError

HOSTPORT = Path(__file__).resolve().parent / "hostport"
RUNNER = HOSTPORT / "run_emulator.py"


def host_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(HOSTPORT)
    return env


class BrokerTrouble:
    """One stderr sentence when the broker refuses the clock or cannot be reached (the
    panel shows only missing data), again when the reason changes or a minute later."""

    EVERY_S = 60.0

    def __init__(self, warn):
        self.warn = warn
        self.last = None
        self.last_t = 0.0
        self.held = 0

    def __call__(self, ev: dict) -> None:
        if ev.get("event") == "broker_refused":
            text = (f"The broker at {ev['broker']} refused the clock's login "
                    f"{ev.get('user') or '(no user)'} ({ev['reason']}): check the config's mqtt "
                    "user and password, and that the edge's broker files include this clock "
                    "(nightlink edge broker-files).")
        elif ev.get("event") == "broker_unreachable":
            text = f"The clock cannot reach the broker at {ev['broker']} ({ev['error']})."
        else:
            return
        now = time.monotonic()
        if text != self.last or now - self.last_t >= self.EVERY_S:
            more = f" ({self.held} more times)" if self.held and text == self.last else ""
            self.warn(text + more)
            self.last, self.last_t, self.held = text, now, 0
        else:
            self.held += 1


def run(args: list[str], timeout: float | None = None, echo=None) -> dict:
    """Run the emulator; stream its JSON lines to echo; return its final `end` line."""
    errors = tempfile.TemporaryFile("w+")  # read at the end; a pipe could fill and stall it
    proc = subprocess.Popen([sys.executable, str(RUNNER), *args], env=host_env(),
                            stdout=subprocess.PIPE, stderr=errors, text=True)
    end = None
    try:
        for line in proc.stdout:
            if echo is not None:
                echo(line.rstrip("\n"))
            if line.startswith("{"):
                d = json.loads(line)
                if d.get("event") == "end":
                    end = d
        proc.wait(timeout=timeout)
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait()
        raise
    errors.seek(0)
    err = errors.read().strip().splitlines()
    errors.close()
    if proc.returncode != 0 or end is None:
        raise NightlinkError(f"the clock emulator failed: {err[-1] if err else proc.returncode}")
    return end


@click.command("emulate")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              required=True, help="the clock's config.json (device/CONFIG.md), or the "
              "fs-*.img `device provision` made (the config.json inside it)")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("clock-screens"), show_default=True,
              help="where the screens are written (current.png and numbered copies)")
@click.option("--broker", default=None, help="HOST:PORT instead of the config's mqtt host")
@click.option("--speed", type=float, default=1.0, show_default=True,
              help="virtual seconds per real second")
@click.option("--minutes", type=float, default=0.0, help="stop after this many virtual minutes")
@click.option("--replay", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              default=None, help="feed a simulated night's cgm.csv instead of the broker")
@click.option("--summary", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              default=None, help="a night summary JSON for the morning screen")
@click.option("--battery", is_flag=True,
              help="run the battery duty cycle (deep sleep between wake-ups) and estimate "
                   "battery life")
@click.option("--quiet", is_flag=True, help="print only the final JSON line")
def emulate(config_path, out, broker, speed, minutes, replay, summary, battery, quiet):
    """Run the desk clock's firmware on this PC against a real broker."""
    if not config_path.is_file():
        raise NightlinkError(f"the clock config {config_path} does not exist.")
    with tempfile.TemporaryDirectory(prefix="nl-clock-") as private:  # 0700: its passwords
        config_path = _config_file(config_path, Path(private))
        _emulate(config_path, out, broker, speed, minutes, replay, summary, battery, quiet)


def _config_file(path: Path, private: Path) -> Path:
    """The config.json to run: the file given, or the one inside a provisioned filesystem
    image, copied into `private` (mode 0600)."""
    raw = path.read_bytes()
    try:
        json.loads(raw.decode("utf-8"))
        return path
    except (ValueError, UnicodeDecodeError):
        pass
    from nightlink.tools.device.build import read_fs_image

    try:
        inside = read_fs_image(raw).get("config.json")
    except ImportError:
        raise NightlinkError(f"{path} is no JSON, and reading a clock's filesystem image needs "
                             "Nightlink's device-tools extra (littlefs).") from None
    except Exception:  # noqa: BLE001 - littlefs says only that it is no filesystem
        inside = None
    if inside is None:
        return path  # said to be no JSON next
    copy = private / "config.json"
    copy.touch(mode=0o600)
    copy.write_bytes(inside)
    return copy


def _emulate(config_path, out, broker, speed, minutes, replay, summary, battery, quiet):
    import math

    try:
        cfg = json.loads(config_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise NightlinkError(f"the clock config {config_path} is not JSON (nor a clock's "
                             "filesystem image with a config.json).") from None
    if not isinstance(cfg, dict):
        raise NightlinkError(f"the clock config {config_path} is not a JSON object.")
    from nightlink.tools.device.build import validate_config

    validate_config(cfg)  # the firmware's own checks, as `device build` makes them
    if not (math.isfinite(speed) and speed > 0):
        raise NightlinkError("--speed must be a number more than 0.")
    if not (math.isfinite(minutes) and minutes >= 0):
        raise NightlinkError("--minutes must be a number of minutes, 0 or more (0: no end).")
    if broker is not None:
        host, _, port = broker.rpartition(":")
        if not host or not port.isdecimal() or not 0 < int(port) < 65536:
            raise NightlinkError("--broker must be HOST:PORT with a port 1..65535.")
    if replay:
        _check_replay(replay)
    if summary:
        _check_summary(summary)
    args = ["--config", str(config_path), "--out", str(out), "--speed", str(speed)]
    if minutes:
        args += ["--minutes", str(minutes)]
    if broker:
        args += ["--broker", broker]
    if replay:
        args += ["--replay", str(replay), "--step-s", "60"]
    if summary:
        args += ["--summary", str(summary)]
    if battery:
        args.append("--battery")
    trouble = BrokerTrouble(lambda text: click.echo(text, err=True))

    def show(line: str) -> None:
        if line.startswith("{"):
            trouble(json.loads(line))
        if not quiet:
            click.echo(line)

    end = run(args, echo=show)
    if quiet:
        click.echo(json.dumps(end))
    if battery and "battery" in end:
        b = end["battery"]
        click.echo(f"battery: {b['average_ua'] / 1000:.2f} mA average, {b['mah_per_day']} mAh a "
                   f"day, about {b['days']} days on {b['battery_mah']} mAh "
                   f"(wake every {b['wake_s']} s)", err=True)


def _check_replay(path: Path) -> None:
    """The replay is a simulated night's cgm.csv (`nightlink simulate night`): epoch_ms and
    sgv_mgdl (or error_code) on every row, as the emulator reads it; one sentence if not."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not {"epoch_ms", "sgv_mgdl"} <= set(reader.fieldnames or ()):
                raise NightlinkError(f"--replay {path} is not a simulated night's cgm.csv: it "
                                     "needs the columns epoch_ms and sgv_mgdl.")
            rows = 0
            for rows, row in enumerate(reader, 1):  # noqa: B007 - the count is wanted
                try:
                    int(row["epoch_ms"])
                    int(row.get("error_code") or 0) or int(float(row["sgv_mgdl"]))
                except (TypeError, ValueError, OverflowError):
                    raise NightlinkError(f"--replay {path}: row {rows + 1} does not hold a "
                                         "time in ms and a glucose value.") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise NightlinkError(f"--replay {path} cannot be read as CSV: {exc}.") from None
    if not rows:
        raise NightlinkError(f"--replay {path} holds no readings.")


def _check_summary(path: Path) -> None:
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        raise NightlinkError(f"--summary {path} is not a JSON file.") from None
    if not isinstance(body, dict):
        raise NightlinkError(f"--summary {path} is not a JSON object (a night summary).")


DEMO_CONFIG = {
    "version": 1,
    "device": {"id": "a4cf12b0c3d4", "name": "Demo clock", "tenant": "demo"},
    "wifi": [{"ssid": "demo", "password": "demo-network"}],
    "mqtt": {"host": "127.0.0.1", "port": 1883},
    "units": "mg/dL",
    "tz": "UTC0",
    "quiet_hours": {"start": "22:30", "end": "06:30"},
}


def clock_night(out: Path, echo=print) -> dict:
    """The demo's clock: the simulated night's CGM replayed through the clock firmware (host
    port), screens written to OUT/clock/ whenever they change. A few seconds."""
    d = Path(out) / "clock"
    d.mkdir(parents=True, exist_ok=True)
    for old in d.glob("screen-*.png"):
        old.unlink()
    cfg = d / "config.json"
    cfg.write_text(json.dumps(DEMO_CONFIG, indent=1))
    args = ["--config", str(cfg), "--out", str(d), "--replay", str(Path(out) / "cgm.csv"),
            "--step-s", "300"]
    if (Path(out) / "edge.db").is_file():  # the morning screen: what the edge would publish
        from nightlink.edge.sources.samples import Glucose
        from nightlink.edge.store import EdgeStore
        from nightlink.edge.sync.clock_feed import latest_night

        with open(Path(out) / "cgm.csv", newline="") as f:
            readings = [Glucose(t=int(r["epoch_ms"]) / 1000, sgv=int(float(r["sgv_mgdl"])))
                        for r in csv.DictReader(f) if not r.get("error_code")]
        store = EdgeStore(Path(out) / "edge.db")
        try:
            night = latest_night(store, readings)
        finally:
            store.close()
        if night is not None:
            (d / "night.json").write_text(json.dumps(night[1]))
            args += ["--summary", str(d / "night.json")]
    alarms = []

    def collect(line: str) -> None:
        if line.startswith("{"):
            ev = json.loads(line)
            if ev.get("event") == "sound" and ev.get("alarm"):
                alarms.append(f"{ev['time']} {ev['alarm']}")

    end = run(args, timeout=120, echo=collect)
    echo(f"\nDesk clock (firmware on the host port): {end['screens']} screens through the "
         f"night in {d}/ (current.png is the last); alarms: {', '.join(alarms) or 'none'}")
    return end
