"""The morning card and insights across nights as pages, for the patient, the family and the
doctor, in the reader's units and the patient's time zone. The morning card is the same card
the nights API returns (cloud/morning.py); the insights page shows what the insights API
returns (cloud/insights.py): associations with their intervals and q-values, unusual nights,
and recurring glucose patterns with the small shape of each."""

from __future__ import annotations

import math
from datetime import date
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from markupsafe import Markup

from nightlink.cloud import morning
from nightlink.cloud.access import resolve_access
from nightlink.cloud.deps import SettingsDep, StoreDep
from nightlink.cloud.reports import render
from nightlink.cloud.reports import settings as report_settings
from nightlink.cloud.routes.portal import html_page
from nightlink.shared import units

router = APIRouter(prefix="/portal", tags=["portal"], include_in_schema=False)

SHAPE_W, SHAPE_H, SHAPE_PAD = 240, 72, 4  # the inline pattern shapes, in CSS pixels
SHAPE_MIN_SPAN = 54.0  # mg/dL (3 mmol/L): the least height a shape is drawn over
UNUSUAL_LABELS = {  # figure: (words, unit or "glucose" for the reader's glucose unit)
    "tst_min": ("sleep time", "min"), "se_pct": ("sleep efficiency", "%"),
    "waso_min": ("awake after falling asleep", "min"), "ahi": ("AHI", "events/h"),
    "odi3": ("ODI 3 %", "events/h"), "snore_pct": ("snoring", "% of the night"),
    "noct_mean": ("mean glucose asleep", "glucose"),
    "noct_sd": ("glucose spread asleep (SD)", "glucose spread"),
    "temp_c": ("bedroom temperature", "°C"), "co2_max": ("bedroom CO₂ (max)", "ppm"),
    "noise_max": ("bedroom noise (max)", "dBA"),
}


def _reader(request: Request, store, settings, tenant: str):
    """The signed-in reader and their access to the tenant; 404 for anyone else."""
    from nightlink.cloud.routes.portal import portal_user

    user = portal_user(request, store, settings)  # no session: sent to sign in
    access = resolve_access(store, user, tenant)
    if access is None:
        raise HTTPException(404, f"No patient {tenant!r}.")
    return user, access


def _night(name: str, value: str | None) -> None:
    if value is None:
        return
    try:
        date.fromisoformat(value)
    except ValueError:
        raise HTTPException(422, f"{name}={value!r} is not a date; use YYYY-MM-DD.") from None


@router.get("/p/{tenant}/morning")
def morning_page(tenant: str, request: Request, store: StoreDep, settings: SettingsDep,
                 night: str | None = None):
    """Last night's card (or `night`'s, the date of its evening)."""
    user, access = _reader(request, store, settings, tenant)
    _night("night", night)
    ps = report_settings.patient_settings(access.data)
    card = morning.card(access.data, ps, night)
    unit = report_settings.user_units(store, user["id"])
    return html_page(render.page_html("morning.html", pdf=False, user=user, card=card, unit=unit,
                                  tz=ps.tz.key, tenant=store.get_tenant(tenant),
                                  can_share=access.can_write,
                                  score_parts=morning.SCORE_PARTS))


@router.get("/p/{tenant}/insights")
def insights_page(tenant: str, request: Request, store: StoreDep, settings: SettingsDep,
                  end: str | None = None,
                  nights: Annotated[int, Query(ge=7, le=120)] = 30):
    """Insights over `nights` nights ending with the night of `end` (default: last night)."""
    from nightlink.cloud import insights

    user, access = _reader(request, store, settings, tenant)
    _night("end", end)
    ps = report_settings.patient_settings(access.data)
    got = insights.insights(access.data, ps, end, nights)
    unit = report_settings.user_units(store, user["id"])
    pat = got["patterns"]
    shapes = [shape_svg(m["shape_mgdl"], unit, f"Pattern {i + 1}")
              for i, m in enumerate(pat["motifs"])]
    discord = shape_svg(pat["discord"]["shape_mgdl"], unit, "The unusual stretch") \
        if pat.get("discord") else None
    return html_page(render.page_html(
        "insights.html", pdf=False, user=user, ins=got, unit=unit, tz=ps.tz.key,
        tenant=store.get_tenant(tenant), can_share=access.can_write, nights=nights,
        shapes=shapes, discord_svg=discord, unusual_labels=UNUSUAL_LABELS,
        glucose_unit=units.MGDL, slope=lambda v: signed_2sd(v, unit)))


def signed_2sd(mgdl: float, unit: str) -> str:
    """A signed glucose change in the reader's unit to two significant digits (a slope per
    step can be a few hundredths of a mmol/L; fixed decimals would show +0.00)."""
    v = units.to_mmoll(mgdl) if unit == units.MMOLL else mgdl
    if v == 0:
        return "0"
    digits = max(0, 1 - math.floor(math.log10(abs(v))))
    text = f"{v:+.{digits}f}"
    return text.replace("-", "+") if float(text) == 0 else text


def _in_unit(mgdl: float, unit: str) -> str:
    return f"{units.to_mmoll(mgdl):.1f}" if unit == units.MMOLL else f"{mgdl:.0f}"


def shape_svg(values: list[float], unit: str, title: str) -> Markup:
    """A small line of a glucose shape (one value per grid step, mg/dL), its highest and
    lowest value written beside it in the reader's unit; drawn over its own range, or over
    SHAPE_MIN_SPAN when that is smaller, so a flat stretch does not look like a swing."""
    pts = [v for v in values if v is not None]
    lo, hi = min(pts), max(pts)
    top = max(hi, (lo + hi + SHAPE_MIN_SPAN) / 2)  # a flat stretch is drawn flat
    span = max(hi - lo, SHAPE_MIN_SPAN)
    plot_w = SHAPE_W - 56
    step = plot_w / max(len(values) - 1, 1)
    coords = " ".join(
        f"{SHAPE_PAD + i * step:.1f},"
        f"{SHAPE_PAD + (SHAPE_H - 2 * SHAPE_PAD) * (top - v) / span:.1f}"
        for i, v in enumerate(values) if v is not None)
    words = (f"{title}: from {_in_unit(values[0], unit)} to {_in_unit(values[-1], unit)} {unit}"
             f" over the window, lowest {_in_unit(lo, unit)}, highest {_in_unit(hi, unit)}")
    return Markup(
        f'<svg class="shape" viewBox="0 0 {SHAPE_W} {SHAPE_H}" width="{SHAPE_W}" '
        f'height="{SHAPE_H}" role="img" aria-label="{Markup.escape(words)}">'
        f'<rect x="0" y="0" width="{plot_w + 2 * SHAPE_PAD}" height="{SHAPE_H}" '
        f'fill="#f4f6f9"/>'
        f'<polyline points="{coords}" fill="none" stroke="#0b2f57" stroke-width="2"/>'
        f'<text x="{plot_w + 12}" y="14" font-size="11" fill="#222">{_in_unit(hi, unit)}</text>'
        f'<text x="{plot_w + 12}" y="{SHAPE_H - 6}" font-size="11" fill="#222">'
        f'{_in_unit(lo, unit)}</text>'
        f'<text x="{plot_w + 12}" y="{SHAPE_H / 2 + 4:.0f}" font-size="10" fill="#444">'
        f'{Markup.escape(unit)}</text></svg>')
