"""HTML (Jinja2), PDF (WeasyPrint), CSV and JSON of the reports."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, Undefined, select_autoescape

from nightlink.cloud import fusion, insights, zones
from nightlink.cloud.reports import charts, summary
from nightlink.cloud.reports.settings import MAX_REPORT_DAYS, PRESETS, UNITS
from nightlink.shared import lowrisk, units

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def _missing(v) -> bool:
    """No value: None, or a name the page's data does not have (an absent key)."""
    return v is None or isinstance(v, Undefined)


def _num(fmt):
    def f(v):
        return "–" if _missing(v) else fmt % v
    return f


def _env(unit: str, tz_name: str, changes: list[dict] | None = None) -> Environment:
    """The templates' environment for a reader's unit and a page's zone (with the zone
    changes a report lists: each time shown in the zone it was counted in)."""
    return _env_of(unit, tz_name, tuple((c["at_ms"], c["from"], c["to"]) for c in changes or ()))


@lru_cache(maxsize=8)
def _env_of(unit: str, tz_name: str, changes: tuple) -> Environment:
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)),
                      autoescape=select_autoescape(["html"]), trim_blocks=False)
    tz = zones.named(tz_name, [{"at_ms": a, "from": f, "to": t} for a, f, t in changes])

    def g(v):  # a glucose value in the reader's unit
        if _missing(v):
            return "–"
        return f"{units.to_mmoll(v):.1f}" if unit == units.MMOLL else f"{v:.0f}"

    def gd(v):  # a glucose difference or spread (no sensor-code handling)
        if _missing(v):
            return "–"
        return f"{v / units.MGDL_PER_MMOLL:.1f}" if unit == units.MMOLL else f"{v:.0f}"

    def gds(v):  # a signed glucose difference (slopes): two significant digits, at most
        if _missing(v):
            return "–"
        if unit == units.MMOLL:
            v = v / units.MGDL_PER_MMOLL
        digits = 0 if abs(v) >= 10 else 1 if abs(v) >= 1 else 2
        text = f"{v:+.{digits}f}"
        return text.replace("-", "+") if float(text) == 0 else text  # no "-0"

    def qv(v):  # a p- or q-value, two significant digits, small ones as "< 0.001"
        if _missing(v):
            return "–"
        return "< 0.001" if v < 0.001 else f"{v:.2g}" if v < 0.1 else f"{v:.2f}"

    def hm(v):
        if _missing(v):
            return "–"
        return f"{int(v // 60)} h {int(round(v % 60)):02d} min"

    def rng(r):
        if not r:
            return "–"
        return f"{r['min']:g} – {r['median']:g} – {r['max']:g}"

    env.globals["snore_caveat"] = fusion.SNORE_CAVEAT
    env.filters.update(
        g=g, gd=gd, gds=gds, qv=qv, hm=hm, rng=rng, pct=_num("%.1f %%"), f0=_num("%.0f"), f1=_num("%.1f"),
        cov=lambda v: "–" if _missing(v) else f"{100 * v:.0f} %",
        day_before=lambda d: (date.fromisoformat(d) - timedelta(days=1)).isoformat(),
        day_after=lambda d: (date.fromisoformat(d) + timedelta(days=1)).isoformat(),
        dt=lambda ms: datetime.fromtimestamp(ms / 1000, tz).strftime("%Y-%m-%d %H:%M"),
        tm=lambda ms: datetime.fromtimestamp(ms / 1000, tz).strftime("%H:%M"),
    )
    return env


class Links:
    """Where a page's links go: the portal's routes, or (static) the files of a folder written
    next to each other (the demo's report/ folder), relative so they work from file://.
    static_nights: the nights with a written page, static_pdfs those with a written PDF (all
    of them unless given); the others get no link."""

    def __init__(self, tenant: str, *, static: bool = False,
                 static_nights: frozenset[str] | set[str] = frozenset(),
                 static_pdfs: frozenset[str] | set[str] | None = None):
        self.tenant, self.static, self.static_nights = tenant, static, frozenset(static_nights)
        self.static_pdfs = self.static_nights if static_pdfs is None else frozenset(static_pdfs)

    def report(self, **query) -> str:
        if self.static:
            return "report.html"
        return f"/portal/p/{self.tenant}" + _query(query)

    def night(self, night: str, fmt: str = "") -> str | None:
        if self.static:
            if night not in self.static_nights or fmt not in ("", "pdf") or (
                    fmt == "pdf" and night not in self.static_pdfs):
                return None
            return f"night-{night}.{fmt or 'html'}"
        return f"/portal/p/{self.tenant}/nights/{night}" + (f".{fmt}" if fmt else "")

    def night_picker(self) -> str:
        """The portal route that takes ?night=YYYY-MM-DD from the night page's date field."""
        return f"/portal/p/{self.tenant}/nights"

    def export(self, fmt: str, **query) -> str | None:
        if self.static:
            return "report.pdf" if fmt == "pdf" else None
        return f"/portal/p/{self.tenant}/report.{fmt}" + _query(query)


