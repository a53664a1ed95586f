"""Real-CGM glucose evaluation: reading 1-, 5- and 15-minute CSVs onto the model's grid, the
consensus low labels, the threshold and trend baselines, near misses, and
`nightlink eval glucose --data DIR --json` on the committed model."""

import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from nightlink.cli import main
from nightlink.errors import NightlinkError
from nightlink.tools.train import cgm_real, glucose_real
from tests.support.cgm import START, person_trace, write_folder, write_person


def _grid(tmp_path, minutes, values, name="X"):
    times = [START + timedelta(minutes=m) for m in minutes]
    return cgm_real.load_person(write_person(tmp_path, name, times, values))


# -- reading and labels ----------------------------------------------------------------------


def test_five_minute_readings__short_gaps_interpolated_long_ones_not(tmp_path):
    # 0, 5, 15 (one missing), then a 30-minute gap to 45.
    p = _grid(tmp_path, [0, 5, 15, 45], [100, 110, 130, 90])
    assert p.interval_min == 5
    assert p.observed.tolist()[:10] == [True, True, False, True, False, False, False, False,
                                        False, True]
    assert p.x[:4].tolist() == [100, 110, 120, 130]
    assert (p.x[4:9] == 0).all()
    # labels: each reading held until the next one, for 5 minutes before a gap
    assert p.held[2] == 110 and np.isnan(p.held[4])


def test_fifteen_minute_sensor__resampled_and_one_reading_is_a_15_minute_low(tmp_path):
    minutes = list(range(0, 120, 15))
    values = [150, 130, 110, 90, 65, 90, 110, 130]
    p = _grid(tmp_path, minutes, values)
    assert p.interval_min == 15
    assert p.observed.sum() == 8 and p.x.size == 7 * 3 + 3
    assert p.x[1:3].tolist() == pytest.approx([143.33, 136.67], abs=0.01)
    # one Libre reading below 70 is 15 minutes below 70: a low
    assert cgm_real.events(p.held) == [(12, 15)]


def test_five_minute_lows__readings_times_interval(tmp_path):
    # two readings below (10 minutes) is no low; three (15 minutes) is
    short = _grid(tmp_path, range(0, 60, 5), [100, 90, 80, 65, 62, 80, 90, 100, 110, 120, 130, 140])
    assert cgm_real.events(short.held) == []
    low = _grid(tmp_path, range(0, 60, 5), [100, 90, 80, 65, 62, 66, 90, 100, 110, 120, 130, 140],
                name="Y")
    assert cgm_real.events(low.held) == [(3, 6)]


def test_three_minute_sensor__averaged_per_slot_and_said_as_three_minutes(tmp_path):
    p = _grid(tmp_path, range(0, 30, 3), [100 + m for m in range(0, 30, 3)])
    assert p.interval_min == 3  # what figures are grouped by (rmse_30_by_interval)
    # each slot's mean in whole mg/dL, rounded half up, as the clock averages them
    assert p.x.tolist() == [102.0, 108.0, 112.0, 117.0, 123.0, 127.0]
    assert p.observed.all()


def test_one_minute_sensor__averaged_per_slot(tmp_path):
    p = _grid(tmp_path, range(0, 30), [100 + m for m in range(30)])
    assert p.interval_min == 1
    assert p.x.tolist() == [102, 107, 112, 117, 122, 127]
    assert p.observed.all()


def test_bad_csv__one_sentence(tmp_path):
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "Z.csv").write_text("timestamp,glucose_value_mg_dl\nyesterday,100\n")
    r = CliRunner().invoke(main, ["eval", "glucose", "--data", str(tmp_path), "--json"])
    assert r.exit_code == 2, r.output
    assert r.output.startswith("error: Z.csv needs columns timestamp,glucose_value_mg_dl")
    assert "\n" not in r.output.strip()  # one sentence, no traceback
    empty = tmp_path / "empty"
    empty.mkdir()
    r = CliRunner().invoke(main, ["eval", "glucose", "--data", str(empty)])
    assert r.exit_code == 2 and "No CGM files" in r.output


def test_mmol_per_litre__read_from_its_own_column_refused_under_a_mg_dl_header(tmp_path):
    """UK and European exports are in mmol/L: a column that says so is converted; mmol/L values
    under the mg/dL header are refused (read as mg/dL they would be a month of lows)."""
    minutes = range(0, 60, 5)
    mgdl = [100, 90, 80, 65, 62, 66, 90, 100, 110, 120, 130, 140]
    ref = _grid(tmp_path, minutes, mgdl, name="A")
    folder = tmp_path / "mmol"
    folder.mkdir()
    rows = [f"{(START + timedelta(minutes=m)):%Y-%m-%d %H:%M:%S},{v / 18.016:.2f}"
            for m, v in zip(minutes, mgdl, strict=True)]
    (folder / "B.csv").write_text("timestamp,glucose_value_mmol_l\n" + "\n".join(rows) + "\n")
    p = cgm_real.load_person(folder / "B.csv")
    assert np.allclose(p.x, ref.x, atol=0.2) and cgm_real.events(p.held) == cgm_real.events(ref.held)
    (folder / "B.csv").write_text("timestamp,glucose_value_mg_dl\n" + "\n".join(rows) + "\n")
    r = CliRunner().invoke(main, ["eval", "glucose", "--data", str(folder), "--json"])
    assert r.exit_code == 2, r.output
    assert "B.csv has glucose values that look like mmol/L" in r.output and "Traceback" not in r.output
    mgdl_rows = [f"{(START + timedelta(minutes=m)):%Y-%m-%d %H:%M:%S},{v}" for m, v in zip(minutes, mgdl, strict=True)]
    (folder / "B.csv").write_text("timestamp,glucose_value_mmol_l\n" + "\n".join(mgdl_rows) + "\n")
    r = CliRunner().invoke(main, ["eval", "glucose", "--data", str(folder), "--json"])
    assert r.exit_code == 2 and "look like mg/dL" in r.output, r.output


def test_csv_in_windows_1252__read_as_the_same_file_in_utf8(tmp_path):
    """A Windows spreadsheet's bytes (µ, é) near the top once refused the whole file as not
    UTF-8, while the same byte further down was read."""
    rows = "".join(f"2025-01-01 {h:02d}:{m:02d}:00,{120 + m},{'café' if m == 5 else ''}\n"
                   for h in range(3) for m in range(0, 60, 5))
    head = "timestamp,glucose_value_mg_dl,note\n"
    (tmp_path / "U.csv").write_bytes((head + rows).encode("utf-8"))
    (tmp_path / "W.csv").write_bytes((head + rows).encode("cp1252"))
    t_u, g_u, _c = cgm_real.read_csv(tmp_path / "U.csv")
    t_w, g_w, _c = cgm_real.read_csv(tmp_path / "W.csv")
    assert t_w.tolist() == t_u.tolist() and g_w.tolist() == g_u.tolist() and t_u.size == 36
    (tmp_path / "B.csv").write_bytes(b"\xef\xbb\xbf" + (head + rows).encode("cp1252"))
    t_b, g_b, _c = cgm_real.read_csv(tmp_path / "B.csv")  # a byte-order mark, then 1252 bytes
    assert t_b.tolist() == t_u.tolist() and g_b.tolist() == g_u.tolist()
    utf16 = tmp_path / "utf16"
    utf16.mkdir()
    (utf16 / "L.csv").write_bytes("time;Glukose µg\n1;2\n".encode("utf-16"))
    r = CliRunner().invoke(main, ["eval", "glucose", "--data", str(utf16), "--json"])
    assert r.exit_code == 2 and "it is not UTF-8 text" in r.output, r.output


# -- baselines and scoring ---------------------------------------------------------------------


def _fall(tmp_path):
    """A steady fall of 2 mg/dL a minute from 160 to a 30-minute low at 50, at night."""
    minutes = list(range(0, 240, 5))
    g = [160.0] * 12 + [160 - 10 * k for k in range(1, 12)] + [50.0] * 6 + [160.0] * 19
    times = [START + timedelta(hours=12, minutes=m) for m in minutes]  # from midnight
    return cgm_real.load_person(write_person(tmp_path, "F", times, g))


def test_trend_alarm_warns_before_the_threshold_alarm(tmp_path):
    p = _fall(tmp_path)
    (onset, _end), = cgm_real.events(p.held)
    (thr,) = glucose_real.threshold_alarms(p)
    trend = glucose_real.trend_alarms(p)
    assert thr == onset
    assert trend[0] < onset and (onset - trend[0]) * 5 >= 15


def test_near_miss_is_told_from_a_false_alarm(tmp_path):
    # a fall that bottoms out at 75 mg/dL, and an alarm on a steady 180
    minutes = list(range(0, 24 * 60, 5))
    g = np.full(len(minutes), 180.0)
    g[60:70] = np.linspace(180, 75, 10)
    g[70:76] = 75
    times = [START + timedelta(hours=12, minutes=m) for m in minutes]  # a whole calendar day
    p = cgm_real.load_person(write_person(tmp_path, "N", times, g))
    days = glucose_real.Frame.of(p, nights=False)
    tallies = days.tallies([66, 200])
    total = glucose_real._sum(tallies.values())
    assert total.alarms == 2 and total.true_alarms == 0
    assert total.near_misses == 1


def test_nights_and_days_are_counted_apart(tmp_path):
    times, values = person_trace(days=3, seed=1)
    p = cgm_real.load_person(write_person(tmp_path, "D", times, values))
    nights = glucose_real.Frame.of(p, nights=True)
    days = glucose_real.Frame.of(p, nights=False)
    assert nights.ids.size == 3  # 22:00-07:00 three times from noon on day one
    assert days.ids.size == 2  # the first and last calendar days are half days
    # dips at about 02:00 on the first and third nights
    night_events = [e for e in nights.events if nights.period[e[0]] >= 0]
    assert len(night_events) == 2


