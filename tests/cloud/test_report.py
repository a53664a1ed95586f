"""The multi-day report on hand-computed fixtures, and its PDF turned into PNG pages."""

import random
import re
import shutil
import subprocess
from datetime import UTC, date, datetime, timedelta
from html import unescape
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from nightlink.cloud.reports import render, settings
from nightlink.cloud.reports.summary import build_report, period
from nightlink.cloud.store import Store
from nightlink.tools.bench.report import put_glucose, synth_day_streams, synth_days, synth_night

ARTIFACTS = Path(__file__).resolve().parents[2] / "out" / "test-artifacts"
M = 60_000


@pytest.fixture
def store(tmp_path):
    s = Store.open(f"sqlite:///{tmp_path / 'r.db'}")
    s.create_tenant("p1", "Ann Example")
    yield s
    s.close()


def one_day(data, values_by_minute, day=date(2026, 1, 14)):
    t0 = int(datetime.combine(day, datetime.min.time(), UTC).timestamp() * 1000)
    put_glucose(data, [(t0 + m * M, v) for m, v in values_by_minute])


def test_report__hand_computed_day(store):
    data = store.tenant("p1")
    # One day of 5-minute readings at 100, with an hour at 50 from 03:00 (12 readings).
    one_day(data, [(m, 50 if 180 <= m < 240 else 100) for m in range(0, 1440, 5)])
    rep = build_report(data, settings.patient_settings(data), end_day="2026-01-14", days=14)
    s = rep["summary"]
    assert s["n"] == 288 and s["mean"] == pytest.approx((276 * 100 + 12 * 50) / 288)
    assert s["gmi_pct"] == pytest.approx(3.31 + 0.02392 * s["mean"])
    assert rep["bands"]["very_low"] == pytest.approx(100 * 12 / 288)
    assert rep["bands"]["in_range"] == pytest.approx(100 * 276 / 288)
    assert rep["gri"] == pytest.approx(3.0 * 100 * 12 / 288) and rep["gri_zone"] == "A"
    assert (rep["hypo"]["level1"], rep["hypo"]["level2"], rep["hypo"]["extended"]) == (1, 1, 0)
    assert rep["hypo"]["per_week"] == pytest.approx(7.0, rel=0.01)  # one in a day of wear
    t = {x["key"]: x for x in rep["targets"]}
    assert t["very_low"]["value"] == pytest.approx(100 * 12 / 288)
    # One day of fourteen: no target is met or missed (not enough data), so no TBR flag.
    assert all(x["met"] is None for x in rep["targets"]) and not rep["judged"]
    suf = rep["sufficiency"]
    assert suf["days_with_data"] == 1 and suf["share"] == pytest.approx(1 / 14)
    assert not suf["sufficient"]
    keys = [f["key"] for f in rep["flags"]]
    assert keys == ["lows", "data"] or keys == ["data"]
    assert rep["mage"] == pytest.approx(50)  # the one excursion 100 -> 50 (down first)
    assert rep["nights"][0]["noct_period"] == "00:00-06:00"  # no sleep data: consensus night
    assert rep["nights"][0]["lows_l2"] == 1
    html = render.report_html(rep, tenant_name="Ann", unit="mg/dL")
    assert "(not enough data: GMI needs 14 days)" in html  # a day's mean is no HbA1c


def test_report__pregnancy_targets_use_their_own_range(store):
    data = store.tenant("p1")
    settings.set_patient_settings(data, targets="pregnancy")
    for i in range(14):  # 14 full days: enough data to judge the targets
        one_day(data, [(m, 150 if m < 360 else 100) for m in range(0, 1440, 5)],  # 25 % > 140
                day=date(2026, 1, 1) + timedelta(days=i))
    rep = build_report(data, settings.patient_settings(data), end_day="2026-01-14", days=14)
    t = {x["key"]: x for x in rep["targets"]}
    assert t["high_total"]["value"] == pytest.approx(25) and t["in_range"]["value"] == 75
    assert t["in_range"]["met"] and not t["high_total"]["met"]
    assert rep["bands"]["in_range"] == 100  # the consensus bands stay as they are
    with pytest.raises(settings.SettingsError, match="targets must be one of"):
        settings.set_patient_settings(data, targets="athlete")


