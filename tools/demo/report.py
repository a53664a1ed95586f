"""The demo's last step: the fused doctor's report of the simulated night(s), as HTML and PDF
files under the demo's output folder, and where to open them."""

from __future__ import annotations

from pathlib import Path

from nightlink.cloud import fusion
from nightlink.cloud.reports import render, settings
from nightlink.cloud.reports.summary import build_report
from nightlink.cloud.store import Store
from nightlink.shared.epoch import EPOCH_S

UNIT = "mg/dL"


def _nights(store: Store, tenant: str, tz) -> list[str]:
    """Every night (local evening date) holding epoch rows of the tenant."""
    span = store.tenant(tenant).epoch_span()
    if span is None:
        return []
    first = fusion.night_of(span[0] * EPOCH_S, tz)
    last = fusion.night_of(span[1] * EPOCH_S, tz)
    out, night = [], first
    from datetime import date, timedelta

    d = date.fromisoformat(first)
    while night <= last:
        out.append(night)
        d += timedelta(days=1)
        night = d.isoformat()
    return out


def describe(doc: dict) -> list[str]:
    """A few plain lines on what the night's report shows."""
    s, b, g = doc["sleep"], doc["breathing"], doc["glucose"]
    lines = []
    if s["tst_min"] is not None:
        lines.append(f"  sleep ({s['source']}): {s['tst_min'] / 60:.1f} h asleep of "
                     f"{s['tib_min'] / 60:.1f} h in bed, efficiency {s['se_pct']:.0f} %")
    if b["ahi"] is not None:
        lines.append(f"  breathing: AHI {b['ahi']:.1f}/h ({b['ahi_severity']}; "
                     f"{b['ahi_source']}), ODI 3 % {b['odi3'] or 0:.1f}/h")
    if g["summary"]:
        lines.append(f"  nocturnal glucose ({g['period']}): mean {g['summary']['mean']:.0f} "
                     f"mg/dL, CV {g['summary']['cv_pct']:.0f} %, in range "
                     f"{g['bands']['in_range']:.0f} %")
    for low in doc["findings"]["lows"]:
        hr = (f", heart rate {low['hr_response']:+.0f} bpm" if low["hr_response"] is not None
              else "")
        lines.append(f"  low (level {low['level']}): {low['minutes']:.0f} min, nadir "
                     f"{low['nadir']:.0f} mg/dL, stage at start "
                     f"{low['stage_at_start'] or 'not scored'}{hr}, arousal "
                     f"{'yes' if low['arousal'] else 'none seen'}")
    cov = doc["coverage"]
    lines.append("  coverage: " + ", ".join(f"{k} {100 * v:.0f} %" for k, v in cov.items()
                                           if k != "sensor_errors"))
    return lines


def glucose_lines(rep: dict) -> list[str]:
    """The report's targets and GRI in words, as the report judges them."""
    lines = []
    for t in rep.get("targets") or []:
        limit = t["limit"]
        where = (f"{limit[1]:g}-{limit[2]:g}" if limit[0] == "range"
                 else f"{limit[0]} {limit[1]:g}")
        verdict = "not enough data" if t["met"] is None else "met" if t["met"] else "not met"
        lines.append(f"  {t['label']} ({where} {UNIT}): {t['value']:.1f} % (target "
                     f"{t['op']} {t['target']:g} %: {verdict})")
    if rep.get("gri") is not None:
        zone = f"zone {rep['gri_zone']}" if rep["judged"] else "zone not judged: not enough data"
        lines.append(f"  Glycemia risk index (GRI): {rep['gri']:.1f} ({zone})")
    return lines


def write(store: Store, tenant: str, out: Path, echo=print) -> dict:
    """Write report/night-<night>.html per night (.pdf too for the last) and
    report/report.{html,pdf} (the multi-day report ending with the last night) under out; say
    where they are. The pages link to each other by relative file names, so they work opened
    from the folder."""
    data = store.tenant(tenant)
    ps = settings.patient_settings(data)
    name = store.get_tenant(tenant)["name"]
    folder = Path(out) / "report"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("night-*"):  # pages of an earlier, longer run would not be linked
        old.unlink()
    docs = {}
    for night in _nights(store, tenant, ps.tz):
        doc = settings.fused_night(data, night, ps.tz)
        if doc["has_data"] and doc["recording"] is not None:
            docs[night] = doc
    # Every night as a page, the last one also as a PDF (WeasyPrint takes a second or two a
    # night; the portal makes any night's PDF on demand).
    last = list(docs)[-1:]
    links = render.Links(tenant, static=True, static_nights=set(docs), static_pdfs=set(last))
    files = []
    echo("\nDoctor's report (fused nights):")
    for night, doc in docs.items():
        tl = fusion.timeline(fusion.load_night(data, night, ps.tz), doc)
        html = folder / f"night-{night}.html"
        html.write_text(render.night_html(doc, tl, tenant=tenant, tenant_name=name, unit=UNIT,
                                          links=links))
        files.append(html)
        if night in last:
            pdf, _pages = render.night_pdf(doc, tl, tenant=tenant, tenant_name=name, unit=UNIT)
            (folder / f"night-{night}.pdf").write_bytes(pdf)
            files.append(folder / f"night-{night}.pdf")
    for night in last:  # the last night in words
        echo(f"Night of {night}:")
        for line in describe(docs[night]):
            echo(line)
    rep = build_report(data, ps)
    html = folder / "report.html"
    html.write_text(render.report_html(rep, tenant_name=name, unit=UNIT, links=links))
    pdf, pages = render.report_pdf(rep, tenant_name=name, unit=UNIT)
    (folder / "report.pdf").write_bytes(pdf)
    files = [html, folder / "report.pdf", *files]
    store.audit("export", tenant_id=tenant, kind="demo", format="html+pdf",
                files=[str(f) for f in files])
    suf = rep["sufficiency"]
    echo(f"{rep['days']}-day report ({rep['start_day']} to {rep['end_day']}, {pages} PDF "
         f"pages, {len(rep['nights'])} nights); data sufficiency "
         f"{100 * suf['share']:.0f} % of readings over {suf['days_with_data']} days with "
         f"readings ({'meets' if suf['sufficient'] else 'below'} the consensus's 14 days "
         f"with >= 70 %; the daytime CGM is simulated too).")
    for line in glucose_lines(rep):
        echo(line)
    echo("Open in a browser (the pages link to each other):")
    echo(f"  file://{html.resolve()}")
    echo(f"  {len(docs)} night pages, the report PDF and the last night's PDF next to it in "
         f"{folder.resolve()}/")
    return {"files": [str(f) for f in files], "report": rep}