def test_carbs_column__read_and_holds_the_model_alarms(tmp_path):
    """A CSV with a carbs column: treatments > 0 land on the grid, and the evaluation holds the
    model's alarms after them as the clock does (BrisT1D-Open has no such column)."""
    from nightlink.edge.features.glucose_risk import AlarmPolicy, LiteRtGlucose

    times, values = person_trace(days=3, seed=2)
    lines = ["timestamp,glucose_value_mg_dl,carbs_g"]
    carbs_at = set()
    for d in (0, 2):  # carbs an hour into each dip's fall (about 01:00 + jitter)
        carbs_at.add(d * 288 + 13 * 12)
    for k, (t, v) in enumerate(zip(times, values, strict=True)):
        lines.append(f"{t:%Y-%m-%d %H:%M:%S},{v:.1f},{20 if k in carbs_at else ''}")
    lines.append(f"{times[5]:%Y-%m-%d %H:%M:%S},,0")  # a row without glucose nor carbs
    path = tmp_path / "C.csv"
    path.write_text("\n".join(lines) + "\n")
    p = cgm_real.load_person(path)
    assert sorted(p.carbs.tolist()) == sorted(carbs_at)
    assert cgm_real.load_person(write_person(tmp_path, "N", times, values)).carbs.size == 0
    # text in the carbs column ("Low" copied from a glucose column, a note) is no treatment,
    # whether the file takes the fast path or the row-by-row one (an offset in a time)
    for extra, name in (("", "T"), ("+00:00", "U")):
        noisy = [line + ("Low" if line.endswith(",") else "") for line in lines]
        noisy[1] = noisy[1].split(",")[0] + extra + "," + ",".join(noisy[1].split(",")[1:])
        (tmp_path / f"{name}.csv").write_text("\n".join(noisy[:-1] + ["x,y,z"]) + "\n")
        got = cgm_real.load_person(tmp_path / f"{name}.csv")
        assert sorted(got.carbs.tolist()) == sorted(carbs_at), name
    rt = LiteRtGlucose((Path(__file__).resolve().parents[2] / "edge" / "models"
                        / "glucose_risk.tflite").read_bytes())
    pred = glucose_real.predict(rt, p)
    sensitive = AlarmPolicy(300, refractory_min=5, carb_hold_min=0)
    free = glucose_real._alarms(p, pred, sensitive)
    held = glucose_real._alarms(p, pred, replace(sensitive, carb_hold_min=45))
    after = [a for a in free if any(0 <= a - c < 9 for c in carbs_at)]
    assert after, "the model should warn on the falls"
    assert set(held) < set(free)
    # none sounds within the 45 minutes after carbs unless glucose is low or the forecast urgent
    assert not [a for a in held if any(0 <= a - c < 9 for c in carbs_at) and p.x[a] >= 70
                and pred.forecast[np.searchsorted(pred.slots, a)] >= 54]


# -- the command -------------------------------------------------------------------------------


def test_eval_glucose_data__json_keys_for_model_and_baselines(tmp_path):
    write_folder(tmp_path, people=3, days=4, steps=(5, 15, 1))
    r = CliRunner().invoke(main, ["eval", "glucose", "--data", str(tmp_path), "--json"])
    assert r.exit_code == 0, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1
    got = json.loads(lines[-1])
    for prefix in ("", "threshold_", "trend_", "day_", "day_threshold_", "day_trend_"):
        per = "day" if prefix.startswith("day") else "night"
        for key in ("recall", "precision", f"false_alarms_per_{per}", "median_lead_min",
                    f"near_misses_per_{per}"):
            assert prefix + key in got, prefix + key
    assert 0 < got["rmse_30"] < 60 and got["day_rmse_30"] > 0
    # the forecast error split by the sensors' sampling interval and across people, the
    # trend line's next to it
    assert set(got["rmse_30_by_interval"]) == {"1", "5", "15"}
    assert all(0 < v < 60 for v in got["rmse_30_by_interval"].values())
    spread = got["rmse_30_per_person"]
    assert spread["median"] <= spread["worst"] and spread["worst_person"] in {"G01", "G02", "G03"}
    assert got["trend_rmse_30"] > 0 and set(got["trend_rmse_30_by_interval"]) == {"1", "5", "15"}
    assert got["people"] == 3 and got["nights"] == 3 * 4
    assert got["events"] == 3 * 2  # two dips per person, 15-minute and 1-minute sensors too
    assert got["threshold_recall"] == 1.0
    assert got["per_person"]["recall_median"] is not None
    assert got["policy"]["budget_per_week"] > 0 and "text" in got["policy"]
    # each night is scored at the person's calibrated threshold: the text says so, not "not
    # calibrated yet" (which the policy's own state, nights=0, would say)
    median = got["policy"]["calibrated_permille_median"]
    assert got["policy"]["text"].endswith(
        f"; each night at the threshold calibrated on the person's previous 14 nights (median "
        f"{median} permille; the model's own while fewer than 5)")
    assert "not calibrated yet" not in got["policy"]["text"]
    assert got["seen_in_training"] == []


def test_rmse_split__pooled_by_interval_and_spread_across_people():
    """Squared errors pool within each sampling interval (not a mean of people's RMSEs); the
    worst person is named."""
    from nightlink.tools.train.glucose import Tally

    tallies = [Tally(sq_err=100.0 * 4, n_err=4), Tally(sq_err=400.0 * 1, n_err=1),
               Tally(sq_err=900.0 * 5, n_err=5), Tally()]
    people = [("A", 5), ("B", 5), ("C", 15), ("D", 5)]
    got = glucose_real.rmse_split(tallies, people, "trend_")
    assert got["trend_rmse_30"] == pytest.approx(np.sqrt((400 + 400 + 4500) / 10), abs=0.01)
    assert got["trend_rmse_30_by_interval"] == {"5": pytest.approx(np.sqrt(800 / 5), abs=0.01),
                                                "15": 30.0}
    assert got["trend_rmse_30_per_person"] == {"median": 20.0, "worst": 30.0,
                                               "worst_person": "C"}


def test_trend_forecast__the_line_through_the_last_20_minutes_30_minutes_on():
    rows = np.array([[100.0] * 7 + [100, 95, 90, 85, 80],  # -1 mg/dL/min
                     [200.0] * 12,
                     [60.0] * 7 + [60, 50, 40, 30, 20]], dtype=np.float32)
    assert glucose_real.trend_forecast(rows).tolist() == pytest.approx([50.0, 200.0, 39.0])


def test_choose_floor__on_the_people_given_and_never_worse_than_none(tmp_path):
    """The forecast floor is picked from the candidates on the people given (a fold's training
    people): the fewest false alarms that keeps recall and warning time; off when none does."""
    from nightlink.edge.features.glucose_risk import AlarmPolicy, LiteRtGlucose

    write_folder(tmp_path, people=2, days=4, steps=(5,))
    people = cgm_real.load_folder(tmp_path)
    rt = LiteRtGlucose((Path(__file__).resolve().parents[2] / "edge" / "models"
                        / "glucose_risk.tflite").read_bytes())
    floor, rows = glucose_real.choose_floor(rt, people, AlarmPolicy(600))
    assert [r["floor"] for r in rows] == list(glucose_real.FLOORS)
    off = rows[0]
    # at 600 permille the model warns once on a steady night; a floor removes it and keeps
    # every low and the warning time; of the floors with the fewest false alarms that keep
    # them, the first (the least strict) wins
    assert off["false_alarms_per_night"] > 0 and floor < 400
    keep = [r for r in rows[1:] if r["recall"] >= off["recall"] - 0.01
            and (r["median_lead_min"] or 0) >= (off["median_lead_min"] or 0)]
    fewest = min(r["false_alarms_per_night"] for r in keep)
    assert floor == next(r["floor"] for r in keep if r["false_alarms_per_night"] == fewest)
    chosen = next(r for r in rows if r["floor"] == floor)
    assert chosen["false_alarms_per_night"] < off["false_alarms_per_night"]
    assert chosen["recall"] >= off["recall"] - 0.01
    assert chosen["false_alarms_per_night"] <= off["false_alarms_per_night"]
    assert (chosen["median_lead_min"] or 0) >= (off["median_lead_min"] or 0)
    # a floor nothing passes (only 39 mg/dL forecasts would): recall falls, so it stays off
    floor, _ = glucose_real.choose_floor(rt, people, AlarmPolicy(850), floors=(400.0, 39.0))
    assert floor == 400.0


def test_choose_threshold__the_calibrations_rule_on_the_people_given(tmp_path):
    """The model's own threshold (sounded before a person has nights enough to calibrate on)
    is picked on the people given by the rule the edge calibrates with: of the thresholds
    within bounds whose false alarms fit the budget, the one that warned of the most lows
    before they began, the least sensitive of equals; the least sensitive allowed when none
    fits."""
    from dataclasses import replace

    from nightlink.edge.features.glucose_risk import AlarmPolicy, LiteRtGlucose

    write_folder(tmp_path, people=2, days=4, steps=(5,))
    people = cgm_real.load_folder(tmp_path)
    rt = LiteRtGlucose((Path(__file__).resolve().parents[2] / "edge" / "models"
                        / "glucose_risk.tflite").read_bytes())
    policy = AlarmPolicy(850, forecast_floor_mgdl=90.0, budget_per_week=14.0)
    chosen, rows = glucose_real.choose_threshold(rt, people, policy)
    assert [r["permille"] for r in rows] == list(range(800, 926, 25))
    assert sum(r["lows"] for r in rows) > 0 and len({r["lows"] for r in rows}) == 1
    fits = [r for r in rows if r["false_alarms_per_night"] <= 2.0]
    most = max(r["lows_warned"] for r in fits)
    assert chosen == max(r["permille"] for r in fits if r["lows_warned"] == most)
    # no false alarm allowed: only thresholds that never sounded falsely, else the least
    # sensitive
    strict, rows = glucose_real.choose_threshold(rt, people, replace(policy, budget_per_week=0))
    clean = [r for r in rows if r["false_alarms_per_night"] == 0]
    assert strict == (max(r["permille"] for r in clean if r["lows_warned"] == max(
        c["lows_warned"] for c in clean)) if clean else 925)


