"""Nightscout API v1 per tenant under `/t/{tenant}` (or `{tenant}.{tenant_domain}`).

What xDrip+, Juggluco, AndroidAPS, clocks and followers speak (NIGHTSCOUT.md): entries,
treatments, device status, profiles, status.json, verifyauth and /pebble. Access comes from
`deps.NightscoutAccess` (api-secret, ?token=, a member's Bearer token, or public reading);
document checks and reply shapes from `nightscout_format`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from nightlink import __version__
from nightlink.cloud import nightscout_format as fmt
from nightlink.cloud.deps import (
    BearerDep,
    NightscoutAccess,
    NightscoutWriter,
    SettingsDep,
    StoreDep,
    TenantAccess,
    nightscout_access,
)
from nightlink.cloud.repo import Store
from nightlink.edge.nightscout import (
    ENTRY_TYPES,
    HEADER_DUPLICATES,
    HEADER_NEAR_DUPLICATES,
    HEADER_REJECTED,
    HEADER_STORED,
    THRESHOLDS,
    UploadNotJSON,
    parse_count,
    public_entry,
    read_upload,
)
from nightlink.shared import units

_LOGGER = logging.getLogger(__name__)



router = APIRouter(prefix="/t/{tenant}", tags=["nightscout"])


# -- reply models (for OpenAPI; stored documents keep every field the uploader sent) -----------


class EntryPublic(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    id: str = Field(alias="_id", description="24 hex digits, stable for (type, date)")
    type: str = Field(description="sgv, mbg or cal")
    date: int = Field(description="ms since the epoch")
    dateString: str
    sgv: int | None = Field(None, description="mg/dL; below 39 a sensor error code")
    direction: str | None = None
    delta: float | None = Field(None, description="mg/dL per 5 minutes")
    device: str | None = None
    sensorError: str | None = Field(None, description="set when sgv is an error code")


class DocumentPublic(BaseModel):
    """A treatment, device status or profile as uploaded, with `_id` and `created_at`."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    id: str | None = Field(None, alias="_id")
    created_at: str | None = None


class StatusPublic(BaseModel):
    status: str
    name: str
    version: str
    serverTime: str
    serverTimeEpoch: int
    apiEnabled: bool
    careportalEnabled: bool
    boluscalcEnabled: bool
    settings: dict[str, Any]
    extendedSettings: dict[str, Any]
    authorized: dict[str, Any] | None


class VerifyAuthMessage(BaseModel):
    canRead: bool
    canWrite: bool
    isAdmin: bool
    message: str = Field(description="OK or UNAUTHORIZED")
    rolefound: str = Field(description="FOUND or NOTFOUND")
    permissions: str = Field(description="ROLE or DEFAULT")


class VerifyAuthPublic(BaseModel):
    status: int
    message: VerifyAuthMessage


class PebbleBg(BaseModel):
    sgv: str
    trend: int
    direction: str | None = None
    datetime: int
    bgdelta: int | float | str | None = None
    battery: str | None = None


class PebblePublic(BaseModel):
    status: list[dict[str, int]]
    bgs: list[PebbleBg]
    cals: list[dict[str, Any]]


_UPLOAD_HEADERS = {h: {"description": d, "schema": {"type": "integer"}} for h, d in (
    (HEADER_STORED, "documents stored"),
    (HEADER_DUPLICATES, "documents already stored, not stored again"),
    (HEADER_REJECTED, "invalid documents, kept as dead letters"),
)}
_ENTRIES_READ = {200: {"model": list[EntryPublic], "description": "Entries, newest first"},
                 304: {"description": "Nothing newer than If-Modified-Since"},
                 400: {"description": "An unsupported or malformed query"},
                 401: {"description": "No valid credential"}}


