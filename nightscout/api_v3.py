"""Nightscout API v3 as AndroidAPS (its nssdk) uses it: status, version, lastModified, and per
collection create, read, search, update, patch, delete (soft by default) and history.

Answers are `{status, result}` envelopes; create answers 201 for a new document and 200 with
`isDeduplication` when it matched a stored one (identifier, the collection's fallback keys, or
an entry's near-duplicate), naming the identifier the document answers to. History pages
carry `ETag: W/"<srvModified>"`, the cursor AndroidAPS keeps. Authentication is a Bearer JWT
from /api/v2/authorization/request (or, leniently, the access token itself).
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from nightlink.nightscout import documents, times
from nightlink.nightscout.api_v1 import API_VERSION
from nightlink.nightscout.http import (
    NSError,
    Served,
    json_response,
    need,
    need_sync,
    read_json,
    resolve,
    state_of,
)
from nightlink.nightscout.query import QueryError, parse_v3
from nightlink.nightscout.site import Site
from nightlink.nightscout.store import Row

API3_VERSION = "3.0.3-alpha"
MAX_LIMIT = 1000
IMMUTABLE = ("date", "utcOffset", "eventType", "device", "app")
_SORTS = {"identifier": "identifier", "date": "date_ms", "created_at": "date_ms",
          "mills": "date_ms", "startDate": "date_ms", "srvModified": "srv_modified",
          "srvCreated": "srv_created"}
_SYSTEM_FIELDS = ("identifier", "srvCreated", "created_at", "date")

router = APIRouter(tags=["nightscout v3"])
_JSON = {"content": {"application/json": {}}}
_ERRORS = {400: {"description": "A bad parameter or body", **_JSON},
           401: {"description": "Missing or bad access token or JWT", **_JSON},
           403: {"description": "The token lacks the permission", **_JSON},
           404: {"description": "No such collection or document", **_JSON}}


def _location(path: str) -> str:
    """A Location header's path: identifiers are the client's text (any Unicode), and a
    header carries ASCII only."""
    return quote(path, safe="/")


def install(app: FastAPI) -> None:
    app.include_router(router, prefix="/api/v3")


class _V3Error(NSError):
    def response(self):
        body: dict[str, Any] = {"status": self.status}
        if self.message:
            body["message"] = self.message
        return json_response(body, self.status, self.headers)


def fail(status: int, message: str | None = None) -> _V3Error:
    return _V3Error(status, message or "")


def _collection(col: str) -> str:
    if col not in documents.V3_COLLECTIONS:
        raise fail(404, "Bad operation or collection")
    return col


def _perm(col: str, op: str) -> str:
    if col == documents.SETTINGS and op == "read":
        return "api:settings:admin"
    return f"api:{col}:{op}"


def _refused(exc: NSError) -> _V3Error:
    """A refusal of the Nightscout core (401, 403, 404, 429) in API v3's shape."""
    return fail(exc.status, exc.description or exc.message)


async def _need(request: Request, col: str, op: str):
    try:
        return await need(request, _perm(col, op), v3=True)
    except NSError as exc:
        raise _refused(exc) from None


def _now() -> int:
    return int(time.time() * 1000)


def _project(doc: dict, fields: str | None) -> dict:
    if not fields or fields == "_all":
        return doc
    names = {f.strip() for f in fields.split(",") if f.strip()}
    return {k: v for k, v in doc.items() if k in names}


