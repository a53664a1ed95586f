"""`nightlink eval alerts`: the cloud's low alerts replayed over CGM folders and scored like
the low alarm, the clock's model against the straight line the cloud used before."""

import json

from click.testing import CliRunner

from nightlink.cli import main
from tests.support.cgm import write_folder


def test_eval_alerts__model_and_line_on_5_and_15_minute_sensors(tmp_path):
    write_folder(tmp_path, people=2, days=4, steps=(5, 15))
    r = CliRunner().invoke(main, ["eval", "alerts", "--data", str(tmp_path), "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.output.strip().splitlines()[-1])
    assert got["people"] == 2 and got["events"] >= 2 and got["nights"] >= 3
    for prefix in ("", "cal_", "line_"):
        # the low alert catches every low at its onset, whichever predicted low runs
        assert got[f"{prefix}all_recall"] == 1.0
        for key in ("predicted_precision", "predicted_false_alarms_per_night",
                    "all_false_alarms_per_night", "all_median_lead_min",
                    "day_all_false_alarms_per_day"):
            assert prefix + key in got
    assert got["predicted_alerts"] > 0 and got["predicted_recall"] > 0
    assert got["seen_in_training"] == [] and got["files_left_out"] == []
    # 4 days are too few nights for the cloud's calibration: the model's own threshold
    assert {k: v for k, v in got.items() if k.startswith("cal_")} == {
        "cal_" + k: v for k, v in got.items() if "cal_" + k in got}


def test_eval_alerts__the_line_never_warned_a_15_minute_sensor(tmp_path):
    write_folder(tmp_path, people=1, days=4, steps=(15,))
    r = CliRunner().invoke(main, ["eval", "alerts", "--data", str(tmp_path), "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.output.strip().splitlines()[-1])
    assert got["line_predicted_alerts"] == 0  # three readings in 20 minutes: never
    assert got["predicted_alerts"] > 0 and got["predicted_recall"] > 0


def test_eval_alerts__a_folder_without_readings_is_one_sentence(tmp_path):
    (tmp_path / "csv").mkdir()
    r = CliRunner().invoke(main, ["eval", "alerts", "--data", str(tmp_path)])
    assert r.exit_code == 2
    assert r.output.strip().splitlines()[-1].startswith("error: No CGM files (")
