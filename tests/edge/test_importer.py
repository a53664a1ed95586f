"""Importing CGM exports into the edge store: entries, epochs, idempotence."""

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from nightlink.cli import main
from nightlink.edge.importers.cgm_csv import read_dexcom_clarity_csv
from nightlink.edge.importers.importer import import_file
from nightlink.edge.sources.samples import SourceError
from nightlink.shared import features
from nightlink.shared.epoch import epoch_index

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
                                    "--format", "clarity", "--db", str(tmp_path / "e.db")])
    assert res.exit_code == 0, res.output
    assert res.output == ("clarity_mgdl.csv (Dexcom Clarity): 38 readings, 2 bad rows skipped "
                          "(first: line 52: bad glucose value '1x7'); 371 epochs written, 0 "
                          "already stored; 38 entries stored, 0 already there.\n"
                          "From 2026-11-19 22:00 to 2026-11-20 01:05 (UTC time); if that is "
                          "not when it was recorded, give the export's own --tz.\n"
                          "note: 4 readings were off the sensor's scale: 2 'Low' stored as 39, "
                          "2 'High' stored as 401.\n")
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
    from tests.edge.fitwriter import FitWriter, utc

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


def test_import__a_refused_span_stores_nothing(store, tmp_path):
    path = ns_file(tmp_path, PAST, PAST + 300, PAST + 130 * DAY)
    with pytest.raises(SourceError, match=r"more than the 120 days one import takes; nothing "
                                          r"was stored\.$"):
        import_file(store, path, "nightscout")
    assert store.entries(count=10) == [] and store.count_records() == 0


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
    assert "1 entries stored, 0 already there." in res.output


def test_import__epochs_only_where_a_reading_gives_a_value(store, tmp_path):
    """Two readings ten days apart: the first gives values for CGM_MAX_AGE_MIN (240 epochs),
    the second its own epoch; the empty days between are not written."""
    result = import_file(store, ns_file(tmp_path, PAST, PAST + 10 * DAY), "nightscout")
    assert result.epochs_written == 241 == store.count_records(features.CGM)
    values = store.epoch_values(features.CGM, epoch_index(PAST), epoch_index(PAST) + 240)
    assert all(v[0] == 100 for v in values.values()) and len(values) == 240