def _int_param(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise fail(400, f"Parameter {name} out of tolerance") from None
    if not lo <= value <= hi:
        raise fail(400, f"Parameter {name} out of tolerance")
    return value


# -- server-wide ---------------------------------------------------------------------------------


def _version_result(request: Request) -> dict:
    return {"version": API_VERSION, "apiVersion": API3_VERSION, "srvDate": _now(),
            "storage": {"storage": request.app.state.nightscout.directory.storage_name,
                        "version": request.app.state.nightscout.directory.version}}


@router.get("/version", responses={200: {"description": "Versions", **_JSON}},
            summary="Versions.")
async def version(request: Request) -> Response:
    """The server and API versions (no credentials needed)."""
    return json_response({"status": 200, "result": _version_result(request)})


@router.get("/status", responses={200: {"description": "Versions and permissions", **_JSON},
                                  **_ERRORS}, summary="Status and permissions.")
async def status(request: Request) -> Response:
    """Versions and, per collection, what the token may do (c, r, u, d)."""
    try:
        _, grant = await resolve(request, v3=True)
    except NSError as exc:
        raise _refused(exc) from None
    perms = {}
    for col in documents.V3_COLLECTIONS:
        letters = "".join(letter for letter, op in (("c", "create"), ("r", "read"),
                                                    ("u", "update"), ("d", "delete"))
                          if grant.allows(f"api:{col}:{op}"))
        if letters:
            perms[col] = letters
    return json_response({"status": 200, "result": {**_version_result(request),
                                                    "apiPermissions": perms}})


@router.get("/lastModified", responses={200: {"description": "Newest change per collection",
            **_JSON}, **_ERRORS}, summary="Last modification per collection.")
async def last_modified(request: Request) -> Response:
    """{srvDate, collections: {name: newest srvModified}} for what the token may read."""
    try:
        site, grant = await resolve(request, v3=True)
    except NSError as exc:
        raise _refused(exc) from None

    def work() -> dict:
        out = {}
        for col in documents.V3_COLLECTIONS:
            if grant.allows(_perm(col, "read")):
                value = site.docs.last_modified(col)
                if value:
                    out[col] = value
        if "food" in out:
            out["foods"] = out["food"]  # AndroidAPS reads this spelling
        return out

    collections = await run_in_threadpool(work)
    return json_response({"status": 200, "result": {"srvDate": _now(),
                                                    "collections": collections}})


# -- per collection ------------------------------------------------------------------------------


@router.get("/{col}", responses={200: {"description": "Matching documents", **_JSON},
                                 **_ERRORS}, summary="Search a collection.")
async def search(col: str, request: Request) -> Response:
    """Filters `field$op=value` (eq ne gt gte lt lte in nin re), `sort` or `sort$desc`,
    `limit` (1..1000), `skip`, `fields`."""
    col = _collection(col)
    site, _ = await _need(request, col, "read")
    params = request.query_params
    if "sort" in params and "sort$desc" in params:
        raise fail(400, "Parameters sort and sort_desc cannot be combined")
    field = params.get("sort$desc") or params.get("sort") or "identifier"
    order = _SORTS.get(field)
    if order is None:
        raise fail(400, f"Sorting by {field} is not supported; sort by "
                        f"{', '.join(_SORTS)}.")
    limit = _int_param(request, "limit", MAX_LIMIT, 1, MAX_LIMIT)
    skip = _int_param(request, "skip", 0, 0, 10**9)
    try:
        query = await run_in_threadpool(parse_v3, col, params.multi_items())
    except QueryError as exc:
        raise fail(400, str(exc)) from None
    try:
        rows = await run_in_threadpool(site.docs.find, col, query, count=limit, order=order,
                                       ascending="sort$desc" not in params, skip=skip)
    except QueryError as exc:  # SlowQuery: a pattern too slow on the stored documents
        raise fail(400, str(exc)) from None
    fields = params.get("fields")
    return json_response({"status": 200, "result": [_project(r.v3(), fields) for r in rows]})


@router.post("/{col}", status_code=201, responses={
    201: {"description": "Created: {status, identifier, lastModified}", **_JSON},
    200: {"description": "Deduplicated: {status, identifier, isDeduplication, lastModified}",
          **_JSON}, **_ERRORS},
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"type": "object"}}}}}, summary="Create a document.")
async def create(col: str, request: Request) -> Response:
    """Store one document; a document matching a stored one replaces it (deduplication)."""
    col = _collection(col)
    site, grant = await _need(request, col, "create")
    body = await _body(request)
    _require_time(col, body)
    now = _now()
    try:
        n = documents.normalize(col, body, now, v3=True)
    except documents.DocumentError as exc:
        raise fail(400, str(exc)) from None

    def work():
        found, _ = site.docs.match(n)
        if found is not None and not grant.allows(_perm(col, "update")):
            raise fail(403, f"Missing permission {_perm(col, 'update')}")
        return site.docs.put([n], mode="replace", subject=grant.subject)[0]

    outcome = await run_in_threadpool(work)
    row = outcome.row
    headers = {"Last-Modified": times.http_date(row.srv_modified),
               "Location": _location(request.url.path.rstrip("/") + "/" + row.identifier)}
    if outcome.action == "created":
        return json_response({"status": 201, "identifier": row.identifier,
                              "lastModified": row.srv_modified}, 201, headers)
    body_out = {"status": 200, "identifier": row.identifier, "isDeduplication": True,
                "lastModified": row.srv_modified}
    if outcome.previous_identifier:
        body_out["deduplicatedIdentifier"] = outcome.previous_identifier
    elif n.identifier and n.identifier != row.identifier:
        body_out["deduplicatedIdentifier"] = n.identifier
    return json_response(body_out, 200, headers)


