"""The morning card and the nights API: the score's formula by hand, screening flags only
where the nights carry them (with their evidence, worded as suggestions), and the API
returning the same figures as the doctor's report for a stored fortnight."""

from datetime import date, timedelta

import pytest

from nightlink.cloud import morning
from nightlink.cloud.reports import settings
from nightlink.cloud.reports.summary import build_report
from nightlink.tools.bench.report import synth_days

API = "/api/nl/v1/tenants"


def test_score__hand_computed_parts():
    best = morning.sleep_score({"tst_min": 450, "se_pct": 93, "waso_min": 10, "deep_pct": 22,
                                "rem_pct": 21})
    assert best["value"] == 100 and best["parts"]["duration"] == 40
    # Half way on every part: 20 + 15 + 7.5 + 7.5 = 50.
    mid = morning.sleep_score({"tst_min": 330, "se_pct": 80, "waso_min": 55, "deep_pct": 15,
                               "rem_pct": 15})
    assert mid["value"] == 50
    assert mid["parts"] == {"duration": 20.0, "efficiency": 15.0, "continuity": 7.5,
                            "architecture": 7.5}
    # Actigraphy only (no stages): the other 85 points are scaled to 100.
    acti = morning.sleep_score({"tst_min": 330, "se_pct": 80, "waso_min": 55})
    assert acti["parts"]["architecture"] is None and acti["scaled_from"] == 85
    assert acti["value"] == round(100 * 42.5 / 85)
    assert "40 x duration" in acti["formula"]
    assert morning.sleep_score({"tst_min": None}) is None


def _rows(n, **figures):
    return [{"night": (date(2026, 1, 20) - timedelta(days=i)).isoformat(), "noct_n": 100,
             "lows_l1": 0, "ahi": None, "sol_min": 10.0, "waso_min": 10.0,
             "midpoint_min": 600.0, **{k: v[i] if isinstance(v, list) else v
                                       for k, v in figures.items()}} for i in range(n)]


def test_screening__apnea_needs_two_high_nights_and_says_so():
    flags, _ = morning.screening(_rows(7, ahi=[22.0, 3.0, 18.0, 2.0, 4.0, 3.0, 1.0]))
    [flag] = flags
    assert flag["key"] == "possible_sleep_apnea"
    assert "2 of the last 7 nights" in flag["evidence"]
    assert [n["night"] for n in flag["nights"]] == ["2026-01-20", "2026-01-18"]
    assert "not a diagnosis" in flag["advice"] and "doctor" in flag["advice"]
    one, _ = morning.screening(_rows(7, ahi=[22.0, 3.0, 2.0, 2.0, 4.0, 3.0, 1.0]))
    assert one == []
    _, pending = morning.screening(_rows(7))
    assert any(p.startswith("breathing") for p in pending)


def test_screening__insomnia_and_timing_wait_for_seven_nights():
    poor = [45.0, 10.0, 50.0, 10.0, 40.0, 10.0, 10.0]
    flags, pending = morning.screening(_rows(6, sol_min=poor[:6]))
    assert flags == [] and any("7 needed" in p for p in pending)
    flags, _ = morning.screening(_rows(7, sol_min=poor))
    assert [f["key"] for f in flags] == ["insomnia_pattern"]
    assert "3 of 7 nights" in flags[0]["evidence"]
    shifted = [600.0, 420.0, 780.0, 600.0, 450.0, 760.0, 600.0]
    flags, _ = morning.screening(_rows(7, midpoint_min=shifted))
    assert [f["key"] for f in flags] == ["irregular_sleep_timing"]
    flags, _ = morning.screening(_rows(7, lows_l1=[1, 0, 2, 1, 0, 0, 0]))
    assert [f["key"] for f in flags] == ["recurring_night_lows"]


@pytest.fixture
def fortnight(cloud):
    """fam-1: 14 days of CGM and room rows, 7 nights of sleep (every other with 20 apneas an
    hour), lows on every other day, Europe/Berlin; a caregiver signed in."""
    synth_days(cloud.store.tenant("fam-1"), date(2026, 1, 2), 14,
               apnea_per_h=lambda i: 20 if i % 4 == 0 else 3)
    cloud.user("care@example.org", tenant="fam-1", role="caregiver")
    return cloud


