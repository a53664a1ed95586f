"""Server-side alerts: the pure rules, one alert per episode, stale data, storage and the bus."""

import asyncio
import threading

import pytest

from nightlink.cloud import alerts
from nightlink.nightscout.hub import Hub as EventBus
from nightlink.shared import lowrisk
from tests.support.cgm import edge_prediction
from tests.support.shared_data import SHARED

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
    history = _entries(_r([96, 96, 95]))
    now = T0 + 10 * MIN
    assert alerts.evaluate(history, now) == []
    got = alerts.evaluate(history, now, {"low": {"enabled": True, "threshold": 100}})
    assert [a.rule for a in got] == ["low"]
    assert alerts.evaluate(history, now, {"low": {"enabled": False, "threshold": 100}}) == []


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


def _replay(store, values, *, tenant="fam-1", start=T0, check_at_each=True, step_min=5):
    """Store readings one by one, checking the tenant after each; return the raised alerts."""
    data = store.tenant(tenant)
    raised = []
    for t, v in _r(values, start, step_min):
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


def test_check_tenant__an_alert_ends_when_its_condition_does(cloud_any):
    """Urgent low at 52, then back up: each low alert ends on its own once its episode has
    (15 minutes of readings over its threshold: the app lists them no more, socket.io alarm
    clients hear "All Clear" once both have); a stale-data alert ends when the readings come
    back."""
    store = cloud_any.store
    bus = EventBus()
    got = []
    bus.publish = lambda site, kind, data: got.append((kind, data))  # what the bus is given
    data = store.tenant("fam-1")
    for t, v in _r([100, 80, 66, 52, 52], T0):
        data.add_entries(_entries([(t, v)]))
        alerts.check_tenant(store, "fam-1", t, bus)
    assert sorted(a["rule"] for a in data.alerts(unacked=True)) == ["low", "urgent_low"]
    got.clear()
    still_open = []
    for t, v in _r([60, 72, 80, 85], T0 + 25 * MIN):
        data.add_entries(_entries([(t, v)]))
        alerts.check_tenant(store, "fam-1", t, bus)
        still_open.append(sorted(a["rule"] for a in data.alerts(unacked=True)))
    # 60, 72, 80 are 15 minutes at 54 or more; 72, 80, 85 at 70 or more
    assert still_open == [["low", "urgent_low"], ["low", "urgent_low"], ["low"], []]
    ended = {a["rule"]: a for a in data.alerts()}
    assert ended["urgent_low"]["ended_ms"] == T0 + 35 * MIN
    assert ended["low"]["ended_ms"] == T0 + 40 * MIN and ended["low"]["acked_by"] is None
    published = [d for kind, d in got if kind == "alert"]
    assert sorted(d["rule"] for d in published) == ["low", "urgent_low"]
    assert all(d["acked_at"] is not None and d["ended_ms"] for d in published)
    clears = [d for kind, d in got if kind == "notification" and d.get("clear")]
    assert len(clears) == 1  # once nothing is left open
    # readings stop: stale at 15 minutes, ended by the next reading
    alerts.check_tenant(store, "fam-1", T0 + 55 * MIN, bus)
    assert [a["rule"] for a in data.alerts(unacked=True)] == ["stale_data"]
    data.add_entries(_entries([(T0 + 56 * MIN, 110)]))
    alerts.check_tenant(store, "fam-1", T0 + 56 * MIN, bus)
    assert data.alerts(unacked=True) == []


def test_check_tenant__flapping_around_the_threshold_is_one_episode(cloud):
    # Low at 15, one reading over 70 at 25 (5 minutes, not the 15 that end an event), low
    # again from 30: the same episode, one alert, still open.
    raised = _replay(cloud.store, [100, 100, 100, 65, 66, 100, 65, 64, 63, 62, 71, 75, 66])
    assert _minutes(raised) == [("low", 15)]
    assert [a["rule"] for a in cloud.store.tenant("fam-1").alerts(unacked=True)] == ["low"]


def test_check_tenant__a_low_back_after_15_minutes_above_is_raised_at_once(cloud):
    """15 minutes of readings over 70 end the episode (its alert with it); the low at 40 is a
    new one, raised then, not 30 minutes after the first alert (the old snooze: at 45)."""
    raised = _replay(cloud.store, [100, 100, 100, 65, 66, 100, 100, 100, 65])
    assert _minutes(raised) == [("low", 15), ("low", 40)]
    first = cloud.store.tenant("fam-1").alert(raised[0]["id"])
    assert first["ended_ms"] == T0 + 35 * MIN