def _upload_responses(model, extra_headers=None) -> dict:
    return {200: {"model": list[model], "description": "The stored documents",
                  "headers": {**_UPLOAD_HEADERS, **(extra_headers or {})}},
            400: {"description": "The body is not JSON"},
            401: {"description": "Writing needs the api-secret of this site"},
            413: {"description": "The body is too large"}}


# -- entries ------------------------------------------------------------------------------------


def _find(request: Request) -> list[tuple[str, str, Any]]:
    try:
        return fmt.parse_find(request.query_params.multi_items())
    except fmt.QueryError as exc:
        raise HTTPException(400, str(exc)) from None


_REPLY_CACHE: OrderedDict = OrderedDict()  # (tenant, where, count) -> (changed, body)
_REPLY_CACHE_SIZE = 512
_reply_lock = threading.Lock()


def _entries_reply(request: Request, access: TenantAccess, where: list, count: int) -> Response:
    changed = access.data.last_modified()
    headers = {}
    if changed is not None:
        ims = fmt.if_modified_since(request.headers.get("if-modified-since"))
        if ims is not None and int(changed) <= ims:
            return Response(status_code=304)
        headers["Last-Modified"] = fmt.http_date(fmt.last_modified_stamp(changed, time.time()))
    # Clocks and apps poll the same few queries: keep the reply until the tenant's entries
    # change (their newest created_at, which every process sees in the database).
    key = (access.tenant_id, tuple(where), count)
    with _reply_lock:
        hit = _REPLY_CACHE.get(key)
        if hit is not None and hit[0] == changed:
            _REPLY_CACHE.move_to_end(key)
            body = hit[1]
        else:
            body = None
    if body is None:
        docs = access.data.entries(count=count, where=where)
        body = json.dumps([public_entry(d) for d in docs], ensure_ascii=False, allow_nan=False,
                          separators=(",", ":")).encode("utf-8")
        with _reply_lock:
            _REPLY_CACHE[key] = (changed, body)
            while len(_REPLY_CACHE) > _REPLY_CACHE_SIZE:
                _REPLY_CACHE.popitem(last=False)
    return Response(body, media_type="application/json", headers=headers)


@router.get("/api/v1/entries", response_model=None, responses=_ENTRIES_READ)
@router.get("/api/v1/entries.json", response_model=None, include_in_schema=False)
async def get_entries(request: Request, access: NightscoutAccess) -> Response:
    """Entries newest first, with `count=N` (default 10) and `find[field][$op]=v` filters."""
    return _entries_reply(request, access, _find(request),
                          parse_count(request.query_params.get("count")))


@router.get("/api/v1/entries/current", response_model=None, responses=_ENTRIES_READ)
@router.get("/api/v1/entries/current.json", response_model=None, include_in_schema=False)
async def get_current(request: Request, access: NightscoutAccess) -> Response:
    """The newest sgv entry, as a one-element array (empty when there is none)."""
    return _entries_reply(request, access, [*_find(request), ("type", "=", "sgv")], 1)


@router.get("/api/v1/entries/{spec}", response_model=None,
            responses={**_ENTRIES_READ, 404: {"description": "Not an entry type"}})
async def get_entries_of_type(spec: str, request: Request, access: NightscoutAccess) -> Response:
    """Entries of one type (`sgv`, `mbg`, `cal`, with or without `.json`), newest first."""
    name = spec.removesuffix(".json")
    if name not in ENTRY_TYPES:
        raise HTTPException(404, f"There is no entries route {spec!r}; use current, sgv, mbg "
                                 "or cal.")
    return _entries_reply(request, access, [*_find(request), ("type", "=", name)],
                          parse_count(request.query_params.get("count")))


async def _read_items(request: Request, store: Store, topic: str, tenant: str) -> list[Any]:
    """The JSON body as a list of items (one object becomes a list of one); 400/413 if bad."""
    try:
        return await read_upload(request)
    except UploadNotJSON as exc:
        await run_in_threadpool(store.dead_letter, topic, exc.reason, exc.body, tenant_id=tenant)
        raise HTTPException(400, f"The upload is not valid JSON ({exc.detail}).") from None