async def _body(request: Request) -> dict:
    try:
        body = await read_json(request)
    except NSError as exc:
        raise fail(exc.status, "Bad or missing request body") from None
    if not isinstance(body, dict) or not body:
        raise fail(400, "Bad or missing request body")
    return body


def _require_time(col: str, body: dict) -> None:
    keys = {documents.ENTRIES: ("date", "dateString", "created_at")}.get(col, ("date", "created_at",
                                                                         "timestamp", "mills"))
    if col != documents.SETTINGS and not any(body.get(k) not in (None, "") for k in keys):
        raise fail(400, "Bad or missing date field")


@router.get("/{col}/history", responses={200: {"description": "Changed documents", **_JSON},
            **_ERRORS}, summary="Changes since the Last-Modified header.")
async def history_header(col: str, request: Request) -> Response:
    """Documents changed at or after the request's Last-Modified header, deletions too."""
    await _need(request, _collection(col), "read")
    since = times.parse_http_date(request.headers.get("last-modified"))
    if since is None:
        raise fail(400, "Bad or missing Last-Modified header/parameter")
    return await _history(col, request, since, inclusive=True)


@router.get("/{col}/history/{since}", responses={200: {"description": "Changed documents",
            **_JSON}, **_ERRORS}, summary="Changes after a time.")
async def history(col: str, since: str, request: Request) -> Response:
    """Documents changed after `since` (ms), oldest change first, deletions with isValid
    false; ETag W/"<newest srvModified>" for the next call."""
    try:
        since_ms = 0 if since.strip() == "0" else times.parse_ms(since, seconds_ok=True)
    except times.TimeError:
        raise fail(400, "Bad or missing Last-Modified header/parameter") from None
    return await _history(col, request, since_ms, inclusive=False)


def _history_opening(request: Request, col: str) -> tuple[Site, int | None]:
    """The credential and the collection's newest change, in one worker thread."""
    try:
        site, _ = need_sync(request, _perm(col, "read"), v3=True)
    except NSError as exc:
        raise _refused(exc) from None
    return site, site.docs.last_modified(col)


async def _history(col: str, request: Request, since: int, *, inclusive: bool) -> Response:
    col = _collection(col)
    site, changed = await run_in_threadpool(_history_opening, request, col)
    limit = _int_param(request, "limit", MAX_LIMIT, 1, MAX_LIMIT)
    fields = request.query_params.get("fields")
    # A page changes only when the collection does: keep it encoded until then.
    state = state_of(request)
    key = (site.key, "v3-history", col, since, inclusive, limit, fields)
    reply = state.replies.get(key, changed)
    if reply is None:
        rows = await run_in_threadpool(site.docs.history, col, since, inclusive=inclusive,
                                       limit=limit)
        headers = {}
        if rows:
            newest = max(r.srv_modified for r in rows)
            headers = {"ETag": f'W/"{newest}"', "Last-Modified": times.http_date(newest)}
        body = json.dumps({"status": 200, "result": [_project(r.v3(), fields) for r in rows]},
                          ensure_ascii=False, separators=(",", ":")).encode()
        reply = (body, headers)
        state.replies.put(key, changed, reply)
    body, headers = reply
    if not inclusive:  # the header form depends on a request header the URL does not show
        state.replies.remember(request, Served(site.key, col, _perm(col, "read"), True,
                                               changed, None, body, "application/json",
                                               tuple(headers.items())))
    return Response(body, media_type="application/json", headers=headers)


async def _found(request: Request, col: str, identifier: str, op: str):
    col = _collection(col)
    site, grant = await _need(request, col, op)
    row = await run_in_threadpool(site.docs.get, col, identifier)
    return col, site, grant, row


@router.get("/{col}/{identifier}", responses={200: {"description": "The document", **_JSON},
            304: {"description": "Not modified"}, 410: {"description": "Deleted", **_JSON},
            **_ERRORS}, summary="Read a document.")
async def read(col: str, identifier: str, request: Request) -> Response:
    """One document; 410 when deleted; 304 with If-Modified-Since."""
    col, site, _, row = await _found(request, col, identifier, "read")
    if row is None:
        raise fail(404)
    if not row.valid:
        raise fail(410)
    ims = times.parse_http_date(request.headers.get("if-modified-since"))
    if ims is not None and row.srv_modified // 1000 * 1000 <= ims:
        return Response(status_code=304)
    return json_response({"status": 200, "result": _project(
        row.v3(), request.query_params.get("fields"))},
        headers={"Last-Modified": times.http_date(row.srv_modified)})


def _unmodified_since(request: Request, row: Row) -> None:
    ius = times.parse_http_date(request.headers.get("if-unmodified-since"))
    if ius is not None and row.srv_modified // 1000 * 1000 > ius:
        raise fail(412)


