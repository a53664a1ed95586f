"""Importing CGM exports into the edge store: entries, epochs, idempotence."""

import json
import time
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from nightlink.cli import main
from nightlink.edge.importers.cgm_csv import read_dexcom_clarity_csv
from nightlink.edge.importers.importer import import_file
from nightlink.edge.sources.samples import SourceError
from nightlink.shared import features
from nightlink.shared.epoch import epoch_index
from tests.edge.test_import_formats import libre_file, libre_row

FIXTURES = Path(__file__).parent / "fixtures"


def test_import__clarity_entries_and_epochs(store):
    readings = read_dexcom_clarity_csv(FIXTURES / "clarity_mgdl.csv")
    result = import_file(store, FIXTURES / "clarity_mgdl.csv", "clarity")
    first, last = epoch_index(readings[0].t), epoch_index(readings[-1].t)
    assert result.epochs_written == last - first + 1 == store.count_records(features.CGM)
    assert result.entries_stored == len(readings) and result.skipped_rows == 2
    values = store.epoch_values(features.CGM, first, last + 1)
    for g in readings:
        e = epoch_index(g.t)
        assert values[e][0] == g.sgv  # the reading is the latest in its own epoch
        assert values[e][5] == g.error_code


def test_import__twice_adds_nothing(store):
    import_file(store, FIXTURES / "clarity_mgdl.csv", "clarity")
    n = store.count_records()
    again = import_file(store, FIXTURES / "clarity_mgdl.csv", "clarity")
    assert again.epochs_written == 0 and again.entries_stored == 0
    assert store.count_records() == n


def test_import__libreview(store):
    result = import_file(store, FIXTURES / "libreview_mgdl.csv", "libreview")
    assert result.samples > 10 and result.epochs_written > 0


def test_import__not_an_export(store):
    with pytest.raises(SourceError, match="not a Dexcom Clarity export"):
        import_file(store, FIXTURES / "not_an_export.csv", "clarity")


def test_edge_import_cli(tmp_path):
    res = CliRunner().invoke(main, ["edge", "import", str(FIXTURES / "clarity_mgdl.csv"),
                                    "--format", "clarity", "--tz", "UTC",
                                    "--db", str(tmp_path / "e.db")])
    assert res.exit_code == 0, res.output
    assert res.output == ("clarity_mgdl.csv (Dexcom Clarity): 38 readings, 2 bad rows skipped "
                          "(first: line 52: bad glucose value '1x7'); 371 epochs written, 0 "
                          "already stored; 38 entries stored, 0 duplicates (already stored, or listed twice).\n"
                          "From 2026-11-19 22:00 to 2026-11-20 01:05 (UTC time); if that is "
                          "not when it was recorded, give the export's own --tz.\n"
                          "note: 4 readings were off the sensor's scale: 2 'Low' read as 39, "
                          "2 'High' read as 401.\n"
                          "Stored as import 1; `nightlink edge imports --undo 1` removes it.\n")
    res = CliRunner().invoke(main, ["edge", "import", str(FIXTURES / "not_an_export.csv"),
                                    "--format", "libreview", "--db", str(tmp_path / "e.db")])
    assert res.exit_code == 2 and "error:" in res.output
    assert "is not a LibreView export" in res.output


def test_import__apple_health_gives_wearable_epochs(store):
    result = import_file(store, FIXTURES / "apple_health_export.xml", "apple-health")
    assert result.samples > 0 and result.epochs_written > 0
    recs = list(store.records(features.WEARABLE))
    assert len(recs) == result.epochs_written
    assert any(v[0] is not None for r in recs for v in r.values())  # some heart rate


def test_import__fit_gives_heart_rate_and_hrv(store, tmp_path):
    from nightlink.tools.sim.fitwriter import FitWriter, utc

    t0 = utc("2026-01-15T23:00:00")
    w = FitWriter()
    w.file_id(t0)
    for i in range(120):  # two minutes: HR every second, beats every ~0.9 s
        w.record(t0 + i, heart_rate=60 + i % 5)
        if i % 5 == 0:
            w.hrv([900, 910, 905, 895, 900])
    path = tmp_path / "night.fit"
    path.write_bytes(w.to_bytes())
    result = import_file(store, path, "fit")
    vals = store.epoch_values(features.WEARABLE, epoch_index(t0), epoch_index(t0) + 4)
    names = features.names(features.WEARABLE)
    first = dict(zip(names, vals[epoch_index(t0)], strict=True))
    assert result.epochs_written == 4
    assert first["hr_mean_bpm"] == pytest.approx(60000 / 902, abs=0.5)
    assert first["rmssd_ms"] is not None and first["spo2_mean_pct"] is None


def ns_file(tmp_path: Path, *times_s: float, name: str = "ns.json") -> Path:
    """A Nightscout entries export with one sgv reading at each Unix second."""
    path = tmp_path / name
    path.write_text(json.dumps([{"type": "sgv", "sgv": 100 + i, "date": int(t * 1000)}
                                for i, t in enumerate(times_s)]))
    return path