def _dead_letters(store: Store, topic: str, tenant: str, rejected: list[tuple[str, bytes]]):
    for reason, payload in rejected:
        store.dead_letter(topic, reason, payload, tenant_id=tenant)


@router.post("/api/v1/entries", response_model=None, responses=_upload_responses(
    EntryPublic, {HEADER_NEAR_DUPLICATES: {
        "description": "sgv entries with the value of a stored one less than a minute away, "
                       "not stored", "schema": {"type": "integer"}}}))
@router.post("/api/v1/entries.json", response_model=None, include_in_schema=False)
async def post_entries(tenant: str, request: Request, access: NightscoutWriter,
                       store: StoreDep) -> JSONResponse:
    """Store one entry or an array of entries; answer with the stored ones."""
    topic = f"http:/t/{tenant}/api/v1/entries"
    items = await _read_items(request, store, topic, tenant)

    def work() -> fmt.UploadResult:
        result = fmt.upload_entries(access.data, items, int(time.time() * 1000))
        _dead_letters(store, topic, tenant, result.rejected)
        return result

    result = await run_in_threadpool(work)
    stored = [public_entry(d) for d in result.stored]
    events = request.app.state.events
    for doc in stored:
        if doc["type"] == "sgv":
            events.publish(tenant, "entry", doc)
    _LOGGER.info("nightscout upload to %s: %d stored, %d duplicates, %d near-duplicates, "
                 "%d rejected", tenant, len(stored), result.duplicates, result.near_duplicates,
                 len(result.rejected))
    # 200 even when items were rejected: they are kept as dead letters, and an error status
    # would make uploaders such as xDrip+ retry the same bad item forever.
    return JSONResponse(stored, headers={
        HEADER_STORED: str(len(stored)),
        HEADER_DUPLICATES: str(result.duplicates),
        HEADER_NEAR_DUPLICATES: str(result.near_duplicates),
        HEADER_REJECTED: str(len(result.rejected)),
    })


# -- treatments, device status, profiles ---------------------------------------------------------


async def _store_documents(request: Request, store: Store, tenant: str, collection: str,
                           validate: Callable[[Any, int], Any],
                           add: Callable[[list], tuple[list[dict], int]]) -> JSONResponse:
    """Validate each uploaded document, dead-letter the bad ones, store the rest."""
    topic = f"http:/t/{tenant}/api/v1/{collection}"
    items = await _read_items(request, store, topic, tenant)

    def work():
        now_ms = int(time.time() * 1000)
        valid, rejected = [], []
        for index, item in enumerate(items):
            try:
                valid.append(validate(item, now_ms))
            except fmt.DocumentError as exc:
                rejected.append((f"{collection} {index}: {exc}", fmt.json_bytes(item)))
        _dead_letters(store, topic, tenant, rejected)
        stored, dupes = add(valid) if valid else ([], 0)
        return stored, dupes, len(rejected)

    stored, dupes, rejected = await run_in_threadpool(work)
    return JSONResponse([fmt.public_doc(d) for d in stored], headers={
        HEADER_STORED: str(len(stored)), HEADER_DUPLICATES: str(dupes),
        HEADER_REJECTED: str(rejected)})


@router.get("/api/v1/treatments", response_model=list[DocumentPublic])
@router.get("/api/v1/treatments.json", response_model=list[DocumentPublic],
            include_in_schema=False)
def get_treatments(request: Request, access: NightscoutAccess) -> list[dict]:
    """Treatments newest first: `count=N` (default 10), `find[created_at][$gte]=ISO`."""
    params = request.query_params
    try:
        since = fmt.parse_created_since(params.multi_items())
    except fmt.QueryError as exc:
        raise HTTPException(400, str(exc)) from None
    docs = access.data.treatments(count=parse_count(params.get("count")), since_ms=since)
    return [fmt.public_doc(d) for d in docs]


