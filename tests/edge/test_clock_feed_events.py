"""The clock's count of level-1 hypoglycaemia events follows the 2023 consensus rules."""

from nightlink.edge.sources.samples import Glucose
from nightlink.edge.sync.clock_feed import level1_events


def every(values, step_s=300):
    return [Glucose(t=i * step_s, sgv=v) for i, v in enumerate(values)]


def test_level1_events__three_readings_are_fifteen_minutes():
    assert level1_events(every([100, 65, 65, 65, 100, 100, 100])) == 1
    assert level1_events(every([100, 65, 65, 100, 100, 100])) == 0
    assert level1_events(every([100, 65, 100, 100], step_s=900)) == 1  # 15-minute sampling


def test_level1_events__short_rise_inside_and_gaps_end_runs():
    assert level1_events(every([60, 60, 60, 75, 75, 60, 60, 80, 80, 80])) == 1
    assert level1_events(every([60, 60, 60, 80, 80, 80, 60, 60, 60])) == 2
    assert level1_events([Glucose(t=0, sgv=65), Glucose(t=3 * 3600, sgv=65)]) == 0
    lows_across_gap = every([65, 65]) + [Glucose(t=7200 + i * 300, sgv=65) for i in range(2)]
    assert level1_events(lows_across_gap) == 0
