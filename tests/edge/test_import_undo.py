"""`nightlink edge imports`: every import is listed with what it holds, and one can be undone:
its entries, epochs, beats and the nights it summarised leave the store (and the outbox), the
rest stays, and the same file imported again (with the right zone) goes in whole."""

import time

from click.testing import CliRunner

from nightlink.cli import main
from nightlink.edge.store import EdgeStore
from nightlink.shared import features
from tests.edge.test_importer import DAY, FIXTURES, _night, _watch_night


def run(*args: str):
    return CliRunner().invoke(main, ["edge", *args])


def test_cli__an_import_in_the_wrong_zone_is_undone_and_the_right_one_goes_in(tmp_path):
    db = tmp_path / "e.db"
    clarity = str(FIXTURES / "clarity_mgdl.csv")
    wrong = run("import", clarity, "--tz", "Asia/Tokyo", "--db", str(db))
    assert wrong.exit_code == 0, wrong.output
    assert wrong.output.endswith("Stored as import 1; `nightlink edge imports --undo 1` "
                                 "removes it.\n")
    refused = run("import", clarity, "--tz", "UTC", "--db", str(db))  # the zone guard
    assert refused.exit_code == 2 and "undo that import (`nightlink edge imports` lists " \
        "them, `--undo N` removes one) and import this file again." in refused.output
    listed = run("imports", "--db", str(db))
    assert listed.exit_code == 0, listed.output
    assert "   1  " in listed.output and ("clarity_mgdl.csv (clarity, 38 readings, "
                                         "2026-11-19 22:00 to 2026-11-20 01:05 (Asia/Tokyo)): "
                                         "38 entries, 371 epoch records, 0 beats, 0 nights "
                                         "summarised") in listed.output

    undone = run("imports", "--undo", "1", "--db", str(db))
    assert undone.exit_code == 0, undone.output
    assert undone.output == ("Import 1 (clarity_mgdl.csv) undone: 38 entries, 371 epoch "
                             "records (371 not yet sent), 0 beats and 0 night summaries "
                             "removed. The cloud removes its copy when this node next reports "
                             "to it.\n")
    store = EdgeStore(db)
    try:
        assert store.entries(count=100) == [] and store.count_records() == 0
        assert store.outbox_size() == 0
        # the seqs it had taken are given up, for the cloud's mark to step over
        assert store.dropped_ranges(store.device)[features.CGM] != []
    finally:
        store.close()
    right = run("import", clarity, "--tz", "UTC", "--db", str(db))
    assert right.exit_code == 0, right.output
    assert "371 epochs written, 0 already stored; 38 entries stored, 0 duplicates" \
        in right.output and "import 2;" in right.output
    listed = run("imports", "--db", str(db))
    lines = listed.output.splitlines()
    assert lines[0].endswith("(Asia/Tokyo)): undone")
    assert lines[1].endswith("(UTC)): 38 entries, 371 epoch records, 0 beats, 0 nights "
                             "summarised")
    again = run("imports", "--undo", "1", "--db", str(db))
    assert again.exit_code == 2 and "Import 1 was undone already." in again.output
    missing = run("imports", "--undo", "7", "--db", str(db))
    assert missing.exit_code == 2 and "There is no import 7 in " in missing.output


def test_cli__undoing_a_watch_night_removes_its_summary_and_beats_and_it_can_come_back(
        tmp_path):
    start = (time.time() // DAY - 3) * DAY + 23 * 3600  # 23:00 UTC three nights ago
    label = time.strftime("%Y-%m-%d", time.gmtime(start))
    path = _watch_night(tmp_path, start, 150, cycle_s=80)
    db = tmp_path / "e.db"
    first = run("import", str(path), "--tz", "UTC", "--db", str(db))
    assert first.exit_code == 0 and f"Night {label} summarised" in first.output, first.output
    summary, outputs = _night(db, label)
    assert summary is not None and outputs > 0
    store = EdgeStore(db)
    try:
        assert store.retractions() == []
        held = store.import_counts(store.import_row(1))
        assert held["nights"] == 1 and held["beats"] > 8000 and held["records"] > 0
    finally:
        store.close()

    undone = run("imports", "--undo", "1", "--db", str(db))
    assert undone.exit_code == 0 and "1 night summaries removed" in undone.output, \
        undone.output
    assert _night(db, label) == (None, 0)  # no summary, no classifier rows
    store = EdgeStore(db)
    try:
        t, _rr = store.beats_between(start - 60, start + 200 * 60)
        assert t.size == 0 and store.count_records() == 0
        boot = store.import_row(1).boot
        assert store.retractions() == [{"boot": boot, "nights": [label]}]
    finally:
        store.close()
    back = run("import", str(path), "--tz", "UTC", "--db", str(db))
    assert back.exit_code == 0 and f"Night {label} summarised" in back.output, back.output
    again, outputs_again = _night(db, label)
    assert again["breathing"] == summary["breathing"] and outputs_again == outputs


def test_cli__imports_of_an_empty_store_and_a_missing_one(tmp_path):
    db = tmp_path / "e.db"
    EdgeStore(db).close()
    res = run("imports", "--db", str(db))
    assert res.exit_code == 0 and res.output == f"No imports in {db}.\n"
    res = run("imports", "--db", str(tmp_path / "none.db"))
    assert res.exit_code == 2 and "There is no edge store at" in res.output
