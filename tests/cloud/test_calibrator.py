"""The cloud's predicted-low calibrations run in a process of their own, one API process at a
time per tenant (cloud/calibrator.py), so that the polls an API process answers never wait
for one."""

import asyncio
import contextlib
import os
import signal
import time
from zoneinfo import ZoneInfo

from nightlink.cloud import alert_calibration as cal
from nightlink.cloud import alerts
from nightlink.cloud.calibrator import Calibrations
from nightlink.cloud.reports import settings
from nightlink.cloud.store import Store
from tests.cloud.test_alert_calibration import DAY, NEAR_MISSES, nights


def _family(store, days=8):
    """fam-1 with `days` nights of readings up to now (UTC), calibration due."""
    now = int(time.time() * 1000)
    data = store.tenant("fam-1")
    settings.set_patient_settings(data, tz="UTC")
    start = (now // DAY - days) * DAY
    data.add_entries([{"type": "sgv", "date": t, "sgv": g, "direction": "Flat"}
                      for t, g in nights(days, NEAR_MISSES, start=start) if t < now])
    assert cal.due(data, now)
    return data, now


def test_claim__one_holder_at_a_time_and_a_dead_one_s_taken_over(cloud_any):
    """SQLite and PostgreSQL."""
    data = cloud_any.store.tenant("fam-1")
    other = cloud_any.store.tenant("fam-2")
    assert data.claim_calibration(1000.0, 600)
    assert not data.claim_calibration(1200.0, 600)  # held
    assert other.claim_calibration(1200.0, 600)  # another tenant's is its own
    data.release_calibration(1200.0)  # not the holder's mark: nothing given up
    assert not data.claim_calibration(1300.0, 600)
    assert data.claim_calibration(1601.0, 600)  # the holder died 601 s ago: taken over
    data.release_calibration(1000.0)  # the dead holder's release leaves the new claim
    assert not data.claim_calibration(1602.0, 600)
    data.release_calibration(1601.0)
    assert data.claim_calibration(1603.0, 600)


def test_calibrations__run_in_a_child_process_that_opens_the_database_itself(cloud, monkeypatch):
    data, now = _family(cloud.store)
    calibrations = Calibrations(cloud.store)

    def not_here(*_a, **_k):
        raise AssertionError("calibrated in the API process")

    monkeypatch.setattr(cal, "recalibrate", not_here)
    try:
        doc = asyncio.run(calibrations.run(data, now))
        child = calibrations.pid()
        assert child is not None and child != os.getpid()
        assert calibrations.in_child == 1
    finally:
        calibrations.close()
    monkeypatch.undo()
    assert doc["calibrated"] and data.alarm_calibration() == doc
    assert not cal.due(data, now)
    # the same calibration as made here, on the same data at the same time, and as made
    # from the readings' Nightscout documents
    assert cal.recalibrate(data, doc["computed_ms"]) == doc
    t = doc["computed_ms"]
    entries = data.entries(count=30_000, type_="sgv",
                           where=[("date", ">=", t - cal.READ_BACK_MS), ("date", "<=", t)])
    assert cal.calibrate(alerts.readings_of(entries), [], ZoneInfo("UTC"), t) == doc
    # ... and not made twice: not due, nothing claimed, no child asked
    again = Calibrations(cloud.store)
    assert asyncio.run(again.run(data, now)) is None and again.pid() is None


def test_calibrations__of_two_api_processes_one_calibrates_a_tenant(cloud):
    data, now = _family(cloud.store)
    second = Store.open(cloud.store.db.url)  # another API process's store of the same file
    ours, theirs = Calibrations(cloud.store), Calibrations(second)

    async def both():
        return await asyncio.gather(ours.run(data, now), theirs.run(second.tenant("fam-1"), now))

    try:
        docs = asyncio.run(both())
    finally:
        ours.close()
        theirs.close()
        second.close()
    assert sorted(d is None for d in docs) == [False, True], docs
    assert ours.in_child + theirs.in_child == 1
    # the claim was given up: the next day's calibration is not held off
    assert data.claim_calibration(time.time(), 600)


def test_calibrations__too_few_readings_answered_at_once_without_a_child(cloud):
    data, now = _family(cloud.store, days=2)
    calibrations = Calibrations(cloud.store)
    doc = asyncio.run(calibrations.run(data, now))
    assert not doc["calibrated"] and doc["nights"] < 5
    assert calibrations.pid() is None and calibrations.in_child == 0


def test_calibrations__a_child_that_died_is_replaced_and_an_idle_one_ends(cloud):
    data, now = _family(cloud.store)
    calibrations = Calibrations(cloud.store)
    try:
        assert asyncio.run(calibrations.run(data, now))["calibrated"]
        first = calibrations.pid()
        os.kill(first, signal.SIGKILL)
        data.set_alarm_calibration({**data.alarm_calibration(), "computed_ms": 0})  # due
        deadline = time.monotonic() + 30
        doc = None
        while doc is None and time.monotonic() < deadline:
            try:
                doc = asyncio.run(calibrations.run(data, now))
            except Exception as exc:  # noqa: BLE001 - the dead child's pool, said once
                assert type(exc).__name__ == "BrokenProcessPool", exc
        assert doc is not None and doc["calibrated"]
        assert calibrations.pid() not in (None, first)
        assert data.claim_calibration(time.time(), 600)  # released after the failure too
        calibrations.idle_s = 0.0
        calibrations.end_if_idle()
        assert calibrations.pid() is None
    finally:
        calibrations.close()


@contextlib.contextmanager
def _budget_set_in_portal(tmp_path):
    """A running cloud app (its alert worker too) whose fam-1 has 8 nights of readings, and
    whose doctor has just set a budget of "3,5" false alarms a week in the portal: (the app,
    fam-1's data, the answer)."""
    from fastapi.testclient import TestClient

    from tests.cloud.conftest import Cloud, make_app

    app = make_app(f"sqlite:///{tmp_path / 'cloud.db'}")
    store = app.state.store
    store.create_tenant("fam-1", "Family one")
    data, _now = _family(store)
    try:
        with TestClient(app) as client:
            cloud = Cloud(client, store)
            cloud.user("doc@example.org", tenant="fam-1", role="doctor")
            r = client.post("/portal/p/fam-1/settings", data={"alarm_budget": "3,5"},
                            headers=cloud.auth("doc@example.org"), follow_redirects=False)
            yield app, data, r
    finally:
        store.close()


def test_portal__a_new_budget_is_calibrated_at_once_in_the_worker_s_child(tmp_path, monkeypatch):
    """The portal's settings form recalibrates at once, through the alert worker's child
    process, not in the request's thread of the API process."""

    def not_here(*_a, **_k):
        raise AssertionError("calibrated in the API process")

    monkeypatch.setattr(cal, "recalibrate", not_here)
    with _budget_set_in_portal(tmp_path) as (app, data, r):
        assert r.status_code == 303, r.text
        doc = data.alarm_calibration()
        assert doc["budget_per_week"] == 3.5 and doc["calibrated"]
        assert app.state.alert_worker.calibrator.in_child >= 1


def _alive(pid: int) -> bool:
    """Whether a process runs (an exited one its parent has not reaped yet does not)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_calibrations__the_child_ends_when_its_api_process_is_killed(cloud, tmp_path):
    """An API process killed outright (out of memory, SIGKILL) cannot end its child; the
    child sees it gone and ends itself rather than hold its memory for ever."""
    import subprocess
    import sys
    import textwrap

    _data, now = _family(cloud.store)
    script = tmp_path / "api_process.py"
    script.write_text(textwrap.dedent(f"""
        import asyncio, time
        from nightlink.cloud.calibrator import Calibrations
        from nightlink.cloud.store import Store

        if __name__ == "__main__":
            store = Store.open({cloud.store.db.url!r})
            calibrations = Calibrations(store)
            doc = asyncio.run(calibrations.run(store.tenant("fam-1"), {now}))
            print(calibrations.pid(), doc["calibrated"], flush=True)
            time.sleep(600)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        pid, calibrated = proc.stdout.readline().split()
        child = int(pid)
        assert calibrated == "True" and _alive(child)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    deadline = time.monotonic() + 20
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child)


def test_portal__a_calibration_that_fails_does_not_fail_the_settings(tmp_path, monkeypatch):
    """The settings are stored before the calibration: its failure (the child killed, the
    database gone) is logged, and the worker's next pass calibrates."""

    async def broken(self, *_a):
        raise RuntimeError("the calibrator's child died")

    monkeypatch.setattr(Calibrations, "run", broken)
    with _budget_set_in_portal(tmp_path) as (_app, data, r):
        assert r.status_code == 303, r.text
        assert settings.patient_settings(data).alarm_budget == 3.5
        assert data.alarm_calibration() is None
