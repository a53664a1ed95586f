"""Data rights: everything a tenant holds, as one JSON document or a zip of CSV files (the
patient or an administrator; every export is written to the audit log)."""

from __future__ import annotations

import csv
import io
import json
import struct
import time
import zipfile
from typing import Literal

from fastapi import APIRouter, Response

from nightlink.cells import spreadsheet_text
from nightlink.cloud.access import TenantAccess
from nightlink.cloud.deps import ERRORS, OwnerAccess, StoreDep
from nightlink.cloud.routes.devices import device_public
from nightlink.cloud.store import Store, TenantStore, row_values
from nightlink.shared import epoch, features

_ALL = 2**31 - 1  # "no limit" for the store's LIMIT arguments

router = APIRouter(prefix="/api/nl/v1", tags=["data rights"], responses=ERRORS)


def _epoch_rows(data: TenantStore) -> dict[str, list[dict]]:
    """Every stored epoch row, decoded to feature values, per stream name."""
    out: dict[str, list[dict]] = {}
    streams = data.streams()
    for stream in streams:
        info = features.stream(stream)
        rows, after = [], None
        while True:
            page = data.rows(stream, -(2**62), 2**62, after=after, limit=5000)
            for r in page:
                doc = {"device": r.device, "boot": r.boot, "seq": r.seq, "epoch": r.epoch,
                       "time": epoch.iso_epoch(r.epoch), "flags": r.flags}
                try:
                    values = row_values(stream, r.nfeat, r.row_data)
                except struct.error:
                    values = {}
                if values:
                    doc.update(values)
                else:  # a stream this version does not know, or bytes that do not fit
                    doc["raw_hex"] = r.row_data.hex()
                rows.append(doc)
            if len(page) < 5000:
                break
            last = page[-1]
            after = (last.epoch, last.device, last.boot, last.seq)
        out[info[features.S_NAME] if info else f"stream{stream}"] = rows
    return out


def export_doc(store: Store, access: TenantAccess) -> dict:
    """Everything the tenant holds, as one JSON-ready document."""
    data = access.data
    return {
        "tenant": store.get_tenant(access.tenant_id, include_deleted=True),
        "exported_at": time.time(),
        "entries": data.documents("entries", count=_ALL),
        "treatments": data.documents("treatments", count=_ALL),
        "devicestatus": data.documents("devicestatus", count=_ALL),
        "profiles": data.documents("profile", count=_ALL),
        "food": data.documents("food", count=_ALL),
        "activity": data.documents("activity", count=_ALL),
        "nights": data.nights(limit=_ALL),
        "epochs": _epoch_rows(data),
        "alerts": data.alerts(limit=_ALL),
        "members": store.members(access.tenant_id),
        "devices": [device_public(d, access.tenant_id) for d in data.devices()],
    }


def _cell(value):
    """A value as its CSV cell: nested ones as JSON, text never as a formula."""
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, str):
        return spreadsheet_text(value)
    return "" if value is None else value


def _csv(rows: list[dict]) -> str:
    columns: dict[str, None] = {}
    for r in rows:
        columns.update(dict.fromkeys(r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns))
    writer.writeheader()
    for r in rows:
        writer.writerow({k: _cell(v) for k, v in r.items()})
    return buf.getvalue()


def export_zip(doc: dict) -> bytes:
    """The export as a zip of CSV files, one per collection (and one per epoch stream)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("tenant.csv", _csv([doc["tenant"]]))
        for name in ("entries", "treatments", "devicestatus", "profiles", "food", "activity",
                     "nights", "alerts", "members", "devices"):
            z.writestr(f"{name}.csv", _csv(doc[name]))
        for stream, rows in doc["epochs"].items():
            z.writestr(f"epochs_{stream}.csv", _csv(rows))
    return buf.getvalue()


@router.get("/tenants/{tenant}/export", response_class=Response,
            responses={200: {"content": {"application/json": {}, "application/zip": {}}}})
def export(access: OwnerAccess, store: StoreDep, format: Literal["json", "csv"] = "json"):
    """All the tenant's data as JSON, or as a zip of CSV files (patient or administrator)."""
    doc = export_doc(store, access)
    store.audit("export", actor=access.user["id"], tenant_id=access.tenant_id, format=format)
    stem = f"nightlink-{access.tenant_id}-{time.strftime('%Y%m%d', time.gmtime())}"
    if format == "csv":
        return Response(export_zip(doc), media_type="application/zip",
                        headers={"Content-Disposition": f'attachment; filename="{stem}.zip"'})
    return Response(json.dumps(doc, sort_keys=True), media_type="application/json",
                    headers={"Content-Disposition": f'attachment; filename="{stem}.json"'})
