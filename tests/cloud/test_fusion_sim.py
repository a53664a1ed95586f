"""A simulated night (tools/sim) through the real edge pipeline into a cloud store, fused:
checked against the simulator's ground truth and the edge node's own night summary."""

import csv
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from nightlink.cloud import fusion
from nightlink.cloud.store import Store
from nightlink.edge.store import EdgeStore
from nightlink.tools.sim.night import simulate_night
from nightlink.tools.sim.replay import replay
from tests.support.cloud import cloud_of_edge

HOURS = 1.0


def _fused(tmp_path_factory, classify):
    out = tmp_path_factory.mktemp("sim")
    manifest = simulate_night(out, seed=4, hours=HOURS, audio_format=None)
    edge = EdgeStore(out / "edge.db")
    result = replay(out, edge, audio="stream", classify=classify)
    store, data = cloud_of_edge(edge, f"sqlite:///{out / 'cloud.db'}")
    doc = fusion.fuse(fusion.load_night(data, result.night, ZoneInfo("UTC")))
    return out, manifest, result, doc, edge, store


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    """Replayed without the edge's classifiers: the fallbacks on raw features."""
    *got, edge, store = _fused(tmp_path_factory, classify=False)
    yield tuple(got)
    edge.close()
    store.close()


@pytest.fixture(scope="module")
def classified(tmp_path_factory):
    """The same night with the edge's classifier records (stream 5)."""
    *got, edge, store = _fused(tmp_path_factory, classify=True)
    yield tuple(got)
    edge.close()
    store.close()


def test_sim__classifier_rows_drive_the_fused_night(classified):
    _out, _m, result, doc = classified
    s = result.summary
    assert doc["coverage"]["inference"] == 1.0
    assert doc["sleep"]["source"] == "classifier"
    assert doc["breathing"]["source"] == "classifier"
    # The cloud's fusion and the edge's own summary read the same stream 5 rows.
    assert doc["sleep"]["tst_min"] == pytest.approx(s["sleep"]["tst_min"], abs=0.5)
    assert doc["breathing"]["apnea_events"] == s["breathing"]["apnea_events"]


def test_sim__recording_matches_the_truth_grid(night):
    _out, manifest, result, doc = night
    first = manifest["epoch_grid"]["first_epoch"]
    count = manifest["epoch_grid"]["epoch_count"]
    assert doc["night"] == result.night == "2026-01-15"
    assert (doc["recording"]["start_epoch"], doc["recording"]["end_epoch"]) == \
        (first, first + count)
    assert doc["sleep"]["tib_min"] == HOURS * 60


def test_sim__without_classifier_every_figure_is_labelled(night):
    *_, doc = night
    assert doc["sleep"]["source"] == "actigraphy" and doc["sleep"]["stage_pct"] is None
    assert doc["breathing"]["source"] == "raw features"
    assert doc["coverage"]["inference"] == 0.0


def test_sim__agrees_with_the_edge_summary(night):
    _out, _m, result, doc = night
    s = result.summary
    assert doc["breathing"]["apnea_events"] == s["audio"]["apnea_candidates"]
    for name in ("wearable", "room", "audio"):
        assert doc["coverage"][name] == pytest.approx(s["coverage"][name], abs=0.001), name


def test_sim__nocturnal_glucose_is_the_sensor_readings(night):
    out, _m, _r, doc = night
    g = doc["glucose"]
    lo, hi = g["start_ms"], g["end_ms"]
    truth = []
    with open(out / "cgm.csv") as f:
        for row in csv.DictReader(f):
            t = datetime.fromisoformat(row["time"].replace("Z", "+00:00")).astimezone(UTC)
            ms = int(t.timestamp() * 1000)
            if lo <= ms < hi and not row["error_code"]:
                truth.append(int(row["sgv_mgdl"]))
    assert truth and abs(g["n"] - len(truth)) <= 1
    assert g["summary"]["mean"] == pytest.approx(sum(truth) / len(truth), abs=3)


def test_sim__actigraphy_sleep_wake_against_the_true_hypnogram(night):
    """The raw-feature fallback is no classifier, but it must still mostly agree with the
    true sleep/wake of the epochs it scored (this seed: a severe-apnea night full of
    arousals, the hard case)."""
    from nightlink.cloud.reports.settings import zone

    out, _m, result, doc = night
    truth = {}
    with open(out / "truth" / "hypnogram.csv") as f:
        for row in csv.DictReader(f):
            truth[int(row["epoch"])] = row["stage4"] != "Wake"
    store = Store.open(f"sqlite:///{out / 'cloud.db'}")
    try:
        nd = fusion.load_night(store.tenant("sim"), result.night, zone("UTC"))
        rec = doc["recording"]
        stages, source = fusion.stages(nd, (rec["start_epoch"], rec["end_epoch"]))
    finally:
        store.close()
    assert source == "actigraphy"
    agree = sum((s != fusion.WAKE) == truth[e] for e, s in stages.items()) / len(stages)
    print(f"actigraphy sleep/wake agreement {agree:.3f} over {len(stages)} epochs")
    assert agree >= 0.75
