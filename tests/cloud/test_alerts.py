"""Server-side alerts: the pure rules, one alert per episode, stale data, storage and the bus."""

import asyncio
import threading

import pytest

from nightlink.cloud import alerts
from nightlink.nightscout.hub import Hub as EventBus

MIN = 60_000
T0 = 1_770_000_000_000  # ms


def _r(values, start=T0, step_min=5):
    """(t_ms, sgv) readings every step_min minutes, oldest first."""
    return [(start + i * step_min * MIN, v) for i, v in enumerate(values)]


def _entries(readings):
    return [{"type": "sgv", "date": t, "sgv": v, "direction": "Flat"} for t, v in readings]


# -- pure rules -------------------------------------------------------------------------------


@pytest.mark.parametrize("rule, value, threshold, fires", [
    ("urgent_low", 53, 54, True),
    ("urgent_low", 54, 54, False),
    ("urgent_low", 60, 65, True),
    ("low", 69, 70, True),
    ("low", 70, 70, False),
    ("high", 251, 250, True),
    ("high", 250, 250, False),
    ("high", 200, 180, True),
])
def test_rule__threshold(rule, value, threshold, fires):
    readings = _r([120, 120, value])
    now = readings[-1][0] + 2 * MIN
    got = alerts.RULE_FUNCTIONS[rule](readings, now, threshold)
    assert (got is not None) == fires
    if fires:
        assert got[1] == value


def test_rule__old_reading_is_not_current():
    readings = _r([50])
    assert alerts.urgent_low(readings, T0 + 15 * MIN) == ("urgent", 50)
    assert alerts.urgent_low(readings, T0 + 15 * MIN + 1) is None


def test_rule__sensor_error_codes_are_not_glucose():
    history = _entries(_r([120, 120, 5]))  # 5: a sensor error code, not 5 mg/dL
    assert alerts.evaluate(history, T0 + 11 * MIN) == []


@pytest.mark.parametrize("minutes, expected", [
    (14.9, None), (15, ("warning", 15.0)), (29, ("warning", 29.0)), (30, ("urgent", 30.0)),
])
def test_rule__stale_data_at_15_and_30_minutes(minutes, expected):
    readings = _r([110, 112])
    assert alerts.stale_data(readings, readings[-1][0] + int(minutes * MIN)) == expected


def test_rule__stale_data_without_any_reading_is_nothing():
    assert alerts.stale_data([], T0) is None


@pytest.mark.parametrize("values, fires", [
    ([100, 116, 132, 148], True),  # 3.2 mg/dL/min
    ([100, 114, 128, 142], False),  # 2.8
    ([100, 160], False),  # two readings are not a trend
])
def test_rule__rising_fast_over_15_minutes(values, fires):
    readings = _r(values)
    assert (alerts.rising_fast(readings, readings[-1][0]) is not None) == fires


@pytest.mark.parametrize("values, fires", [
    ([110, 100, 90, 80], True),  # -2/min: 80 - 40 = 40 in 20 min
    ([96, 94, 92, 90], False),  # -0.4/min: 82 in 20 min
    ([100, 90, 80, 68], False),  # already low: the low rule speaks
    ([60, 70, 80, 90], False),  # rising
])
def test_rule__predicted_low_20_minutes_ahead(values, fires):
    readings = _r(values)
    got = alerts.predicted_low(readings, readings[-1][0])
    assert (got is not None) == fires
    if fires:
        assert got == ("warning", 40)


def test_evaluate__entries_in_either_order():
    history = _entries(_r([120, 100, 80, 60]))
    now = T0 + 16 * MIN
    newest_first = alerts.evaluate(list(reversed(history)), now)
    oldest_first = alerts.evaluate(history, now)
    assert newest_first == oldest_first
    assert [(a.rule, a.level, a.at_ms) for a in oldest_first] == [("low", "warning", T0 + 15 * MIN)]
    assert oldest_first[0].message == "Low: 60 mg/dL (below 70)."
    assert oldest_first[0].detail["threshold"] == 70