@router.post("/api/v1/treatments", response_model=None,
             responses=_upload_responses(DocumentPublic))
@router.post("/api/v1/treatments.json", response_model=None, include_in_schema=False)
async def post_treatments(tenant: str, request: Request, access: NightscoutWriter,
                          store: StoreDep) -> JSONResponse:
    """Store treatments, once each by identifier, else by (created_at, eventType)."""
    return await _store_documents(request, store, tenant, "treatments", fmt.validate_treatment,
                                  access.data.add_treatments)


def _no_find(request: Request, collection: str) -> None:
    for key, _ in request.query_params.multi_items():
        if key.startswith("find["):
            raise HTTPException(400, f"{collection} cannot be filtered with {key}; only "
                                     "count=N is supported.")


@router.get("/api/v1/devicestatus", response_model=list[DocumentPublic])
@router.get("/api/v1/devicestatus.json", response_model=list[DocumentPublic],
            include_in_schema=False)
def get_devicestatus(request: Request, access: NightscoutAccess) -> list[dict]:
    """Device statuses (uploader battery, pump, loop) newest first, `count=N` (default 10)."""
    _no_find(request, "devicestatus")
    docs = access.data.devicestatus(count=parse_count(request.query_params.get("count")))
    return [fmt.public_doc(d) for d in docs]


@router.post("/api/v1/devicestatus", response_model=None,
             responses=_upload_responses(DocumentPublic))
@router.post("/api/v1/devicestatus.json", response_model=None, include_in_schema=False)
async def post_devicestatus(tenant: str, request: Request, access: NightscoutWriter,
                            store: StoreDep) -> JSONResponse:
    """Store one device status or an array of them."""
    return await _store_documents(request, store, tenant, "devicestatus",
                                  fmt.validate_devicestatus,
                                  lambda docs: (access.data.add_devicestatus(docs), 0))


@router.get("/api/v1/profile", response_model=list[DocumentPublic])
@router.get("/api/v1/profile.json", response_model=list[DocumentPublic],
            include_in_schema=False)
def get_profiles(request: Request, access: NightscoutAccess) -> list[dict]:
    """Profiles, the newest start first, `count=N` (default 10)."""
    _no_find(request, "profile")
    return access.data.profiles(count=parse_count(request.query_params.get("count")))


@router.get("/api/v1/profile/current", response_model=DocumentPublic,
            responses={404: {"description": "No profile yet"}})
def get_current_profile(access: NightscoutAccess) -> dict:
    """The profile with the newest start."""
    found = access.data.profiles(count=1)
    if not found:
        raise HTTPException(404, "This site has no profile yet.")
    return found[0]


@router.post("/api/v1/profile", response_model=None, responses=_upload_responses(DocumentPublic))
@router.post("/api/v1/profile.json", response_model=None, include_in_schema=False)
async def post_profile(tenant: str, request: Request, access: NightscoutWriter,
                       store: StoreDep) -> JSONResponse:
    """Store a profile (or an array of them); `startDate` says from when it applies."""

    def add(docs: list[tuple[dict, int]]) -> tuple[list[dict], int]:
        return [access.data.add_profile(doc, start) for doc, start in docs], 0

    return await _store_documents(request, store, tenant, "profile", fmt.validate_profile, add)


# -- status, verifyauth, pebble -------------------------------------------------------------------


def _units(tenant: dict) -> str:
    """Nightscout's name of the tenant's display units: "mmol" or "mg/dl"."""
    return "mmol" if str(tenant.get("units") or "").lower().startswith("mmol") else "mg/dl"


def _base_url(settings, tenant_id: str) -> str:
    base = settings.public_base_url.rstrip("/")
    domain = settings.tenant_domain.strip(".")
    if domain:
        scheme = base.split("://", 1)[0] if "://" in base else "https"
        return f"{scheme}://{tenant_id}.{domain}"
    return f"{base}/t/{tenant_id}"


