"""The clocks' predicted-low policy reaches the cloud: the edge keeps the policy it calibrated
in its store and its status report carries it, so the cloud knows which policy is active."""

from nightlink.edge.sources.cgm import glucose_to_entry
from nightlink.edge.sources.samples import Glucose
from nightlink.edge.sync.clock_feed import POLICY_META, predicted_low_policy
from tests.support.cgm import person_trace

from .conftest import status_reported


def test_status_report_carries_the_calibrated_policy(rig):
    times, values = person_trace(days=3, seed=3)
    rig.edge.add_entries(glucose_to_entry(Glucose(t.timestamp(), int(g)), "test")
                         for t, g in zip(times, values, strict=True))
    policy = predicted_low_policy(rig.edge, times[-1].timestamp() + 60)
    text = rig.edge.meta(POLICY_META)
    assert text and f"risk >= {policy['permille']} permille" in text
    assert f"forecast < {policy['floor']} mg/dL" in text
    assert status_reported(rig, "alarm_policy", "the edge's status report with its alarm "
                           "policy") == text
