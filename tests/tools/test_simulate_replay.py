"""`nightlink simulate replay`: the edge replay with the simulator's audio regenerated."""

import json

import pytest
from click.testing import CliRunner

from nightlink.cli import main
from nightlink.tools.sim.night import simulate_night


@pytest.fixture(scope="module")
def silent_night(tmp_path_factory):
    """A short simulated night that kept no audio file."""
    out = tmp_path_factory.mktemp("sim") / "night"
    simulate_night(out, seed=5, hours=0.25, audio_format=None)
    return out


@pytest.mark.parametrize("audio", ["auto", "stream"])
def test_simulate_replay__regenerates_the_audio(silent_night, tmp_path, audio):
    res = CliRunner().invoke(main, ["simulate", "replay", str(silent_night), "--db",
                                    str(tmp_path / "e.db"), "--audio", audio, "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output.strip().splitlines()[-1])
    assert out["present"]["audio"] == out["epochs"] == 30
    assert out["problems"] == []


def test_edge_replay__no_audio_file_no_audio(silent_night, tmp_path):
    res = CliRunner().invoke(main, ["edge", "replay", str(silent_night), "--db",
                                    str(tmp_path / "e.db")])
    assert res.exit_code == 0, res.output
    assert "audio     0/30 epochs with data" in res.output
    assert "`nightlink simulate replay` regenerates" in res.output