def _query(query: dict) -> str:
    pairs = [(k, v) for k, v in query.items() if v is not None]
    return ("?" + urlencode(pairs)) if pairs else ""


def banner_alerts(alerts: list[dict]) -> list[dict]:
    """The urgent alerts a patient's page shows at its top: unacknowledged, urgent, newest
    first; each with its value in mg/dL when it is a glucose value (the page converts it)."""
    out = []
    for a in alerts:
        if a.get("level") != "urgent" or a.get("acked_at") is not None:
            continue
        detail = a.get("detail") or {}
        glucose = detail.get("value") if a.get("rule") in ("urgent_low", "low", "high") else None
        out.append({"rule": a["rule"], "at_ms": a["at_ms"], "message": a["message"],
                    "glucose": glucose, "threshold": detail.get("threshold")})
    return sorted(out, key=lambda a: -a["at_ms"])


def _footer(text: str) -> str:
    """Footer text for a CSS string in the page style: printable characters only, no quotes,
    escapes or markup. A carriage return or form feed ends a CSS string as a line feed does:
    a space named with one wrote style rules of its own into every PDF of it."""
    return "".join(" " if c.isspace() else c for c in text
                   if (c.isprintable() or c.isspace()) and c not in "\"'\\<>&")


def _data_only_fetcher():
    """WeasyPrint's fetcher for the report pages: they use nothing outside themselves, so
    only `data:` addresses are read; any other address (one a stored text smuggled into the
    page) is never fetched from the server. WeasyPrint 68 and later take a URLFetcher,
    earlier ones a function."""
    import weasyprint.urls

    if hasattr(weasyprint.urls, "URLFetcher"):
        return weasyprint.urls.URLFetcher(allowed_protocols={"data"})

    def fetch(url: str) -> dict:
        if not url.lower().startswith("data:"):
            raise ValueError(f"{url[:80]!r}: a report fetches nothing outside itself")
        return weasyprint.default_url_fetcher(url)

    return fetch


def _sources(rep: dict) -> list[str]:
    out = set()
    for n in rep["nights"]:
        if n["sleep_source"]:
            out.add(f"sleep from {n['sleep_source']}")
        if n["ahi_source"]:
            out.add(f"AHI from {n['ahi_source']}")
    return sorted(out) or ["no sleep or breathing data"]


def report_html(rep: dict, *, tenant_name: str, unit: str, pdf: bool = False,
                user: dict | None = None, can_edit: bool = False, links: Links | None = None,
                alerts: list[dict] | None = None) -> str:
    tz = zones.named(rep["tz"], rep.get("tz_changes"))
    env = _env(unit, rep["tz"], rep.get("tz_changes"))
    dailies = [{"day": d["day"], "svg": charts.daily(d["readings"], tz, d["day"], unit)}
               for d in rep["daily"]]
    assoc = sorted((a for a in rep["associations"] if a["estimable"]), key=lambda a: a["q"])
    return env.get_template("report.html").render(
        ins=rep.get("insights"), ins_shapes=insight_shapes(rep.get("insights"), unit),
        unusual_labels=insights.UNUSUAL_LABELS,
        rep=rep, name=tenant_name, unit=unit, pdf=pdf, user=user, tenant=rep["tenant"],
        agp_svg=charts.agp(rep["agp"], unit), tir_svg=charts.tir_bar(rep.get("bands")),
        dailies=dailies, sources=_sources(rep), can_edit=can_edit, presets=list(PRESETS),
        assoc=assoc, assoc_tested=len(assoc), fdr_q=summary.FDR_Q,
        min_nights=fusion.MIN_NIGHTS, links=links or Links(rep["tenant"]),
        alerts=banner_alerts(alerts or []), max_days=MAX_REPORT_DAYS,
        default_budget=lowrisk.BUDGET_PER_WEEK, cal_min_nights=lowrisk.CAL_MIN_NIGHTS,
        footer=_footer(f"{tenant_name} · {rep['start_day']} to {rep['end_day']} · Nightlink"))


