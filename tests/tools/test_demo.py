"""The main job end to end: simulate, edge replay, sync over the embedded broker, cloud, the
static report pages and the doctor's sign-in."""

import json
import re
from pathlib import Path

import pytest

from nightlink.cloud import auth
from nightlink.cloud.store import Store
from nightlink.tools.demo.days import DEVICE
from nightlink.tools.demo.run import DOCTOR, _doctor, run_demo


def test_demo__short_nights_reach_the_cloud_and_the_doctor_can_sign_in(tmp_path):
    said = []
    out = run_demo(tmp_path / "demo", seed=2, hours=0.5, nights=2, echo=said.append)
    epochs = out["edge"].epochs
    rows = out["cloud_rows"]
    assert set(rows) == {"room", "wearable", "audio", "cgm", "inference"}
    # Both nights, every stream; the CGM also has the simulated day between them.
    assert all(n == 2 * epochs for name, n in rows.items() if name != "cgm")
    day = json.loads((tmp_path / "demo" / "days" / "2026-01-15.json").read_text())
    assert day["simulated"] and {e["device"] for e in day["result"]} == {DEVICE}
    assert rows["cgm"] >= 2 * epochs + 270  # 23 h of readings every 5 minutes
    assert out["sync"].rows_sent >= 9 * epochs
    text = "\n".join(said)
    assert "outbox left: 0" in text and "dead letters 0" in text
    assert "Nightscout API (tenant demo): latest sgv" in text
    assert "classifiers (LiteRT, int8): sleep" in text
    # Half-hour nights end before midnight: the report's period ends with the last one's
    # evening, so it holds the night before; both nights have their own page.
    assert [n["night"] for n in out["report"]["report"]["nights"]] == ["2026-01-14"]

    # The printed sign-in works against the demo's store, and no secret is a fixed one.
    password = re.search(rf"sign in as {re.escape(DOCTOR)} with password (\S+)", text)[1]
    jwt = re.search(r"NIGHTLINK_JWT_SECRET=(\S+)", text)[1]
    assert len(password) >= 16 and len(jwt) >= 32 and "NIGHTLINK_ENV=development" in text
    store = Store.open(f"sqlite:///{tmp_path / 'demo' / 'cloud.db'}")
    try:
        user = auth.check_login(store, DOCTOR, password)
        assert [m["role"] for m in store.visible_tenants(user)] == ["doctor"]
    finally:
        store.close()
    other = Store.open(f"sqlite:///{tmp_path / 'other.db'}")
    try:
        other.create_tenant("demo", "Demo patient")
        assert _doctor(other) != password  # generated for each demo run
    finally:
        other.close()

    # The written pages link to each other by relative names that exist (file:// works).
    folder = tmp_path / "demo" / "report"
    pages = sorted(folder.glob("*.html"))
    assert [p.name for p in pages] == ["night-2026-01-14.html", "night-2026-01-15.html",
                                       "report.html"]
    for page in pages:
        for href in re.findall(r'href="([^"]*)"', page.read_text()):
            if href.startswith("data:"):
                continue
            assert not href.startswith(("/", "http")), (page.name, href)
            assert (folder / Path(href)).exists(), (page.name, href)
    assert 'href="night-' in (folder / "report.html").read_text()


@pytest.mark.slow
def test_demo__whole_days_of_cgm_give_the_report_sufficient_data(tmp_path):
    """Fifteen short nights with the simulated days between them: the 14-day report has CGM
    over whole days, so it judges the targets and the GRI zone and draws the AGP."""
    said = []
    out = run_demo(tmp_path / "demo", seed=2, hours=0.25, nights=15, echo=said.append)
    rep = out["report"]["report"]
    assert rep["sufficiency"]["sufficient"] and rep["judged"]
    assert rep["sufficiency"]["days_with_data"] == 14 and rep["sufficiency"]["share"] > 0.9
    assert {t["key"] for t in rep["targets"]} >= {"in_range", "low_total", "high_total"}
    assert all(t["met"] in (True, False) for t in rep["targets"])
    assert rep["gri_zone"] in "ABCDE" and rep["agp"]
    text = "\n".join(said)
    assert "meets the consensus's 14 days" in text and "not enough data" not in text
    assert re.search(r"Time in range \(70-180 mg/dL\): [\d.]+ % \(target > 70 %: (not )?met\)",
                     text)
    assert re.search(r"Glycemia risk index \(GRI\): [\d.]+ \(zone [A-E]\)", text)
    html = (tmp_path / "demo" / "report" / "report.html").read_text()
    assert "not enough data" not in html
