"""Every glucose metric against iglu-python (the reference implementation of the consensus
metrics, Broll et al. 2021) on real CGM from BrisT1D-Open (CC BY 4.0, James et al. 2025,
doi:10.5523/bris.33z5jc8fa6tob21ptrugzqog08) when the shared data is present, and on
generated CGM traces always. Agreement within 1e-3 relative."""

import csv
import math
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from nightlink.cloud import glycemia
from tests.support.shared_data import SHARED

pd = pytest.importorskip("pandas", reason="iglu-python's comparisons need pandas")
iglu = pytest.importorskip("iglu_python", reason="iglu-python is in the dev extra")

REL = 1e-3
ROOT = Path(__file__).resolve().parents[2]
BRIS = SHARED / "cgm-bris-t1d-open" / "csv"
PEOPLE = ("P02", "P04", "P10")  # Dexcom G6, 5-minute readings
DAYS = 14
EPISODE_KINDS = (("hypo", "lv1", "level1"), ("hypo", "lv2", "level2"),
                 ("hypo", "extended", "extended"), ("hypo", "lv1_excl", "level1_only"),
                 ("hyper", "lv1", "level1"), ("hyper", "lv2", "level2"),
                 ("hyper", "lv1_excl", "level1_only"))


def load_person(person: str, days: int = DAYS) -> list[tuple[datetime, float]]:
    """The person's first `days` days of readings, times naive local clock time."""
    with open(BRIS / f"{person}.csv", newline="") as f:
        rows = [(datetime.fromisoformat(r["timestamp"]), float(r["glucose_value_mg_dl"]))
                for r in csv.DictReader(f) if r["glucose_value_mg_dl"]]
    rows.sort()
    end = rows[0][0] + timedelta(days=days)
    return [(t, g) for t, g in rows if t < end]