@pytest.mark.parametrize("step_min", [15, 1])
def test_check_tenant__the_episode_end_counts_readings_times_the_sampling(cloud, step_min):
    """A 15-minute sensor (Libre 2 in some regions) ends an episode with one reading over the
    threshold, a 1-minute one (Libre 3) with 15; one reading fewer does not."""
    above = 15 // step_min  # readings over 70 that make 15 minutes

    def lows(tenant, n_above):
        values = [100] * 3 + [65] * 2 + [100] * n_above + [65]
        raised = _replay(cloud.store, values, tenant=tenant, step_min=step_min)
        return [a["rule"] for a in raised if a["rule"] == "low"]

    assert lows("fam-1", above) == ["low", "low"]
    if above > 1:
        assert lows("fam-2", above - 1) == ["low"]


def test_check_tenant__a_missing_reading_inside_the_return_counts_as_the_grid_does(cloud):
    """Back over 70 at 25 and 35 with the reading of 30 missing: 15 minutes back (the
    consensus grid interpolates the missing one), so the low at 40 is a new episode."""
    raised = _replay(cloud.store, [100, 100, 100, 65, 66, 75, None, 78, 64])
    assert _minutes(raised) == [("low", 15), ("low", 40)]


def test_check_tenant__a_straight_line_predicted_low_once_per_refractory_period(cloud):
    """The straight-line predicted low (a threshold other than 70) that ends when the line
    turns flat is not raised again by the next dip of the line: it keeps its refractory
    period."""
    care = cloud.user("care@x.org", tenant="fam-1", role="caregiver")
    cloud.store.tenant("fam-1").set_alert_setting(care["id"], "predicted_low", True, 80)
    raised = _replay(cloud.store, [130, 130, 130, 130, 120, 110, 108, 100, 98, 96, 90, 89, 88,
                                   86, 85, 84, 83, 82, 82, 82, 82, 82])
    assert [a["rule"] for a in raised] == ["predicted_low"]


def test_check_tenant__no_all_clear_while_an_acknowledged_low_holds(cloud):
    """A low acknowledged, the phone offline 20 minutes (stale data raised), its backlog with
    glucose still 60: the stale-data alert ends, but no "All Clear": the low holds."""
    store = cloud.store
    data = store.tenant("fam-1")
    bus = EventBus()
    heard = []
    bus.publish = lambda site, kind, body: heard.append((kind, body))
    [low] = [a for a in _replay(store, [100] * 6 + [62]) if a["rule"] == "low"]
    data.ack_alert(low["id"], None)
    last = T0 + 35 * MIN
    data.add_entries(_entries([(last, 61)]))
    alerts.check_tenant(store, "fam-1", last, bus)
    assert [a["rule"] for a in alerts.check_tenant(store, "fam-1", last + 16 * MIN, bus)] == [
        "stale_data"]
    data.add_entries(_entries(_r([60, 60, 60, 60], last + 5 * MIN)))
    alerts.check_tenant(store, "fam-1", last + 21 * MIN, bus)
    assert data.alerts(unacked=True) == []  # the stale-data alert ended
    assert [b for kind, b in heard if kind == "notification" and b.get("clear")] == []


def test_check_tenant__a_gap_ends_an_episode(cloud):
    """No episode spans a gap: low at 15, no reading for 20 minutes (stale data is raised,
    the low stays open: nothing says it is over), low again: the first ends and a new alert
    is raised."""
    store = cloud.store
    data = store.tenant("fam-1")
    raised = _replay(store, [100, 100, 100, 65])
    assert alerts.check_tenant(store, "fam-1", T0 + 31 * MIN)[0]["rule"] == "stale_data"
    assert data.alert(raised[0]["id"])["ended_ms"] is None
    raised += _replay(store, [64], start=T0 + 35 * MIN)
    assert _minutes(raised) == [("low", 15), ("low", 35)]
    assert data.alert(raised[0]["id"])["ended_ms"] == T0 + 35 * MIN


