"""The report's unusual nights and recurring glucose patterns: the insights of the period's
nights as cloud/insights.py computes them for the insights page and the API, in the reader's
units, in the HTML and the PDF, and "not enough nights" below the minimum."""

import re
import subprocess
from datetime import date

import pytest

from nightlink.cloud import insights
from nightlink.cloud.reports import render, settings
from nightlink.cloud.reports.summary import build_report
from nightlink.cloud.store import Store
from nightlink.tools.bench.report import synth_days


@pytest.fixture(scope="module")
def fortnight(tmp_path_factory):
    """14 similar days and nights in UTC; the night of 2026-01-10 has 35 apneas an hour
    instead of 5, so its desaturation index is far from the others'."""
    path = tmp_path_factory.mktemp("ins") / "r.db"
    store = Store.open(f"sqlite:///{path}")
    store.create_tenant("p1", "Ann Example")
    data = store.tenant("p1")
    synth_days(data, date(2026, 1, 1), 14, tz="UTC", seed=9, low=lambda i: i % 3 == 0,
               night=lambda i: True, hours=3.0,
               apnea_per_h=lambda i: 5 + (30 if i == 9 else 0))
    rep = build_report(data, settings.patient_settings(data), end_day="2026-01-14", days=14)
    yield data, rep
    store.close()


def _section(html: str) -> str:
    start = html.index('id="insights-head"')
    return html[start:html.index("<h2>Exports</h2>", start)]


def test_report__insights_are_the_insights_of_its_nights(fortnight):
    data, rep = fortnight
    same = insights.insights(data, settings.patient_settings(data), "2026-01-13", 14)
    assert rep["insights"] == same  # one computation: the page's and the API's
    assert rep["insights"]["start_night"] == rep["nights"][0]["night"] == "2025-12-31"


def test_report__lists_the_unusual_night_and_the_patterns_in_mmol(fortnight):
    _data, rep = fortnight
    html = render.report_html(rep, tenant_name="Ann Example", unit="mmol/L")
    section = _section(html)
    row = re.search(r'<tr data-night="2026-01-10" data-figure="odi3">.*?</tr>', section, re.S)[0]
    assert "ODI 3 %" in row and "events/h" in row
    z = float(re.findall(r'<td class="num">([+-][\d.]+)</td>', row)[-1])
    assert z > insights.UNUSUAL_Z
    # Only the planted night stands out in its breathing; the others are alike.
    flagged = re.findall(r'data-night="([\d-]+)" data-figure="(ahi|odi3)"', section)
    assert {n for n, _ in flagged} == {"2026-01-10"}
    pat = rep["insights"]["patterns"]
    assert pat["status"] == "ok" and pat["motifs"]
    assert section.count('<li data-motif=') == len(pat["motifs"])
    assert section.count('<svg class="shape"') == len(pat["motifs"]) + 1  # and the discord
    assert pat["motifs"][0]["starts"][0] in section and pat["discord"]["start"] in section
    assert "mg/dL" not in html and "mmol/L" in section
    assert "Not enough nights" not in section
    assert 'id="associations"' in html  # the report's own table stays


def test_report_pdf__has_the_insights_section(fortnight, tmp_path):
    _data, rep = fortnight
    pdf, pages = render.report_pdf(rep, tenant_name="Ann Example", unit="mg/dL")
    (tmp_path / "r.pdf").write_bytes(pdf)
    text = subprocess.run(["pdftotext", "-layout", str(tmp_path / "r.pdf"), "-"], check=True,
                          capture_output=True, text=True, timeout=60).stdout
    assert pdf[:5] == b"%PDF-" and pages >= 4
    assert "Unusual nights and recurring glucose patterns" in text
    assert "2026-01-10" in text and "ODI 3 %" in text and "Pattern 1" in text
    assert "least like any other" in text


def test_report__not_enough_nights(tmp_path):
    store = Store.open(f"sqlite:///{tmp_path / 'few.db'}")
    try:
        store.create_tenant("p1", "Ann")
        data = store.tenant("p1")
        synth_days(data, date(2026, 1, 1), 5, tz="UTC", night=lambda i: True, hours=3.0)
        rep = build_report(data, settings.patient_settings(data), end_day="2026-01-05",
                           days=14)
        section = _section(render.report_html(rep, tenant_name="Ann", unit="mg/dL"))
    finally:
        store.close()
    assert rep["insights"]["unusual_nights"]["status"].startswith("not enough nights")
    assert 'id="unusual-not-enough"' in section and "Not enough nights: 5 with data, 10 needed" \
        in section
    assert 'id="patterns-not-enough"' in section and 'id="unusual"' not in section
