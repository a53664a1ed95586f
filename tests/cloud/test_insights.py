"""Insights across nights: the matrix profile against STUMPY's answers and a brute-force
definition, recurring patterns found where they were planted, unusual nights by their
modified z-scores, lagged associations with BH q-values, "not enough nights" below the
minimum, and the API on a stored month."""

import json
import math
import random
from datetime import date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from nightlink.cloud import insights
from nightlink.cloud.reports import settings
from nightlink.tools.bench.report import synth_days

GOLDEN = Path(__file__).with_name("golden") / "matrix_profile.json"
API = "/api/nl/v1/tenants"


def _brute(x, m):
    """The definition: z-normalised Euclidean distance to the nearest subsequence outside
    the exclusion zone ceil(m/4); subsequences with NaN or no variation have none."""
    n = len(x) - m + 1
    z = []
    for i in range(n):
        w = x[i:i + m]
        z.append(None if np.isnan(w).any() or w.std() < 1e-8 else (w - w.mean()) / w.std())
    excl = math.ceil(m / 4)
    out = np.full(n, np.inf)
    for i in range(n):
        if z[i] is None:
            continue
        for j in range(n):
            if abs(i - j) <= excl or z[j] is None:
                continue
            out[i] = min(out[i], float(np.linalg.norm(z[i] - z[j])))
    return out


def test_matrix_profile__equals_the_definition():
    rng = np.random.default_rng(3)
    x = 120 + np.cumsum(rng.normal(0, 3, 260))
    x[100:106] = np.nan
    got, idx = insights.matrix_profile(x, 12)
    want = _brute(x, 12)
    assert np.array_equal(np.isfinite(got), np.isfinite(want))
    ok = np.isfinite(want)
    assert np.max(np.abs(got[ok] - want[ok])) < 1e-6
    assert all(abs(int(i) - j) > 3 for j, i in enumerate(idx) if i >= 0)


def test_matrix_profile__agrees_with_stumpy():
    for case in json.loads(GOLDEN.read_text()):
        x = np.array([np.nan if v is None else v for v in case["x"]])
        got, idx = insights.matrix_profile(x, case["m"])
        want = np.array([np.inf if v is None else v for v in case["profile"]])
        ok = np.isfinite(want)
        assert np.array_equal(np.isfinite(got), ok), case["seed"]
        assert np.max(np.abs(got[ok] - want[ok]) / np.maximum(want[ok], 1.0)) < 1e-6
        assert np.mean(idx[ok] == np.array(case["index"])[ok]) > 0.99  # ties may differ