def test_check_tenant__a_backlog_filling_a_gap_continues_the_episode(cloud):
    """The phone offline for 25 minutes at 50 mg/dL: the urgent low stays open (stale data is
    raised beside it, and ends when the backlog arrives); the backlog fills the gap with lows,
    so no "All Clear" and no second alert."""
    store = cloud.store
    data = store.tenant("fam-1")
    bus = EventBus()
    heard = []
    bus.publish = lambda site, kind, body: heard.append((kind, body))
    for t, v in _r([100, 100, 100, 50], T0):
        data.add_entries(_entries([(t, v)]))
        alerts.check_tenant(store, "fam-1", t, bus)
    alerts.check_tenant(store, "fam-1", T0 + 31 * MIN, bus)
    assert sorted(a["rule"] for a in data.alerts(unacked=True)) == ["stale_data", "urgent_low"]
    data.add_entries(_entries(_r([49, 48, 48, 47, 47], T0 + 20 * MIN)))  # the backlog
    alerts.check_tenant(store, "fam-1", T0 + 41 * MIN, bus)
    assert [a["rule"] for a in data.alerts(unacked=True)] == ["urgent_low"]
    assert [b for kind, b in heard if kind == "notification" and b.get("clear")] == []
    assert [a["rule"] for a in data.alerts()].count("urgent_low") == 1


def test_check_tenant__a_low_after_an_urgent_low_that_ended_is_raised(cloud):
    """Urgent low at 50, then 60 for an hour: when the urgent low ends (15 minutes at 54 or
    more) the low is raised in the same check, not silence after "All Clear"."""
    raised = _replay(cloud.store, [100, 100, 100, 50, 52] + [60] * 12)
    assert _minutes(raised) == [("urgent_low", 15), ("low", 35)]
    urgent = cloud.store.tenant("fam-1").alert(raised[0]["id"])
    assert urgent["ended_ms"] == T0 + 35 * MIN


def test_check_tenant__an_acknowledged_urgent_low_still_there_is_raised_again(cloud):
    """Raised at 15, acknowledged at 20 and still under 54 at 50: "Still urgent low" (30
    minutes after the acknowledgement), as an urgent low alarm repeats; unacknowledged, it
    stays the one open alert, and the low (a warning) is not repeated."""
    store = cloud.store
    data = store.tenant("fam-1")
    raised = _replay(store, [100, 100, 100, 52, 51])
    assert [a["rule"] for a in raised] == ["urgent_low"]
    data.ack_alert(raised[0]["id"], None)
    store.db.execute("UPDATE alerts SET acked_at = ? WHERE id = ?",
                     ((T0 + 20 * MIN) / 1000, raised[0]["id"]))  # acknowledged at 20
    raised = _replay(store, [50, 49, 48, 48, 47, 46], start=T0 + 25 * MIN)
    assert _minutes(raised) == [("urgent_low", 50)]  # 30 minutes after the acknowledgement
    assert raised[0]["message"] == "Still urgent low: 46 mg/dL (below 54)."
    assert raised[0]["detail"]["repeat"] is True
    # not acknowledged: no repeat, however long it lasts
    more = _replay(store, [45] * 10, start=T0 + 55 * MIN)
    assert more == []
    other = _replay(store, [100, 100, 100, 65, 64] + [63] * 10, tenant="fam-2")
    data2 = store.tenant("fam-2")
    data2.ack_alert(other[0]["id"], None)
    assert _replay(store, [62] * 10, tenant="fam-2", start=T0 + 80 * MIN) == []


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
    # one reading, then none again: warned at 15 minutes, not 30 after the last warning
    store.tenant("fam-1").add_entries(_entries([(last + 318 * MIN, 116)]))
    assert at(318) == [] and at(332) == []
    assert at(333) == [("stale_data", "warning")]
    msgs = [a["message"] for a in store.tenant("fam-1").alerts()]
    assert msgs[-1] == "No glucose data for 15 minutes."
    assert "No glucose data for 30 minutes (urgent)." in msgs