def test_evaluate__urgent_low_covers_low():
    history = _entries(_r([120, 120, 50]))
    got = alerts.evaluate(history, T0 + 10 * MIN)
    assert [(a.rule, a.level) for a in got] == [("urgent_low", "urgent")]
    # Recovering to 60 is the same hypoglycemia: no new "low" while it lasts.
    history = _entries(_r([120, 120, 50] + [60] * 6))
    previous = {("urgent_low", "urgent"): T0 + 10 * MIN}
    assert alerts.evaluate(history, T0 + 41 * MIN, previous=previous) == []
    assert [a.rule for a in alerts.evaluate(history, T0 + 41 * MIN)] == ["low"]


def test_evaluate__disabled_rules_and_thresholds():
    history = _entries(_r([76, 76, 75]))
    now = T0 + 10 * MIN
    assert alerts.evaluate(history, now) == []
    got = alerts.evaluate(history, now, {"low": {"enabled": True, "threshold": 80}})
    assert [a.rule for a in got] == ["low"]
    assert alerts.evaluate(history, now, {"low": {"enabled": False, "threshold": 80}}) == []


def test_merge_settings__on_for_anyone_most_sensitive_threshold():
    merged = alerts.merge_settings([
        {"low": {"enabled": True, "threshold": 80}, "high": {"enabled": False, "threshold": None}},
        {"low": {"enabled": True, "threshold": 72}, "high": {"enabled": True, "threshold": 220},
         "stale_data": {"enabled": True, "threshold": 20}},
        {"high": {"enabled": False, "threshold": None}, "rising_fast": {"enabled": False,
                                                                          "threshold": None}},
    ])
    assert merged["low"] == {"enabled": True, "threshold": 80}
    assert merged["high"] == {"enabled": True, "threshold": 220}
    assert merged["stale_data"] == {"enabled": True, "threshold": 15}  # the third has default
    assert merged["rising_fast"] == {"enabled": True, "threshold": 3.0}


# -- one tenant over the store ----------------------------------------------------------------


def _replay(store, values, *, tenant="fam-1", start=T0, check_at_each=True):
    """Store readings one by one, checking the tenant after each; return the raised alerts."""
    data = store.tenant(tenant)
    raised = []
    for t, v in _r(values, start):
        if v is not None:
            data.add_entries(_entries([(t, v)]))
        if check_at_each:
            raised += alerts.check_tenant(store, tenant, t)
    return raised


