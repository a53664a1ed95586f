"""The morning card and insights across nights as pages, for the patient, the family and the
doctor, in the reader's units and the patient's time zone. The morning card is the same card
the nights API returns (cloud/morning.py); the insights page shows what the insights API
returns (cloud/insights.py): associations with their intervals and q-values, unusual nights,
and recurring glucose patterns with the small shape of each."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request

from nightlink.cloud import insights, morning
from nightlink.cloud.access import resolve_access
from nightlink.cloud.deps import SettingsDep, StoreDep
from nightlink.cloud.reports import render
from nightlink.cloud.reports import settings as report_settings
from nightlink.cloud.reports.charts import shape as shape_svg
from nightlink.cloud.routes.fields import night_param
from nightlink.cloud.routes.portal import html_page
from nightlink.shared import units

router = APIRouter(prefix="/portal", tags=["portal"], include_in_schema=False)

UNUSUAL_LABELS = insights.UNUSUAL_LABELS  # figure: (words, unit)


def _reader(request: Request, store, settings, tenant: str):
    """The signed-in reader and their access to the tenant; 404 for anyone else."""
    from nightlink.cloud.routes.portal import portal_user

    user = portal_user(request, store, settings)  # no session: sent to sign in
    access = resolve_access(store, user, tenant)
    if access is None:
        raise HTTPException(404, f"No patient {tenant!r}.")
    return user, access


@router.get("/p/{tenant}/morning")
def morning_page(tenant: str, request: Request, store: StoreDep, settings: SettingsDep,
                 night: str | None = None):
    """Last night's card (or `night`'s, the date of its evening)."""
    user, access = _reader(request, store, settings, tenant)
    night = night_param("night", night)
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
    user, access = _reader(request, store, settings, tenant)
    end = night_param("end", end)
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
