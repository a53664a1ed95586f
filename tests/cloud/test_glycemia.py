"""Glucose metrics against values worked out by hand from the definitions in docs/clinical.md."""

import pytest

from nightlink.cloud import glycemia

M = 60_000


def five_min(values, start=0):
    return [(start + i * 5 * M, v) for i, v in enumerate(values)]


def test_summary__mean_sd_cv_gmi():
    s = glycemia.summary(five_min([100, 120, 140, 5]))  # 5 is a sensor error code, not glucose
    assert s["n"] == 3 and s["mean"] == 120 and s["sd"] == pytest.approx(20)
    assert s["cv_pct"] == pytest.approx(16.667, abs=1e-3)
    assert s["gmi_pct"] == pytest.approx(3.31 + 0.02392 * 120)
    assert glycemia.summary(five_min([5, 9])) is None


def test_bands__five_consensus_bands():
    b = glycemia.bands(five_min([50, 60, 100, 200, 300]))
    assert b == {"very_low": 20, "low": 20, "in_range": 20, "high": 20, "very_high": 20}
    edges = glycemia.bands(five_min([54, 69, 70, 180, 181, 250, 251]))
    assert edges["very_low"] == 0 and edges["low"] == pytest.approx(200 / 7)
    assert edges["very_high"] == pytest.approx(100 / 7)


@pytest.mark.parametrize(
    ("b", "value", "zone"),
    [
        ({"very_low": 1, "low": 3, "high": 20, "very_high": 4}, 32.6, "B"),
        ({"very_low": 0, "low": 0, "high": 10, "very_high": 0}, 8.0, "A"),
        ({"very_low": 20, "low": 20, "high": 20, "very_high": 20}, 100.0, "E"),
    ],
)
def test_gri__value_and_zone(b, value, zone):
    assert glycemia.gri({**b, "in_range": 0}) == (pytest.approx(value), zone)


def test_risk_indices__kovatchev():
    low, high = glycemia.risk_indices(five_min([112.5]))
    assert low == pytest.approx(0, abs=0.01) and high == pytest.approx(0, abs=0.01)
    low, high = glycemia.risk_indices(five_min([50]))
    assert low == pytest.approx(22.5, abs=0.1) and high == 0
    low, high = glycemia.risk_indices(five_min([400]))
    assert low == 0 and high == pytest.approx(57.0, abs=0.1)  # the scale tops out near 100


def test_hypo_events__fifteen_minutes_in_and_out():
    r = five_min([100, 65, 65, 65, 65, 80, 80, 80, 80, 100])
    (e,) = glycemia.hypo_events(r, 1)
    assert (e.start_ms, e.end_ms, e.nadir, e.ongoing) == (5 * M, 20 * M, 65, False)
    assert e.minutes == 15 and not e.extended
    assert glycemia.hypo_events(r, 2) == []


def test_hypo_events__short_dips_and_flapping():
    assert glycemia.hypo_events(five_min([100, 60, 60, 100]), 1) == []  # 5 minutes below
    # Back above for only 10 minutes does not end the event: one event, not two.
    r = five_min([60, 60, 60, 60, 75, 75, 60, 60, 80, 80, 80, 80])
    (e,) = glycemia.hypo_events(r, 1)
    assert (e.start_ms, e.end_ms) == (0, 35 * M)


def test_hypo_events__level_2_ongoing_and_extended():
    r = five_min([50] * 30)  # 145 minutes below 54, still below at the end
    (e2,) = glycemia.hypo_events(r, 2)
    assert e2.ongoing and e2.nadir == 50
    (e1,) = glycemia.hypo_events(r, 1)
    assert e1.extended


def test_sufficiency__fourteen_days_seventy_percent():
    day = 1440 * M
    full = [(i * 5 * M, 100) for i in range(14 * 288)]
    assert glycemia.sufficiency(full, 0, 14 * day)["sufficient"]
    sparse = full[::2]  # 50 %
    got = glycemia.sufficiency(sparse, 0, 14 * day)
    assert not got["sufficient"] and got["share"] == pytest.approx(0.5)
    assert not glycemia.sufficiency(full[: 7 * 288], 0, 7 * day)["sufficient"]  # too few days


def test_dawn_phenomenon__flag_and_rebound():
    night = five_min([120, 110, 100, 95, 90, 95, 105, 115, 120, 125])
    wake = 45 * M
    d = glycemia.dawn_phenomenon(night, wake)
    # the 30 minutes before waking, after the nadir: 95, 105, 115, 120, 125
    assert d["nadir"] == 90 and d["rise"] == pytest.approx(112 - 90)
    assert d["flag"] and not d["rebound"]
    hypo_night = five_min([100, 60, 60, 60, 60, 80, 90, 110, 120, 125])
    d = glycemia.dawn_phenomenon(hypo_night, wake)
    assert d["rebound"] and not d["flag"]