def test_period__dst_days_are_local_days():
    berlin = ZoneInfo("Europe/Berlin")
    a, b, days = period("2026-03-29", 1, berlin)
    assert b - a == 23 * 3600 * 1000 and days == ["2026-03-29"]
    a, b, days = period("2026-04-05", 14, berlin)
    assert b - a == (14 * 24 - 1) * 3600 * 1000 and days[0] == "2026-03-23"


def test_report__fourteen_local_days_are_fourteen_days_across_a_clock_change(store):
    # The fortnight ending 2026-04-05 in Berlin holds the 23-hour day clocks go forward: it
    # was 13.96 days of 24 hours, so a full fortnight of readings judged no target at all.
    data = store.tenant("p1")
    synth_days(data, date(2026, 3, 21), 16, tz="Europe/Berlin", low=lambda i: False,
               night=lambda i: False)
    rep = build_report(data, settings.patient_settings(data), end_day="2026-04-05", days=14)
    assert rep["sufficiency"]["days"] == 14 and rep["sufficiency"]["share"] > 0.95
    assert rep["judged"] and all(t["met"] is not None for t in rep["targets"])


def test_report__empty_period(store):
    data = store.tenant("p1")
    rep = build_report(data, settings.patient_settings(data), end_day="2026-01-14", days=14)
    assert rep["summary"] is None and rep["nights"] == [] and rep["bands"] is None
    assert [f["key"] for f in rep["flags"]] == ["data"]
    html = render.report_html(rep, tenant_name="Ann", unit="mg/dL")
    assert "No glucose readings in this period." in html


@pytest.fixture
def fortnight(store):
    """14 days, 7 nights with sleep data (every other with a low), Europe/Berlin."""
    data = store.tenant("p1")
    synth_days(data, date(2026, 1, 2), 14, apnea_per_h=lambda i: 2 + 3 * i)
    return data


def test_report__associations_with_enough_nights(fortnight):
    rep = build_report(fortnight, settings.patient_settings(fortnight), end_day="2026-01-15", days=14)
    with_sleep = [n for n in rep["nights"] if n["sleep_source"] == "classifier"]
    assert len(with_sleep) == 7
    ahi = {(a["predictor"], a["outcome"]): a for a in rep["associations"]}
    a = ahi[("ahi", "noct_mean")]
    assert a["n"] == 7 and a["r"] is not None and a["ci"][0] <= a["r"] <= a["ci"][1]
    assert ahi[("temp_c", "morning")]["n"] <= 7
    assert rep["night_lows"] and all("hr_response" in x for x in rep["night_lows"])


def _pdf_pages(pdf: bytes, tmp_path: Path, name: str) -> tuple[list[Path], list[str]]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    src = tmp_path / f"{name}.pdf"
    src.write_bytes(pdf)
    shutil.copy(src, ARTIFACTS / f"{name}.pdf")
    for old in ARTIFACTS.glob(f"{name}-*.png"):
        old.unlink()
    subprocess.run(["pdftoppm", "-r", "50", "-png", str(src), str(ARTIFACTS / name)],
                   check=True, timeout=60)
    pngs = sorted(ARTIFACTS.glob(f"{name}-*.png"))
    texts = [subprocess.run(["pdftotext", "-f", str(i), "-l", str(i), "-layout", str(src), "-"],
                            check=True, capture_output=True, text=True, timeout=60).stdout
             for i in range(1, len(pngs) + 1)]
    return pngs, texts