@router.get("/api/v1/status.json", response_model=StatusPublic)
@router.get("/api/v1/status", response_model=StatusPublic, include_in_schema=False)
def status(tenant: str, access: NightscoutAccess, store: StoreDep,
           settings: SettingsDep) -> dict:
    """Server status and the site's settings (units, thresholds), as Nightscout reports them."""
    info = store.get_tenant(tenant)
    now = datetime.now(tz=UTC)
    now_ms = int(now.timestamp() * 1000)
    enable = ["careportal", "delta", "direction", "upbat", "errorcodes", "devicestatus",
              "profile", "treatments"]
    return {
        "status": "ok",
        "name": info["name"],
        "version": __version__,
        "serverTime": fmt.date_string(now_ms),
        "serverTimeEpoch": now_ms,
        "apiEnabled": True,
        "careportalEnabled": True,
        "boluscalcEnabled": False,
        "settings": {
            "units": _units(info),
            "timeFormat": 24,
            "nightMode": False,
            "editMode": False,
            "showRawbg": "never",
            "customTitle": info["name"],
            "theme": "default",
            "alarmUrgentHigh": True,
            "alarmHigh": True,
            "alarmLow": True,
            "alarmUrgentLow": True,
            "alarmTimeagoWarn": True,
            "alarmTimeagoWarnMins": units.STALE_MIN,
            "alarmTimeagoUrgent": True,
            "alarmTimeagoUrgentMins": units.URGENT_STALE_MIN,
            "language": "en",
            "showPlugins": "delta direction upbat",
            "focusHours": 3,
            "heartbeat": 60,
            "baseURL": _base_url(settings, tenant),
            "authDefaultRoles": "readable" if info["public_read"] else "denied",
            "thresholds": dict(THRESHOLDS),
            "DEFAULT_FEATURES": ["bgnow", "delta", "direction", "timeago", "devicestatus",
                                 "upbat", "errorcodes", "profile"],
            "alarmTypes": ["simple"],
            "enable": enable,
        },
        "extendedSettings": {},
        "authorized": None if access.role == "public" else {
            "role": access.role, "canRead": True, "canWrite": access.can_write},
    }


@router.get("/api/v1/verifyauth", response_model=VerifyAuthPublic)
async def verifyauth(tenant: str, request: Request, store: StoreDep, settings: SettingsDep,
                     creds: BearerDep) -> dict:
    """What the request's credential may do here; message UNAUTHORIZED (200) when nothing."""
    try:
        access = await nightscout_access(tenant, request, store, settings, creds)
    except HTTPException as exc:
        if exc.status_code != 401:
            raise
        access = None
    found = access is not None and access.role != "public"
    return {"status": 200, "message": {
        "canRead": access is not None,
        "canWrite": access is not None and access.can_write,
        "isAdmin": access is not None and access.role in ("uploader", "admin"),
        "message": "OK" if found else "UNAUTHORIZED",
        "rolefound": "FOUND" if found else "NOTFOUND",
        "permissions": "ROLE" if found else "DEFAULT",
    }}


@router.get("/pebble", response_model=PebblePublic, response_model_exclude_unset=True)
def pebble(tenant: str, access: NightscoutAccess, store: StoreDep,
           count: int = Query(1, ge=1, le=1000, description="how many readings"),
           units_: str | None = Query(None, alias="units", description="mmol or mg/dl")) -> dict:
    """The newest readings for watch faces (Nightscout's /pebble): sgv as text, trend, delta."""
    mmol = (units_ or _units(store.get_tenant(tenant))) == "mmol"
    sgvs = access.data.entries(count=max(count, 12), type_="sgv")
    statuses = access.data.devicestatus(count=10)
    return fmt.pebble(sgvs, statuses, count=count, mmol=mmol, now_ms=int(time.time() * 1000))
