"""The systemd units in deploy/systemd pass `systemd-analyze verify` without a warning, and
run what exists: the `nightlink` command (this venv's, in place of /usr/local/bin/nightlink)
with subcommands and options it has."""

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNITS = sorted((ROOT / "deploy" / "systemd").iterdir())
INSTALLED = "/usr/local/bin/nightlink"
NIGHTLINK = Path(sys.executable).with_name("nightlink")


def test_the_units_are_there():
    names = {p.name for p in UNITS}
    assert {"nightlink-edge.service", "nightlink-cloud.service", "nightlink-cloud-api.service",
            "nightlink-cloud-ingest.service", "nightlink-mosquitto@.service",
            "nightlink-broker-files.service"} <= names


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit__verifies_cleanly(unit, tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (it comes with systemd)")
    for other in UNITS:  # a .path or .timer names its service: verify finds it beside it
        (tmp_path / other.name).write_text(other.read_text().replace(INSTALLED,
                                                                     str(NIGHTLINK)))
    done = subprocess.run([analyze, "verify", "--man=no", str(tmp_path / unit.name)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr


def _exec_lines(unit: Path) -> list[list[str]]:
    return [shlex.split(line.split("=", 1)[1]) for line in unit.read_text().splitlines()
            if re.match(r"ExecStart=", line)]


@pytest.mark.parametrize("unit", [u for u in UNITS if INSTALLED in u.read_text()],
                         ids=lambda p: p.name)
def test_unit__nightlink_command_line_parses(unit):
    """Every option the unit passes exists: --help after them exits 0 (a wrong option, or
    a subcommand that does not exist, exits 2)."""
    for argv in _exec_lines(unit):
        assert argv[0] == INSTALLED
        args = [a.replace("%H", "host") for a in argv[1:]]
        done = subprocess.run([str(NIGHTLINK), *args, "--help"], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, (args, done.stderr)


def test_sysusers_file__parses(tmp_path):
    sysusers = shutil.which("systemd-sysusers")
    if sysusers is None:
        pytest.skip("systemd-sysusers is not installed (it comes with systemd)")
    conf = ROOT / "deploy" / "sysusers.d" / "nightlink.conf"
    # --root keeps the machine's own users out of it: nothing is written but the plan.
    done = subprocess.run([sysusers, "--dry-run", f"--root={tmp_path}", str(conf)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Creating user 'nightlink'" in done.stderr + done.stdout
    assert "Failed" not in done.stderr and "Unknown" not in done.stderr, done.stderr
