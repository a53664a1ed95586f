"""`nightlink edge imports`: every import is listed with what it holds, and one can be undone:
its entries, epochs, beats and the nights it summarised leave the store (and the outbox), the
rest stays, and the same file imported again (with the right zone) goes in whole."""

import json
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
                             "records (371 of them still waiting for the cloud), 0 beats and 0 "
                             "night summaries removed. The cloud removes its copy when this "
                             "node next reports to it.\n")
    store = EdgeStore(db)
    try:
        assert store.entries(count=100) == [] and store.count_records() == 0
        assert store.outbox_size() == 0
        # the seqs it had taken are given up, for the cloud's mark to step over: one range
        assert store.dropped_ranges(store.device)[features.CGM] == [[1, 371]]
        assert store.db.scalar("SELECT count(*) FROM dropped_ranges") == 1
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
        first = int(start // 30)
        assert store.retractions() == [{"boot": boot, "nights": [label],
                                        "epochs": [first, first + 300]}]
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


def test_undo__overlapping_imports_keep_each_other_s_entries_and_say_what_to_import_again(
        tmp_path):
    """Import A (hours 0-6) and B (hours 3-9) of one person; B found A's readings of hours
    3-6 stored. Undoing A leaves them (B holds them too) and names B, whose epochs of the
    overlap were A's; undoing B then removes them. A reading an uploader stored first is never
    removed by an undo."""
    def ns_file(path, *times_s):  # a person's readings: the same value at the same time
        path.write_text(json.dumps([{"type": "sgv", "sgv": 90 + int(t // 300) % 61,
                                     "date": int(t * 1000)} for t in times_s]))
        return path

    start = (time.time() // DAY - 3) * DAY
    db = tmp_path / "e.db"
    store = EdgeStore(db)
    seven = start + 7 * 3600
    uploaded = {"type": "sgv", "sgv": 90 + int(seven // 300) % 61, "date":
                int((seven + 30) * 1000), "device": "xDrip-DexcomG6"}  # live, B's 07:00 one
    store.add_entries([uploaded])
    store.close()
    a = ns_file(tmp_path / "a.json", *[start + 300 * i for i in range(73)])  # 0-6 h
    b = ns_file(tmp_path / "b.json", *[start + 3 * 3600 + 300 * i for i in range(73)])
    for path in (a, b):
        res = run("import", str(path), "--tz", "UTC", "--db", str(db))
        assert res.exit_code == 0, res.output
    undone = run("imports", "--undo", "1", "--db", str(db))
    assert undone.exit_code == 0, undone.output
    assert "undone: 36 entries," in undone.output  # hours 0-3: B holds 3-6
    assert ("Import 2 (b.json) overlaps it: where both held a reading's epochs or beats they "
            "were import 1's and are gone; import that file again to put them back (its "
            "entries stay).") in undone.output
    store = EdgeStore(db)
    try:
        dates = {e["date"] for e in store.entries(count=1000)}
        assert len(dates) == 73 and uploaded["date"] in dates  # B's, its 07:00 the uploader's
    finally:
        store.close()
    undone = run("imports", "--undo", "2", "--db", str(db))
    assert undone.exit_code == 0 and "undone: 72 entries," in undone.output, undone.output
    store = EdgeStore(db)
    try:
        assert [e["date"] for e in store.entries(count=1000)] == [uploaded["date"]]
    finally:
        store.close()


def test_undo__nights_closed_before_an_import_was_stopped_are_undone(tmp_path, monkeypatch):
    """An import stopped (Ctrl-C, a refused write) after closing its first night: that night
    was listed as it was closed, so undoing the import removes it too."""
    from nightlink.edge.node.nights import NightCloser

    start = (time.time() // DAY - 4) * DAY + 23 * 3600
    path = _watch_night(tmp_path, start, 26 * 60 + 150, cycle_s=None)  # two nights' worth
    db = tmp_path / "e.db"
    close = NightCloser._close
    calls = []

    def stop_after_one(self, label):
        if calls:
            raise KeyboardInterrupt
        calls.append(label)
        return close(self, label)

    monkeypatch.setattr(NightCloser, "_close", stop_after_one)
    res = run("import", str(path), "--tz", "UTC", "--db", str(db))
    assert res.exit_code != 0 and calls, res.output
    summary, outputs = _night(db, calls[0])
    assert summary is not None and outputs > 0
    monkeypatch.undo()
    undone = run("imports", "--undo", "1", "--db", str(db))
    assert undone.exit_code == 0 and "1 night summaries removed" in undone.output, \
        undone.output
    assert _night(db, calls[0]) == (None, 0)


def test_undo__a_night_the_live_node_recorded_too_is_summarised_again_from_its_recording(
        tmp_path):
    """The live node recorded the first 1.5 h of a night and stopped mid-night; a watch import
    of the rest closed the night with both. Undoing the import summarises the night again from
    the live recording (under a boot of its own, never the import's), so it is not left with
    no summary and never closed again."""
    from nightlink.edge.features.reducers import to_raw
    from nightlink.edge.node.nights import finish_night
    from nightlink.shared.epoch import epoch_index

    start = (time.time() // DAY - 5) * DAY + 23 * 3600
    label = time.strftime("%Y-%m-%d", time.gmtime(start))
    db = tmp_path / "e.db"
    store = EdgeStore(db)
    store.start_boot()  # the live node
    e0 = epoch_index(start)
    row = to_raw(features.WEARABLE, (58.0, 50, 66) + (None,) * 12)
    for k in range(180):
        store.append(features.WEARABLE, e0 + k, [row])
    finish_night(store, e0, 180, label, classify=False)  # its partial summary at stop
    store.close()
    watch = _watch_night(tmp_path, start + 90 * 60, 120, cycle_s=80)
    res = run("import", str(watch), "--tz", "UTC", "--db", str(db))
    assert res.exit_code == 0 and f"Night {label} summarised" in res.output, res.output
    assert _night(db, label)[0]["epochs"] >= 420  # both recordings
    undone = run("imports", "--undo", "1", "--db", str(db))
    assert undone.exit_code == 0, undone.output
    assert ("Its nights summarised again from what else was recorded:\n"
            "Nights in 22:00-07:30 UTC:\n"
            f"Night {label} summarised: sleep from hr; apnea screen from nothing.\n"
            ) in undone.output
    summary, outputs = _night(db, label)
    assert summary["epochs"] == 180 and outputs > 0
    store = EdgeStore(db)
    try:
        boots = {r.boot for r in store.records(features.INFER)}
        assert boots == {3}  # the live node's 1, the import's 2, the undo's own 3
        assert store.retractions()[0]["boot"] == 2
    finally:
        store.close()


def test_undo__readings_an_uploader_or_the_follower_also_brought_stay(tmp_path):
    """After the import, the follower brings the same readings (stored already: kept as they
    are) and an uploader sends one through the Nightscout API (merged into the stored one):
    undoing the import leaves those, and removes the rest."""
    from nightlink.nightscout import documents

    start = (time.time() // DAY - 2) * DAY
    path = tmp_path / "cgm.json"
    readings = [{"type": "sgv", "sgv": 100 + i, "date": int((start + 300 * i) * 1000)}
                for i in range(12)]
    path.write_text(json.dumps(readings))
    db = tmp_path / "e.db"
    assert run("import", str(path), "--tz", "UTC", "--db", str(db)).exit_code == 0
    store = EdgeStore(db)
    try:
        followed = [{**r, "device": "nightscout-follower"} for r in readings[:3]]
        assert store.add_entries(followed) == (0, 3)  # the follower's catch-up
        upload = documents.normalize("entries", {**readings[5], "device": "xDrip-DexcomG6"},
                                     int(time.time() * 1000))
        assert store.docs.put([upload], mode="merge")[0].action == "updated"  # API v1
        # an uploader's backfill with its own seconds: near duplicates, kept as they were
        near = [documents.normalize("entries", {**r, "date": r["date"] + 20_000},
                                    int(time.time() * 1000)) for r in readings[7:9]]
        assert [o.action for o in store.docs.put(near, mode="merge")] == ["near_duplicate"] * 2
        gone = store.undo_import(1)
        assert gone["entries"] == 6
        assert sorted(e["sgv"] for e in store.entries(count=100)) == [100, 101, 102, 105, 107,
                                                                      108]
    finally:
        store.close()


def test_undo__readings_a_live_source_brings_during_the_undo_stay(tmp_path, monkeypatch):
    """The undo pauses between its batches for a live writer sharing the store: readings the
    follower brings again in such a pause are its, and the next batches leave them."""
    from nightlink.edge.store import imports

    db = tmp_path / "e.db"
    assert run("import", str(FIXTURES / "clarity_mgdl.csv"), "--tz", "UTC",
               "--db", str(db)).exit_code == 0
    store = EdgeStore(db)
    monkeypatch.setattr(imports, "UNDO_BATCH", 10)
    brought = []

    class Clock:  # time as imports sees it: the follower comes in the first entries' pause
        monotonic = staticmethod(time.monotonic)
        time = staticmethod(time.time)

        @staticmethod
        def sleep(_s):
            deleted = store.db.scalar("SELECT count(*) FROM ns_docs WHERE valid = 0")
            if not brought and deleted:
                again = [{k: v for k, v in e.items() if k != "_id"} | {"device": "follower"}
                         for e in store.entries(count=100)]
                brought.append(store.add_entries(again))

    monkeypatch.setattr(imports, "time", Clock)
    try:
        gone = store.undo_import(1)
        assert brought == [(0, 28)]  # the 28 not yet deleted, found stored
        assert gone["entries"] == 10 and len(store.entries(count=100)) == 28
    finally:
        store.close()