DAY = 86_400.0
PAST = (time.time() // DAY - 200) * DAY  # a midnight 200 days ago


def test_import__a_file_spanning_more_than_120_days_gives_its_newest_or_those_since(
        store, tmp_path):
    # Apple Health exports hold years: the newest 120 days are taken and the note says so;
    # --since chooses where to start instead.
    path = ns_file(tmp_path, PAST, PAST + 300, PAST + 130 * DAY)
    result = import_file(store, path, "nightscout")
    assert result.samples == 1 and result.entries_stored == 1
    assert result.span == (PAST + 130 * DAY, PAST + 130 * DAY)
    assert "one import takes 120 days, so its newest were taken" in result.notes[0]
    assert [e["sgv"] for e in store.entries(count=10)] == [102]
    other = tmp_path / "other.db"
    from nightlink.edge.store import EdgeStore

    second = EdgeStore(other)
    try:
        result = import_file(second, path, "nightscout", since=PAST)
        assert result.samples == 2 and "import it again with a later --since" in result.notes[0]
        assert sorted(e["sgv"] for e in second.entries(count=10)) == [100, 101]
        from nightlink.tools.sim.fitwriter import FitWriter

        w = FitWriter()  # a wearable file: heart rate at three moments a day apart
        w.file_id(int(PAST))
        for k in range(3):
            w.record(int(PAST + k * DAY), heart_rate=60 + k)
        fit = tmp_path / "few.fit"
        fit.write_bytes(w.to_bytes())
        few = import_file(second, fit, "fit", since=PAST + DAY)
        assert few.samples == 2 and few.span == (PAST + DAY, PAST + 2 * DAY)
        with pytest.raises(SourceError, match="has no readings from"):
            import_file(second, path, "nightscout", since=PAST + 200 * DAY)
    finally:
        second.close()


def test_import__a_file_ahead_of_now_is_refused_naming_tz(store, tmp_path):
    """A LibreView export taken now in Tokyo read as UTC lies 9 hours ahead: stored, its
    readings would be the local site's current glucose and hide the live one."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    now = time.time()
    tokyo = datetime.fromtimestamp(now, ZoneInfo("Asia/Tokyo"))
    rows = [libre_row((tokyo.replace(tzinfo=None) - timedelta(minutes=15 * k))
                      .strftime("%d-%m-%Y %H:%M"), 0, str(120 + k)) for k in range(8)]
    path = libre_file(tmp_path, rows)
    with pytest.raises(SourceError, match=r"h from now: its local times are not UTC times "
                                          r"\(give the export's own zone with --tz\), or the "
                                          r"clock .* is set ahead .*; nothing was stored"):
        import_file(store, path, "libreview", tz="UTC", date_order="dmy", now=now)
    assert store.entries(count=10) == [] and store.count_records() == 0
    result = import_file(store, path, "libreview", tz="Asia/Tokyo", date_order="dmy", now=now)
    assert result.samples == 8 and result.span[1] <= now
    with pytest.raises(SourceError, match="was set ahead; nothing was stored"):
        import_file(store, ns_file(tmp_path, now + 3600, name="ahead.json"), "nightscout",
                    now=now)


def test_import__readings_the_store_refuses_are_counted_and_named(store, tmp_path):
    now = time.time()
    path = ns_file(tmp_path, now - 600, now - 300, now + 3 * DAY, now + 3 * DAY + 300)
    result = import_file(store, path, "nightscout")
    assert (result.samples, result.skipped_rows, result.entries_stored) == (2, 2, 2)
    assert result.first_bad.startswith("reading at ")
    assert result.first_bad.endswith("is more than a day in the future")
    assert max(r.epoch for r in store.records(features.CGM)) <= epoch_index(now)
    with pytest.raises(SourceError, match=r"has 1 readings but none can be stored \(first: "):
        import_file(store, ns_file(tmp_path, now + 3 * DAY, name="f.json"), "nightscout")


def test_cli__refused_readings_in_the_summary(tmp_path):
    now = time.time()
    path = ns_file(tmp_path, now - 300, now + 3 * DAY)
    res = CliRunner().invoke(main, ["edge", "import", str(path), "--db", str(tmp_path / "e.db")])
    assert res.exit_code == 0, res.output
    assert "1 readings, 1 bad rows skipped (first: reading at " in res.output
    assert "1 entries stored, 0 duplicates (already stored, or listed twice)." in res.output


def test_import__epochs_only_where_a_reading_gives_a_value(store, tmp_path):
    """Two readings ten days apart: the first gives values for CGM_MAX_AGE_MIN (240 epochs),
    the second its own epoch; the empty days between are not written."""
    result = import_file(store, ns_file(tmp_path, PAST, PAST + 10 * DAY), "nightscout")
    assert result.epochs_written == 241 == store.count_records(features.CGM)
    values = store.epoch_values(features.CGM, epoch_index(PAST), epoch_index(PAST) + 240)
    assert all(v[0] == 100 for v in values.values()) and len(values) == 240


def _days_of_readings(tmp_path: Path, days: int, name: str = "days.json") -> Path:
    start = (time.time() // DAY - days - 2) * DAY
    return ns_file(tmp_path, *(start + 300 * k for k in range(days * 288)), name=name)


def test_import__a_store_refusing_a_write_stops_in_one_sentence_keeping_whole_days(
        store, tmp_path):
    """A store that refuses a write mid-way (here a real SQLite trigger, standing for a full
    disk): one sentence saying how far it got, whole days kept, and the same import again
    finishes it without storing anything twice."""
    from nightlink.edge.importers.importer import DAY_EPOCHS, epochs_to_write
    from nightlink.edge.importers.nightscout_json import read_nightscout_json

    path = _days_of_readings(tmp_path, 3)
    samples = read_nightscout_json(path)
    epochs = epochs_to_write(samples, 60 * 120 - 30)
    stop_at = epochs[DAY_EPOCHS + 100]  # inside the second day
    store.db.execute(f"CREATE TRIGGER full BEFORE INSERT ON records WHEN NEW.epoch >= {stop_at} "
                     "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END")
    with pytest.raises(SourceError) as err:
        import_file(store, path, "nightscout")
    assert str(err.value) == (
        f"The edge store {store.path} refused a write (database or disk is full) after "
        f"{DAY_EPOCHS} of the {len(epochs)} epochs; the readings and the epochs written stay, "
        "and importing the same file again finishes it without storing anything twice (or "
        "`nightlink edge imports --undo 1` removes what was written).")
    assert store.count_records(features.CGM) == DAY_EPOCHS  # the first day, whole
    store.db.execute("DROP TRIGGER full")
    again = import_file(store, path, "nightscout")
    assert (again.epochs_kept, again.epochs_written) == (DAY_EPOCHS, len(epochs) - DAY_EPOCHS)
    assert store.count_records(features.CGM) == len(epochs)


def test_cli__two_imports_of_one_file_at_once_store_each_epoch_once(tmp_path):
    import subprocess
    import sys

    path = _days_of_readings(tmp_path, 3)
    db = tmp_path / "e.db"
    CliRunner().invoke(main, ["edge", "id", "--db", str(db)])
    cmd = [sys.executable, "-m", "nightlink", "edge", "import", str(path), "--tz", "UTC",
           "--db", str(db)]
    runs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for _ in range(2)]
    outs = [r.communicate(timeout=120)[0] for r in runs]
    assert [r.returncode for r in runs] == [0, 0], outs
    from nightlink.edge.store import EdgeStore

    s = EdgeStore(db)
    try:
        epochs = [r.epoch for r in s.records(features.CGM)]
    finally:
        s.close()
    assert len(epochs) == len(set(epochs)) > 3 * 2880 - 10


def test_cli__import_zone_defaults_to_the_machines_and_a_bad_one_is_refused_first(
        tmp_path, monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    db = tmp_path / "e.db"
    res = CliRunner().invoke(main, ["edge", "import", str(FIXTURES / "clarity_mgdl.csv"),
                                    "--db", str(db)])
    assert res.exit_code == 0, res.output
    assert "From 2026-11-19 22:00 to 2026-11-20 01:05 (Asia/Tokyo time, this machine's zone)" \
        in res.output
    from nightlink.edge.store import EdgeStore

    s = EdgeStore(db)
    try:
        oldest = s.entries(count=1000)[-1]
    finally:
        s.close()
    from datetime import UTC, datetime

    assert oldest["date"] // 60_000 == datetime(2026, 11, 19, 13, 0, tzinfo=UTC).timestamp() // 60
    for tz in ("Not/AZone", "Europe", "UTC+1"):
        res = CliRunner().invoke(main, ["edge", "import", str(FIXTURES / "apple_health_export.xml"),
                                        "--tz", tz, "--db", str(tmp_path / "n.db")])
        assert res.exit_code == 2 and res.output.startswith(f"error: --tz: {tz!r} is not a time "
                                                            "zone name"), res.output
        assert not (tmp_path / "n.db").exists()
    res = CliRunner().invoke(main, ["edge", "import", str(FIXTURES / "clarity_mgdl.csv"),
                                    "--since", "19.11.2026", "--db", str(db)])
    assert res.exit_code == 2 and "--since '19.11.2026' is not a date" in res.output


def _watch_night(tmp_path: Path, start: float, minutes: float, cycle_s: float | None,
                 name: str = "watch.fit") -> Path:
    """A FIT file of a watch logging beats from `start`: with `cycle_s`, the heart rate
    cycles as in obstructive apnea, with 20-bpm surges (tests/edge/test_cvhr.py)."""
    from nightlink.tools.sim.fitwriter import beats_fit
    from tests.edge.test_cvhr import synthetic_beats

    t, rr = synthetic_beats(minutes, cycle_s, swing_bpm=20.0, seed=1)
    path = tmp_path / name
    path.write_bytes(beats_fit(t, rr, start))
    return path


def _night(db: Path, label: str) -> tuple[dict | None, int]:
    """A night's summary in a store, and its count of classifier (stream 5) records."""
    from nightlink.edge.store import EdgeStore

    s = EdgeStore(db)
    try:
        return s.night(label), s.count_records(features.INFER)
    finally:
        s.close()


def test_cli__a_garmin_all_day_file_gives_a_night_staged_from_its_heart_rate(tmp_path):
    from nightlink.tools.sim.fitwriter import FitWriter

    start = (time.time() // DAY - 3) * DAY + 20 * 3600  # 20:00 UTC three nights ago
    label = time.strftime("%Y-%m-%d", time.gmtime(start))
    w = FitWriter()
    w.file_id(start, kind=32)  # monitoring_b
    w.monitoring_info(start)
    for i in range(13 * 60):  # a reading a minute, lower from 22:30 to 07:30
        if i % 90 == 0:
            w.monitoring(start + 60 * i, short=False, activity_type=8)
        w.monitoring(start + 60 * i, 72 - 16 * (150 <= i < 690) + i % 5)
    path = tmp_path / "MONITOR.FIT"
    path.write_bytes(w.to_bytes())
    db = tmp_path / "e.db"
    res = CliRunner().invoke(main, ["edge", "import", str(path), "--tz", "UTC", "--db", str(db)])
    assert res.exit_code == 0, res.output
    assert "MONITOR.FIT (FIT): 780 readings, 0 bad rows skipped" in res.output
    assert f"Night {label} summarised: sleep from hr; " in res.output
    summary, outputs = _night(db, label)
    assert summary["epochs"] >= 1000 and outputs > 0  # 22:00-07:30 has 1,140 epochs


def test_cli__an_imported_watch_night_is_summarised_with_its_beats_once(tmp_path):
    start = (time.time() // DAY - 3) * DAY + 23 * 3600  # 23:00 UTC three nights ago
    label = time.strftime("%Y-%m-%d", time.gmtime(start))
    path = _watch_night(tmp_path, start, 150, cycle_s=80)  # an arousal surge every 80 s
    db = tmp_path / "e.db"
    res = CliRunner().invoke(main, ["edge", "import", str(path), "--tz", "UTC", "--db", str(db)])
    assert res.exit_code == 0, res.output
    assert f"Night {label} summarised: sleep from hr, hrv; apnea screen from rr: " in res.output
    summary, outputs = _night(db, label)
    rr = summary["breathing"]["rr"]
    assert rr["source"] == "beats+epochs" and rr["apnea_index"] >= 30, rr  # the beats, not epochs
    assert summary["breathing"]["screen"].startswith("possible sleep apnea")
    assert abs(summary["epochs"] - 300) <= 1 and outputs > 0  # the 150 minutes
    again = CliRunner().invoke(main, ["edge", "import", str(path), "--tz", "UTC",
                                      "--db", str(db)])
    assert again.exit_code == 0 and "summarised:" not in again.output, again.output
    assert ("Already summarised, kept as they were (this file's readings are stored but not in "
            f"their summaries): {label}.") in again.output
    assert _night(db, label) == (summary, outputs)  # no second set of classifier rows


def test_cli__import_takes_the_schedule_zone_and_store_from_the_config(tmp_path):
    start = (time.time() // DAY - 3) * DAY + 23 * 3600
    path = _watch_night(tmp_path, start, 150, cycle_s=None)  # a calm heart
    db = tmp_path / "node.db"
    config = tmp_path / "edge.toml"
    config.write_text(f'db = "{db}"\ntimezone = "Asia/Tokyo"\n'
                      '[night]\nbedtime = "08:00"\nwake = "09:30"\n')
    res = CliRunner().invoke(main, ["edge", "import", str(path), "--tz", "UTC",
                                    "--config", str(config)])
    assert res.exit_code == 0, res.output
    # 23:00 UTC is 08:00 in Tokyo the next morning: the night of that day's evening before
    label = time.strftime("%Y-%m-%d", time.gmtime(start))
    assert f"Night {label} summarised: sleep from hr, hrv; apnea screen from rr: " in res.output
    summary, _ = _night(db, label)
    assert summary["epochs"] == 180  # 08:00-09:30 Tokyo time, not all 150 minutes
    assert summary["breathing"]["screen"] is None or "possible" not in summary["breathing"]["screen"]
    bad = tmp_path / "bad.toml"
    bad.write_text('[night]\nbedtime = "25:00"\n')
    res = CliRunner().invoke(main, ["edge", "import", str(path), "--config", str(bad),
                                    "--db", str(tmp_path / "other.db")])
    assert res.exit_code == 2 and "bedtime" in res.output
    assert not (tmp_path / "other.db").exists()


def test_close_span__only_nights_over_with_an_hour_recorded(tmp_path, store):
    from nightlink.edge.importers.importer import import_file
    from nightlink.edge.node.nights import NightCloser, finish_night
    from nightlink.edge.node.zone import schedule_window

    start = PAST + 23 * 3600
    label = time.strftime("%Y-%m-%d", time.gmtime(start))
    result = import_file(store, _watch_night(tmp_path, start, 75, cycle_s=None), "fit")
    closer = NightCloser(store, "22:00", "07:30", "UTC", delay_s=5)
    end_s = schedule_window(label, "22:00", "07:30", "UTC")[1] * 30
    def span(now_s: float) -> tuple[list, list, list]:
        done = closer.close_span(*result.span, now_s=now_s)
        return done.closed, done.kept, done.failed

    assert span(end_s) == ([], [], [])  # still closing
    assert store.night(label) is None
    assert span(end_s + 5) == ([label], [], [])
    assert span(end_s + 5) == ([], [label], [])
    before = store.count_records(features.INFER)
    assert finish_night(store, 0, 10, label, if_open=True) is None  # closed meanwhile
    assert store.count_records(features.INFER) == before
    short = import_file(store, _watch_night(tmp_path, start + 2 * DAY, 50, None, "short.fit"),
                        "fit")
    done = closer.close_span(*short.span, now_s=end_s + 3 * DAY)
    assert (done.closed, done.kept, done.failed) == ([], [], [])  # under an hour


def test_cli__an_export_of_many_nights_says_them_in_short(tmp_path):
    from nightlink.tools.sim.fitwriter import FitWriter

    first = (time.time() // DAY - 10) * DAY + 22 * 3600
    w = FitWriter()
    w.file_id(first)
    for night in range(9):  # a watch's heart rate every 5 minutes, 22:00-00:00
        for k in range(0, 2 * 3600, 300):
            w.record(first + night * DAY + k, heart_rate=55 + k % 7)
    path = tmp_path / "nine.fit"
    path.write_bytes(w.to_bytes())
    db = tmp_path / "e.db"
    labels = [time.strftime("%Y-%m-%d", time.gmtime(first + n * DAY)) for n in range(9)]
    res = CliRunner().invoke(main, ["edge", "import", str(path), "--tz", "UTC", "--db", str(db)])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert (f"9 nights summarised (22:00-07:30 UTC), {labels[0]} to {labels[-1]}; the newest:"
            in lines)
    assert [ln.split()[1] for ln in lines if ln.startswith("Night ")] == labels[-3:]
    assert all(_night(db, label)[0]["sleep"]["sleep_inputs"] == ["hr"] for label in labels)
    again = CliRunner().invoke(main, ["edge", "import", str(path), "--tz", "UTC",
                                      "--db", str(db)])
    assert ("Already summarised, kept as they were (this file's readings are stored but not in "
            f"their summaries): 9 nights, {labels[0]} to {labels[-1]}."
            in again.output.splitlines()), again.output


def test_cli__import_closes_nights_in_the_schedule_the_node_recorded(tmp_path, monkeypatch):
    from nightlink.edge.node import nights
    from nightlink.edge.store import EdgeStore

    start = (time.time() // DAY - 3) * DAY + 23 * 3600
    label = time.strftime("%Y-%m-%d", time.gmtime(start))
    db = tmp_path / "node.db"
    s = EdgeStore(db)  # what the live node using this store recorded of its [night]
    s.set_meta(nights.SCHEDULE_META, "23:30-01:00")
    s.set_meta("timezone", "UTC")
    s.close()
    path = _watch_night(tmp_path, start, 150, cycle_s=None)

    def broken(*args, **kw):
        raise RuntimeError("classifier file unreadable")

    monkeypatch.setattr(nights, "finish_night", broken)
    res = CliRunner().invoke(main, ["edge", "import", str(path), "--tz", "Asia/Tokyo",
                                    "--db", str(db)])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[0].startswith("watch.fit (FIT): ")  # said before the nights
    assert (f"Night {label} could not be summarised (RuntimeError: classifier file "
            "unreadable); importing the file again tries again.") in res.output
    monkeypatch.undo()
    res = CliRunner().invoke(main, ["edge", "import", str(path), "--tz", "Asia/Tokyo",
                                    "--db", str(db)])
    assert "Nights in the node's schedule, 23:30-01:00 UTC:" in res.output, res.output
    assert f"Night {label} summarised: sleep from hr, hrv" in res.output
    summary, _ = _night(db, label)
    assert summary["epochs"] == 180  # 23:30-01:00, not 22:00-07:30 in --tz


def test_cli__a_workout_file_is_refused_whole(tmp_path):
    """A ride recorded in the evening (a FIT activity file with a sport, 166 bpm) would stage
    as a night of deep sleep (python-fitparse's sample-activity.fit did), alone or joined to
    the night a later file records."""
    from nightlink.tools.sim.fitwriter import FitWriter

    start = (time.time() // DAY - 3) * DAY + 22 * 3600
    w = FitWriter()
    w.file_id(start)  # type 4: activity
    for k in range(0, 3 * 3600, 5):
        w.record(start + k, heart_rate=160 + k % 12)
    w.session(start + 3 * 3600, sport=2)  # cycling
    path = tmp_path / "ride.fit"
    path.write_bytes(w.to_bytes())
    db = tmp_path / "e.db"
    CliRunner().invoke(main, ["edge", "id", "--db", str(db)])
    res = CliRunner().invoke(main, ["edge", "import", str(path), "--tz", "UTC", "--db", str(db)])
    assert res.exit_code == 2, res.output
    assert res.output == (f"error: {path} is a workout (cycling), not a night: its heart rate "
                          "would be read as sleep, so nothing was stored.\n")
    from nightlink.edge.store import EdgeStore

    s = EdgeStore(db)
    try:
        assert s.count_records(features.WEARABLE) == 0
    finally:
        s.close()


def _libre_days(tmp_path, name: str, times, values) -> Path:
    rows = [libre_row(t.strftime("%d-%m-%Y %H:%M"), 0, str(round(v)))
            for t, v in zip(times, values, strict=True)]
    path = libre_file(tmp_path, rows)
    return path.rename(tmp_path / name)


def test_import__the_same_export_in_another_zone_is_refused(store, tmp_path):
    """Imported first with the machine's zone and again with its own --tz, an export's
    readings were stored twice, hours apart: every night then held two copies of each low.
    The second import is refused, naming the shift; nothing of it is stored."""
    from tests.support.cgm import person_trace

    times, values = person_trace(days=3, seed=4)
    path = _libre_days(tmp_path, "libre.csv", times, values)
    first = import_file(store, path, "libreview", tz="Europe/Amsterdam", date_order="dmy")
    n_entries, n_records = len(store.entries(count=10_000)), store.count_records()
    assert first.entries_stored == n_entries == len(times)
    with pytest.raises(SourceError) as err:
        import_file(store, path, "libreview", tz="America/New_York", date_order="dmy")
    assert str(err.value).startswith(f"{len(times)} of the {len(times)} readings in libre.csv "
                                     "are already stored 6 h earlier, with the same values "
                                     "(the same readings, imported or uploaded before, read "
                                     "now or then in a zone other than America/New_York: "
                                     "check --tz)")
    assert "nothing was stored" in str(err.value)
    assert len(store.entries(count=10_000)) == n_entries and store.count_records() == n_records
    # The same zone again adds nothing, as before; other readings on the same days are no
    # copy and are not refused (where one falls on a stored reading's instant, the first
    # stays, by Nightscout's rule).
    again = import_file(store, path, "libreview", tz="Europe/Amsterdam", date_order="dmy")
    assert again.entries_stored == 0
    other_times, other_values = person_trace(days=3, seed=5)
    other = _libre_days(tmp_path, "other.csv", other_times, other_values)
    result = import_file(store, other, "libreview", tz="America/New_York", date_order="dmy")
    assert result.samples == len(other_times) and result.epochs_written > 0


def test_import__readings_the_uploader_stored_read_in_a_wrong_zone_are_refused(store,
                                                                             tmp_path):
    """The live uploader's readings carry their own seconds; an export of the same sensor
    the minute alone. Read an hour off (a summer export read in winter's offset), they are
    the same readings and are refused."""
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    from tests.support.cgm import person_trace

    times, values = person_trace(days=2, seed=6)
    amsterdam = ZoneInfo("Europe/Amsterdam")
    live = [{"type": "sgv", "sgv": round(v), "device": "xDrip-DexcomG6",
             "date": round((t.replace(tzinfo=amsterdam) + timedelta(seconds=41)).timestamp()
                           * 1000)} for t, v in zip(times, values, strict=True)]
    assert store.add_entries(live) == (len(live), 0)
    path = _libre_days(tmp_path, "libre.csv", times, values)
    with pytest.raises(SourceError, match=r"^576 of the 576 readings in libre.csv are already "
                                          r"stored 1 h earlier, with the same values"):
        import_file(store, path, "libreview", tz="Europe/London", date_order="dmy")
    assert len(store.entries(count=10_000)) == len(live)
    right = import_file(store, path, "libreview", tz="Europe/Amsterdam", date_order="dmy")
    assert right.samples == len(times)
    assert datetime.fromtimestamp(right.span[0], amsterdam).replace(tzinfo=None) == times[0]


def test_import__real_cgm_of_two_people_on_the_same_days_is_no_copy(store, tmp_path):
    """Real readings (BrisT1D-Open) of one person and then another, put on the same days at
    the same times of day: nothing in them matches at a shift, so neither is refused."""
    from datetime import datetime

    from tests.support.shared_data import SHARED

    folder = SHARED / "cgm-bris-t1d-open" / "csv"
    people = sorted(folder.glob("*.csv"))[:2] if folder.is_dir() else []
    if len(people) < 2:
        pytest.skip(f"the BrisT1D-Open data is not at {folder}")
    start = datetime(2025, 3, 3)
    for k, person in enumerate(people):
        lines = person.read_text().splitlines()[1:700]  # about 2.5 days of 5-minute readings
        stamps = [datetime.fromisoformat(ln.split(",")[0]) for ln in lines]
        times = [start + (t - stamps[0]) for t in stamps]
        values = [float(ln.split(",")[1]) for ln in lines]
        path = _libre_days(tmp_path, f"p{k}.csv", times, values)
        result = import_file(store, path, "libreview", tz="UTC", date_order="dmy")
        assert result.samples > 500 and result.epochs_written > 0  # not refused


def test_edge_import_cli__dry_run_stores_nothing(tmp_path):
    db = tmp_path / "e.db"
    args = ["edge", "import", str(FIXTURES / "clarity_mgdl.csv"), "--format", "clarity",
            "--tz", "UTC", "--db", str(db)]
    res = CliRunner().invoke(main, [*args, "--dry-run"])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[0] == (
        "clarity_mgdl.csv (Dexcom Clarity): 38 readings, 2 bad rows skipped (first: line 52: "
        "bad glucose value '1x7'); nothing stored (--dry-run).")
    assert res.output.splitlines()[1].startswith("From ")
    assert not db.exists()  # no store made either
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0 and "38 entries stored, 0 duplicates" in res.output, res.output


def test_import__a_flat_night_stored_every_minute_is_not_taken_for_a_copy(store, tmp_path):
    """A steady trace (95 mg/dL, a few mg/dL of drift) stored every minute matches a
    15-minute export of other readings at many shifts alike; only a match at one shift is a
    copy, so this file goes in (it was refused as stored 15 minutes away)."""
    from datetime import UTC, datetime, timedelta

    import numpy as np

    rng = np.random.default_rng(1)
    start, n = datetime(2025, 3, 3), 3 * 1440
    true = 95 + 3 * np.sin(np.arange(n) / 700) + np.cumsum(rng.normal(0, 0.15, n)).clip(-4, 4)
    base = start.replace(tzinfo=UTC).timestamp()
    store.add_entries([{"type": "sgv", "sgv": int(round(true[m] + rng.normal(0, 0.7))),
                        "device": "xDrip", "date": int((base + 60 * m + 17) * 1000)}
                       for m in range(n)])
    times = [start + timedelta(minutes=m + 7) for m in range(0, n, 15)]
    values = [true[m] + rng.normal(0, 0.7) for m in range(0, n, 15)]
    path = _libre_days(tmp_path, "libre.csv", times, values)
    result = import_file(store, path, "libreview", tz="UTC", date_order="dmy",
                         now=(start + timedelta(days=4)).replace(tzinfo=UTC).timestamp())
    assert result.samples == len(times)


@pytest.mark.parametrize("since_days_ago", [None, 250])
def test_import__a_long_apple_export_is_trimmed_as_read_and_imports_the_same(
        tmp_path, monkeypatch, since_days_ago):
    """An Apple Health export holds years, ordered by record type: its reader drops what the
    import's window would drop each time what it holds has doubled (edge/importers/span.py),
    so its memory holds about the window. The import is the same as when it kept it all:
    the samples, the epochs, the note naming the file's whole span."""
    from nightlink.edge.importers import span
    from nightlink.edge.importers.importer import read_samples
    from nightlink.edge.store import EdgeStore
    end = 1_796_342_400.0  # 2026-12-04 00:00 UTC
    path = tmp_path / "export.xml"
    row = ('<Record type="{}" sourceName="Watch" unit="{}" startDate="{} +0000" '
           'endDate="{} +0000" value="{}"/>\n')
    with open(path, "w", encoding="utf-8") as fh:  # ordered by type, as Apple writes it
        fh.write('<HealthData locale="en_US">\n')
        for k in range(400 * 24):
            at = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(end - 400 * 86400 + 3600 * k))
            fh.write(row.format("HKQuantityTypeIdentifierHeartRate", "count/min", at, at,
                                50 + k % 40))
        for k in range(400):
            at = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(end - 400 * 86400 + 86400 * k))
            fh.write(row.format("HKQuantityTypeIdentifierOxygenSaturation", "%", at, at, 0.95))
        fh.write("</HealthData>\n")
    since = None if since_days_ago is None else end - since_days_ago * 86400

    def imported(name, trim_at):
        monkeypatch.setattr(span, "TRIM_AT", trim_at)
        store = EdgeStore(tmp_path / f"{name}.db")
        try:
            result = import_file(store, path, "apple-health", since=since, now=end)
            rows = [(r.epoch, r.values()) for r in store.records(features.WEARABLE)]
        finally:
            store.close()
        return (result.samples, result.span, result.notes, result.epochs_written), rows

    trimmed = imported("trimmed", 512)
    whole = imported("whole", 10**9)
    assert trimmed == whole
    assert trimmed[0][0] == 120 * 25  # 120 days: the heart rate of each hour, a SpO2 a day
    assert ("spans 2025-10-30" if since is None else "holds readings up to 2026-12-03") in \
        trimmed[0][2][0]
    # and the reader did drop most of the file as it read it
    monkeypatch.setattr(span, "TRIM_AT", 512)
    keeper = span.SpanKeeper(0, end + 86400, 120 * 86400, since)
    read_samples(path, "apple-health", window=keeper)
    assert keeper.dropped > 4000


def _clarity_days(path: Path, end: float, days: int) -> Path:
    """A Clarity export of `days` days of readings every 4 hours ending at `end`, with a bad
    glucose cell and an off-scale "Low" in its first days, and a "High" in its last."""
    head = ("Index,Timestamp (YYYY-MM-DDThh:mm:ss),Event Type,Event Subtype,Patient Info,"
            "Device Info,Source Device ID,Glucose Value (mg/dL),Insulin Value (u),"
            "Carb Value (grams),Duration (hh:mm:ss),Glucose Rate of Change (mg/dL/min),"
            "Transmitter Time (Long Integer),Transmitter ID\n")
    rows = []
    n = days * 6
    for k in range(n):
        t = end - (n - k) * 4 * 3600
        g = {3: "1x7", 5: "Low", n - 2: "High"}.get(k, str(90 + (k * 37) % 120))
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t))
        rows.append(f"{k + 1},{stamp},EGV,,,,Android G6,{g},,,,{(k % 5) - 2}.0,"
                    f"{4_000_000 + 4 * 3600 * k},8XXXXX\n")
    path.write_text(head + "".join(rows))
    return path


@pytest.mark.parametrize("since_days_ago", [None, 150])
def test_import__a_long_csv_export_makes_samples_of_its_window_only_and_imports_the_same(
        tmp_path, monkeypatch, since_days_ago):
    """A CSV reader places every row's time, then makes samples only of the rows the import's
    window keeps (common.finish with span.SpanKeeper): a five-year export holds 120 days of
    samples, not five years'. The import is the same as when the reader made them all: the
    samples it takes, its counts and span, the note naming the file's span, the bad row of
    its first days counted and named."""
    from nightlink.edge.importers import importer, span
    from nightlink.edge.store import EdgeStore

    end = 1_796_342_400.0  # 2026-12-04 00:00 UTC
    path = _clarity_days(tmp_path / "clarity.csv", end, 200)
    since = None if since_days_ago is None else end - since_days_ago * 86400
    whole_read = importer.read_samples

    def imported(windowed):
        taken = []

        def reading(*a, window=None, **k):
            fmt, got = whole_read(*a, window=window if windowed else None, **k)
            kept = importer._window(path, importer._dated(path, list(got), _result(), end),
                                    _result(), since, got.first_t)
            taken.extend((g.t, g.sgv, g.direction) for g in kept)
            return fmt, got

        monkeypatch.setattr(importer, "read_samples", reading)
        store = EdgeStore(tmp_path / f"{windowed}.db")
        try:
            r = import_file(store, path, "clarity", since=since, now=end, dry_run=True)
        finally:
            store.close()
            monkeypatch.undo()
        return (r.samples, r.span, r.notes, r.skipped_rows, r.first_bad), taken

    windowed, whole = imported(True), imported(False)
    assert windowed == whole
    assert windowed[0][0] == len(windowed[1]) == 120 * 6  # 120 days (the "High" among them)
    assert windowed[0][3] == 1 and "line 5" in windowed[0][4] and "1x7" in windowed[0][4]
    assert ("spans 2026-05-18" if since is None else "holds readings up to 2026-12-03") in \
        " ".join(windowed[0][2])
    # and the reader made samples of the window's rows only (and of the file's newest,
    # which the import's checks read)
    keeper = span.SpanKeeper(0, end + 86400, 120 * 86400, since)
    got = whole_read(path, "clarity", window=keeper)[1]
    assert len(got) == 120 * 6 + (since is not None)
    assert keeper.dropped == 200 * 6 - 1 - len(got)  # the bad row: no sample either way
    assert got.first_t == end - 200 * 86400


def _result():
    from nightlink.edge.importers.importer import ImportResult

    return ImportResult("clarity", 0, 0, 0, 0)
