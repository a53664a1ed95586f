"""The doctor's (and caregiver's) view over several patients: each tenant they may read, with
their role, the latest glucose and the last night."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from nightlink.cloud.deps import ERRORS, CurrentUser, StoreDep
from nightlink.cloud.store import NotFoundError

router = APIRouter(prefix="/api/nl/v1", tags=["patients"], responses=ERRORS)


class GlucosePublic(BaseModel):
    sgv: int | float | None  # as stored: an uploader may send 110.5
    date: int
    direction: str | None = None


class PatientSummary(BaseModel):
    tenant_id: str
    name: str
    role: str
    latest_glucose: GlucosePublic | None
    last_night: str | None


@router.get("/patients", response_model=list[PatientSummary])
def patients(user: CurrentUser, store: StoreDep):
    """The tenants you may read, with your role, the latest glucose and the last night."""
    visible = store.visible_tenants(user)
    out = []
    for m in visible:
        try:
            data = store.tenant(m["tenant_id"])
        except NotFoundError:  # deleted meanwhile
            continue
        latest = data.entries(count=1, type_="sgv")
        nights = data.nights(limit=1)
        out.append(PatientSummary(
            tenant_id=m["tenant_id"], name=m["name"], role=m["role"],
            latest_glucose=_glucose(latest[0]) if latest else None,
            last_night=nights[0]["night"] if nights else None))
    return out


def _glucose(entry: dict) -> GlucosePublic:
    """The newest reading as the list shows it; what an uploader stored oddly (a direction
    that is no text) is left out rather than failing every patient's row."""
    sgv, direction = entry.get("sgv"), entry.get("direction")
    return GlucosePublic(sgv=sgv if isinstance(sgv, int | float) and not isinstance(sgv, bool)
                         else None, date=entry["date"],
                         direction=direction if isinstance(direction, str) else None)
