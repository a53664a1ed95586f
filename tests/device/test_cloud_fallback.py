"""The clock's cloud fallback: when the edge is silent the clock asks the cloud's Nightscout
API for the last hour of readings. On the host port against a real Nightlink cloud, and under
real MicroPython on the answer that cloud gave."""

from __future__ import annotations

import hashlib
import json
import time
from types import SimpleNamespace

import httpx
import pytest

from nightlink.cloud.app import create_app
from nightlink.cloud.config import Settings
from nightlink.device import app
from nightlink.shared import epoch, units
from nightlink.tools.bench.report import put_glucose
from tests.conftest import ROOT
from tests.support.mpy_board import BOARD_LIBS, host_check, host_env
from tests.support.servers import serve

SECRET = "a-cloud-secret-1"
JWT = "a-test-jwt-secret-that-is-long-enough-0123"
SCRIPT = ROOT / "tests" / "device" / "cloud_fallback_check.py"


def _glucose(k: int) -> int:
    """A 1-minute sensor (Libre 3) over two hours, falling 1 mg/dL a minute in the last hour."""
    return 150 if k < 60 else 150 - (k - 60)


@pytest.fixture
def cloud(tmp_path):
    application = create_app(Settings(env="test", database_url=f"sqlite:///{tmp_path / 'c.db'}",
                                      jwt_secret=JWT))
    store = application.state.store
    store.create_tenant("fam", "Ann Example")
    store.set_api_secret("fam", SECRET)
    now_ms = int(time.time() * 1000) // 60_000 * 60_000
    newest = now_ms - 60_000
    put_glucose(store.tenant("fam"), [(newest - (119 - k) * 60_000, _glucose(k))
                                      for k in range(120)])
    # a snack 20 minutes ago, and a bolus without carbs since (not what the clock asks for),
    # and extended carbs AndroidAPS uploaded an hour ahead (not eaten yet)
    carbs_ms = now_ms - 20 * 60_000

    def at(ms):
        return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(ms / 1000))

    store.tenant("fam").add_documents("treatments", [
        {"eventType": "Meal Bolus", "carbs": 15, "insulin": 1.5, "created_at": at(carbs_ms)},
        {"eventType": "Correction Bolus", "insulin": 1, "created_at": at(now_ms - 300_000)},
        {"eventType": "Carb Correction", "carbs": 20, "created_at": at(now_ms + 3600_000)}])
    with serve(application) as url:
        yield SimpleNamespace(url=url, now_ms=now_ms, newest=newest, carbs_ms=carbs_ms)
    store.close()


