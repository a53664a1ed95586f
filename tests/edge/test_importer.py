"""Importing CGM exports into the edge store: entries, epochs, idempotence."""

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
                          "already stored; 38 entries stored, 0 already there.\n")
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