# -- CGM exports as they come from the apps ------------------------------------------------------

EXPORT_FIXTURES = Path(__file__).parents[1] / "edge" / "fixtures"


def _libreview(path, times, values):
    """A LibreView export (US layout: MM-DD-YYYY HH:MM local times, historic readings)."""
    head = (EXPORT_FIXTURES / "libreview_mgdl.csv").read_text().splitlines()[:2]
    rows = [f"FreeStyle LibreLink,ABCD1234-0000-4000-8000-000000000001,{t:%m-%d-%Y %H:%M},0,{v:.0f}"
            + "," * 14 for t, v in zip(times, values, strict=True)]
    path.write_text("\n".join(head + rows) + "\n")


def _clarity(path, times, values):
    """A Dexcom Clarity export (ISO local times, EGV rows after the header's preamble rows)."""
    lines = (EXPORT_FIXTURES / "clarity_mgdl.csv").read_text().splitlines()[:11]
    rows = [f"{11 + i},{t:%Y-%m-%dT%H:%M:%S},EGV,,,,Android G6,{v:.0f},,,,,4012345,8XXXXX"
            for i, (t, v) in enumerate(zip(times, values, strict=True))]
    path.write_text("\r\n".join(lines + rows) + "\r\n")


def _same_person(a, b):
    assert a.interval_min == b.interval_min and a.start_min == b.start_min
    assert np.array_equal(a.x, b.x) and np.array_equal(a.observed, b.observed)


def test_exports__read_as_the_same_person_as_the_plain_layout(tmp_path):
    """Whole-number readings written as plain CSV, as a LibreView export (15-minute) and as a
    Clarity export (5-minute) give the same grid, so eval glucose scores a person's own
    downloads directly."""
    libre_t, libre_v = person_trace(3, seed=5, step_min=15)
    dex_t, dex_v = person_trace(3, seed=6, step_min=5)
    libre_v, dex_v = np.round(libre_v), np.round(dex_v)
    plain = tmp_path / "plain"
    write_person(plain, "L", libre_t, libre_v)
    write_person(plain, "D", dex_t, dex_v)
    exports = tmp_path / "exports"
    exports.mkdir()
    _libreview(exports / "L.csv", libre_t, libre_v)
    _clarity(exports / "D.csv", dex_t, dex_v)
    (exports / "README.txt").write_text("Downloaded from LibreView and Clarity.\n")  # left out
    a, b = cgm_real.load_folder(plain), cgm_real.load_folder(exports)
    assert [p.name for p in b] == ["D", "L"] and b[1].interval_min == 15
    for x, y in zip(a, b, strict=True):
        _same_person(x, y)
    runs = [CliRunner().invoke(main, ["eval", "glucose", "--data", str(d), "--json"])
            for d in (plain, exports)]
    assert all(r.exit_code == 0 for r in runs), runs[1].output
    assert json.loads(runs[0].output.splitlines()[-1]) == json.loads(runs[1].output.splitlines()[-1])


def test_nightscout_json__nights_on_the_clock_of_tz(tmp_path):
    """Nightscout JSON carries UTC: with --tz the nights fall where they did on that clock."""
    from datetime import UTC
    from zoneinfo import ZoneInfo

    times, values = person_trace(3, seed=7)
    plain = tmp_path / "plain"
    write_person(plain, "N", times, np.round(values))
    ns = tmp_path / "ns"
    ns.mkdir()
    zone = ZoneInfo("America/New_York")
    entries = [{"type": "sgv", "sgv": int(round(v)),
                "date": int(t.replace(tzinfo=zone).astimezone(UTC).timestamp() * 1000)}
               for t, v in zip(times, values, strict=True)]
    (ns / "N.json").write_text(json.dumps(entries))
    _same_person(cgm_real.load_folder(plain)[0], cgm_real.load_folder(ns, tz="America/New_York")[0])
    utc_read = cgm_real.load_folder(ns)[0]  # without --tz: UTC's clock, and said so
    assert utc_read.start_min != cgm_real.load_folder(plain)[0].start_min
    assert utc_read.notes == ["N.json: Nightscout times are UTC and were read on the UTC clock; "
                              "give --tz to put the nights on the person's clock."]
    assert cgm_real.load_folder(ns, tz="America/New_York")[0].notes == []
    r = CliRunner().invoke(main, ["eval", "glucose", "--data", str(ns), "--tz", "Mars/Olympus"])
    assert r.exit_code == 2 and "Unknown time zone" in r.output


def test_unknown_file__one_sentence(tmp_path):
    (tmp_path / "X.json").write_text('{"hello": 1}')
    r = CliRunner().invoke(main, ["eval", "glucose", "--data", str(tmp_path), "--json"])
    assert r.exit_code == 2 and "X.json is not a Nightscout JSON export" in r.output
    assert "Traceback" not in r.output
    (tmp_path / "X.json").unlink()
    (tmp_path / "Y.csv").write_text("date;value\n2025-01-01;5.5\n")
    r = CliRunner().invoke(main, ["eval", "glucose", "--data", str(tmp_path), "--json"])
    assert r.exit_code == 2 and "Y.csv is neither a CSV with columns timestamp and" in r.output
    assert "its first line is 'date;value'" in r.output


def test_exports_with_local_times__read_as_written_whatever_tz(tmp_path):
    """A Clarity export's clock times across the spring change (01:00-01:55 do not exist in
    London on 31 March 2024) are kept as written even with --tz Europe/London: only Nightscout
    JSON, which carries UTC, is moved to the zone's clock."""
    from datetime import datetime, timedelta

    start = datetime(2024, 3, 30, 22, 0)
    times = [start + timedelta(minutes=5 * i) for i in range(12 * 8)]
    values = [120.0 + (i % 7) for i in range(len(times))]
    folder = tmp_path / "x"
    folder.mkdir()
    _clarity(folder / "D.csv", times, values)
    for tz in ("UTC", "Europe/London"):
        t, g = cgm_real.read_export(folder / "D.csv", tz)
        assert t.size == len(times) and np.all(np.diff(t) == 5), tz
        assert g.tolist() == values


def test_libreview_scans_left_out__a_15_minute_sensor_stays_15_minutes(tmp_path):
    times, values = person_trace(3, seed=8, step_min=15)
    head = (EXPORT_FIXTURES / "libreview_mgdl.csv").read_text().splitlines()[:2]
    rows = []
    for k, (t, v) in enumerate(zip(times, values, strict=True)):
        rows.append(f"FreeStyle LibreLink,S1,{t:%m-%d-%Y %H:%M},0,{v:.0f}" + "," * 14)
        if k % 3:  # a scan in two of every three quarter-hours
            rows.append(f"FreeStyle LibreLink,S1,{t + timedelta(minutes=7):%m-%d-%Y %H:%M},1,,{v:.0f}"
                        + "," * 13)
    (tmp_path / "L.csv").write_text("\n".join(head + rows) + "\n")
    person = cgm_real.load_folder(tmp_path)[0]
    assert person.interval_min == 15 and person.observed.sum() == len(times)


def test_folder__one_file_per_person_and_notes_left_out(tmp_path):
    times, values = person_trace(2, seed=9)
    write_person(tmp_path, "P05", times, values)
    (tmp_path / "notes.txt").write_text("[draft] which sensor when\n")  # looks like JSON: still a note
    assert [p.name for p in cgm_real.load_folder(tmp_path)] == ["P05"]
    (tmp_path / "P05.json").write_text("[]")
    r = CliRunner().invoke(main, ["eval", "glucose", "--data", str(tmp_path), "--json"])
    assert r.exit_code == 2 and "would be the same person" in r.output, r.output
    r = CliRunner().invoke(main, ["train", "glucose", "--data", str(tmp_path), "--tz", "Nowhere/City"])
    assert r.exit_code == 2 and "Unknown time zone" in r.output, r.output


def test_export_notes_and_date_order__said_and_settled(tmp_path):
    """An export whose dates fit both orders is read as its language says, and the evaluation
    says so (file_notes) and takes --date-order to settle it."""
    import shutil

    shutil.copy(EXPORT_FIXTURES / "libreview_ambiguous.csv", tmp_path / "A.csv")
    r = CliRunner().invoke(main, ["eval", "glucose", "--data", str(tmp_path), "--json"])
    assert r.exit_code == 0, r.output
    notes = json.loads(r.output.splitlines()[-1])["file_notes"]
    assert "month-day" in notes["A"][0] and "--date-order dmy" in notes["A"][0]
    mdy = cgm_real.load_folder(tmp_path)[0]
    dmy = cgm_real.load_folder(tmp_path, date_order="dmy")[0]
    assert dmy.start_min != mdy.start_min and not dmy.notes
    r = CliRunner().invoke(main, ["eval", "glucose", "--data", str(tmp_path), "--json",
                                  "--date-order", "dmy"])
    assert r.exit_code == 0 and json.loads(r.output.splitlines()[-1])["file_notes"] == {}


def test_csv_without_a_reading__no_person(tmp_path):
    """A CSV whose glucose cells are all empty adds no one (it used to fail on indexing)."""
    (tmp_path / "E.csv").write_text("timestamp,glucose_value_mg_dl\n2025-01-01 00:00:00,\n")
    assert cgm_real.load_person(tmp_path / "E.csv") is None