def test_api__nights_and_card_agree_with_the_report(fortnight):
    c = fortnight
    h = c.auth("care@example.org")
    data = c.store.tenant("fam-1")
    rep = build_report(data, settings.patient_settings(data), end_day="2026-01-15", days=14)
    listed = c.client.get(f"{API}/fam-1/nights", params={"limit": 14}, headers=h).json()
    assert listed["edge"] == []
    nights = listed["nights"]
    by_night = {r["night"]: r for r in rep["nights"]}
    assert [n["night"] for n in nights] == sorted(by_night, reverse=True)
    for n in nights:
        r = by_night[n["night"]]
        assert (n["tst_min"], n["ahi"], n["lows_l1"]) == (r["tst_min"], r["ahi"], r["lows_l1"])
        # Nights with glucose but no sleep recording have no score.
        assert (n["score"] is None) == (n["tst_min"] is None)
        assert n["score"] is None or 0 <= n["score"] <= 100

    assert sum(n["score"] is not None for n in nights) == 7
    newest = next(n["night"] for n in nights if n["score"] is not None)
    card = c.client.get(f"{API}/fam-1/nights/{newest}", headers=h).json()
    assert card["has_data"] is True and card["night"] == newest
    assert card["sleep"]["score"]["value"] == next(n["score"] for n in nights
                                                   if n["night"] == newest)
    assert "formula" in card["sleep"]["score"]
    # Of the last 7 calendar nights, those with a sleep recording (every other night).
    assert card["trends"]["nights_7"]["tst_min"]["n"] == 4
    assert card["trends"]["nights_30"]["ahi"]["n"] == 7  # every night with a recording
    assert len(card["lows"]) == by_night[newest]["lows_l1"]
    assert {"wearable", "audio", "inference"} <= set(card["inputs"])
    keys = [f["key"] for f in card["flags"]]
    assert "possible_sleep_apnea" in keys
    apnea = next(f for f in card["flags"] if f["key"] == "possible_sleep_apnea")
    assert all(n["ahi"] >= 15 for n in apnea["nights"])
    assert "not a diagnosis" in card["disclaimer"]
    # A night without data, and a date that does not exist.
    assert c.client.get(f"{API}/fam-1/nights/2025-06-01", headers=h).status_code == 404
    assert c.client.get(f"{API}/fam-1/nights/2026-13-01", headers=h).status_code == 422


def test_page__the_card_in_the_readers_units(fortnight):
    from .conftest import PASSWORD

    c = fortnight
    c.client.post("/portal/login", data={"email": "care@example.org", "password": PASSWORD})
    c.client.post("/portal/settings/units", data={"units": "mmol/L"})
    page = c.client.get("/portal/p/fam-1/morning", params={"night": "2026-01-12"})
    assert page.status_code == 200
    text = page.text
    assert "Sleep score" in text and "How the score is made" in text
    assert "mmol/L" in text and "mg/dL" not in text
    assert "Possible sleep apnea" in text and "not a diagnosis" in text
    assert "Night before" in text
    assert 'id="snore-caveat"' in text and "does not yet hold up on real recorded audio" in text
    empty = c.client.get("/portal/p/fam-1/morning", params={"night": "2025-06-01"})
    assert empty.status_code == 200 and "No data for this night." in empty.text
    assert c.client.get("/portal/p/fam-1/morning", params={"night": "x"}).status_code == 422
    assert c.client.get("/portal/p/fam-2/morning").status_code == 404


def test_page__a_night_without_glucose_and_dates_off_the_calendar(fortnight):
    """A staged night without CGM renders (it gave a 500); dates far outside any recording
    are refused with a sentence (they gave 500s), on the page and in the API."""
    from datetime import UTC, datetime

    from nightlink.shared import features
    from nightlink.tools.bench.report import put_epochs

    from .conftest import PASSWORD

    c = fortnight
    e0 = int(datetime(2026, 2, 10, 22, 0, tzinfo=UTC).timestamp()) // 30
    put_epochs(c.store.tenant("fam-1"), features.INFER,
               {e0 + i: {"sleep_stage": 0 if i < 20 else 1 + (i // 90) % 3, "stage_conf": 0.9}
                for i in range(900)})
    put_epochs(c.store.tenant("fam-1"), features.WEARABLE,
               {e0 - 120 + i: {"hr_mean_bpm": 62.0} for i in range(120)})  # an hour unstaged
    c.client.post("/portal/login", data={"email": "care@example.org", "password": PASSWORD})
    page = c.client.get("/portal/p/fam-1/morning", params={"night": "2026-02-10"})
    assert page.status_code == 200 and "Sleep score" in page.text
    assert "1 h 00 min not measured" in page.text
    h = c.auth("care@example.org")
    for url, params in ((f"{API}/fam-1/nights/9999-12-31", {}),
                        (f"{API}/fam-1/nights/0001-01-20", {}),
                        (f"{API}/fam-1/insights", {"end": "0001-01-05"}),
                        (f"{API}/fam-1/insights", {"end": "9999-12-31"})):
        r = c.client.get(url, params=params, headers=h)
        assert r.status_code == 422 and "1990 to 2099" in r.json()["detail"], (url, r.text)
    for night in ("9999-12-31", "0001-01-20", "2026-W02-6"):
        r = c.client.get("/portal/p/fam-1/morning", params={"night": night})
        assert r.status_code == 422, r.text


@pytest.mark.parametrize(("night", "onset", "wake", "minutes"), [
    ("2026-01-15", "2026-01-16T04:00", "2026-01-16T12:00", 540.0),  # 23:00-07:00 EST: 03:00
    # New York falls back on 2026-11-01: 23:00 EDT to 07:00 EST is 9 hours; the midpoint is
    # at 02:30 local, 510 minutes after 18:00 on the clock (not 570 of elapsed time)
    ("2026-10-31", "2026-11-01T03:00", "2026-11-01T12:00", 510.0),
])
def test_midpoint__local_clock_time_even_when_the_clocks_change(night, onset, wake, minutes):
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    def ms(text):
        return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)

    ps = settings.PatientSettings(tz=ZoneInfo("America/New_York"), targets="standard",
                                  report_days=14)
    doc = {"night": night, "sleep": {"onset_ms": ms(onset), "final_wake_ms": ms(wake)}}
    assert morning._midpoint(doc, ps) == pytest.approx(minutes)
