"""MAGE, percentiles, the AGP modal day and the report's edge cases, worked out by hand."""

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from nightlink.cloud import glycemia

M = 60_000


def five_min(values, start=0):
    return [(start + i * 5 * M, v) for i, v in enumerate(values)]


def test_mage__full_swings():
    # SD = sqrt(12000 / 4) = 54.8; every swing is 100 > SD; the first goes up.
    assert glycemia.mage(five_min([100, 200, 100, 200, 100])) == 100


def test_mage__small_wiggle_removed():
    # SD = sqrt(7480 / 4) = 43.2; the 110 -> 105 swing (5) is below it and goes; the rest:
    # 100 -> 200 -> 100, first up: 100.
    assert glycemia.mage(five_min([100, 110, 105, 200, 100])) == 100


def test_mage__first_excursion_down_averages_the_falls():
    # 200 -> 80 -> 180 -> 60: SD = 70.2 (mean 130); swings 120, 100, 120, first down:
    # the falls 120 and 120.
    assert glycemia.mage(five_min([200, 80, 180, 60])) == 120


def test_mage__all_equal_and_too_few():
    assert glycemia.mage(five_min([120] * 10)) == 0.0
    assert glycemia.mage(five_min([120])) is None
    assert glycemia.mage(five_min([5, 9, 12])) is None  # only sensor error codes


def test_mage__gap_splits_runs():
    # Two runs 100 -> 200 and, after a 2-hour gap, 200 -> 100: the gap holds no turning point.
    r = five_min([100, 200]) + [(3 * 60 * M, 200), (3 * 60 * M + 5 * M, 100)]
    assert glycemia.mage(r) == 100


def test_percentile__linear_interpolation():
    v = [10, 20, 30, 40, 50]
    assert glycemia.percentile(v, 50) == 30 and glycemia.percentile(v, 25) == 20
    assert glycemia.percentile(v, 5) == pytest.approx(12) and glycemia.percentile(v, 95) == pytest.approx(48)
    assert glycemia.percentile([7], 95) == 7
    with pytest.raises(ValueError):
        glycemia.percentile([], 50)


def test_agp__bins_pooled_over_days_by_local_time():
    tz = ZoneInfo("UTC")
    day = 1440 * M
    # 08:00 on five days: 100..140; nothing at other times.
    r = [(int(datetime(2026, 1, 1, 8, 5, tzinfo=UTC).timestamp() * 1000) + d * day, 100 + 10 * d)
         for d in range(5)]
    bins = glycemia.agp(r, tz, bin_min=15, smooth=0)
    assert len(bins) == 96
    b = bins[32]  # 08:00-08:15
    assert b["n"] == 5 and b["p50"] == 120 and b["p5"] == pytest.approx(102)
    assert b["p25"] == 110 and b["p75"] == 130 and b["p95"] == pytest.approx(138)
    assert bins[31]["n"] == 0 and bins[31]["p50"] is None  # an empty bin is never filled in


def test_agp__smoothing_borrows_neighbours_but_keeps_empty_bins_empty():
    tz = ZoneInfo("UTC")
    t = int(datetime(2026, 1, 1, 0, 0, tzinfo=UTC).timestamp() * 1000)
    r = [(t, 100), (t + 15 * M, 200)]  # bins 0 and 1
    bins = glycemia.agp(r, tz, bin_min=15, smooth=1)
    assert bins[0]["p50"] == 150 and bins[1]["p50"] == 150  # each sees both
    assert bins[2]["p50"] is None and bins[95]["p50"] is None


def test_agp__dst_change_uses_local_clock():
    berlin = ZoneInfo("Europe/Berlin")
    # 2026-03-29 01:30 UTC is 03:30 CEST (after the change); 00:30 UTC is 01:30 CET.
    r = [(int(datetime(2026, 3, 29, 1, 30, tzinfo=UTC).timestamp() * 1000), 150),
         (int(datetime(2026, 3, 29, 0, 30, tzinfo=UTC).timestamp() * 1000), 90)]
    bins = glycemia.agp(r, berlin, bin_min=15, smooth=0)
    assert bins[14]["p50"] == 150 and bins[6]["p50"] == 90
    assert list(glycemia.daily(r, berlin)) == ["2026-03-29"]


def test_all_readings_in_one_band():
    r = five_min([120] * 288)
    assert glycemia.bands(r) == {"very_low": 0, "low": 0, "in_range": 100, "high": 0, "very_high": 0}
    assert glycemia.gri(glycemia.bands(r)) == (0.0, "A")
    assert glycemia.summary(r)["cv_pct"] == 0 and glycemia.hypo_events(r, 1) == []
    assert glycemia.time_in(r, 63, 140) == 100


def test_sensor_errors_never_count():
    r = five_min([100, 5, 200, 1, 300])
    assert glycemia.summary(r)["n"] == 3
    assert glycemia.bands(r)["very_high"] == pytest.approx(100 / 3)
    assert glycemia.time_in(r, 70, 180) == pytest.approx(100 / 3)
    assert glycemia.time_in(five_min([3]), 70, 180) is None


def test_sufficiency__gaps_lower_the_share():
    # 14 days with the second week missing: 50 % of readings.
    r = five_min([110] * (7 * 288))
    s = glycemia.sufficiency(r, 0, 14 * 1440 * M)
    assert s["days"] == 14 and s["share"] == pytest.approx(0.5) and not s["sufficient"]