# -- files as people write them ------------------------------------------------------------------


def _lines(path, rows, header="timestamp,glucose_value_mg_dl"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_csv_times_with_an_offset__written_clock_unless_tz_says(tmp_path):
    """`2024-03-01T03:00:00-05:00` is 03:00 on that person's clock: read as written, the nights
    stay where they are; with --tz the instant is put on that zone's clock instead, and the
    notes say which was done."""
    times, values = person_trace(2, seed=3)
    plain = cgm_real.load_person(write_person(tmp_path, "A", times, values))
    _lines(tmp_path / "B.csv", [f"{t:%Y-%m-%dT%H:%M:%S}-05:00,{v:.1f}" for t, v in zip(times, values, strict=True)])
    written = cgm_real.load_person(tmp_path / "B.csv")
    assert written.start_min == plain.start_min and np.array_equal(written.x, plain.x)
    assert "UTC offset" in written.notes[0] and "as written" in written.notes[0]
    utc = cgm_real.load_person(tmp_path / "B.csv", tz="UTC")
    assert utc.start_min == plain.start_min + 5 * 60 and "put on the UTC clock" in utc.notes[0]


def test_sensor_codes_low_high_and_stray_rows__read_or_skipped_and_counted(tmp_path):
    """Error codes under 39 mg/dL are not lows; `Low`/`High` are the sensor's range ends; a row
    without a time, with a date in year 1 or 9999, a footer or a row without a comma is skipped
    and counted: none of them stops the file or invents a month-long grid."""
    rows = [f"2024-03-01 0{h}:{m:02d}:00,{150 - m}" for h in range(1, 3) for m in range(0, 60, 5)]
    rows[3] = "2024-03-01 01:15:00,5"  # an error code
    rows[4] = "2024-03-01 01:20:00,Low"
    rows[5] = "2024-03-01 01:25:00,HIGH"
    rows[6] = "2024-03-01 01:30:00,NA"  # no reading: missing, not skipped
    rows += [",120", "NaT,100", "0001-01-01 00:00:00,100", "9999-01-01 00:00:00,100",
             "just a note", "Total readings,4032"]
    p = cgm_real.load_person(_lines(tmp_path / "S.csv", rows))
    assert p.x.size == 24  # 01:00-02:55, nothing stretched to year 1 or 9999
    assert p.x[4] == 39 and p.x[5] == 400 and p.x[3] != 5
    notes = " ".join(p.notes)
    assert "6 rows skipped" in notes and "1 values under 39 mg/dL" in notes
    assert "2 Low/High cells" in notes


def test_numeric_timestamps__one_sentence(tmp_path):
    _lines(tmp_path / "N.csv", ["1709251200,120", "1709251500,118"])
    r = CliRunner().invoke(main, ["eval", "glucose", "--data", str(tmp_path), "--json"])
    assert r.exit_code == 2 and "numbers, not dates" in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1


def test_quoted_csv_and_carbs_cells_left_empty(tmp_path):
    times, values = person_trace(2, seed=4)
    rows = [f'"{t:%Y-%m-%d %H:%M:%S}","{v:.1f}","NA"' for t, v in zip(times, values, strict=True)]
    rows[10] = rows[10].rsplit(",", 1)[0]  # a row without the carbs cell
    rows[20] = rows[20].rsplit(",", 1)[0] + ',"30"'
    p = cgm_real.load_person(_lines(tmp_path / "Q.csv", rows,
                                    '"timestamp","glucose_value_mg_dl","carbs_g"'))
    assert p.x.size == len(times) and p.carbs.tolist() == [20]


def test_folder__a_file_that_is_not_cgm_is_left_out_and_named(tmp_path):
    write_folder(tmp_path, people=2, days=2)
    (tmp_path / "csv" / "demographics.csv").write_text("person_id,age\nG01,24\n")
    (tmp_path / "csv" / "empty.csv").write_text("")
    r = CliRunner().invoke(main, ["eval", "glucose", "--data", str(tmp_path), "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.output.splitlines()[-1])
    assert got["people"] == 2
    assert [n.split(" left out")[0] for n in got["files_left_out"]] == ["demographics.csv", "empty.csv"]
    assert "note: demographics.csv left out" in r.output  # said without -v


def test_people__any_case_or_file_name_and_unknown_ones_refused(tmp_path):
    write_folder(tmp_path, people=2, days=2)
    r = CliRunner().invoke(main, ["eval", "glucose", "--data", str(tmp_path), "--json",
                                  "--people", "g01.csv"])
    assert r.exit_code == 0 and json.loads(r.output.splitlines()[-1])["people"] == 1, r.output
    r = CliRunner().invoke(main, ["eval", "glucose", "--data", str(tmp_path), "--people", "G01,ghost"])
    assert r.exit_code == 2 and "No CGM file for ghost" in r.output, r.output
    for people, code in ((",G02,", 0), (" , ", 2)):  # empty names are no one's
        r = CliRunner().invoke(main, ["eval", "glucose", "--data", str(tmp_path), "--json",
                                      "--people", people])
        assert r.exit_code == code, r.output
    assert "names no one" in r.output


def test_seen_in_training__by_the_readings_not_the_file_name(tmp_path):
    from nightlink.tools.train.cli import _seen_in_training

    write_folder(tmp_path, people=2, days=2)
    g01, g02 = cgm_real.load_folder(tmp_path)
    renamed = replace(g01, name="P01")
    train = {"real_cgm": ["P01"], "real_cgm_fingerprints": [cgm_real.fingerprint(g02)]}
    assert _seen_in_training(train, [renamed, g02]) == ["G02"]
    assert _seen_in_training({"real_cgm": ["P01"]}, [renamed, g02]) == ["P01"]  # older models
    committed = json.loads(Path("edge/models/glucose_risk.json").read_text())["train"]
    assert len(committed["real_cgm_fingerprints"]) == len(committed["real_cgm"])
    assert sorted(committed["real_cgm_days"]) == sorted(committed["real_cgm"])


def test_seen_in_training__a_reformatted_copy_of_a_trained_person_is_recognised(tmp_path):
    """The exact digest misses a copy of the training data that was rounded to 0.1 mmol/L,
    put on UTC an hour off and trimmed of its first day (the eval probe's re-exports of
    BrisT1D): its days are matched instead. Another person on the same dates is not (this
    trace generator gives everyone the same daily swing, so the other runs 25 mg/dL higher, as
    real people differ: among BrisT1D's 20, another's days match at most 2 of 50)."""
    from nightlink.tools.train.cli import _seen_in_training

    times, values = person_trace(16, seed=21)
    write_person(tmp_path / "train", "P01", times, values)
    trained = cgm_real.load_folder(tmp_path / "train")[0]
    train = {"real_cgm": ["P01"], "real_cgm_fingerprints": [cgm_real.fingerprint(trained)],
             "real_cgm_days": {"P01": cgm_real.day_marks(trained)}}
    copy = tmp_path / "copy"
    copy.mkdir()
    rows = [f"{t - timedelta(hours=1):%Y-%m-%dT%H:%M:%S}Z,{v / 18.0182:.1f}"
            for t, v in zip(times, values, strict=True) if t >= times[0] + timedelta(days=1)]
    (copy / "X.csv").write_text("timestamp,glucose_value_mmol_l\n" + "\n".join(rows) + "\n")
    other_times, other_values = person_trace(16, seed=22)
    write_person(copy, "Y", other_times, other_values + 25)
    group = cgm_real.load_folder(copy, tz="UTC")
    assert cgm_real.fingerprint(group[0]) != train["real_cgm_fingerprints"][0]
    assert _seen_in_training(train, group) == ["X"]
    assert _seen_in_training({**train, "real_cgm_days": {}}, group) == []  # the digest alone


def test_daytime_only__the_empty_night_figures_are_explained(tmp_path):
    times, values = person_trace(1, seed=5)
    day = [(t, v) for t, v in zip(times, values, strict=True) if 8 <= t.hour < 20]
    write_person(tmp_path, "D", [t for t, _ in day], [v for _, v in day])
    r = CliRunner().invoke(main, ["eval", "glucose", "--data", str(tmp_path), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout.splitlines()[-1])["nights"] == 0
    assert "no night (22:00-07:00) has glucose" in r.stderr


def test_offsets_in_hours_only_and_mmol_lows_and_a_file_without_readings(tmp_path):
    """`+01` is an offset like `+01:00`; 2.1 mmol/L is a reading below the range (39 mg/dL),
    not an error code; a CSV with no reading is named in files_left_out."""
    _lines(tmp_path / "H.csv", ["2024-03-01 14:05+01,100", "2024-03-01 14:10+01,101"])
    notes = []
    t, _g, _c = cgm_real.read_csv(tmp_path / "H.csv", "UTC", notes)
    assert t[0] % 1440 == 13 * 60 + 5 and "UTC offset" in notes[0]
    _lines(tmp_path / "M.csv", ["2024-03-01 01:00:00,2.1", "2024-03-01 01:05:00,4.0"],
           "timestamp,glucose_value_mmol_l")
    assert cgm_real.read_csv(tmp_path / "M.csv")[1].tolist() == [39.0, pytest.approx(72.07, abs=0.01)]
    (tmp_path / "H.csv").unlink()
    _lines(tmp_path / "E.csv", [])
    skipped = []
    assert [p.name for p in cgm_real.load_folder(tmp_path, skipped=skipped)] == ["M"]
    assert skipped == ["E.csv left out: E.csv has no glucose reading."]


def test_budget__nan_is_refused_like_any_other_bad_number(tmp_path):
    """click's FloatRange lets nan through (every comparison with it is false): the policy
    then read "budget nan" and calibrated to the least sensitive threshold."""
    for bad in ("nan", "inf", "-1"):
        r = CliRunner().invoke(main, ["eval", "glucose", "--data", str(tmp_path), "--budget", bad])
        assert r.exit_code == 2 and "Invalid value for '--budget'" in r.output, bad


def test_load_folder__files_not_read_are_named(tmp_path):
    """A person compressed, in a folder of their own or in another format is not silently
    missing from `people`: each is read or named with why (a README or notes stay quiet)."""
    import gzip

    times, values = person_trace(2, seed=3)
    write_person(tmp_path, "P01", times, values)
    write_person(tmp_path / "sub", "P02", times, values)
    (tmp_path / "P03.csv.gz").write_bytes(gzip.compress((tmp_path / "P01.csv").read_bytes()))
    (tmp_path / "P05.csv.gz").write_bytes(b"not gzip")
    (tmp_path / "P06.zip").write_bytes(b"PK")
    (tmp_path / "P04.xlsx").write_bytes(b"PK")
    (tmp_path / "README.md").write_text("notes")
    left: list[str] = []
    people = cgm_real.load_folder(tmp_path, skipped=left)
    assert [p.name for p in people] == ["P01", "P03", "sub"]  # gzip unpacked; a folder is one
    assert np.array_equal(people[1].x, people[0].x) and np.array_equal(people[2].x, people[0].x)
    assert left[0].startswith("P05.csv.gz left out: not a gzip file that can be unpacked")
    assert left[1:] == ["P04.xlsx left out: not a .csv, .tsv, .json or OhioT1DM .xml file (a .xlsx "
                        "file is not read).",
                        "P06.zip left out: compressed; unpack it into the folder."]
    # a folder of nothing but a broken gzip: the error says why, not only "no CGM files"
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "P07.csv.gz").write_bytes(b"not gzip")
    with pytest.raises(NightlinkError, match="P07.csv.gz: not a gzip file that can be unpacked"):
        cgm_real.load_folder(alone)


def test_folder_per_person__its_files_are_one_record(tmp_path):
    """Others keep a person's CGM as several downloads (a month each, overlapping by a day, one
    of them gzipped, beside a notes file and a spreadsheet): a folder per person is read as one
    record, the same grid as the whole in one file, named after the folder; a part that is
    not CGM is named; `names` picks folders; an empty folder or a file and a folder of the
    same name are said."""
    import gzip

    times, values = person_trace(6, seed=21)
    write_person(tmp_path / "flat", "P07", times, values)
    person = tmp_path / "split" / "P07"
    write_person(person, "2024-03a", times[:1000], values[:1000])
    write_person(person, "2024-03b", times[700:1400], values[700:1400])
    part = write_person(tmp_path, "part3", times[1400:], values[1400:])
    (person / "2024-03c.csv.gz").write_bytes(gzip.compress(part.read_bytes()))
    (person / "notes.txt").write_text("sensor changed on the 3rd")
    (person / "insulin.csv").write_text("time,units\n2024-03-01 12:00,3\n")
    (tmp_path / "split" / "P08").mkdir()
    write_person(tmp_path / "split" / "P09", "all", times[:500], values[:500])
    left: list[str] = []
    got, other = cgm_real.load_folder(tmp_path / "split", skipped=left)
    assert (got.name, other.name) == ("P07", "P09") and got.notes == []  # overlaps agree
    _same_person(got, cgm_real.load_folder(tmp_path / "flat")[0])
    assert left[0] == ("P08 left out: a folder with no CGM file in it (one folder per person "
                       "is read, holding that person's files).")
    assert left[1].startswith("P07/insulin.csv left out: insulin.csv is neither a CSV with "
                              "columns timestamp")
    assert len(left) == 2
    assert [p.name for p in cgm_real.load_folder(tmp_path / "split", ["p07"])] == ["P07"]
    write_person(tmp_path / "split", "P07", times, values)
    with pytest.raises(NightlinkError, match="P07.csv and the folder P07 would be the same person"):
        cgm_real.load_folder(tmp_path / "split")


def test_readings_interpolated_to_every_minute__the_sensors_own_kept(tmp_path):
    """A data set that interpolated a 15- or 5-minute sensor to every minute (CGMacros) let
    each minute hold part of the next reading (the forecast saw up to 14 minutes ahead, RMSE
    12 where the sensor's own readings give 13) and counted every minute as a reading: only
    the sensor's readings are kept, said, and the person is the sensor's own; a real
    1-minute sensor, whole numbers that bend anywhere, is kept whole."""
    for step, seed in ((15, 51), (5, 52)):
        times, values = person_trace(4, seed=seed, step_min=step)
        values = np.round(values)
        minutes = np.array([(t - START).total_seconds() // 60 for t in times])
        every = np.arange(minutes[0], minutes[-1] + 1)

        def gaps(m):
            return (m > 600) & (m < 603) | (m > 2000) & (m < 2045)

        drop, kept = gaps(every), ~gaps(minutes)
        own = cgm_real.load_person(write_person(tmp_path / "own", f"S{step}",
                                                np.array(times)[kept], values[kept]))
        line = np.interp(every, minutes, values)
        person = cgm_real.load_person(write_person(
            tmp_path / "every", f"S{step}", [START + timedelta(minutes=int(m)) for m in every[~drop]],
            line[~drop]))
        assert person.interval_min == step
        assert person.notes == [
            f"S{step}.csv: readings every minute on straight lines between readings {step} "
            f"minutes apart (interpolated, each holding part of the next reading): only the "
            f"{int(person.observed.sum())} at the sensor's times kept, of {int((~drop).sum())}."]
        assert np.array_equal(person.observed, own.observed[:person.observed.size])
        assert np.allclose(person.held[person.observed], own.held[:person.held.size][person.observed],
                           atol=0.01)
    times, values = person_trace(2, seed=53, step_min=1)
    real = cgm_real.load_person(write_person(tmp_path, "L3", times, np.round(values)))
    assert real.interval_min == 1 and real.notes == []


def _ohio(path, pid, times, values, meals=()):
    events = "".join(f'<event ts="{t:%d-%m-%Y %H:%M:%S}" value="{v:.0f}"/>'
                     for t, v in zip(times, values, strict=True))
    meal = "".join(f'<event ts="{t:%d-%m-%Y %H:%M:%S}" type="Lunch" carbs="{c}"/>'
                   for t, c in meals)
    path.write_text(f'<patient id="{pid}" weight="99" insulin_type="Novalog">'
                    f"<glucose_level>{events}</glucose_level><finger_stick/><basal/>"
                    f"<meal>{meal}</meal></patient>")


def test_columns_as_data_sets_name_them__read_as_the_plain_layout(tmp_path):
    """HUPA-UCM writes `time;glucose`, others `datetime,sgv` or a date and a time of day in two
    columns, the glucose's unit unnamed: the same person as the plain layout, mmol/L told by
    its values and said; a column named for mg/dL holding mmol/L values is still refused."""
    times, values = person_trace(4, seed=95)
    values = np.round(values)
    ref = cgm_real.load_person(write_person(tmp_path / "plain", "P", times, values))
    layouts = {
        "hupa": ("time;glucose;steps", lambda t, v: f"{t:%Y-%m-%dT%H:%M:%S};{v:.0f};0"),
        "sgv": ("datetime,sgv", lambda t, v: f"{t:%Y-%m-%d %H:%M},{v:.0f}"),
        "split": ("date,time,glucose,type", lambda t, v: f"{t:%Y-%m-%d},{t:%H:%M},"
                                                         f"{v / 18.016:.2f},cgm"),
    }
    for name, (header, row) in layouts.items():
        path = tmp_path / name / "P.csv"
        path.parent.mkdir()
        path.write_text(header + "\n" + "".join(row(t, v) + "\n"
                                                for t, v in zip(times, values, strict=True)))
        person = cgm_real.load_person(path)
        assert person.start_min == ref.start_min and np.array_equal(person.observed, ref.observed)
        assert np.allclose(person.x, ref.x, atol=0.2), name
        mmol = ["P.csv: its glucose column read as mmol/L (median "]
        assert [n[:len(mmol[0])] for n in person.notes] == (mmol if name == "split" else []), name
    (tmp_path / "split" / "P.csv").write_text("date,time,glucose_mg_dl\n2024-03-01,12:00,5.5\n")
    with pytest.raises(NightlinkError, match="look like mmol/L"):
        cgm_real.load_person(tmp_path / "split" / "P.csv")


def test_a_csv_saved_again_by_a_spreadsheet__its_dates_read_as_the_iso_file(tmp_path):
    """Opened and saved in Excel, `2023-06-01 00:06` becomes `01/06/2023 00:06` (the UK),
    `6/1/2023 12:06 AM` (the US) or `01.06.2023 00:06` (Germany): "no row could be read"
    before; now the same person, day-month or month-day told by the file's dates above 12,
    `--date-order` (or day-month, said) for a file whose every date fits both."""
    times, values = person_trace(14, seed=71)
    values = np.round(values)
    ref = cgm_real.load_person(write_person(tmp_path / "iso", "P", times, values))
    styles = {"uk": lambda t: f"{t:%d/%m/%Y %H:%M}",
              "us": lambda t: f"{t.month}/{t.day}/{t.year} {(t.hour - 1) % 12 + 1}:{t:%M} "
                              f"{'AM' if t.hour < 12 else 'PM'}",
              "de": lambda t: f"{t:%d.%m.%Y %H:%M}"}
    for name, style in styles.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "P.csv").write_text("timestamp,glucose_value_mg_dl\n" + "".join(
            f"{style(t)},{v:.0f}\n" for t, v in zip(times, values, strict=True)))
        person = cgm_real.load_person(folder / "P.csv")
        _same_person(person, ref)
        assert person.notes == [], (name, person.notes)
    short = [t for t in times if t.day <= 12]  # every date fits both orders
    (tmp_path / "us" / "P.csv").write_text("timestamp,glucose_value_mg_dl\n" + "".join(
        f"{styles['us'](t)},100\n" for t in short))
    guessed = cgm_real.load_person(tmp_path / "us" / "P.csv")
    assert "they were read as day-month-year" in guessed.notes[0]
    told = cgm_real.load_person(tmp_path / "us" / "P.csv", date_order="mdy")
    assert told.notes == [] and told.start_min == ref.start_min


def test_ohio_t1dm__each_patients_training_and_testing_files_are_one_person(tmp_path):
    """OhioT1DM, the field's usual benchmark, is XML with each patient's data split into a
    training and a testing file: read as one person named by the patient's id, the same grid
    as the readings in one CSV, meals with carbs as carb times; a file that is no patient's
    is named."""
    times, values = person_trace(6, seed=61)
    values = np.round(values)
    ref = cgm_real.load_person(write_person(tmp_path / "plain", "559", times, values))
    ohio = tmp_path / "ohio"
    ohio.mkdir()
    lunch = times[300]
    _ohio(ohio / "559-ws-training.xml", "559", times[:1200], values[:1200], [(lunch, 40),
                                                                            (times[400], 0)])
    _ohio(ohio / "559-ws-testing.xml", "559", times[1200:], values[1200:])
    other_t, other_v = person_trace(3, seed=62)
    _ohio(ohio / "563-ws-training.xml", "563", other_t, np.round(other_v))
    (ohio / "notes.xml").write_text("<notes/>")
    left: list[str] = []
    people = cgm_real.load_folder(ohio, skipped=left)
    assert [p.name for p in people] == ["559", "563"]
    _same_person(people[0], ref)
    assert people[0].carbs.tolist() == [300]  # the slot of the 40 g lunch; 0 g is no meal
    assert left == ["notes.xml left out: it is not an OhioT1DM patient file (no <glucose_level>)."]
    assert [p.name for p in cgm_real.load_folder(ohio, ["563"])] == ["563"]
    published = tmp_path / "OhioT1DM" / "2018"  # as the data set comes: train/ and test/
    for kind in ("train", "test"):
        (published / kind).mkdir(parents=True)
        for f in ohio.glob(f"*-ws-{kind}ing.xml"):
            (published / kind / f.name).write_bytes(f.read_bytes())
    for root in (published, published.parent):
        people = cgm_real.load_folder(root)
        assert [p.name for p in people] == ["559", "563"], root
        _same_person(people[0], ref)


def test_folder_per_person__two_peoples_files_in_one_folder_are_refused(tmp_path):
    """Put together by minute, two people's files covering the same days would be scored as
    one made-up person: that person is refused, naming the files; the others are read."""
    a_t, a_v = person_trace(4, seed=31)
    b_t, b_v = person_trace(4, seed=32)
    write_person(tmp_path / "P01", "a", a_t, a_v)
    write_person(tmp_path / "P01", "b", [t + timedelta(minutes=2) for t in b_t], b_v)
    write_person(tmp_path / "P02", "2024", a_t, a_v)
    write_person(tmp_path / "P02", "2024-mmol", a_t[:500], a_v[:500] + 2)  # the same, rounded
    left: list[str] = []
    assert [p.name for p in cgm_real.load_folder(tmp_path, skipped=left)] == ["P02"]
    assert left == ["P01 left out: P01: a.csv and b.csv cover the same 4 days with other "
                    "readings: two people's files, or two sensors worn at once. A folder is "
                    "read as one person; give one folder per person, or the folder itself as "
                    "--data to read one person per file."]


def test_an_archive_unpacked_with_its_people_in_a_folder__each_file_is_a_person(tmp_path):
    """Glucose-ML's zips unpack to a table of the people, a `__MACOSX` folder and a folder of
    one file per person: that folder is the people's (said), not one person made of them."""
    for k in range(3):
        times, values = person_trace(3, seed=40 + k)
        write_person(tmp_path / "DS-extracted-glucose-files", f"DS-{k}", times, values)
        write_person(tmp_path / "__MACOSX" / "DS-extracted-glucose-files", f"._DS-{k}", times[:2],
                     values[:2])
    (tmp_path / "DS-metadata.csv").write_text("person_id,age\nDS-0,30\n")
    (tmp_path / "README.md").write_text("a data set")
    left: list[str] = []
    people = cgm_real.load_folder(tmp_path, skipped=left)
    assert [p.name for p in people] == ["DS-0", "DS-1", "DS-2"]
    assert left[0] == ("DS-extracted-glucose-files read as the folder of people, one file per "
                       f"person: it is the only folder in {tmp_path.name} holding CGM files, "
                       "beside a table of the people.")


def test_one_folder_alone__one_persons_unless_its_files_are_several_peoples(tmp_path):
    """(Review.) A folder holding only `alice/` with her monthly downloads is Alice, not a
    person per download; one holding only a folder of several people's files (no table
    beside it) covering the same days is read as those people, said; `--people` picks from
    it by name (`john.doe` is john.doe, not john); a folder inside a person's folder is
    named, not passed over."""
    times, values = person_trace(6, seed=81)
    write_person(tmp_path / "one" / "alice", "jan", times[:900], values[:900])
    write_person(tmp_path / "one" / "alice", "feb", times[850:], values[850:])
    write_person(tmp_path / "one" / "alice" / "2023", "old", times[:10], values[:10])
    left: list[str] = []
    [alice] = cgm_real.load_folder(tmp_path / "one", skipped=left)
    assert alice.name == "alice"
    assert left == ["alice read as one person from its 2 files (the only folder in one); give it "
                    "as --data to read one person per file.",
                    "alice/2023 left out: a folder inside a person's folder (its files are not "
                    "read; keep a person's files in their folder)."]
    for k, who in enumerate(("john.doe", "mary", "sam")):
        t, v = person_trace(4, seed=90 + k)
        write_person(tmp_path / "many" / "files", who, t, v)
    left = []
    people = cgm_real.load_folder(tmp_path / "many", skipped=left)
    assert [p.name for p in people] == ["john.doe", "mary", "sam"]
    assert left == ["files read as the folder of people, one file per person: its files cover "
                    "the same days with other readings."]
    assert [p.name for p in cgm_real.load_folder(tmp_path / "many", ["John.Doe"])] == ["john.doe"]


def test_malformed_person_files__named_never_a_crash_nor_a_grid_over_centuries(tmp_path):
    """(Review.) An OhioT1DM file naming an unknown encoding, or holding events dated 1500
    and 2500 (a grid 1,000 years long took 16 GB) or values that are no reading; a CSV with a
    quote left open; a person whose readings lie 30 years apart: each left out or cut to its
    readings, said, the others scored."""
    times, values = person_trace(3, seed=87)
    write_person(tmp_path, "GOOD", times, values)
    (tmp_path / "enc.xml").write_text('<?xml version="1.0" encoding="klingon"?><patient id="1">'
                                      "<glucose_level/></patient>")
    far = [t.replace(year=1500) for t in times[:300]] + [t.replace(year=2500) for t in times[300:600]]
    _ohio(tmp_path / "700-ws-training.xml", "700", far + times[600:],
          np.r_[values[:-3], [float("nan"), -3.0, float("inf")]])
    (tmp_path / "Q.csv").write_text('timestamp,glucose_value_mg_dl,note\n2024-03-01 12:00,100,"open\n'
                                    + "x" * 200_000 + "\n")
    apart = list(times[:300]) + [t.replace(year=t.year + 30) for t in times[300:]]
    write_person(tmp_path, "APART", apart, values)
    left: list[str] = []
    people = cgm_real.load_folder(tmp_path, skipped=left)
    assert [p.name for p in people] == ["700", "GOOD"]
    assert people[0].notes == [
        "700-ws-training.xml: 603 glucose events left out (a value that is no reading, under "
        "39 mg/dL, or a date outside 1990-2099)."]
    assert any(n.startswith("enc.xml left out: Cannot read OhioT1DM file") for n in left), left
    assert "Q.csv left out: Q.csv cannot be read as CSV (" in " ".join(left), left
    assert "APART.csv left out: APART.csv holds readings 30 years apart (more than 20)" in \
        " ".join(left), left


def test_one_persons_downloads_on_two_clocks__refused_naming_the_shift(tmp_path):
    """(Review.) The same readings downloaded twice, once with UTC times and once local, were
    refused as two people's (or, alone in the folder, read as two people, counting the days
    twice): refused, saying the files are the same readings some hours apart."""
    times, values = person_trace(4, seed=97)
    write_person(tmp_path / "alice", "local", times, values)
    write_person(tmp_path / "alice", "utc", [t + timedelta(hours=5) for t in times], values)
    r = CliRunner().invoke(main, ["eval", "glucose", "--data", str(tmp_path)])
    assert r.exit_code == 2, r.output
    assert r.output.startswith("error: alice: local.csv and utc.csv hold the same readings 5 "
                               "hours apart: one has its times on another clock (UTC?)."), r.output


def test_one_sensor_downloaded_twice__one_person_whatever_the_files_are_called(tmp_path):
    """(Review.) A 1-minute and a 15-minute download of one sensor: the 15-minute file's
    readings are all in the 1-minute one, so the folder is one person in either name order
    (only the later file's readings were looked for in the earlier one)."""
    times, values = person_trace(3, seed=85, step_min=1)
    values = np.round(values)
    for first, second in (("a_15min", "b_1min"), ("b_15min", "a_1min")):
        folder = tmp_path / first / "alice"
        write_person(folder, first, times[::15], values[::15])
        write_person(folder, second, times, values)
        write_person(tmp_path / first / "bob", "all", times, values)
        assert [p.name for p in cgm_real.load_folder(tmp_path / first)] == ["alice", "bob"]


def test_folder_per_person__eval_scores_it_as_the_flat_folder(tmp_path):
    """`eval glucose` on people kept as folders gives the figures of the same people in one
    file each."""
    flat = write_folder(tmp_path / "flat", people=2, days=4)
    for f in sorted((flat / "csv").iterdir()):
        rows = f.read_text().splitlines()
        half = len(rows) // 2
        folder = tmp_path / "nested" / f.stem
        folder.mkdir(parents=True)
        (folder / "a.csv").write_text("\n".join(rows[:half + 20]) + "\n")
        (folder / "b.csv").write_text("\n".join(rows[:1] + rows[half:]) + "\n")
    out = {}
    for layout in ("flat", "nested"):
        r = CliRunner().invoke(main, ["eval", "glucose", "--data", str(tmp_path / layout),
                                      "--json"])
        assert r.exit_code == 0, r.output
        out[layout] = json.loads(r.output.strip().splitlines()[-1])
    for key in ("recall", "precision", "false_alarms_per_night", "rmse_30", "nights"):
        assert out["nested"][key] == out["flat"][key], key
    assert out["flat"]["nights"] > 0


def test_stray_dates__left_out_and_said_not_a_grid_over_decades(tmp_path):
    """A row dated 1995 and one dated 2099 among two weeks of readings: without them the
    5-minute grid spans two weeks, not a century (1.7 GB for one person), and the figures are
    the clean file's; two periods of wear months apart are both kept."""
    times, values = person_trace(3, seed=11)
    write_person(tmp_path / "clean", "P01", times, values)
    stray = tmp_path / "stray"
    write_person(stray, "P01", times, values)
    with open(stray / "P01.csv", "a") as fh:
        fh.write("1995-06-01 10:00,120\n2099-01-01 00:00,130\n")
    person = cgm_real.load_folder(stray)[0]
    _same_person(person, cgm_real.load_folder(tmp_path / "clean")[0])
    assert person.notes == ["P01.csv: 2 readings dated a month or more away from all the others "
                            "left out (1995-06-01, 2099-01-01)."]
    later = [t + timedelta(days=90) for t in times]
    write_person(tmp_path / "two", "P02", times + later, np.concatenate([values, values]))
    assert cgm_real.load_folder(tmp_path / "two")[0].notes == []


def test_stray_dates__a_short_wear_of_a_15_minute_sensor_is_not_a_stray(tmp_path):
    """(Review.) Two and a half days of a 15-minute sensor a month before the rest are 240
    readings, fewer than a 5-minute sensor's day but more than a 15-minute one's: kept."""
    early, early_values = person_trace(2, seed=12, step_min=15)
    later, later_values = person_trace(6, seed=13, step_min=15)
    later = [t + timedelta(days=40) for t in later]
    write_person(tmp_path, "P15", early + later, np.concatenate([early_values, later_values]))
    person = cgm_real.load_folder(tmp_path)[0]
    assert person.notes == []
    assert np.isfinite(person.held[:len(early) * 3]).sum() >= len(early) * 3 - 5  # kept


def test_other_spreadsheet_layouts__read_as_the_plain_one(tmp_path):
    """Columns in another order or among others, semicolons or tabs (a European spreadsheet,
    with decimal commas in mmol/L), Excel's `sep=` line: the same person, to the reading."""
    times, values = person_trace(2, seed=5)
    ref = cgm_real.load_person(write_person(tmp_path, "REF", times, values))
    stamps = [f"{t:%Y-%m-%d %H:%M:%S}" for t in times]
    variants = {
        "swapped": "glucose_value_mg_dl,timestamp\n" + "".join(
            f"{v:.1f},{s}\n" for s, v in zip(stamps, values, strict=True)),
        "among_others": "id,Timestamp ,device,Glucose_Value_mg_dl\n" + "".join(
            f"7,{s},G7,{v:.1f}\n" for s, v in zip(stamps, values, strict=True)),
        "semicolon_mmol": "timestamp;glucose_value_mmol_l\n" + "".join(
            f"{s};{v / 18.0182:.4f}\n".replace(".", ",") for s, v in zip(stamps, values,
                                                                          strict=True)),
        "tab": "timestamp\tglucose_value_mg_dl\n" + "".join(
            f"{s}\t{v:.1f}\n" for s, v in zip(stamps, values, strict=True)),
        "two_glucose_columns": "timestamp,glucose_value_mg_dl,glucose_value_mmol_l\n" + "".join(
            f"{s},{v:.1f},{v / 18.0182:.2f}\n" for s, v in zip(stamps, values, strict=True)),
        "excel_sep": "sep=,\ntimestamp,glucose_value_mg_dl\n" + "".join(
            f"{s},{v:.1f}\n" for s, v in zip(stamps, values, strict=True)),
    }
    for name, text in variants.items():
        path = tmp_path / f"{name}.csv"
        path.write_text(text)
        got = cgm_real.load_person(path)
        assert got is not None and got.observed.sum() == ref.observed.sum(), name
        assert np.allclose(got.x, ref.x, atol=0.1), name  # (mmol/L to 4 places)


def test_semicolons__decimal_commas_in_the_carbs_column_too(tmp_path):
    (tmp_path / "S.csv").write_text("timestamp;glucose_value_mg_dl;carbs_g\n"
                                    "2026-01-01 12:00;110;12,5\n2026-01-01 12:05;112;\n")
    _t, g, carbs = cgm_real.read_csv(tmp_path / "S.csv")
    assert g.tolist() == [110, 112] and carbs.size == 1


def test_two_readings_in_one_minute__their_mean_kept_and_said(tmp_path):
    """Overlapping sensors, or a clock set back an hour: a minute with two different
    readings keeps their mean (so the file's row order changes nothing) and says how many;
    the same reading twice is no news."""
    times, values = person_trace(1, seed=6)
    lines = ["timestamp,glucose_value_mg_dl"] + [f"{t:%Y-%m-%d %H:%M},{v:.1f}"
                                                 for t, v in zip(times, values, strict=True)]
    lines += [lines[5], lines[9].rsplit(",", 1)[0] + ",250.0", lines[20].rsplit(",", 1)[0] + ",40"]
    (tmp_path / "D.csv").write_text("\n".join(lines) + "\n")
    notes: list[str] = []
    t, g, _carbs = cgm_real.read_csv(tmp_path / "D.csv", notes=notes)
    assert notes == ["D.csv: 2 minutes hold two different readings (overlapping sensors, a "
                     "clock set back an hour, or seconds apart); their mean was kept."]
    (tmp_path / "R.csv").write_text("\n".join([lines[0], *reversed(lines[1:])]) + "\n")
    t2, g2, _carbs = cgm_real.read_csv(tmp_path / "R.csv")
    assert t2.tolist() == t.tolist() and g2.tolist() == g.tolist()  # newest first: the same
    mean = (round(float(values[8]), 1) + 250.0) / 2
    assert np.isclose(g, mean, atol=0.06).sum() == 1, (mean, g[:12])


def test_a_folder_refused__says_why_and_names_the_file_that_looked_like_cgm(tmp_path):
    times, values = person_trace(1, seed=7)
    (tmp_path / "dirs" / "P02").mkdir(parents=True)
    (tmp_path / "dirs" / "P02" / "glucose.xlsx").write_bytes(b"PK")
    r = CliRunner().invoke(main, ["eval", "glucose", "--data", str(tmp_path / "dirs")])
    assert r.exit_code == 2 and "P02/glucose.xlsx: not a .csv, .tsv, .json or OhioT1DM" in r.output, r.output
    raw = tmp_path / "raw"  # D1NAMO as published: a folder per person, CGM among other files
    for who in ("001", "002"):
        (raw / who).mkdir(parents=True)
        (raw / who / "food.csv").write_text("datetime,description\n2014-10-01 08:00,toast\n")
        (raw / who / "glucose.csv").write_text("date,time,glucose,type\n2014-10-01,08:00,5.4,cgm\n")
    r = CliRunner().invoke(main, ["eval", "glucose", "--data", str(raw), "--json"])
    assert r.exit_code == 0, r.output  # its date and time columns, its glucose told as mmol/L
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["people"] == 2 and "001/food.csv left out: food.csv is neither" in r.output
    assert got["file_notes"]["001"] == ["glucose.csv: its glucose column read as mmol/L (median "
                                        "5.4)."]
    (raw / "001" / "glucose.csv").write_text("date;glucose\n2014-10-01;5.4\n")
    (raw / "002" / "glucose.csv").write_text("date;glucose\n2014-10-01;5.4\n")
    r = CliRunner().invoke(main, ["eval", "glucose", "--data", str(raw)])
    assert r.exit_code == 2 and r.output.startswith("error: glucose.csv is neither"), r.output
    write_person(tmp_path / "dirs" / "P02", "glucose", times, values)  # a folder per person
    r = CliRunner().invoke(main, ["eval", "glucose", "--data", str(tmp_path / "dirs"), "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout.strip().splitlines()[-1])["people"] == 1
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "A_people.csv").write_text("person,age\nP02,24\n")
    (mixed / "P02.csv").write_text("timestamp,glucose_value_mg_dl\n1st June 2023 00:01,167\n")
    r = CliRunner().invoke(main, ["eval", "glucose", "--data", str(mixed)])
    assert r.exit_code == 2 and r.output.startswith("error: P02.csv needs columns"), r.output


def test_people_scored__a_file_of_a_few_hours_adds_to_no_figure(tmp_path):
    write_folder(tmp_path, people=2, days=3)
    times, values = person_trace(1, seed=9)
    write_person(tmp_path / "csv", "SHORT", times[:30], values[:30])  # 2.5 hours
    r = CliRunner().invoke(main, ["eval", "glucose", "--data", str(tmp_path), "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert (got["people"], got["people_scored"]) == (3, 2)


def test_readings_whose_seconds_jitter_near_half_a_slot__every_one_on_the_grid():
    """A sensor session read at 2.5 minutes past the first reading's phase, its timestamps
    a few seconds either side (a real export with seconds): rounded alone, two readings five
    minutes apart shared a slot and the first was lost (up to 5 % of a person's readings)."""
    from nightlink.edge.features.glucose_risk import cgm_grid

    rng = np.random.default_rng(3)
    t = np.r_[0.0, 2.5 + 5 * np.arange(1, 2000) + rng.normal(0, 0.05, 1999)]
    g = (120 + 30 * np.sin(np.arange(2000) / 40)).astype(np.float32)
    _interval, x, observed, _held = cgm_grid(t, g)
    assert int(observed.sum()) == 2000
    assert np.array_equal(x[observed], g)  # each in its own slot, in order
    clean = 5.0 * np.arange(2000)  # on the grid: as before
    _interval, x2, observed2, _held = cgm_grid(clean, g)
    assert np.flatnonzero(observed2).tolist() == list(range(2000))
    # a sensor reading every 4 minutes for a day: readings share slots rather than drift
    four = 4.0 * np.arange(360)
    _interval, x3, observed3, _held = cgm_grid(four, np.arange(360, dtype=np.float32))
    kept = x3[observed3].astype(int)  # which reading each slot kept
    late = np.flatnonzero(observed3) * 5 - four[kept]
    assert np.abs(late).max() < 5, late.max()


def _with_fingersticks(path, times, values, kinds=("cgm", "manual"), header="type"):
    """A person's file with a kind column: the sensor's readings, and a fingerstick of 40 mg/dL
    two minutes after every 24th of them (another instrument, another value)."""
    lines = [f"timestamp,glucose_value_mg_dl,{header}"]
    for k, (t, v) in enumerate(zip(times, values, strict=True)):
        lines.append(f"{t:%Y-%m-%d %H:%M:%S},{v:.1f},{kinds[0]}")
        if k % 24 == 3:
            lines.append(f"{t + timedelta(minutes=2):%Y-%m-%d %H:%M:%S},40.0,{kinds[1]}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("header, kinds", [("type", ("cgm", "manual")),  # D1NAMO
                                           ("type", ("sgv", "mbg")),  # Nightscout
                                           ("source", ("sensor", "meter")),
                                           ("record type", ("0", "2")),  # LibreView's
                                           ("record_type", ("0.0", "2.0")),  # via pandas
                                           ("type", ("Sensor Glucose", "BG Reading"))]) # CareLink
def test_a_kind_column__only_the_sensor_s_rows_read_and_the_others_said(tmp_path, header, kinds):
    """A fingerstick beside the sensor's readings is another instrument's value: on the grid it
    would replace the sensor's reading (a 40 mg/dL strip made false lows). Only the rows the
    kind column names as the sensor's are read, and the rest are counted in the notes."""
    times, values = person_trace(3, seed=5)
    write_person(tmp_path / "clean", "P1", times, values)
    _with_fingersticks(tmp_path / "mixed" / "P1.csv", times, values, kinds, header)
    clean, mixed = (cgm_real.load_folder(tmp_path / d)[0] for d in ("clean", "mixed"))
    _same_person(clean, mixed)
    notes = []
    cgm_real.read_csv(tmp_path / "mixed" / "P1.csv", notes=notes)
    assert notes == [f"P1.csv: 36 rows left out by their {header} (36 "
                     f"{kinds[1].lower().removesuffix('.0')}): not the sensor's readings."], notes
    _with_fingersticks(tmp_path / "meter" / "P1.csv", times[:40], values[:40],
                       (kinds[1], kinds[1]), header)  # a meter's readings only
    with pytest.raises(NightlinkError, match=f"P1.csv holds no CGM readings: its {header} "
                                             f"column says {kinds[1].lower().removesuffix('.0')} "
                                             "for every row"):
        cgm_real.read_csv(tmp_path / "meter" / "P1.csv")


def test_a_kind_column_of_other_values__read_whole_and_carb_rows_keep_their_carbs(tmp_path):
    times, values = person_trace(2, seed=5)
    _with_fingersticks(tmp_path / "dev" / "P1.csv", times, values, ("Dexcom G6", "Dexcom G6"))
    t, g, _carbs = cgm_real.read_csv(tmp_path / "dev" / "P1.csv")  # a device's name: no kind
    assert t.size == len(times) + 24 and g.min() == 40.0
    _with_fingersticks(tmp_path / "bg" / "P1.csv", times, values, ("BG", "BG"))  # xDrip's word
    assert cgm_real.read_csv(tmp_path / "bg" / "P1.csv")[0].size == len(times) + 24
    # a device's name beside a meter's kind: the meter's rows out, the rest read
    _with_fingersticks(tmp_path / "mix" / "P1.csv", times, values, ("Dexcom G6", "fingerstick"),
                       "source")
    t, g, _carbs = cgm_real.read_csv(tmp_path / "mix" / "P1.csv")
    assert t.size == len(times) and g.min() > 40.0
    # a kind named on one row only: the rows that name none are read, not left out
    lines = (tmp_path / "dev" / "P1.csv").read_text().splitlines()
    first = [lines[0], lines[1].replace("Dexcom G6", "cgm")]
    rest = [line.replace(",Dexcom G6", ",") for line in lines[2:] if ",40.0," not in line]
    (tmp_path / "one.csv").write_text("\n".join(first + rest) + "\n")
    assert cgm_real.read_csv(tmp_path / "one.csv")[0].size == len(times)
    # the first column named like a kind holds no kinds: the next one that does is read
    (tmp_path / "two.csv").write_text("timestamp,glucose_value_mg_dl,type,kind\n"
                                      "2024-03-01 12:00,150,T1D,cgm\n"
                                      "2024-03-01 12:02,40,T1D,manual\n"
                                      "2024-03-01 12:05,151,T1D,cgm\n")
    assert cgm_real.read_csv(tmp_path / "two.csv")[1].tolist() == [150.0, 151.0]
    lines = ["timestamp,glucose_value_mg_dl,carbs_g,type", "2024-03-01 12:00:00,150,,cgm",
             "2024-03-01 12:02:00,,45,carbs", "2024-03-01 12:05:00,151,,cgm"]
    (tmp_path / "C.csv").write_text("\n".join(lines) + "\n")
    t, g, carbs = cgm_real.read_csv(tmp_path / "C.csv")
    assert g.tolist() == [150.0, 151.0] and carbs.tolist() == [t[0] + 2]


def test_a_meter_s_file__left_out_of_a_person_s_folder_and_not_counted_as_a_person(tmp_path):
    """Fingersticks a few times a day, in a file of their own, are not CGM: beside a sensor's
    file they would be merged into its readings; alone they made a person with nothing to
    score."""
    times, values = person_trace(3, seed=5)
    write_person(tmp_path / "dirs" / "P1", "cgm", times, values)
    write_person(tmp_path / "dirs" / "P1", "meter", times[10::70], np.full(13, 40.0))
    write_person(tmp_path / "clean" / "P1", "cgm", times, values)
    skipped = []
    mixed = cgm_real.load_folder(tmp_path / "dirs", skipped=skipped)
    _same_person(cgm_real.load_folder(tmp_path / "clean")[0], mixed[0])
    assert skipped[-1] == ("P1/meter.csv left out: meter.csv holds readings a median 5.8 hours "
                           "apart: too far apart for a CGM's (a meter's fingersticks?)."), skipped
    write_person(tmp_path / "top", "P1", times, values)
    write_person(tmp_path / "top", "P2", times[10::70], np.full(13, 90.0))
    skipped = []
    assert [p.name for p in cgm_real.load_folder(tmp_path / "top", skipped=skipped)] == ["P1"]
    assert skipped == ["P2.csv left out: P2.csv holds readings a median 5.8 hours apart: too "
                       "far apart for a CGM's (a meter's fingersticks?)."], skipped


def test_a_sensor_s_column_read_before_bg_unless_it_holds_no_glucose(tmp_path):
    """`sensor_glucose` or `cgm` beside `bg` is the sensor's (a meter's readings, or
    simglucose's `BG`, the simulated person's true glucose without the sensor's noise), and
    the notes say which was read; a `cgm` column that is a flag or a device's name is not."""
    lines = ["timestamp,bg,sensor_glucose", "2024-03-01 12:00:00,,150", "2024-03-01 12:02:00,40,",
             "2024-03-01 12:05:00,,151"]
    (tmp_path / "P.csv").write_text("\n".join(lines) + "\n")
    assert cgm_real.read_csv(tmp_path / "P.csv")[1].tolist() == [150.0, 151.0]
    (tmp_path / "S.csv").write_text("Time,BG,CGM,CHO\n2024-03-01 12:00:00,150.2,155.9,0\n"
                                    "2024-03-01 12:03:00,151.0,149.1,0\n")  # simglucose
    notes = []
    assert np.allclose(cgm_real.read_csv(tmp_path / "S.csv", notes=notes)[1], [155.9, 149.1])
    assert notes == ["S.csv: its cgm column read as the glucose, not its bg column."], notes
    for flag in ("1", "Dexcom G6"):
        (tmp_path / "F.csv").write_text(f"timestamp,bg,cgm\n2024-03-01 12:00:00,150,{flag}\n"
                                        f"2024-03-01 12:05:00,151,{flag}\n")
        notes = []
        assert cgm_real.read_csv(tmp_path / "F.csv", notes=notes)[1].tolist() == [150.0, 151.0]
        assert notes == ["F.csv: its bg column read as the glucose, not its cgm column, which "
                         "holds no glucose."], notes
    (tmp_path / "C.csv").write_text("timestamp,cgm\n2024-03-01 12:00:00,150\n")
    assert cgm_real.read_csv(tmp_path / "C.csv")[1].tolist() == [150.0]