def test_check_tenant__stale_data_ends_with_a_late_upload_of_readings(cloud):
    """Readings uploaded minutes after they were taken (dated before the stale-data alert)
    end it: the episode is judged from the last reading the alert saw."""
    store = cloud.store
    _replay(store, [110, 111, 112])
    last = T0 + 10 * MIN
    [stale] = alerts.check_tenant(store, "fam-1", last + 17 * MIN)
    assert stale["rule"] == "stale_data"
    store.tenant("fam-1").add_entries(_entries(_r([113, 114, 115], last + 5 * MIN)))
    alerts.check_tenant(store, "fam-1", last + 23 * MIN)
    assert store.tenant("fam-1").alert(stale["id"])["ended_ms"] == last + 23 * MIN


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
        await asyncio.to_thread(lambda: cloud.store.tenant("fam-1").add_entries(
            _entries(_r([120, 120, 50]))))
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
    patient = cloud.user("p@x.org", tenant="fam-1", role="patient")
    hub = cloud.client.app.state.events
    heard = []
    publish = hub.publish
    hub.publish = lambda site, kind, data: (heard.append((kind, data)), publish(site, kind, data))
    r = cloud.client.post(f"/api/nl/v1/tenants/fam-1/alerts/{raised[0]['id']}/ack",
                          headers=cloud.auth("p@x.org"))
    assert r.status_code == 200
    assert cloud.store.tenant("fam-1").alerts(unacked=True) == []
    # as in the app: the apps are told, the audit log says who, and as it was the last one
    # open, socket.io alarm clients hear "All Clear"
    assert [d["acked_by"] for kind, d in heard if kind == "alert"] == [patient["id"]]
    assert [(e["actor_user_id"], e["detail"]) for e in cloud.store.audit_log("fam-1")
            if e["action"] == "alert.ack"] == [(patient["id"], {"alert": raised[0]["id"],
                                                                "via": "api"})]
    assert [d["message"] for kind, d in heard if kind == "notification" and d.get("clear")] \
        == ["Acknowledged through the API."]


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

    def rules(tenant: str) -> list[str]:  # (in a thread: the worker's loop runs no statement)
        return [a["rule"] for a in store.tenant(tenant).alerts()]

    async def run():
        worker = alerts.AlertWorker(store, bus, interval_s=60, debounce_s=0.05)
        task = asyncio.create_task(worker.run())
        try:
            for _ in range(100):
                await asyncio.sleep(0.05)
                if await asyncio.to_thread(rules, "fam-1") and worker.passes:
                    break
            assert await asyncio.to_thread(rules, "fam-1") == ["stale_data"]
            assert await asyncio.to_thread(rules, "fam-2") == []
            # A very low reading arrives in fam-2: the entry event wakes the worker at once.
            doc = {"type": "sgv", "date": now, "sgv": 45, "direction": "DoubleDown"}
            await asyncio.to_thread(lambda: store.tenant("fam-2").add_entries([doc]))
            bus.publish("fam-2", "entry", doc)
            for _ in range(100):
                await asyncio.sleep(0.05)
                if await asyncio.to_thread(rules, "fam-2"):
                    break
            assert await asyncio.to_thread(rules, "fam-2") == ["urgent_low"]
        finally:
            task.cancel()

    asyncio.run(run())


# -- predicted_low: the clock's own model and policy ------------------------------------------

FALLING = [140 - 6 * i for i in range(12)]  # 140 down to 74 mg/dL over the hour
AT_END = T0 + 55 * MIN  # the twelfth reading's time


def test_predicted_low__the_clocks_model_under_its_own_policy():
    got = alerts.evaluate(_entries(_r(FALLING)), AT_END)
    assert [a.rule for a in got] == ["predicted_low"]
    d = got[0].detail
    assert d["method"] == "model" and d["policy_from"] == "model"
    # what the bedside node's LiteRT model says of the same hour, in whole mg/dL
    permille, forecast = edge_prediction(FALLING)
    assert d["risk"] == permille / 1000 and permille >= lowrisk.ALARM_PERMILLE
    assert abs(d["value"] - forecast) <= 1 and d["value"] < lowrisk.FORECAST_FLOOR_MGDL
    assert got[0].message == f"Low likely within 30 minutes (risk {permille / 10:.0f} %)."
    assert f"risk {lowrisk.ALARM_PERMILLE / 10:g} % or more (the model's own)" in d["policy"]
    # a steady hour, or one still above the line's reach, raises nothing
    assert alerts.evaluate(_entries(_r([120] * 12)), AT_END) == []
    assert alerts.evaluate(_entries(_r([140 - 3 * i for i in range(12)])), AT_END) == []


def test_predicted_low__readings_in_fractions_of_a_mg_dl_count_whole():
    # Nightscout uploads may carry 74.6; the model takes whole mg/dL (the edge rounds so too)
    got = alerts.evaluate(_entries(_r([v + 0.4 for v in FALLING])), AT_END)
    assert [(a.rule, a.detail["risk"]) for a in got] == [
        ("predicted_low", alerts.evaluate(_entries(_r(FALLING)), AT_END)[0].detail["risk"])]