def test_report_pdf__agp_summary_on_one_page(fortnight, tmp_path):
    rep = build_report(fortnight, settings.patient_settings(fortnight), end_day="2026-01-15", days=14)
    pdf, pages = render.report_pdf(rep, tenant_name="Ann Example", unit="mg/dL")
    pngs, texts = _pdf_pages(pdf, tmp_path, "report-14d")
    # page 1 the AGP summary, page 2 events, lows and the nights, page 3 the associations,
    # page 4 the unusual nights and the recurring glucose patterns
    assert pages == len(pngs) == 4
    assert pngs[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pngs[0].stat().st_size > 5000
    first = texts[0]
    for needed in ("Ambulatory Glucose Profile", "Time in ranges", "Daily glucose profiles",
                   "GMI", "2026-01-15", "Page 1 of 4"):
        assert needed in first, needed
    assert "Sleep and breathing trend" not in first
    assert "Sleep and breathing trend" in texts[1] and "Nocturnal lows" in texts[1]
    assert "against glucose" in texts[2] and "95 % CI" in texts[2]
    assert "Unusual nights and recurring glucose patterns" in texts[3]


def test_night_pdf__two_pages_timeline_first(fortnight, tmp_path):
    from nightlink.cloud import fusion

    tz = ZoneInfo("Europe/Berlin")
    doc = settings.fused_night(fortnight, "2026-01-04", tz)
    tl = fusion.timeline(fusion.load_night(fortnight, "2026-01-04", tz), doc)
    pdf, pages = render.night_pdf(doc, tl, tenant="p1", tenant_name="Ann Example",
                                  unit="mmol/L")
    pngs, texts = _pdf_pages(pdf, tmp_path, "night")
    assert pages == len(pngs) == 2
    assert "Night of 2026-01-04" in texts[0] and "Timeline" in texts[0]
    assert "mmol/L" in texts[0] and "Lows with sleep stage" in texts[1]


def _cell(html: str, table_id: str) -> str:
    """The text of a table (tags dropped, whitespace collapsed), to look for a phrase."""
    start = html.index(f'id="{table_id}"')
    body = html[start:html.index("</table>", start)]
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", body)).split())


def test_report__nested_low_counted_once(store):
    """A level-2 low inside a level-1 low is one low that reached level 2, not two lows."""
    data = store.tenant("p1")
    # 03:00-04:00 below 70, of which 03:15-03:45 below 54: one low reaching level 2.
    one_day(data, [(m, (50 if 195 <= m < 225 else 62 if 180 <= m < 240 else 110))
                   for m in range(0, 1440, 5)])
    rep = build_report(data, settings.patient_settings(data), end_day="2026-01-14", days=14)
    night = rep["nights"][0]
    assert (night["lows_l1"], night["lows_l2"]) == (1, 1)
    assert len(rep["night_lows"]) == 1 and rep["night_lows"][0]["deepest"] == 2
    html = render.report_html(rep, tenant_name="Ann", unit="mg/dL")
    assert "1 (1 reached < 54)" in _cell(html, "nights")
    assert _cell(html, "night-lows").count("2026-01-13") == 1


def test_report__the_newest_hypoglycemia_events_are_shown_first(store):
    """Of more events than the table holds, the newest (last night's, this morning's) are
    shown, newest first; the older ones are left to the export."""
    data = store.tenant("p1")
    rows = []
    for d in range(14):  # a 30-minute low at 03:00 every day, deeper each day
        rows += [(d * 1440 + m, (60 - d if 180 <= m < 210 else 110)) for m in range(0, 1440, 5)]
    one_day(data, rows, day=date(2026, 1, 1))
    rep = build_report(data, settings.patient_settings(data), end_day="2026-01-14", days=14)
    assert len(rep["hypo"]["events"]) == 14
    html = render.report_html(rep, tenant_name="Ann", unit="mg/dL")
    start = html.index('id="hypo-events"')
    table = html[start:html.index("</table>", start)]
    nadirs = [int(x) for x in re.findall(r'<td class="num">(\d+)</td><td>', table)]
    assert nadirs == [47 + i for i in range(12)]  # 47 (the newest) down to 58
    assert "2 older in the CSV/JSON export." in html


def test_report__a_night_low_running_past_the_night_is_followed_to_its_end(store):
    """The consensus night (no sleep data) ends at 06:00; a low from 05:45 to 06:30 starts in
    it and is 45 minutes long, not the 15 before 06:00 (app probe, a real low)."""
    data = store.tenant("p1")
    one_day(data, [(m, 61 if 345 <= m < 390 else 110) for m in range(0, 1440, 5)])
    rep = build_report(data, settings.patient_settings(data), end_day="2026-01-14", days=14)
    assert rep["nights"][0]["noct_period"] == "00:00-06:00"
    assert len(rep["night_lows"]) == 1
    low = rep["night_lows"][0]
    assert low["minutes"] == pytest.approx(45) and not low["ongoing"], low


def test_report__one_reading_judges_no_target(store):
    data = store.tenant("p1")
    one_day(data, [(600, 120)])
    rep = build_report(data, settings.patient_settings(data), end_day="2026-01-14", days=14)
    html = render.report_html(rep, tenant_name="Ann", unit="mg/dL")
    targets = _cell(html, "targets")
    assert "not enough data" in targets and "met" not in targets
    stats = _cell(html, "stats")
    assert "zone" not in stats and "CV, target ≤ 36 %) – (not enough data)" in stats
    assert not any(f["key"] == "tbr" for f in rep["flags"])


def test_report__mmol_everywhere(store, tmp_path):
    """A reader in mmol/L sees no mg/dL on the report, the night page or either PDF."""
    data = store.tenant("p1")
    settings.set_patient_settings(data, tz="Europe/Berlin", targets="pregnancy")
    tz, rng = ZoneInfo("Europe/Berlin"), random.Random(3)
    for i in range(6):
        day = date(2026, 1, 2) + timedelta(days=i)
        synth_day_streams(data, day, tz, rng, low_at=(3, 10))
        synth_night(data, day, tz, rng, hours=3.0, apnea_per_h=4 + 4 * i)
    rep = build_report(data, settings.patient_settings(data), end_day="2026-01-07", days=14)
    html = render.report_html(rep, tenant_name="Ann", unit="mmol/L")
    assert "mg/dL" not in html
    assert "High 10.1–13.9" in _cell(html, "bands")  # not 10.0, the top of the range
    targets = _cell(html, "targets")
    assert "(< 3.0 mmol/L)" in targets and "3.5–7.8 mmol/L" in targets
    assert "mmol/L per" in _cell(html, "associations")
    from nightlink.cloud import fusion

    doc = settings.fused_night(data, "2026-01-04", tz)
    tl = fusion.timeline(fusion.load_night(data, "2026-01-04", tz), doc)
    night = render.night_html(doc, tl, tenant="p1", tenant_name="Ann", unit="mmol/L")
    assert "mg/dL" not in night
    for name, (pdf, _pages) in (("units-report", render.report_pdf(rep, tenant_name="Ann",
                                                                   unit="mmol/L")),
                                ("units-night", render.night_pdf(doc, tl, tenant="p1",
                                                                 tenant_name="Ann",
                                                                 unit="mmol/L"))):
        _pngs, texts = _pdf_pages(pdf, tmp_path, name)
        assert "mmol/L" in texts[0] and not any("mg/dL" in t for t in texts), name


def test_report__associations_fdr(fortnight):
    """Each estimable pair has n, r with its interval, p as scipy's pearsonr, and the
    Benjamini-Hochberg q over the pairs tested together; the others are not shown."""
    from scipy import stats as scipy_stats

    rep = build_report(fortnight, settings.patient_settings(fortnight), end_day="2026-01-15",
                       days=14)
    rows = rep["associations"]
    tested = [a for a in rows if a["estimable"]]
    assert 3 <= len(tested) < len(rows)  # the nights without sleep data leave some out
    nights = {n["night"]: n for n in rep["nights"]}
    for a in tested:
        pairs = [(n[a["predictor"]], n[a["outcome"]]) for n in nights.values()
                 if n[a["predictor"]] is not None and n[a["outcome"]] is not None]
        r, p = scipy_stats.pearsonr(*zip(*pairs, strict=True))
        assert a["n"] == len(pairs) and a["r"] == pytest.approx(r) and a["p"] == pytest.approx(p)
        fit = scipy_stats.linregress(*zip(*pairs, strict=True))
        t = scipy_stats.t.ppf(0.975, len(pairs) - 2)
        assert a["slope_ci_per_step"][0] == pytest.approx((fit.slope - t * fit.stderr) * a["step"])
    want = scipy_stats.false_discovery_control([a["p"] for a in tested])
    assert [a["q"] for a in tested] == pytest.approx(list(want))
    html = render.report_html(rep, tenant_name="Ann", unit="mg/dL")
    table = _cell(html, "associations")
    assert html.count("data-pair=") == len(tested) and "q (FDR)" in table
    note = _cell(html.replace('<p class="source" id="assoc-note">', '<table id="note">')
                 .replace("Associations, not causes.</p>", "</table>"), "note")
    assert f"{len(tested)} pairs tested together" in note and "Benjamini-Hochberg" in note
    assert not re.search(r"[1-9]\.\d{3,}|\d{2,}\.\d", table)  # rounded: no -215.55


def test_night__no_rem_latency_without_a_valid_one(fortnight):
    """A night with REM latency 0 (REM scored at onset) or without REM shows "—"."""
    from nightlink.cloud import fusion
    from nightlink.cloud.reports.summary import night_row

    tz = ZoneInfo("Europe/Berlin")
    doc = settings.fused_night(fortnight, "2026-01-04", tz)
    tl = fusion.timeline(fusion.load_night(fortnight, "2026-01-04", tz), doc)
    assert doc["sleep"]["rem_latency_min"] > 0

    def latency(d):
        html = render.night_html(d, tl, tenant="p1", tenant_name="Ann", unit="mg/dL")
        return re.search(r'id="rem-latency">([^<]*)<', html).group(1)

    assert latency(doc) == f"{doc['sleep']['rem_latency_min']:.0f} min"
    zero = {**doc, "sleep": {**doc["sleep"], "rem_latency_min": 0.0}}
    assert latency(zero) == "—" and night_row(zero)["rem_latency_min"] is None
    no_rem = {**doc, "sleep": {**doc["sleep"], "stage_pct": {"light": 80, "deep": 20, "rem": 0}}}
    assert latency(no_rem) == "—"


def test_night_pdf__panel_titles_clear_of_axis_numbers(fortnight):
    """In the timeline no panel title's box overlaps an axis number's (estimated from the
    SVG's coordinates: 0.62 em per character)."""
    from nightlink.cloud import fusion
    from nightlink.cloud.reports import charts

    tz = ZoneInfo("Europe/Berlin")
    doc = settings.fused_night(fortnight, "2026-01-04", tz)
    tl = fusion.timeline(fusion.load_night(fortnight, "2026-01-04", tz), doc)
    for unit in ("mg/dL", "mmol/L"):
        for compact in (True, False):
            svg = charts.night_timeline(tl, doc["findings"]["lows"], tz, unit, compact=compact)
            boxes = []
            for m in re.finditer(r'<text x="([\d.-]+)" y="([\d.-]+)"([^>]*)>(.*?)</text>', svg):
                x, y, attrs = float(m[1]), float(m[2]), m[3]
                text = re.sub(r"<[^>]+>", "", m[4])
                w = 0.62 * 10 * len(text)
                x0 = x - w if 'text-anchor="end"' in attrs else (
                    x - w / 2 if 'text-anchor="middle"' in attrs else x)
                boxes.append(("lbl" in attrs, text, (x0, y - 8, x0 + w, y + 1)))
            titles = [b for b in boxes if b[0]]
            numbers = [b for b in boxes if not b[0] and re.fullmatch(r"[\d.:]+", b[1])]
            assert len(titles) == 6 and numbers
            for _, title, (a0, b0, a1, b1) in titles:
                for _, num, (c0, d0, c1, d1) in numbers:
                    overlap = a0 < c1 and c0 < a1 and b0 < d1 and d0 < b1
                    assert not overlap, (unit, compact, title, num)


def _truth_rem_latency(sim_dir: Path) -> float:
    """Minutes from the first sleep epoch to the first REM epoch of the simulator's truth."""
    import csv

    with (sim_dir / "truth" / "hypnogram.csv").open() as f:
        stages = [row["stage"] for row in csv.DictReader(f)]
    onset = next(i for i, s in enumerate(stages) if s != "W")
    return (next(i for i, s in enumerate(stages) if s == "REM") - onset) / 2


def test_report__rem_latency_near_the_simulated_truth(tmp_path):
    """A simulated 8-hour night (seed 1007, the demo's eighth night: first REM about 90
    minutes after sleep onset) through the edge's classifiers and the cloud's fusion: the
    night row and the night page show a REM latency within 20 minutes of the truth, not 0."""
    from nightlink.cloud import fusion
    from nightlink.cloud.reports.summary import night_row
    from nightlink.edge.store import EdgeStore
    from nightlink.tools.sim.night import simulate_night
    from nightlink.tools.sim.replay import replay
    from tests.support.cloud import cloud_of_edge

    sim = tmp_path / "sim"
    simulate_night(sim, seed=1007, hours=8.0, audio_format=None)
    truth = _truth_rem_latency(sim)
    edge = EdgeStore(tmp_path / "edge.db")
    result = replay(sim, edge, audio="none")
    store, data = cloud_of_edge(edge, f"sqlite:///{tmp_path / 'cloud.db'}")
    try:
        doc = settings.fused_night(data, result.night, ZoneInfo("UTC"))
        shown = night_row(doc)["rem_latency_min"]
        tl = fusion.timeline(fusion.load_night(data, result.night, ZoneInfo("UTC")), doc)
        html = render.night_html(doc, tl, tenant="sim", tenant_name="Sim", unit="mg/dL")
        cell = re.search(r'id="rem-latency">([^<]*)<', html).group(1)
    finally:
        edge.close()
        store.close()
    assert 60 <= truth <= 120 and doc["sleep"]["source"] == "classifier"
    assert shown is not None and abs(shown - truth) <= 20, (shown, truth)
    assert cell == f"{shown:.0f} min"


def test_snoring__said_to_be_unvalidated_wherever_it_is_shown(fortnight):
    """The snoring figure does not hold on real audio yet (edge/models/snore.md): the report,
    the night page say so beside it, and say nothing where there is no snoring figure."""
    from nightlink.cloud import fusion

    tz = ZoneInfo("Europe/Berlin")
    rep = build_report(fortnight, settings.patient_settings(fortnight), end_day="2026-01-15", days=14)
    assert any(n["snore_pct"] is not None for n in rep["nights"])
    html = render.report_html(rep, tenant_name="Ann", unit="mg/dL")
    assert 'id="snore-caveat"' in html and fusion.SNORE_CAVEAT in html
    doc = settings.fused_night(fortnight, "2026-01-04", tz)
    tl = fusion.timeline(fusion.load_night(fortnight, "2026-01-04", tz), doc)
    assert doc["breathing"]["snore_pct"] is not None
    assert fusion.SNORE_CAVEAT in render.night_html(doc, tl, tenant="p1", tenant_name="Ann", unit="mg/dL")
    quiet = {**doc, "breathing": {**doc["breathing"], "snore_pct": None}}
    assert "snore-caveat" not in render.night_html(quiet, tl, tenant="p1", tenant_name="Ann", unit="mg/dL")
    no_snoring = {**rep, "nights": [{**n, "snore_pct": None} for n in rep["nights"]]}
    assert no_snoring["nights"]  # nights there, none with a snoring figure: no caveat
    assert "snore-caveat" not in render.report_html(no_snoring, tenant_name="Ann", unit="mg/dL")


def test_report__event_rate_per_week_of_sensor_data_not_of_the_calendar(store):
    """Two lows in the one day that has readings, in a 14-day report: 14 a week of wear
    (iglu's per-day rate x 7), not 1 a week of calendar."""
    data = store.tenant("p1")
    dip = [(m, 100) for m in range(0, 1440, 5)]
    dip = [(m, 60 if 300 <= m < 330 or 900 <= m < 930 else g) for m, g in dip]
    one_day(data, dip)
    rep = build_report(data, settings.patient_settings(data), end_day="2026-01-20", days=14)
    assert rep["hypo"]["level1"] == 2
    assert rep["hypo"]["per_week"] == pytest.approx(14.0, rel=0.01)
    assert rep["hyper"]["per_week"] == 0