def _minutes(raised):
    return [(a["rule"], (a["at_ms"] - T0) // MIN) for a in raised]


def test_check_tenant__low_fires_once_per_episode(cloud_any):
    # 2 hours below 70: one alert, not one every 5 minutes and not one every 30.
    raised = _replay(cloud_any.store, [100, 100, 100] + [65, 64, 63, 64, 65, 66] * 4 + [100])
    assert _minutes(raised) == [("low", 15)]
    stored = cloud_any.store.tenant("fam-1").alerts()
    assert [(a["rule"], a["level"], a["at_ms"]) for a in stored] == [("low", "warning",
                                                                      T0 + 15 * MIN)]
    assert stored[0]["detail"]["value"] == 65


def test_check_tenant__not_again_within_the_window_then_again_after_it(cloud):
    # Low at 15, clear at 25, low again at 30 (15 minutes after the alert: snoozed), still low
    # at 45: 30 minutes after the first alert and a new episode, so it fires again.
    raised = _replay(cloud.store, [100, 100, 100, 65, 66, 100, 65, 64, 63, 62])
    assert _minutes(raised) == [("low", 15), ("low", 45)]


def test_check_tenant__new_episode_after_the_window(cloud):
    raised = _replay(cloud.store, [100, 100, 100, 65, 66] + [100] * 8 + [65])
    assert _minutes(raised) == [("low", 15), ("low", 65)]


def test_check_tenant__same_check_twice_raises_nothing_new(cloud):
    _replay(cloud.store, [240, 245, 260])
    assert alerts.check_tenant(cloud.store, "fam-1", T0 + 11 * MIN) == []
    assert [a["rule"] for a in cloud.store.tenant("fam-1").alerts()] == ["high"]


def test_check_tenant__stale_warning_at_15_urgent_at_30_once_each(cloud_any):
    store = cloud_any.store
    _replay(store, [110, 111, 112])
    last = T0 + 10 * MIN

    def at(minutes):
        return [(a["rule"], a["level"]) for a in
                alerts.check_tenant(store, "fam-1", last + minutes * MIN)]

    assert at(14) == []
    assert at(15) == [("stale_data", "warning")]
    assert at(20) == []
    assert at(30) == [("stale_data", "urgent")]
    assert at(60) == [] and at(300) == []
    # Data comes back, then stops again: a new episode.
    store.tenant("fam-1").add_entries(_entries([(last + 301 * MIN, 115)]))
    assert at(301) == []
    assert at(316) == [("stale_data", "warning")]
    msgs = [a["message"] for a in store.tenant("fam-1").alerts()]
    assert msgs[-1] == "No glucose data for 15 minutes."
    assert "No glucose data for 30 minutes (urgent)." in msgs


def test_check_tenant__no_data_ever_no_alert(cloud):
    assert alerts.check_tenant(cloud.store, "fam-1", T0) == []


def test_check_tenant__uses_the_members_settings(cloud):
    care = cloud.user("care@x.org", tenant="fam-1", role="caregiver")
    cloud.store.tenant("fam-1").set_alert_setting(care["id"], "low", True, 80)
    raised = _replay(cloud.store, [100, 100, 76])  # falling fast too: low covers predicted
    assert _minutes(raised) == [("low", 10)]
    assert raised[0]["detail"]["threshold"] == 80


def test_check_tenant__publishes_on_the_bus_and_can_be_acked(cloud):
    bus = EventBus()

    async def run():
        queue = bus.subscribe("fam-1")
        cloud.store.tenant("fam-1").add_entries(_entries(_r([120, 120, 50])))
        raised = await asyncio.to_thread(alerts.check_tenant, cloud.store, "fam-1",
                                         T0 + 11 * MIN, bus)
        msg = await asyncio.wait_for(queue.get(), 5)
        note = await asyncio.wait_for(queue.get(), 5)
        return raised, msg, note

    raised, msg, note = asyncio.run(run())
    assert msg == {"type": "alert", "site": "fam-1", "data": raised[0]}
    # the same alert for socket.io alarm clients, as a Nightscout urgent notification
    assert note["type"] == "notification" and note["data"]["level"] == 2
    assert note["data"]["eventName"] == "low" and note["data"]["message"] == raised[0]["message"]
    assert msg["data"]["rule"] == "urgent_low" and msg["data"]["acked_at"] is None
    cloud.user("p@x.org", tenant="fam-1", role="patient")
    r = cloud.client.post(f"/api/nl/v1/tenants/fam-1/alerts/{raised[0]['id']}/ack",
                          headers=cloud.auth("p@x.org"))
    assert r.status_code == 200
    assert cloud.store.tenant("fam-1").alerts(unacked=True) == []


def test_check_tenant__concurrent_callers_raise_one_alert(cloud_any):
    store = cloud_any.store
    store.tenant("fam-1").add_entries(_entries(_r([120, 120, 50])))
    results, barrier = [], threading.Barrier(4)

    def call():
        barrier.wait()
        results.extend(alerts.check_tenant(store, "fam-1", T0 + 11 * MIN))

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 1 and len(store.tenant("fam-1").alerts()) == 1


def test_alert_worker__checks_active_tenants_and_reacts_to_entries(cloud):
    import time

    store = cloud.store
    now = int(time.time() * 1000)
    # fam-1 went silent 20 minutes ago; fam-2 is fine.
    store.tenant("fam-1").add_entries(_entries(_r([110, 110], start=now - 25 * MIN)))
    store.tenant("fam-2").add_entries(_entries(_r([110, 110], start=now - 6 * MIN)))
    bus = EventBus()

    async def run():
        worker = alerts.AlertWorker(store, bus, interval_s=60, debounce_s=0.05)
        task = asyncio.create_task(worker.run())
        try:
            for _ in range(100):
                await asyncio.sleep(0.05)
                if store.tenant("fam-1").alerts() and worker.passes:
                    break
            assert [a["rule"] for a in store.tenant("fam-1").alerts()] == ["stale_data"]
            assert store.tenant("fam-2").alerts() == []
            # A very low reading arrives in fam-2: the entry event wakes the worker at once.
            doc = {"type": "sgv", "date": now, "sgv": 45, "direction": "DoubleDown"}
            store.tenant("fam-2").add_entries([doc])
            bus.publish("fam-2", "entry", doc)
            for _ in range(100):
                await asyncio.sleep(0.05)
                if store.tenant("fam-2").alerts():
                    break
            assert [a["rule"] for a in store.tenant("fam-2").alerts()] == ["urgent_low"]
        finally:
            task.cancel()

    asyncio.run(run())
