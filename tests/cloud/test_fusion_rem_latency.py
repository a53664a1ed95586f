"""Sleep onset and REM latency in the cloud's night fusion: AASM definitions with the shared
minimum bouts, so one stray epoch of a classifier cannot move them by an hour."""

from nightlink.cloud import fusion

A = 1000  # first epoch of the recording


def _night(stages):
    return {A + i: s for i, s in enumerate(stages)}, (A, A + len(stages))


def test_sleep_metrics__one_stray_rem_epoch_does_not_set_the_latency():
    # 20 epochs awake, sleep, one stray REM epoch 2 min after onset, REM proper at 75 min.
    stages = [0] * 20 + [1] * 4 + [3] + [1] * 145 + [3] * 20 + [1] * 10
    st, span = _night(stages)
    s = fusion.sleep_metrics(st, span, "classifier")
    assert s["sol_min"] == 10.0
    assert s["rem_latency_min"] == 75.0


def test_sleep_metrics__one_stray_sleep_epoch_does_not_set_onset():
    stages = [0] * 10 + [1] + [0] * 19 + [2] * 200 + [3] * 6
    st, span = _night(stages)
    s = fusion.sleep_metrics(st, span, "classifier")
    assert s["sol_min"] == 15.0
    assert s["rem_latency_min"] == 100.0


def test_sleep_metrics__an_unscored_gap_breaks_a_rem_bout():
    stages = [0] * 4 + [1] * 10 + [3, 3] + [None] + [3] + [1] * 20 + [3] * 3
    st, span = _night(stages)
    st = {e: s for e, s in st.items() if s is not None}
    s = fusion.sleep_metrics(st, span, "classifier")
    assert s["rem_latency_min"] == 17.0