def _immutable(row: Row, body: dict) -> None:
    for key in IMMUTABLE:
        if key not in body or key not in row.doc:
            continue
        old, new = row.doc[key], body[key]
        if key == "date":
            old, new = times.try_ms(old), times.try_ms(new)
        if old != new:
            raise fail(400, f"Field {key} cannot be modified by the client")


def _same_time(row: Row, n: documents.Normalized) -> None:
    """An entry's date is immutable in API v3 however it is written: `dateString` without
    `date` moves it as surely as `date` does, and its (type, date) key with it. Other
    documents are checked on `date` alone (`_immutable`), as cgm-remote-monitor does: a
    treatment's time comes from `created_at` before `date`, and re-sending it unchanged with
    a `date` a few milliseconds off must not be refused (a review found it)."""
    if n.coll == documents.ENTRIES and n.date_ms != row.date_ms:
        raise fail(400, "Field date cannot be modified by the client")


async def _update(site, row: Row, n: documents.Normalized, **kw) -> Row:
    try:
        return await run_in_threadpool(site.docs.update, row, n, **kw)
    except documents.DocumentError as exc:
        raise fail(400, str(exc)) from None


@router.put("/{col}/{identifier}", responses={200: {"description": "Replaced", **_JSON},
            201: {"description": "Created", **_JSON}, 410: {"description": "Deleted", **_JSON},
            412: {"description": "Changed since If-Unmodified-Since", **_JSON}, **_ERRORS},
            openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                "schema": {"type": "object"}}}}}, summary="Replace a document.")
async def update(col: str, identifier: str, request: Request) -> Response:
    """Replace a document (or create it under this identifier)."""
    col, site, grant, row = await _found(request, col, identifier, "update")
    body = await _body(request)
    body["identifier"] = identifier
    if row is None:
        if not grant.allows(_perm(col, "create")):
            raise fail(403, f"Missing permission {_perm(col, 'create')}")
        _require_time(col, body)
    elif not row.valid:
        raise fail(410)
    else:
        _unmodified_since(request, row)
        _immutable(row, body)
    try:
        n = documents.normalize(col, body, _now(), v3=True)
    except documents.DocumentError as exc:
        raise fail(400, str(exc)) from None
    if row is None:
        outcome = await run_in_threadpool(site.docs.replace, col, identifier, n,
                                          subject=grant.subject)
        return json_response({"status": 201, "identifier": outcome.row.identifier,
                              "lastModified": outcome.row.srv_modified}, 201,
                             {"Location": _location(request.url.path)})
    _same_time(row, n)
    new = await _update(site, row, n)
    return json_response({"status": 200, "lastModified": new.srv_modified},
                         headers={"Last-Modified": times.http_date(new.srv_modified)})


@router.patch("/{col}/{identifier}", responses={200: {"description": "Patched", **_JSON},
              410: {"description": "Deleted", **_JSON}, 412: {"description": "Changed since "
              "If-Unmodified-Since", **_JSON}, **_ERRORS},
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                  "schema": {"type": "object"}}}}}, summary="Change some fields.")
async def patch(col: str, identifier: str, request: Request) -> Response:
    """Set the body's fields on a document."""
    col, site, grant, row = await _found(request, col, identifier, "update")
    body = await _body(request)
    if row is None:
        raise fail(404)
    if not row.valid:
        raise fail(410)
    _unmodified_since(request, row)
    _immutable(row, body)
    fields = {k: v for k, v in body.items() if k not in ("identifier", "_id", "srvCreated",
                                                         "srvModified", "subject")}
    try:
        n = documents.normalize(col, {**row.doc, **fields}, _now(), v3=True)
    except documents.DocumentError as exc:
        raise fail(400, str(exc)) from None
    _same_time(row, n)
    new = await _update(site, row, n, modified_by=grant.subject)
    return json_response({"status": 200},
                         headers={"Last-Modified": times.http_date(new.srv_modified)})


@router.delete("/{col}/{identifier}", responses={200: {"description": "Deleted", **_JSON},
               **_ERRORS}, summary="Delete a document.")
async def delete(col: str, identifier: str, request: Request) -> Response:
    """Soft-delete a document (history reports it with isValid false), or `?permanent=true`."""
    col, site, grant, row = await _found(request, col, identifier, "delete")
    if row is None:
        raise fail(404)
    permanent = request.query_params.get("permanent") == "true"
    await run_in_threadpool(site.docs.delete, [row], permanent=permanent,
                            modified_by=grant.subject)
    return json_response({"status": 200})
