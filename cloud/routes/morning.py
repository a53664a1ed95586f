"""The morning card as a page: last night for the patient, the family and the doctor, in the
reader's units and the patient's time zone, with links to the nights before and after. The
same card the nights API returns (cloud/morning.py)."""

from __future__ import annotations

from datetime import date

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse

from nightlink.cloud import morning
from nightlink.cloud.access import resolve_access
from nightlink.cloud.deps import SettingsDep, StoreDep
from nightlink.cloud.reports import render
from nightlink.cloud.reports import settings as report_settings

router = APIRouter(prefix="/portal", tags=["portal"], include_in_schema=False)


@router.get("/p/{tenant}/morning")
def morning_page(tenant: str, request: Request, store: StoreDep, settings: SettingsDep,
                 night: str | None = None):
    """Last night's card (or `night`'s, the date of its evening)."""
    from nightlink.cloud.routes.portal import portal_user

    user = portal_user(request, store, settings)  # no session: sent to sign in
    access = resolve_access(store, user, tenant)
    if access is None:
        raise HTTPException(404, f"No patient {tenant!r}.")
    if night is not None:
        try:
            date.fromisoformat(night)
        except ValueError:
            raise HTTPException(422, f"night={night!r} is not a date; use YYYY-MM-DD.") from None
    ps = report_settings.patient_settings(access.data)
    card = morning.card(access.data, ps, night)
    unit = report_settings.user_units(store, user["id"])
    html = render.page_html("morning.html", pdf=False, user=user, card=card, unit=unit,
                            tz=ps.tz.key, tenant=store.get_tenant(tenant),
                            score_parts=morning.SCORE_PARTS)
    return HTMLResponse(html, headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY"})