def test_predicted_low__a_15_minute_sensor_is_warned_too():
    # A Libre 2 reading every 15 minutes: the straight line needs 3 readings in 20 minutes and
    # never had them; the model bridges the gaps as the clock does.
    readings = _r([160, 134, 108, 84, 72], step_min=15)
    now = readings[-1][0]
    assert [a.rule for a in alerts.evaluate(_entries(readings), now)] == ["predicted_low"]
    line = {"predicted_low": {"enabled": True, "threshold": 75}}
    assert alerts.evaluate(_entries(readings), now, line) == []


def test_predicted_low__the_bedside_nodes_policy_within_bounds():
    history = _entries(_r(FALLING))
    strict = alerts.LowModel.of({"params": {"permille": 990, "floor": 90, "calibrated": True}})
    assert strict.source == "edge" and strict.policy[0] == 990
    assert alerts.evaluate(history, AT_END, predictor=strict) == []  # the risk is below 990
    for bogus in ({"permille": 2000}, {"permille": 900, "floor": 20}, {"permille": "high"},
                  {"floor": 90}, ["permille", 900], None):
        low = alerts.LowModel.of({"params": bogus})
        assert low == alerts.LowModel()  # refused whole: the model's own policy
    uncalibrated = alerts.LowModel.of({"params": {"permille": 850, "calibrated": False}})
    got = alerts.evaluate(history, AT_END, predictor=uncalibrated)
    assert got[0].detail["policy_from"] == "model"


def test_predicted_low__persistence_counts_readings_as_the_clock_does():
    def policy(permille, persist):  # forecast floor 95 mg/dL
        return alerts.LowModel((permille, persist) + lowrisk.DEFAULT_POLICY[2:4] + (95,)
                               + lowrisk.DEFAULT_POLICY[5:])

    # the last three readings' risks are 742, 830 and 962 permille (forecasts 87-89 mg/dL)
    readings = _r(FALLING)
    assert alerts.evaluate(_entries(readings), AT_END, predictor=policy(800, 2))
    assert not alerts.evaluate(_entries(readings), AT_END, predictor=policy(800, 3))
    # a reading 5 s late is still the one before: the clock counts readings 4.5 minutes apart
    jittered = readings[:10] + [(readings[10][0] + 5000, readings[10][1])] + readings[11:]
    assert alerts.evaluate(_entries(jittered), AT_END, predictor=policy(800, 2))
    # a 15-minute sensor: each reading is a prediction (risks 389, 783, 906 permille;
    # forecasts 95, 90, 88 mg/dL)
    libre = _r([150, 128, 106, 84, 74], step_min=15)
    now = libre[-1][0]
    assert alerts.evaluate(_entries(libre), now, predictor=policy(750, 2))
    assert not alerts.evaluate(_entries(libre), now, predictor=policy(750, 3))


def test_predicted_low__held_after_carbs():
    history = _entries(_r(FALLING))
    for minutes_before, raised in ((20, False), (-5, False), (44, False), (46, True),
                                   (-15, True)):
        low = alerts.LowModel(carbs_ms=AT_END - minutes_before * MIN)
        got = alerts.evaluate(history, AT_END, predictor=low)
        assert bool(got) == raised, minutes_before


def test_predicted_low__once_per_refractory_period():
    history = _entries(_r(FALLING))
    key = ("predicted_low", "warning")
    assert alerts.evaluate(history, AT_END, previous={key: AT_END - 30 * MIN}) == []
    assert alerts.evaluate(history, AT_END, previous={key: AT_END - 59 * MIN}) == []
    assert len(alerts.evaluate(history, AT_END, previous={key: AT_END - 60 * MIN})) == 1
    # a low alert 20 minutes ago covers it (the family's 30 minutes)
    assert alerts.evaluate(history, AT_END, previous={("low", "warning"): AT_END - 20 * MIN}) == []


def test_predicted_low__another_threshold_keeps_the_straight_line():
    got = alerts.evaluate(_entries(_r(FALLING)), AT_END,
                          {"predicted_low": {"enabled": True, "threshold": 72}})
    assert [a.rule for a in got] == ["predicted_low"]
    assert "method" not in got[0].detail
    assert got[0].message == "Low predicted: about 50 mg/dL in 20 minutes."


