"""Glucose metrics against values worked out by hand from the definitions in docs/clinical.md."""

import math
import random

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


def on_grid(values, step_min=5):
    """Readings from the first grid point of the day (midnight + one interval) on."""
    return [((i + 1) * step_min * M, v) for i, v in enumerate(values)]


def test_hypo_events__three_readings_are_fifteen_minutes():
    r = on_grid([100, 65, 65, 65, 80, 80, 80, 100])
    (e,) = glycemia.hypo_events(r, 1)
    assert (e.start_ms, e.end_ms, e.nadir, e.ongoing) == (10 * M, 20 * M, 65, False)
    assert e.readings == 3 and e.minutes == 15 and not e.extended
    assert glycemia.hypo_events(r, 2) == []
    assert glycemia.hypo_events(on_grid([100, 65, 65, 100, 100, 100]), 1) == []  # 10 minutes


def test_hypo_events__one_reading_is_fifteen_minutes_at_fifteen_minute_sampling():
    (e,) = glycemia.hypo_events(on_grid([100, 65, 100, 100], step_min=15), 1)
    assert e.dt_min == 15 and e.minutes == 15


def test_hypo_events__short_rise_stays_inside_the_event():
    # Back above for 10 minutes does not end the event: one event of 8 readings, not two.
    r = on_grid([60, 60, 60, 75, 75, 60, 60, 60, 80, 80, 80, 80])
    (e,) = glycemia.hypo_events(r, 1)
    assert (e.start_ms, e.end_ms, e.minutes) == (5 * M, 40 * M, 40)


def test_hypo_events__a_gap_ends_the_run():
    # Two readings of 65 three hours apart are no event at all, let alone an extended one.
    assert glycemia.hypo_events([(5 * M, 65), (185 * M, 65)], 1) == []
    # Lows either side of a 2-hour gap are two events, each ended by the gap.
    r = on_grid([65] * 4) + [(145 * M + i * 5 * M, 65) for i in range(4)]
    assert [e.readings for e in glycemia.hypo_events(r, 1)] == [4, 4]


def test_hypo_events__level_2_nested_in_level_1_counted_once():
    r = on_grid([100, 65, 65, 50, 50, 50, 65, 80, 80, 80])
    ep = glycemia.episodes(r, "hypo")
    (e1,) = ep["level1"]
    (e2,) = ep["level2"]
    assert e1.readings == 6 and e1.reached_level2 and ep["level1_only"] == []
    assert e2.readings == 3 and e2.nadir == 50


def test_hypo_events__extended_is_more_than_120_minutes():
    ep = glycemia.episodes(on_grid([65] * 24 + [100] * 3), "hypo")  # exactly 120 minutes
    assert ep["extended"] == [] and not ep["level1"][0].extended
    ep = glycemia.episodes(on_grid([65] * 25 + [100] * 3), "hypo")  # 125 minutes
    assert len(ep["extended"]) == 1 and ep["level1"][0].extended


def test_hypo_events__ongoing_at_the_end_of_the_data():
    (e2,) = glycemia.hypo_events(on_grid([50] * 30), 2)
    assert e2.ongoing and e2.nadir == 50 and e2.minutes == 150


def test_hyper_events__above_180_and_250():
    ep = glycemia.episodes(on_grid([150, 200, 260, 260, 260, 200, 150, 150, 150]), "hyper")
    assert [e.readings for e in ep["level1"]] == [5] and ep["level1"][0].nadir == 260
    assert [e.readings for e in ep["level2"]] == [3] and ep["level1_only"] == []
    summary = glycemia.episode_summary(ep["level1"], ep["hours"])
    assert summary["total"] == 1 and summary["minutes"] == 25
    assert summary["mean"] == pytest.approx((200 + 3 * 260 + 200) / 5)


def test_gri_zone__boundaries():
    assert [glycemia.gri_zone(v) for v in (0, 20, 20.5, 40, 60.1, 80, 99)] == list("AABBDDE")


def test_more_metrics__by_hand():
    r = on_grid([100, 120, 140, 160])
    assert glycemia.median_iqr(r) == (130, 30)
    assert glycemia.j_index(r) == pytest.approx(0.001 * (130 + 25.819889) ** 2)
    assert glycemia.time_in(r, *glycemia.TIGHT_RANGE) == 75
    # ADRR of one day: the lowest reading's low risk plus the highest reading's high risk
    risk = [22.77 * (math.log(g) ** 1.084 - 5.381) ** 2 for g in (100, 160)]
    assert glycemia.adrr(r) == pytest.approx(sum(risk))
    # MODD: the same readings a day apart differing by 10; CONGA1: steady rise of 24/hour
    day = 1440 * M
    assert glycemia.modd(on_grid([100] * 3) + [(t + day, g + 10) for t, g in on_grid([100] * 3)]) == 10
    rising = on_grid([100 + 2 * i for i in range(30)])
    assert glycemia.conga(rising) == 0


def test_sufficiency__fourteen_days_seventy_percent():
    day = 1440 * M
    full = [(i * 5 * M, 100) for i in range(14 * 288)]
    assert glycemia.sufficiency(full, 0, 14 * day)["sufficient"]
    sparse = full[::2]  # 50 %
    got = glycemia.sufficiency(sparse, 0, 14 * day)
    assert not got["sufficient"] and got["share"] == pytest.approx(0.5)
    assert not glycemia.sufficiency(full[: 7 * 288], 0, 7 * day)["sufficient"]  # too few days
    libre2 = full[::3]  # a 15-minute sensor with every reading: complete, not a third
    assert glycemia.sufficiency(libre2, 0, 14 * day) == {"days": 14.0, "share": 1.0,
                                                        "sufficient": True}
    rng = random.Random(4)  # uploads stamp readings a little off the sensor's beat
    jittered = [(i * 5 * M + rng.randint(-300, 300), 100) for i in range(14 * 288)]
    assert glycemia.sufficiency(jittered, 0, 14 * day)["share"] == pytest.approx(1.0, abs=0.01)
    libre_2 = [(i * (15 * M - 1000), 100) for i in range(14 * 96)]  # 14:59 apart
    assert glycemia.sufficiency(libre_2, 0, 14 * day)["share"] == pytest.approx(1.0, abs=0.01)
    libre3 = [(t, 100) for t in range(0, 14 * day, M)][: 14 * 1440 * 3 // 4]
    got = glycemia.sufficiency(libre3, 0, 14 * day)  # a 1-minute sensor, 75 % there
    assert got["share"] == pytest.approx(0.75, abs=0.001) and got["sufficient"]


def test_episodes__the_nadir_is_the_sensors_lowest_reading_not_the_grids():
    """A 15-minute sensor's 59 mg/dL read at :52 lies between grid points: it is the event's
    nadir (the grid alone would say 67)."""
    t0 = 0
    readings = [(t0 + k * 15 * M, g) for k, g in enumerate([100, 90, 80, 68, 67, 69, 68, 90, 110])]
    readings.append((t0 + 4 * 15 * M + 7 * M, 59.0))
    (event,) = glycemia.hypo_events(sorted(readings), 1)
    assert event.nadir == 59.0
    (hyper,) = glycemia.episodes([(t, 300 - g) for t, g in sorted(readings)], "hyper")["level1"]
    assert hyper.nadir == 241.0  # the peak, likewise


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
