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
    # ... and the policy as the clocks take it, which the cloud's predicted_low applies
    from nightlink.cloud.alerts import LowModel

    from .conftest import TENANT

    assert rig.cloud.device_status(rig.edge.device)["alarm_policy_params"] == policy
    low = LowModel.of(rig.cloud.tenant(TENANT).alarm_policy())
    assert low.policy[0] == policy["permille"] and low.policy[4] == policy["floor"]
    assert low.source == ("edge" if policy["calibrated"] else "model")


def test_status_report_carries_the_nights_apnea_screens(rig):
    """The edge's apnea screen (heart rhythm from the beats, which the wire does not carry)
    reaches the cloud with the status report, for its newest nights; the cloud keeps it as
    the night's edge summary, which the morning card and reports read (cloud/fusion.py)."""
    import threading

    from nightlink.edge.sync.cloud_link import SyncClient
    from tests.support.waiting import until

    from .conftest import TENANT

    screen = {"ahi_estimate": 57.2, "breathing_inputs": ["rr"], "rr": {"apnea_index": 57.2},
              "screen": "possible sleep apnea: suggest seeing a doctor"}
    for k in range(9):  # the 7 newest go
        rig.edge.put_night(f"2026-01-{10 + k:02d}", {"breathing": {**screen, "ahi_estimate": k}})
    rig.edge.put_night("2026-01-20", {"breathing": screen, "sleep": {"tst_min": 400}})
    data = rig.cloud.tenant(TENANT)
    client = SyncClient(rig.edge, rig.sync_config(), TENANT)
    stop = threading.Event()
    worker = threading.Thread(target=client.run, args=(stop,), kwargs={"until_empty": False})
    worker.start()
    try:
        until(lambda: len(data.nights()) == 7, timeout=20, what="seven nights' screens stored")
    finally:
        stop.set()
        worker.join(30)
    assert data.night("2026-01-20") == {"breathing": screen, "device": rig.edge.device,
                                        "by_device": {rig.edge.device: screen}}
    assert [n["night"] for n in data.nights()][-1] == "2026-01-13"  # 20, 18 .. 13
    assert "nights" not in rig.cloud.device_status(rig.edge.device)  # kept once, per night