def test_check_tenant__predicted_low_with_the_reported_policy_and_carbs(cloud):
    import time

    raised = _replay(cloud.store, FALLING)
    assert _minutes(raised) == [("predicted_low", 55)]
    assert raised[0]["detail"]["policy_from"] == "model"
    # carbs entered ten minutes before (a careportal entry or an uploader's) hold it off
    # (its own time as stored: an uploader's odd `mills` beside it changes nothing)
    at = AT_END - 10 * MIN
    cloud.store.tenant("fam-2").add_documents("treatments", [{
        "eventType": "Carb Correction", "carbs": 15, "mills": [1],
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at / 1000))}, {
        "eventType": "Note", "carbs": "lots", "mills": "soon",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at / 1000 - 60))}])
    assert _replay(cloud.store, FALLING, tenant="fam-2") == []

    def policy(permille):
        cloud.store.put_device_status("edge-1", "fam-2", {
            "alarm_policy": f"risk >= {permille} permille",
            "alarm_policy_params": {"permille": permille, "persist": 1, "refractory_min": 60,
                                    "rising": 0.5, "floor": 90, "carb_hold_min": 45,
                                    "urgent": 54, "calibrated": True}})

    # the bedside node reports the threshold it calibrated: a strict one raises nothing here,
    # a sensitive one does, and says whose policy it was
    policy(990)
    assert _replay(cloud.store, FALLING, tenant="fam-2", start=T0 + 180 * MIN) == []
    policy(800)
    raised = _replay(cloud.store, FALLING, tenant="fam-2", start=T0 + 360 * MIN)
    assert [(a["rule"], a["detail"]["policy_from"]) for a in raised] == [("predicted_low", "edge")]


@pytest.mark.skipif(not (SHARED / "cgm-bris-t1d-open").is_dir(),
                    reason="needs ../shared/data/cgm-bris-t1d-open (real CGM)")
@pytest.mark.parametrize("person", ["P02", "P01"])  # a 5-minute sensor, a 15-minute Libre 2
def test_predicted_low__the_cloud_predicts_as_the_edge_on_real_cgm(person):
    """Over a real person's readings in whole mg/dL, the cloud's risk (shared/lowrisk.py on the
    readings as Nightscout stores them, the clock's code) against the bedside node's (LiteRT
    on its own 5-minute grid): the same permille from a 5-minute sensor; from a 15-minute one,
    whose gaps the clock bridges in whole mg/dL and the edge in fractions, the same alarm
    decision at the model's threshold."""
    import numpy as np

    from nightlink.edge.features.classify import MODELS
    from nightlink.edge.features.glucose_risk import LiteRtGlucose
    from nightlink.tools.train import cgm_real, glucose_real

    p = cgm_real.load_person(SHARED / "cgm-bris-t1d-open" / "csv" / f"{person}.csv")
    p.x = np.where(p.x > 0, np.floor(p.x + 0.5), 0).astype(np.float32)
    pred = glucose_real.predict(LiteRtGlucose((MODELS / "glucose_risk.tflite").read_bytes()), p)
    edge = dict(zip(pred.slots.tolist(), pred.permille.tolist(), strict=True))
    slots = np.flatnonzero(p.observed)[:4000]
    readings = [(int(s) * 5 * MIN, float(p.x[s])) for s in slots]
    model = lowrisk.LowRisk()
    pairs = []
    for k, s in enumerate(slots):
        got = lowrisk.predict_at(model, readings[max(0, k - 80):k + 1], int(s) * 5 * MIN)
        if got is not None and int(s) in edge:
            pairs.append((got[0], edge[int(s)]))
    cloud, node = np.array(pairs).T
    assert len(pairs) > 3900
    alarm = lowrisk.ALARM_PERMILLE
    assert ((cloud >= alarm) == (node >= alarm)).mean() >= 0.99
    if p.interval_min == 5:
        assert (cloud == node).mean() >= 0.99
    else:
        assert p.interval_min == 15 and (abs(cloud - node) <= 20).mean() >= 0.8


def test_check_tenant__a_predicted_low_is_a_low_for_nightscout_alarm_clients(cloud):
    """AndroidAPS and Nightscout's web client tell a low alarm by its event name; Nightscout
    names its own predicted lows (AR2) "low" at the warning level."""
    bus = EventBus()

    async def run():
        queue = bus.subscribe("fam-1")
        data = await asyncio.to_thread(cloud.store.tenant, "fam-1")
        await asyncio.to_thread(data.add_entries, _entries(_r(FALLING)))
        raised = await asyncio.to_thread(alerts.check_tenant, cloud.store, "fam-1", AT_END, bus)
        await asyncio.wait_for(queue.get(), 5)
        return raised, await asyncio.wait_for(queue.get(), 5)

    raised, note = asyncio.run(run())
    assert [a["rule"] for a in raised] == ["predicted_low"]
    assert (note["data"]["eventName"], note["data"]["level"]) == ("low", 1)