def insight_shapes(ins: dict | None, unit: str) -> dict:
    """The small chart of each recurring pattern and of the unusual stretch."""
    pat = (ins or {}).get("patterns") or {}
    discord = pat.get("discord")
    return {"motifs": [charts.shape(m["shape_mgdl"], unit, f"Pattern {i + 1}")
                       for i, m in enumerate(pat.get("motifs") or [])],
            "discord": charts.shape(discord["shape_mgdl"], unit, "The unusual stretch")
            if discord else None}


def night_html(doc: dict, tl: list[dict], *, tenant: str, tenant_name: str, unit: str,
               pdf: bool = False, user: dict | None = None, links: Links | None = None,
               alerts: list[dict] | None = None) -> str:
    tz = ZoneInfo(doc["tz"])
    env = _env(unit, doc["tz"])
    svg = charts.night_timeline(tl, doc["findings"]["lows"], tz, unit, compact=pdf)
    return env.get_template("night.html").render(
        doc=doc, name=tenant_name, unit=unit, pdf=pdf, user=user, tenant=tenant,
        timeline_svg=svg, page_size="A4 landscape", links=links or Links(tenant),
        lows=summary.nest_lows(doc["findings"]["lows"]),
        rem_latency=summary.rem_latency(doc["sleep"]), alerts=banner_alerts(alerts or []),
        footer=_footer(f"{tenant_name} · night of {doc['night']} · Nightlink"))


def page_html(name: str, **context) -> str:
    return _env(context.get("unit", units.MGDL), context.get("tz", "UTC")).get_template(name).render(
        units_choices=UNITS, **context)


def to_pdf(html: str) -> tuple[bytes, int]:
    """The PDF of a page and its number of pages."""
    from weasyprint import HTML

    doc = HTML(string=html, base_url=str(TEMPLATES), url_fetcher=_data_only_fetcher()).render()
    return doc.write_pdf(), len(doc.pages)


def report_pdf(rep: dict, *, tenant_name: str, unit: str) -> tuple[bytes, int]:
    return to_pdf(report_html(rep, tenant_name=tenant_name, unit=unit, pdf=True))


def night_pdf(doc: dict, tl: list[dict], *, tenant: str, tenant_name: str,
              unit: str) -> tuple[bytes, int]:
    return to_pdf(night_html(doc, tl, tenant=tenant, tenant_name=tenant_name, unit=unit,
                             pdf=True))


# -- CSV and JSON -----------------------------------------------------------------------------

NIGHT_COLUMNS = ("night", "sleep_source", "tib_min", "tst_min", "se_pct", "sol_min", "waso_min",
                 "rem_latency_min", "light_pct", "deep_pct", "rem_pct", "breathing_source",
                 "ahi_source", "ahi", "ahi_severity", "odi3", "odi4", "snore_pct",
                 "noct_period", "noct_n", "noct_mean", "noct_sd", "noct_cv", "noct_tir",
                 "noct_tbr", "lows_l1", "lows_l2", "dawn_rise", "dawn_flag", "morning",
                 "temp_c", "co2_max", "noise_max", "cov_wearable", "cov_audio", "cov_inference",
                 "cov_glucose")
TIMELINE_COLUMNS = ("epoch", "time", "stage", "glucose", "sensor_error", "forecast30",
                    "low_risk", "spo2", "spo2_min", "hr", "movement", "apnea", "desat", "snore",
                    "temp_c", "co2_ppm", "noise_dba", "light_lux")


def _cell(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"
    return v


def report_csv(rep: dict) -> str:
    """One row per night of the report (mg/dL; empty where not measured)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(NIGHT_COLUMNS)
    for n in rep["nights"]:
        w.writerow([_cell(n.get(k)) for k in NIGHT_COLUMNS])
    return buf.getvalue()


def night_csv(tl: list[dict]) -> str:
    """One row per epoch of the night's fused timeline (UTC times, mg/dL)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(TIMELINE_COLUMNS)
    for p in tl:
        row = dict(p, time=datetime.fromtimestamp(p["t_ms"] / 1000, ZoneInfo("UTC")).strftime(
            "%Y-%m-%dT%H:%M:%SZ"))
        w.writerow([_cell(row.get(k)) for k in TIMELINE_COLUMNS])
    return buf.getvalue()


def to_json(doc) -> str:
    return json.dumps(doc, separators=(",", ":"), default=str)