def _readings_with_a_recurring_dip(days=10, seed=4):
    """CGM every 5 min for `days` days: noise around 140, and a steep 2-h dip after 03:00
    on every other night (the pattern a motif search should find)."""
    rng = random.Random(seed)
    t0 = int(datetime(2026, 1, 1, tzinfo=ZoneInfo("UTC")).timestamp() * 1000)
    out = []
    for k in range(days * 288):
        t = t0 + k * 300_000
        minute = (k * 5) % 1440
        g = 140 + 15 * math.sin(k / 40) + rng.gauss(0, 4)
        if (k // 288) % 2 == 0 and 180 <= minute < 300:
            g = 140 - 70 * math.sin(math.pi * (minute - 180) / 120)
        out.append((t, round(g)))
    return out


def test_patterns__the_planted_dip_is_the_first_motif():
    ps = settings.PatientSettings(tz=ZoneInfo("UTC"), targets="standard", report_days=14)
    got = insights.patterns(_readings_with_a_recurring_dip(), ps)
    assert got["status"] == "ok"
    top = got["motifs"][0]
    assert top["occurrences"] >= 4
    assert top["low_mgdl"] <= 90 and set(top["hours_of_day"]) <= {2, 3, 4}
    short = insights.patterns(_readings_with_a_recurring_dip(days=3), ps)
    assert short["motifs"] == [] and short["status"].startswith("not enough days")


def _row(i, **kw):
    return {"night": (date(2026, 1, 1) + timedelta(days=i)).isoformat(), "has_data": True,
            **kw}


def test_unusual_nights__modified_z_names_the_figure():
    rows = [_row(i, tst_min=420 + (i % 3) * 10, ahi=5.0 + (i % 2)) for i in range(12)]
    rows[7]["ahi"] = 40.0
    got = insights.unusual_nights(rows)
    assert [n["night"] for n in got["nights"]] == [rows[7]["night"]]
    [fig] = got["nights"][0]["figures"]
    assert fig["figure"] == "ahi" and fig["z"] > insights.UNUSUAL_Z
    few = insights.unusual_nights(rows[:9])
    assert few["nights"] == [] and "10 needed" in few["status"]


def test_associations__lagged_outcomes_with_q_values():
    rng = random.Random(1)
    rows = []
    for i in range(30):
        ahi = rng.uniform(0, 40)
        rows.append(_row(i, ahi=ahi, tst_h=rng.uniform(5, 8), noct_mean=rng.gauss(140, 15),
                         next_day_mean=150 + 1.5 * ahi + rng.gauss(0, 5)))
    got = insights.associations(rows)
    assert got["status"] == "ok" and got["tested"] >= 4
    best = got["rows"][0]
    assert (best["factor"], best["outcome"], best["lag"]) == ("ahi", "next_day_mean", "next day")
    assert best["q"] < 0.05 and best["r"] > 0.8 and best["n"] == 30
    lo, hi = best["slope_ci_per_step"]
    assert lo < 15 < hi  # 1.5 mg/dL per event/h, given per 10 events/h
    q = [r["q"] for r in got["rows"] if r["q"] is not None]
    assert all(r["p"] <= r["q"] for r in got["rows"] if r["q"] is not None)
    assert q == sorted(q)
    assert insights.associations(rows[:9])["status"].startswith("not enough nights")


@pytest.fixture
def month(cloud):
    """fam-1: 14 days of CGM and room rows in UTC, sleep every night, evening carbs entered
    as Nightscout treatments; a patient signed in."""
    data = cloud.store.tenant("fam-1")
    synth_days(data, date(2026, 1, 1), 14, tz="UTC", seed=9, low=lambda i: i % 3 == 0,
               night=lambda i: True, hours=3.0, apnea_per_h=lambda i: 5 + (30 if i == 9 else 0))
    for i in range(14):
        day = date(2026, 1, 1) + timedelta(days=i)
        at = int(datetime.combine(day, dtime(19, 30), ZoneInfo("UTC")).timestamp() * 1000)
        data.add_documents("treatments", [{"eventType": "Meal Bolus", "carbs": 40 + 5 * (i % 4),
                                           "insulin": 4, "created_at": at, "date": at}])
    cloud.user("pat@example.org", tenant="fam-1", role="patient")
    return cloud


def test_api__insights_of_a_stored_month(month):
    h = month.auth("pat@example.org")
    r = month.client.get(f"{API}/fam-1/insights", params={"end": "2026-01-13", "nights": 14},
                         headers=h)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["end_night"] == "2026-01-13" and got["nights_with_data"] == 14
    assoc = got["associations"]
    assert assoc["status"] == "ok"
    carbs = [x for x in assoc["rows"] if x["factor"] == "evening_carbs_g"]
    assert carbs and all(x["n"] >= 10 for x in carbs if x["p"] is not None)
    assert any(n["night"] == "2026-01-10" for n in got["unusual_nights"]["nights"])
    assert got["patterns"]["status"] == "ok" and got["patterns"]["motifs"]
    assert month.client.get(f"{API}/fam-1/insights", params={"end": "x"},
                            headers=h).status_code == 422
    assert month.client.get(f"{API}/fam-1/insights", params={"nights": 500},
                            headers=h).status_code == 422
    assert month.client.get(f"{API}/fam-2/insights", headers=h).status_code == 404


def test_odd_client_fields_break_no_report(tmp_path):
    """What real uploads may carry (found by fuzzing the API): a treatment whose `mills` is
    "Infinity" or a list is read at the time the store keeps for it, and a profile whose
    defaultProfile is a list names no profile; the insights and the report are made."""
    from nightlink.cloud.reports.summary import build_report
    from nightlink.cloud.store import Store

    store = Store.open(f"sqlite:///{tmp_path / 'odd.db'}")
    try:
        store.create_tenant("p1", "Ann Example")
        data = store.tenant("p1")
        synth_days(data, date(2026, 1, 1), 14, tz="UTC", seed=3, night=lambda i: True,
                   hours=3.0)
        data.add_documents("treatments", [
            {"eventType": "Meal Bolus", "carbs": 60, "created_at": "2026-01-05T19:00:00Z",
             "mills": "Infinity"},
            {"eventType": "Note", "created_at": "2026-01-05T20:00:00Z", "mills": [1]},
            # finite but no meal: overflowed the associations' sums (a 500), found in review
            {"eventType": "Meal Bolus", "carbs": 1e160, "created_at": "2026-01-03T19:00:00Z"},
            {"eventType": "Meal Bolus", "carbs": 1e308, "created_at": "2026-01-04T19:00:00Z"},
            {"eventType": "Meal Bolus", "carbs": 1e308, "created_at": "2026-01-04T19:30:00Z"},
            {"eventType": "Exercise", "duration": 1e300, "created_at": "2026-01-06T10:00:00Z"}],
            mode="keep")
        data.add_documents("profile", [{"defaultProfile": [1, 2], "startDate":
                                        "2026-01-01T00:00:00Z",
                                        "store": {"D": {"timezone": "Europe/London"}}}],
                           mode="keep")
        ps = settings.patient_settings(data)  # (the zone is set: UTC)
        assert settings._profile_zone(data) == ZoneInfo("Europe/London")  # the first one
        got = insights.insights(data, ps, "2026-01-13", 14)
        rows = {r["night"]: r for r in insights.night_rows(data, ps, "2026-01-13", 14)}
        assert rows["2026-01-05"]["evening_carbs_g"] == 60  # at its stored time
        assert rows["2026-01-03"]["evening_carbs_g"] == rows["2026-01-04"]["evening_carbs_g"] \
            == 0 and rows["2026-01-06"]["exercise_min"] == 0
        assert got["end_night"] == "2026-01-13" and got["associations"]["rows"]
        json.dumps(got, allow_nan=False)
        rep = build_report(data, ps, end_day="2026-01-14", days=14)
        json.dumps(rep["insights"], allow_nan=False)
    finally:
        store.close()