def _check(cloud, tmp_path, mpy_json=None) -> dict:
    """The check script's result on the real cloud's answer to the clock's URL: under
    MicroPython with mpy_json, else on the host port (CPython)."""
    url = f"{cloud.url}/t/fam/api/v1/entries/sgv.txt?count=75"
    headers = {"api-secret": hashlib.sha1(SECRET.encode()).hexdigest(), "Accept": "text/plain"}
    r = httpx.get(url, headers=headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    flash = tmp_path / "flash"
    flash.mkdir(parents=True, exist_ok=True)
    (flash / "cloud.txt").write_bytes(r.content)
    (flash / "now.json").write_text(json.dumps({"now_ms": cloud.now_ms}))
    as_json = httpx.get(url.replace("sgv.txt", "sgv.json"), headers=headers)
    assert as_json.status_code == 200 and len(as_json.json()) == 75
    (flash / "cloud.json").write_bytes(as_json.content)
    carbs_url = ("/t/fam/api/v1/treatments.json?find%5Bcarbs%5D%5B%24gt%5D=0&count=1"
                 "&find%5Bcreated_at%5D%5B%24lte%5D=" + epoch.iso(cloud.now_ms // 1000 + 600))
    carbs = httpx.get(cloud.url + carbs_url, headers={**headers, "Accept": "application/json"})
    assert carbs.status_code == 200 and [d["carbs"] for d in carbs.json()] == [15]
    (flash / "carbs.json").write_bytes(carbs.content)
    if mpy_json is None:
        got = host_check(SCRIPT, tmp_path, env=host_env())
    else:
        got = mpy_json(SCRIPT, libs=BOARD_LIBS, heap=256 * 1024,
                       puts=[(flash / n, "/flash/" + n) for n in ("cloud.txt", "cloud.json",
                                                                  "now.json", "carbs.json")])
    # The clock asked what the real cloud answered above.
    assert got["asked"][0] == ["http://cloud.test" + carbs_url,
                               {**headers, "Accept": "application/json"}]
    assert got["asked"][1] == ["http://cloud.test/t/fam/api/v1/entries/sgv.txt?count=75", headers]
    assert got["errs"] == []
    first = got["first"]
    assert first["readings"] == 75 and first["source"] == "cloud"
    assert first["newest"] == [cloud.newest, _glucose(119)]
    assert first["oldest"] == [cloud.newest - 74 * 60_000, _glucose(45)]
    assert first["delta"] == -5  # 5 minutes at -1 mg/dL a minute
    assert all(v > 0 for v in first["history"])  # every 5-minute slot of the model's hour
    assert 0 <= first["risk"] <= 1000
    # the newest carbs hold the predicted low off as the edge's message would
    assert first["carbs_ms"] == cloud.carbs_ms and first["errors"] == 0
    assert got["iso"] == [1768511100000, 1768511100500, 1768511100000, 1768511107123,
                          None, None, None, None]
    # A captive portal's page is an error to retry, and loses nothing.
    assert got["portal"] == {"errors": 1, "readings": 75}
    # A line that is not a reading is skipped; the rest of the answer is taken.
    assert got["broken"] == {"errors": 1, "readings": 75}
    assert got["polls"] == 3
    return got


def test_fallback__a_1_minute_sensor_gives_the_model_its_hour__host_port(cloud, tmp_path):
    _check(cloud, tmp_path)


@pytest.mark.micropython
def test_fallback__the_same_under_micropython(cloud, tmp_path, mpy_json):
    got = _check(cloud, tmp_path, mpy_json)
    # The hour of readings takes under half the heap the same readings take as JSON (whose
    # entries from other uploaders carry many more fields than these).
    assert got["text_bytes"] * 2 < got["json_bytes"], got
    host = _check(cloud, tmp_path / "host")
    assert got["first"] == host["first"]  # the model's history and risk, bit-exact


def test_fallback__newest_carbs_reads_nightscout_treatments():
    """mills (Nightlink, the edge) else created_at (Nightscout's own API stores no mills)."""
    assert app.newest_carbs(b'[{"carbs": 20, "mills": 1768511100000}]') == 1768511100000
    assert app.newest_carbs(b'[{"carbs": "12", "created_at": "2026-01-15T21:05:00Z"}]') == (
        1768511100000)
    # no carbs in it, a doc without a time, an empty list: nothing known
    assert app.newest_carbs(b'[{"carbs": 0, "mills": 1}, {"carbs": 5}, "x"]') is None
    assert app.newest_carbs(b"[]") is None
    for bad in (b"<html>Sign in</html>", b'{"status": 401}'):
        with pytest.raises(ValueError):
            app.newest_carbs(bad)


def test_fallback__entries_text_reads_nightscout_lines():
    body = (b'"2026-01-15T21:05:00.000Z"\t1768511100000\t84\t"FortyFiveDown"\t"xDrip-LibreReceiver"'
            b'\r\n"2026-01-15T21:00:00.000Z"\t1768510800000\t90\t"Flat"\t"xDrip"\r\n'
            b'\t\t\t\t\r\n"x"\t1768510500000\t\t"Flat"\t""\r\n')
    assert app.entries_text(body) == [(1768511100000, 84, units.trend_of("FortyFiveDown")),
                                      (1768510800000, 90, units.trend_of("Flat"))]
    assert app.entries_text(b"") == [] and app.entries_text("not\ta\treading\tat all") == []
    # What uploaders send is kept as sent: a decimal sgv, a date uploaded as text.
    odd = (b'""\t1768511100000.0\t106.00000762939453\t"Flat"\t""\r\n'
           b'"x"\t"1768510800000"\t121.6\t\t')
    assert app.entries_text(odd) == [(1768511100000, 106, units.trend_of("Flat")),
                                     (1768510800000, 122, 0)]
