"""Importing CGM exports into the edge store: entries, epochs, idempotence."""

from pathlib import Path

import pytest
from click.testing import CliRunner

from nightlink.cli import main
from nightlink.edge.cgm_sources import read_dexcom_clarity_csv
from nightlink.edge.importer import import_file
from nightlink.edge.samples import SourceError
from nightlink.edge.store import EdgeStore
from nightlink.shared import features as F
from nightlink.shared.epoch import epoch_index

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def store(tmp_path):
    s = EdgeStore(tmp_path / "edge.db")
    yield s
    s.close()


def test_import__clarity_entries_and_epochs(store):
    readings = read_dexcom_clarity_csv(FIXTURES / "clarity_mgdl.csv")
    result = import_file(store, FIXTURES / "clarity_mgdl.csv", "clarity")
    first, last = epoch_index(readings[0].t), epoch_index(readings[-1].t)
    assert result.epochs_written == last - first + 1 == store.count_records(F.CGM)
    assert result.entries_stored == len(readings) and result.skipped_rows == 2
    values = store.epoch_values(F.CGM, first, last + 1)
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
    assert "38 readings, 2 corrupt rows skipped" in res.output
    res = CliRunner().invoke(main, ["edge", "import", str(FIXTURES / "not_an_export.csv"),
                                    "--format", "libreview", "--db", str(tmp_path / "e.db")])
    assert res.exit_code == 2 and "error:" in res.output