def generated(seed: int, days: int = 7, step_min: int = 5) -> list[tuple[datetime, float]]:
    """A CGM-like trace: meals, slow drift, sensor noise, deep nocturnal lows, a few dropouts
    (short and hours long), clipped to the sensor's 40-400 mg/dL."""
    rng = random.Random(seed)
    t0 = datetime(2024, 3, 4, 0, 2, 30)
    out, g, drift = [], 140.0, 0.0
    skip_until = -1
    for i in range(days * 1440 // step_min):
        minute = i * step_min
        drift = 0.97 * drift + rng.gauss(0, 1.5)
        hour = (minute / 60) % 24
        meal = sum(90 * math.exp(-((hour - h) % 24) / 1.5) * ((hour - h) % 24 < 4)
                   for h in (7.5, 12.5, 19))
        low = -95 * math.exp(-((hour - 3.5) ** 2) / 0.5) * (rng.random() < 0.6)
        g = 0.8 * g + 0.2 * (120 + meal + low + 10 * drift) + rng.gauss(0, 4)
        if i < skip_until:
            continue
        if rng.random() < 0.004:  # dropouts of 10 minutes to 4 hours
            skip_until = i + rng.choice((2, 6, 20, 48))
        out.append((t0 + timedelta(minutes=minute, seconds=rng.choice((0, 0, 0, 7))),
                    min(400.0, max(40.0, round(g, 1)))))
    return out


def ours(rows, **kw):
    readings = [(int(t.replace(tzinfo=UTC).timestamp() * 1000), g) for t, g in rows]
    s = glycemia.summary(readings)
    b = glycemia.bands(readings)
    median, iqr = glycemia.median_iqr(readings)
    low, high = glycemia.risk_indices(readings)
    out = {"mean": s["mean"], "sd": s["sd"], "cv": s["cv_pct"], "gmi": s["gmi_pct"],
           "median": median, "iqr": iqr, "lbgi": low, "hbgi": high,
           "gri": glycemia.gri(b)[0], "j_index": glycemia.j_index(readings),
           "adrr": glycemia.adrr(readings), "modd": glycemia.modd(readings),
           "conga1": glycemia.conga(readings), "conga24": glycemia.conga(readings, hours=24),
           "mage": glycemia.mage_ma(readings),
           "below_54": b["very_low"], "below_70": b["very_low"] + b["low"],
           "in_70_180": b["in_range"], "above_180": b["high"] + b["very_high"],
           "above_250": b["very_high"], "in_70_140": glycemia.time_in(readings, 70, 140)}
    for kind in ("hypo", "hyper"):
        ep = glycemia.episodes(readings, kind)
        for _, level, ours_level in (k for k in EPISODE_KINDS if k[0] == kind):
            summary = glycemia.episode_summary(ep[ours_level], ep["hours"])
            for field in ("total", "per_day", "minutes", "mean"):
                out[f"{kind}_{level}_{field}"] = summary[field]
    return out


def theirs(rows):
    frame = pd.DataFrame({"id": "p", "time": pd.to_datetime([t for t, _ in rows]),
                          "gl": [g for _, g in rows]})
    series = pd.Series(frame["gl"].values, index=pd.DatetimeIndex(frame["time"]))

    def one(fn, *args, **kw):
        got = fn(frame.copy(), *args, **kw)
        return float(got.iloc[0, 1]) if isinstance(got, pd.DataFrame) else float(got)

    below = iglu.below_percent(frame.copy(), targets_below=[54, 70]).iloc[0]
    above = iglu.above_percent(frame.copy(), targets_above=[180, 250]).iloc[0]
    inr = iglu.in_range_percent(frame.copy(), target_ranges=[[70, 180], [70, 140]]).iloc[0]
    out = {"mean": one(iglu.mean_glu), "sd": one(iglu.sd_glu), "cv": one(iglu.cv_glu),
           "gmi": one(iglu.gmi), "median": one(iglu.median_glu), "iqr": one(iglu.iqr_glu),
           "lbgi": one(iglu.lbgi), "hbgi": one(iglu.hbgi), "gri": one(iglu.gri),
           "j_index": one(iglu.j_index), "adrr": float(iglu.adrr(series.copy())),
           "modd": float(iglu.modd(series.copy())), "conga1": float(iglu.conga(series.copy(), n=1)),
           "conga24": float(iglu.conga(series.copy(), n=24)),
           "mage": one(iglu.mage),
           "below_54": below["below_54"], "below_70": below["below_70"],
           "in_70_180": inr["in_range_70_180"], "above_180": above["above_180"],
           "above_250": above["above_250"], "in_70_140": inr["in_range_70_140"]}
    ep = iglu.episode_calculation(frame.copy())
    for kind, level, _ in EPISODE_KINDS:
        row = ep[(ep["type"] == kind) & (ep["level"] == level)].iloc[0]
        out[f"{kind}_{level}_total"] = row["total_episodes"]
        out[f"{kind}_{level}_per_day"] = row["avg_ep_per_day"]
        out[f"{kind}_{level}_minutes"] = row["avg_ep_duration"]
        mean = row["avg_ep_gl"]
        out[f"{kind}_{level}_mean"] = None if pd.isna(mean) else mean
    return out


def differences(rows) -> dict[str, float]:
    """Relative difference of each metric, ours against iglu's (0 where both are absent)."""
    a, b = ours(rows), theirs(rows)
    assert a.keys() == b.keys()
    out = {}
    for key in a:
        x, y = a[key], b[key]
        if x is None or y is None:
            assert x is None and (y is None or math.isnan(y)), (key, x, y)
            out[key] = 0.0
        else:
            out[key] = abs(x - y) / max(abs(y), 1e-9) if x != y else 0.0
    return out


def assert_agree(rows):
    diffs = differences(rows)
    worst = {k: v for k, v in diffs.items() if v > REL}
    assert not worst, worst


@pytest.mark.skipif(not BRIS.is_dir(), reason=f"the BrisT1D-Open CGM data is not at {BRIS} "
                    "(set NIGHTLINK_SHARED_DATA to the folder holding cgm-bris-t1d-open)")
@pytest.mark.parametrize("person", PEOPLE)
def test_real_cgm__every_metric_agrees_with_iglu(person):
    rows = load_person(person)
    assert len(rows) > 0.7 * DAYS * 288
    assert_agree(rows)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_generated_cgm__every_metric_agrees_with_iglu(seed):
    rows = generated(seed)
    assert sum(1 for _, g in rows if g < 54) > 10  # the trace has deep lows to find
    assert_agree(rows)


def test_generated_cgm__fifteen_minute_sampling_agrees_with_iglu():
    assert_agree(generated(4, days=10, step_min=15))
