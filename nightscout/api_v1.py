"""Nightscout API v1 (and v2's copy of it): entries, treatments, device status, profiles, food
and activity, status.json, verifyauth, experiments/test and /pebble, as cgm-remote-monitor
serves them (docs/nightscout.md lists where Nightlink answers differently, and why).

Every collection: GET with the `find` grammar, `count` and Nightscout's 4-day default window;
`/{collection}/{_id}`; POST of one document or an array (answered with one document per item,
in order, as Loop maps ids back by position); PUT (upsert by `_id`); DELETE by id or by `find`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from nightlink.cells import spreadsheet_text
from nightlink.nightscout import documents, properties, times
from nightlink.nightscout.http import (
    JSON_TYPE,
    NSError,
    Served,
    as_items,
    bad_request,
    json_response,
    need,
    need_sync,
    not_found,
    read_json,
    resolve,
    split_ext,
    state_of,
    wants,
)
from nightlink.nightscout.query import (
    Query,
    QueryError,
    SlowQuery,
    parse_count,
    parse_find,
    slice_conditions,
)
from nightlink.nightscout.site import Site
from nightlink.shared import units

API_VERSION = "15.0.7"  # the cgm-remote-monitor release whose API this follows
MAX_COUNT = 100_000
MAX_ITEMS = 20_000  # documents in one upload
HEADER_STORED = "X-Nightlink-Stored"
HEADER_DUPLICATES = "X-Nightlink-Duplicates"
HEADER_NEAR_DUPLICATES = "X-Nightlink-Near-Duplicates"
HEADER_REJECTED = "X-Nightlink-Rejected"
_IGNORED_PARAMS = {"token", "secret", "rr", "now", "_"}
# (default count without find, with find, default window, mode of a matching upload)
_RULES = {
    documents.ENTRIES: (10, 10, True, "merge"),
    documents.TREATMENTS: (100, 1000, True, "replace"),
    documents.DEVICESTATUS: (10, 10, True, "replace"),
    documents.PROFILE: (10, 10, False, "replace"),
    documents.FOOD: (None, None, False, "replace"),
    documents.ACTIVITY: (None, None, True, "replace"),
}
_ENTRY_FORMATS = ("txt", "tsv", "csv", "json")  # Nightscout's res.format order for */*

_DOC_LIST = {"application/json": {"schema": {"type": "array", "items": {"type": "object"}}}}
_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "oneOf": [{"type": "object"}, {"type": "array", "items": {"type": "object"}}]}}}}}
_ERRORS = {
    400: {"description": "A malformed query or body", "content": {"application/json": {}}},
    401: {"description": "No credential allows this", "content": {"application/json": {}}},
    404: {"description": "No such site or document", "content": {"application/json": {}}},
    413: {"description": "The body is too large", "content": {"application/json": {}}},
    415: {"description": "A Content-Encoding other than gzip", "content": {"application/json": {}}},
    429: {"description": "Too many failed credentials", "content": {"application/json": {}}},
}
_READ = {200: {"description": "Documents, newest first", "content": _DOC_LIST}, **_ERRORS,
         304: {"description": "Nothing changed since If-Modified-Since"}}
_WRITE = {200: {"description": "One document per uploaded item, in order", "content": _DOC_LIST},
          **_ERRORS}
_PUT = {200: {"description": "The stored document (an array for an array)", "content": {
    "application/json": {"schema": {"oneOf": [{"type": "object"}, {"type": "array", "items": {
        "type": "object"}}]}}}}, **_ERRORS}
_DELETED = {200: {"description": "How many documents were deleted",
                  "content": {"application/json": {}}}, **_ERRORS}

router = APIRouter(tags=["nightscout v1"])


def install(app: FastAPI) -> None:
    """Serve v1 at /api/v1 (the app's edge middleware maps v2's copy of v1 and /t/{site}/…
    onto these routes)."""
    app.include_router(router, prefix="/api/v1")
    app.include_router(_root)


def _now() -> int:
    return int(time.time() * 1000)


async def _query(request: Request, coll: str) -> Query:
    """The request's `find`, parsed off the event loop: its patterns are compiled, which
    takes up to some tens of milliseconds within the pattern budget."""
    return await run_in_threadpool(_parsed, request, coll)


def _parsed(request: Request, coll: str) -> Query:
    try:
        return parse_find(coll, request.query_params.multi_items())
    except QueryError as exc:
        raise bad_request(str(exc)) from None


def _opening(request: Request, coll: str, *,
             find: bool = True) -> tuple[Site, int | None, Response | None, Query | None]:
    """What a collection read does before its cache, in one worker thread: the credential,
    the collection's newest change (a 304 for If-Modified-Since), the parsed `find`."""
    site, _ = need_sync(request, f"api:{coll}:read")
    changed, not_modified = _not_modified(request, site, coll)
    parsed = _parsed(request, coll) if find and not_modified is None else None
    return site, changed, not_modified, parsed


def _count(request: Request, coll: str, query: Query) -> int:
    without, with_find, _, _ = _RULES[coll]
    default = with_find if query.where.parts else without
    return parse_count(request.query_params.get("count"), default, MAX_COUNT)


def _not_modified(request: Request, site: Site, coll: str) -> tuple[int | None, Response | None]:
    changed = site.docs.last_modified(coll)
    if changed is None:
        return None, None
    ims = times.parse_http_date(request.headers.get("if-modified-since"))
    if ims is not None and changed // 1000 * 1000 <= ims:
        return changed, Response(status_code=304)
    return changed, None


def _cache_key(request: Request, site: Site, name: str, query: Query | None = None) -> tuple:
    """What a reply depends on besides the collection's changes: the parameters, and for a
    query without a time the 4-day default window (which moves; ten minutes are kept)."""
    params = tuple(sorted((k, v) for k, v in request.query_params.multi_items()
                          if k not in _IGNORED_PARAMS))
    timeless = query is None or not (query.hints.names_time or query.hints.names_id)
    return (site.key, name, params, _now() // 600_000 if timeless else 0)


Render = Callable[[Request, list[dict]], tuple[bytes, str]]


def _json(request: Request, docs: list[dict]) -> tuple[bytes, str]:
    return json.dumps(docs, ensure_ascii=False, separators=(",", ":")).encode(), JSON_TYPE


async def _list(request: Request, coll: str, *, name: str, window: bool,
                extra: Callable[[Query], None] | None = None, render: Render = _json,
                count_default: int | None = None) -> Response:
    """A collection read: permission, cache, query, count, window, If-Modified-Since.

    Replies are kept, encoded, until the collection changes (clocks and apps poll the same
    few queries), and for a minute at most (the default window moves)."""
    site, changed, not_modified, query = await run_in_threadpool(_opening, request, coll)
    if not_modified is not None:
        return not_modified
    headers = {"Last-Modified": times.last_modified_header(changed)} if changed else {}
    if render is not _json:
        headers["Vary"] = "Accept"  # the format follows Accept: caches must keep them apart
    state = state_of(request)
    if extra is not None:
        extra(query)
    key = (*_cache_key(request, site, name, query), request.url.path,
           request.headers.get("accept", ""))
    reply = state.replies.get(key, changed)
    if reply is None:
        async with state.replies.computing(key):  # one computes, the others wait for it
            reply = state.replies.get(key, changed)
            if reply is None:
                if window:
                    query.default_window(_now())
                count = (_count(request, coll, query) if count_default is None else
                         parse_count(request.query_params.get("count"), count_default, MAX_COUNT))
                try:
                    rows = await run_in_threadpool(site.docs.find, coll, query, count=count)
                except SlowQuery as exc:
                    raise bad_request(str(exc)) from None
                reply = render(request, [r.v1() for r in rows])
                state.replies.put(key, changed, reply)
    body, media = reply
    until = (key[3] + 1) * 600_000 if key[3] else None
    state.replies.remember(request, Served(site.key, coll, f"api:{coll}:read", False, changed,
                                           until, body, media, tuple(headers.items())))
    return Response(body, media_type=media, headers=headers)


# -- writes ---------------------------------------------------------------------------------


def _dead_letter(request: Request, site: Site, coll: str, reason: str, item: Any) -> None:
    from nightlink.nightscout import jsonsafe

    payload = jsonsafe.dumps(item).encode("utf-8")[:65536]
    state_of(request).directory.dead_letter(site.key, f"nightscout:{coll}", reason, payload)


async def upload(request: Request, site: Site, coll: str, payload: Any, *, mode: str,
                 v3: bool = False, blind: bool = False) -> tuple[list[dict], dict]:
    """Normalise and store every item; (one reply document per item in order, headers).
    `blind`: the writer may not read the collection, so it is answered with what it sent."""
    items = as_items(payload)
    if len(items) > MAX_ITEMS:
        raise bad_request(f"An upload holds at most {MAX_ITEMS} documents, not {len(items)}.")

    def work() -> tuple[list[dict], dict]:
        now = _now()
        slots: list[Any] = []
        good = []
        rejected = 0
        for index, item in enumerate(items):
            try:
                n = documents.normalize(coll, item, now, v3=v3)
                documents.name_by_app_id(n)
            except documents.DocumentError as exc:
                rejected += 1
                reason = f"{coll} item {index}: {exc}"
                _dead_letter(request, site, coll, reason, item)
                slots.append({**item, "error": str(exc)} if isinstance(item, dict)
                              else {"error": str(exc)})
                continue
            slots.append(len(good))
            good.append(n)
        outcomes = site.docs.put(good, mode=mode) if good else []
        shown = documents.shown(good, outcomes, reads=not blind)
        # put() returns the preBolus carbs after their treatment: map outcomes to items
        by_item, extra, i = [], [], 0
        for n in good:
            by_item.append(shown[i])
            i += 1
            for _ in n.extra:
                extra.append(shown[i])
                i += 1
        reply = [by_item[s] if isinstance(s, int) else s for s in slots] + extra
        counts = {a: sum(1 for o in outcomes if o.action == a) for a in
                  ("created", "updated", "unchanged", "duplicate", "near_duplicate")}
        headers = {HEADER_STORED: str(counts["created"] + counts["updated"]),
                   HEADER_DUPLICATES: str(counts["unchanged"] + counts["duplicate"]),
                   HEADER_NEAR_DUPLICATES: str(counts["near_duplicate"]),
                   HEADER_REJECTED: str(rejected)}
        return reply, headers

    return await run_in_threadpool(work)


async def _post(request: Request, coll: str) -> Response:
    site, grant = await need(request, f"api:{coll}:create")  # as Nightscout: a careportal token adds
    payload = await read_json(request)
    # What may not update the collection cannot change what is in it: a document it matches
    # (by _id, or the dedupe rules) stays as it is; what cannot read it is not shown it.
    reads = grant.allows(f"api:{coll}:read")
    reply, headers = await upload(request, site, coll, payload,
                                  mode=_RULES[coll][3] if grant.may_change(coll) else "keep",
                                  blind=not reads)
    # 200 even when items were rejected: they are dead letters now, and an error status would
    # make uploaders such as xDrip+ retry the same bad item forever.
    return json_response(reply, headers=headers)


async def _put(request: Request, coll: str) -> Response:
    site, _ = await need(request, f"api:{coll}:read,update")
    payload = await read_json(request)
    items = as_items(payload)

    def work() -> list[dict]:
        out = []
        now = _now()
        for index, item in enumerate(items):
            key = item.get("_id") if isinstance(item, dict) else None
            try:
                n = documents.normalize(coll, item, now)
            except documents.DocumentError as exc:
                _dead_letter(request, site, coll, f"{coll} item {index}: {exc}", item)
                raise bad_request(f"{coll} item {index}: {exc}") from None
            documents.name_by_app_id(n)
            if isinstance(key, str) and key.strip():
                outcome = site.docs.replace(coll, key.strip(), n)
            else:
                outcome = site.docs.put([n], mode="replace")[0]
            out.append(outcome.row.v1())
        return out

    docs = await run_in_threadpool(work)
    if isinstance(payload, list):
        return json_response(docs)
    # The saved document, as Nightscout 15 answers; ok and n as older releases did (Spike
    # checks them to tell success).
    return json_response({**docs[0], "ok": 1, "n": 1})


def _deleted(n: int) -> Response:
    return json_response({"acknowledged": True, "deletedCount": n, "n": n, "ok": 1})


async def _delete_find(request: Request, coll: str, spec: str | None = None) -> Response:
    site, _ = await need(request, f"api:{coll}:read,delete")
    query = await _query(request, coll)
    if spec is not None and spec != "*":
        if coll == documents.ENTRIES and not documents.is_hex_id(spec):
            query.set_type(spec)
        else:
            row = await run_in_threadpool(site.docs.get, coll, spec)
            n = await run_in_threadpool(site.docs.delete, [row] if row and row.valid else [])
            return _deleted(n)
    if _RULES[coll][2]:
        query.default_window(_now())

    def work() -> int:
        rows = site.docs.find(coll, query, count=MAX_COUNT)
        return site.docs.delete(rows)

    try:
        return _deleted(await run_in_threadpool(work))
    except SlowQuery as exc:  # (before anything was deleted: find() reads first)
        raise bad_request(str(exc)) from None


async def _get_one(request: Request, coll: str, key: str) -> Response:
    site, _ = await need(request, f"api:{coll}:read")
    row = await run_in_threadpool(site.docs.get, coll, key)
    if row is None or not row.valid:
        raise not_found(f"There is no {coll} document {key!r}.")
    return json_response([row.v1()])


# -- entries ----------------------------------------------------------------------------------


def _render_entries(ext: str | None) -> Render:
    def render(request: Request, docs: list[dict]) -> tuple[bytes, str]:
        fmt = wants(request, ext, _ENTRY_FORMATS, fallback="json")
        if fmt == "json":  # `mills` as Nightscout's cache serves entries (widgets read it)
            return _json(request, [{**d, "mills": d["date"]} if "date" in d else d
                                   for d in docs])
        sep = "," if fmt == "csv" else "\t"
        lines = [sep.join(_cell(d[k]) if k in d else "" for k in (
            "dateString", "date", "sgv", "direction", "device")) for d in docs]
        media = {"csv": "text/csv", "tsv": "text/tab-separated-values"}.get(fmt, "text/plain")
        return "\r\n".join(lines).encode(), f"{media}; charset=utf-8"

    return render


def _cell(value: Any) -> str:
    """A text download's cell as Nightscout writes it: JSON, a null as `""` (its replacer
    turns null into an empty string; a missing field is an empty cell). Text that starts like
    a spreadsheet formula gets an apostrophe first: the quotes do not stop a spreadsheet
    running `"=HYPERLINK(…)"`."""
    if isinstance(value, str):
        value = spreadsheet_text(value)
    return json.dumps("" if value is None else value, ensure_ascii=False)


_ENTRY_TEXT = {200: {"description": "Entries, newest first", "content": {
    **_DOC_LIST, "text/plain": {}, "text/tab-separated-values": {}, "text/csv": {}}},
    304: {"description": "Nothing changed since If-Modified-Since"}, **_ERRORS}


@router.get("/entries", responses=_ENTRY_TEXT, summary="Entries, newest first.")
@router.get("/entries.json", include_in_schema=False)
@router.get("/entries.txt", include_in_schema=False)
@router.get("/entries.tsv", include_in_schema=False)
@router.get("/entries.csv", include_in_schema=False)
async def get_entries(request: Request) -> Response:
    """Entries with `find[...]`, `count` (default 10) and the default 4-day window; JSON with
    .json or Accept: application/json, otherwise tab-separated text as Nightscout answers."""
    ext = request.url.path.rpartition(".")[2] if "." in request.url.path.rsplit("/", 1)[1] \
        else None
    return await _list(request, documents.ENTRIES, name="entries", window=True,
                       render=_render_entries(ext))


@router.get("/entries/{spec}", responses=_ENTRY_TEXT, summary="Current, one type, or one id.")
async def get_entries_spec(spec: str, request: Request) -> Response:
    """`current` (the newest sgv), a type (`sgv`, `mbg`, `cal`, …) or an entry's `_id`;
    `.json`, `.txt`, `.tsv` or `.csv` choose the format."""
    name, ext = split_ext(spec, ("json", "txt", "tsv", "csv"))
    if documents.is_hex_id(name):
        site, _ = await need(request, "api:entries:read")
        row = await run_in_threadpool(site.docs.get, documents.ENTRIES, name)
        if row is None or not row.valid:
            raise not_found(f"There is no entry {name!r}.")
        body, media = _render_entries(ext)(request, [row.v1()])
        return Response(body, media_type=media)

    kind = "sgv" if name == "current" else name

    def only(query: Query) -> None:
        query.set_type(kind)

    if name == "current":
        return await _current(request, ext)
    return await _list(request, documents.ENTRIES, name=f"entries/{kind}", window=True, extra=only,
                       render=_render_entries(ext))


_SLICE_STORAGE = (documents.ENTRIES, documents.TREATMENTS, documents.DEVICESTATUS)
_SLICE = {200: {"description": "Matching documents, newest first", "content": {
    **_DOC_LIST, "text/plain": {}, "text/tab-separated-values": {}, "text/csv": {}}}, **_ERRORS}


@router.get("/slice/{storage}/{field}", responses=_SLICE,
            summary="Documents whose field matches brace-expanded patterns.")
@router.get("/slice/{storage}/{field}/{kind}", include_in_schema=False)
@router.get("/slice/{storage}/{field}/{kind}/{prefix}", include_in_schema=False)
@router.get("/slice/{storage}/{field}/{kind}/{prefix}/{pattern}", include_in_schema=False)
async def get_slice(request: Request, storage: str, field: str, kind: str | None = None,
                    prefix: str | None = None, pattern: str | None = None) -> Response:
    """Nightscout's `/slice/{storage}/{field}/{type}/{prefix}/{regex}`: `storage` is entries,
    treatments or devicestatus (anything else reads entries), `field` must match one of the
    patterns `prefix` and `regex` brace-expand to (`2015-04/T{13..18}`), `type` (`sgv`, `mbg`,
    or `*`-like `.*` patterns aside) narrows entries; `count` (default 10), newest first, with
    no 4-day window when the field is a time. The Sisensing and Sibionics uploaders ask
    `/slice/entries/dateString/sgv/.*/.*?count=1` for the newest reading."""
    await need(request, "api:entries:read")  # as Nightscout's entries router, whatever the storage
    *parts, ext = _split_last(request, [storage, field, kind, prefix, pattern])
    storage, field, kind, prefix, pattern = parts
    coll = storage if storage in _SLICE_STORAGE else documents.ENTRIES
    return await _sliced(request, coll, field, kind, prefix, pattern, ext)


@router.get("/times/echo", include_in_schema=False)
@router.get("/times/echo/{prefix}", include_in_schema=False)
@router.get("/times/echo/{prefix}/{pattern}", include_in_schema=False)
async def get_times_echo(request: Request, prefix: str | None = None,
                         pattern: str | None = None) -> Response:
    """The patterns and query `/times/{prefix}/{regex}` would use, to check a slice."""
    await need(request, "api:entries:read")
    prefix, pattern, _ = _split_last(request, [prefix, pattern])
    try:
        conds = await run_in_threadpool(slice_conditions, "dateString", prefix, pattern)
    except QueryError as exc:
        raise bad_request(str(exc)) from None
    shown = {"$in": [c.pattern for c in conds[0].operand]}
    if len(conds) > 1:
        shown["$regex"] = conds[1].operand.pattern
    return json_response({"req": {"params": {"prefix": prefix, "regex": pattern}},
                          "pattern": shown["$in"], "query": {"find": {"dateString": shown}}})


@router.get("/times", responses=_SLICE, summary="Entries whose dateString matches patterns.")
@router.get("/times/{prefix}", include_in_schema=False)
@router.get("/times/{prefix}/{pattern}", include_in_schema=False)
async def get_times(request: Request, prefix: str | None = None,
                    pattern: str | None = None) -> Response:
    """Nightscout's `/times/{prefix}/{regex}`: a slice of entries by `dateString`
    (`/times/2015-04/T{13..18}:{00..15}` finds readings at those times of day in April 2015);
    `/times/echo/{prefix}/{regex}` shows the patterns instead."""
    await need(request, "api:entries:read")
    prefix, pattern, ext = _split_last(request, [prefix, pattern])
    return await _sliced(request, documents.ENTRIES, "dateString", None, prefix, pattern, ext)


def _split_last(request: Request, parts: list[str | None]) -> list:
    """The path's parts with the last one's format extension taken off, and that extension."""
    given = [p for p in parts if p is not None]
    ext = None
    if given:
        given[-1], ext = split_ext(given[-1], _ENTRY_FORMATS)
    return [*given, *[None] * (len(parts) - len(given)), ext]


async def _sliced(request: Request, coll: str, field: str, kind: str | None,
                  prefix: str | None, pattern: str | None, ext: str | None) -> Response:
    try:  # (off the event loop: a thousand patterns take a moment)
        conds = await run_in_threadpool(slice_conditions, field, prefix or None, pattern or None)
    except QueryError as exc:
        raise bad_request(str(exc)) from None

    def narrowed(query: Query) -> None:
        if kind:  # the path's type replaces a find[type]
            query.set_type(kind)
        for cond in conds:
            query.add(cond)

    name = "/".join(["slice", coll, field, kind or "", prefix or "", pattern or ""])
    return await _list(request, coll, name=name, window=True, extra=narrowed, count_default=10,
                       render=_render_entries(ext) if coll == documents.ENTRIES else _json)


async def _current(request: Request, ext: str | None) -> Response:
    """The newest sgv entry as a one-element array (what clocks poll), in the format the
    extension or Accept asks for, as `/entries`: tab-separated text for `*/*`."""
    site, changed, not_modified, _ = await run_in_threadpool(_opening, request,
                                                             documents.ENTRIES, find=False)
    if not_modified is not None:
        return not_modified
    state = state_of(request)
    key = (site.key, "current", ext, request.headers.get("accept", ""))
    reply = state.replies.get(key, changed)
    if reply is None:
        rows = await run_in_threadpool(site.docs.latest, documents.ENTRIES, kind="sgv")
        reply = _render_entries(ext)(request, [r.v1() for r in rows])
        state.replies.put(key, changed, reply)
    headers = {"Last-Modified": times.last_modified_header(changed)} if changed else {}
    headers["Vary"] = "Accept"
    body, media = reply
    state.replies.remember(request, Served(site.key, documents.ENTRIES, "api:entries:read", False,
                                           changed, None, body, media, tuple(headers.items())))
    return Response(body, media_type=media, headers=headers)


@router.post("/entries", responses=_WRITE, openapi_extra=_BODY, summary="Upload entries.")
@router.post("/entries.json", include_in_schema=False)
async def post_entries(request: Request) -> Response:
    """One entry or an array; each (type, date) is stored once, an sgv equal to one less than
    a minute away is a near-duplicate; the reply holds the stored document for every item."""
    return await _post(request, documents.ENTRIES)


@router.post("/entries/preview", responses=_WRITE, openapi_extra=_BODY,
             summary="Normalise entries without storing them.")
@router.post("/entries/preview.json", include_in_schema=False)
async def preview_entries(request: Request) -> Response:
    """The entries as they would be stored, without storing them."""
    await need(request, "api:entries:read,create")
    now = _now()
    out = []
    for item in as_items(await read_json(request)):
        try:
            out.append(documents.normalize(documents.ENTRIES, item, now).doc)
        except documents.DocumentError as exc:
            out.append({"error": str(exc)})
    return json_response(out)


@router.delete("/entries", responses=_DELETED, summary="Delete entries matching find.")
@router.delete("/entries.json", include_in_schema=False)
async def delete_entries(request: Request) -> Response:
    """Delete the entries `find[...]` matches (the last 4 days when it names no time)."""
    return await _delete_find(request, documents.ENTRIES)


@router.delete("/entries/{spec}", responses=_DELETED, summary="Delete an entry or a type.")
async def delete_entries_spec(spec: str, request: Request) -> Response:
    """An entry's `_id`, a type (with `find[...]`), or `*` for every type."""
    return await _delete_find(request, documents.ENTRIES, split_ext(spec)[0])


# -- treatments, device status, food, activity -------------------------------------------------


def _collection_routes(coll: str, path: str) -> None:
    """GET list, GET one, POST, PUT, DELETE one and DELETE by find for a collection."""
    window = _RULES[coll][2]

    async def get_list(request: Request) -> Response:
        return await _list(request, coll, name=coll, window=window)

    async def get_one(key: str, request: Request) -> Response:
        return await _get_one(request, coll, split_ext(key)[0])

    async def post(request: Request) -> Response:
        return await _post(request, coll)

    async def put(request: Request) -> Response:
        return await _put(request, coll)

    async def delete_one(key: str, request: Request) -> Response:
        return await _delete_find(request, coll, split_ext(key)[0])

    async def delete_find(request: Request) -> Response:
        return await _delete_find(request, coll, None)

    what = documents._WHAT[coll]
    get_list.__doc__ = f"{coll} with find[...] and count, newest first."
    for p, hidden in ((path, False), (f"{path}.json", True)):
        router.add_api_route(p, get_list, methods=["GET"], responses=_READ,
                             include_in_schema=not hidden, summary=f"Read {coll}.")
        router.add_api_route(p, post, methods=["POST"], responses=_WRITE, openapi_extra=_BODY,
                             include_in_schema=not hidden, summary=f"Upload {coll}.")
        router.add_api_route(p, put, methods=["PUT"], responses=_PUT, openapi_extra=_BODY,
                             include_in_schema=not hidden, summary=f"Upsert {what} by _id.")
        router.add_api_route(p, delete_find, methods=["DELETE"], responses=_DELETED,
                             include_in_schema=not hidden, summary=f"Delete {coll} by find.")
    router.add_api_route(f"{path}/{{key}}", get_one, methods=["GET"], responses=_READ,
                         summary=f"One {what} by _id.")
    router.add_api_route(f"{path}/{{key}}", delete_one, methods=["DELETE"],
                         responses=_DELETED, summary=f"Delete one {what} (`*`: by find).")


_collection_routes(documents.TREATMENTS, "/treatments")
_collection_routes(documents.DEVICESTATUS, "/devicestatus")
_collection_routes(documents.ACTIVITY, "/activity")


@router.get("/food/quickpicks", responses=_READ, summary="Food quick picks.")
@router.get("/food/quickpicks.json", include_in_schema=False)
async def food_quickpicks(request: Request) -> Response:
    """Food of type quickpick that is not hidden, by position."""
    site, _ = await need(request, "api:food:read")
    rows = await run_in_threadpool(site.docs.find, documents.FOOD, None, count=MAX_COUNT)
    docs = [r.v1() for r in rows if r.doc.get("type") == "quickpick"
            and str(r.doc.get("hidden", "false")).lower() == "false"]
    docs.sort(key=lambda d: d.get("position") if isinstance(d.get("position"), int | float)
              else 0)
    return json_response(docs)


@router.get("/food/regular", responses=_READ, summary="Food of type food.")
@router.get("/food/regular.json", include_in_schema=False)
async def food_regular(request: Request) -> Response:
    """Food documents of type food."""
    site, _ = await need(request, "api:food:read")
    rows = await run_in_threadpool(site.docs.find, documents.FOOD, None, count=MAX_COUNT)
    return json_response([r.v1() for r in rows if r.doc.get("type") == "food"])


_collection_routes(documents.FOOD, "/food")


# -- profiles ---------------------------------------------------------------------------------


@router.get("/profile", responses=_READ, summary="Profiles, newest start first.")
@router.get("/profile.json", include_in_schema=False)
async def get_profiles(request: Request) -> Response:
    """Profile documents, the newest startDate first, `count` (default 10)."""
    return await _list(request, documents.PROFILE, name="profile", window=False)


@router.get("/profiles", responses=_READ, summary="Profiles with find.")
@router.get("/profiles.json", include_in_schema=False)
async def get_profiles_find(request: Request) -> Response:
    """Profiles with `find[startDate][...]` (the last 4 days without it)."""
    return await _list(request, documents.PROFILE, name="profiles", window=True)


@router.get("/profile/current", responses={200: {"description": "The profile with the newest "
            "start, or null", "content": {"application/json": {}}}, **_ERRORS},
            summary="The current profile.")
@router.get("/profile/current.json", include_in_schema=False)
async def get_current_profile(request: Request) -> Response:
    """The profile with the newest startDate (null when there is none)."""
    site, _ = await need(request, "api:profile:read")
    rows = await run_in_threadpool(site.docs.find, documents.PROFILE, None, count=1)
    return json_response(rows[0].v1() if rows else None)


@router.post("/profile", responses=_WRITE, openapi_extra=_BODY, summary="Upload profiles.")
@router.post("/profile.json", include_in_schema=False)
async def post_profile(request: Request) -> Response:
    """One profile document or an array; the reply holds each stored document."""
    return await _post(request, documents.PROFILE)


@router.put("/profile", responses=_PUT, openapi_extra=_BODY, summary="Upsert a profile.")
@router.put("/profile.json", include_in_schema=False)
async def put_profile(request: Request) -> Response:
    """Replace the profile with this `_id`, or store it."""
    return await _put(request, documents.PROFILE)


@router.delete("/profile/{key}", responses=_DELETED, summary="Delete a profile.")
async def delete_profile(key: str, request: Request) -> Response:
    """Delete the profile with this `_id`."""
    return await _delete_find(request, documents.PROFILE, split_ext(key)[0])


# -- status, verifyauth, experiments ---------------------------------------------------------------


def status_document(request: Request, site: Site, grant) -> dict:
    """status.json: server, version and the site's settings as Nightscout reports them."""
    now = _now()
    directory = state_of(request).directory
    stale_warn, stale_urgent = site.stale_minutes
    enable = ["careportal", "iob", "cob", "basal", "upbat", "pump", "openaps", "loop",
              "delta", "direction", "timeago", "devicestatus", "errorcodes", "profile", "bolus",
              "cors"]
    return {
        "status": "ok",
        "name": "nightscout",
        "version": API_VERSION,
        "versionNum": 150007,
        "serverTime": times.iso(now),
        "serverTimeEpoch": now,
        "apiEnabled": True,
        "careportalEnabled": True,
        "boluscalcEnabled": False,
        "head": directory.version,
        "settings": {
            "units": site.units,
            "timeFormat": 24,
            "dayStart": 7,
            "dayEnd": 21,
            "nightMode": False,
            "editMode": True,
            "showRawbg": "never",
            "customTitle": site.name,
            "theme": "default",
            "alarmUrgentHigh": True,
            "alarmUrgentHighMins": [30, 60, 90, 120],
            "alarmHigh": True,
            "alarmHighMins": [30, 60, 90, 120],
            "alarmLow": True,
            "alarmLowMins": [15, 30, 45, 60],
            "alarmUrgentLow": True,
            "alarmUrgentLowMins": [15, 30, 45],
            "alarmUrgentMins": [30, 60, 90, 120],
            "alarmWarnMins": [30, 60, 90, 120],
            "alarmTimeagoWarn": True,
            "alarmTimeagoWarnMins": stale_warn,
            "alarmTimeagoUrgent": True,
            "alarmTimeagoUrgentMins": stale_urgent,
            "alarmPumpBatteryLow": False,
            "language": "en",
            "scaleY": "log",
            "showPlugins": "delta direction upbat iob cob basal",
            "showForecast": "",
            "focusHours": 3,
            "heartbeat": 60,
            "baseURL": site.base_url,
            "authDefaultRoles": "readable" if site.public_read else "denied",
            "thresholds": dict(site.thresholds),
            "DEFAULT_FEATURES": ["bgnow", "delta", "direction", "timeago", "devicestatus",
                                 "upbat", "errorcodes", "profile", "bolus", "dbsize",
                                 "runtimestate", "basal", "careportal"],
            "alarmTypes": ["simple"],
            "enable": enable,
        },
        "extendedSettings": {"devicestatus": {"advanced": True, "days": 1}},
        "authorized": _authorized(request, grant),
        "runtimeState": "loaded",
    }


def _authorized(request: Request, grant) -> dict | None:
    """What Nightscout puts under `authorized` for a token or secret in the query."""
    if grant.kind not in ("token", "jwt") or grant.token is None:
        return None
    from nightlink.nightscout import auth

    issued = auth.issue_jwt(state_of(request).directory.jwt_secret, grant.site_key,
                            grant.token)
    return {"token": issued["token"], "sub": grant.subject,
            "permissionGroups": [list(grant.permissions.patterns)], "iat": issued["iat"],
            "exp": issued["exp"]}


_STATUS = {200: {"description": "Status and settings", "content": {
    "application/json": {}, "text/html": {}, "text/plain": {}, "application/javascript": {}}},
    **_ERRORS}


@router.get("/status", responses=_STATUS, summary="Status and settings.")
@router.get("/status.json", include_in_schema=False)
@router.get("/status.txt", include_in_schema=False)
@router.get("/status.html", include_in_schema=False)
@router.get("/status.js", include_in_schema=False)
async def status(request: Request) -> Response:
    """status.json with the site's units and thresholds (`/status` without an extension
    answers by Accept: HTML for browsers and `*/*`, as Nightscout)."""
    site, grant = await need(request, "api:status:read")
    last = request.url.path.rsplit("/", 1)[1]
    ext = last.rpartition(".")[2] if "." in last else None
    fmt = wants(request, ext, ("html", "txt", "js", "json"))
    if fmt == "html" and ext is None and _json_asked(request):
        fmt = "json"
    vary = {} if ext else {"Vary": "Accept, Content-Type"}
    if fmt == "html":
        return Response("<h1>STATUS OK</h1>", media_type="text/html", headers=vary)
    if fmt == "txt":
        return Response("STATUS OK", media_type="text/plain", headers=vary)
    doc = status_document(request, site, grant)
    if fmt == "js":
        return Response(f"this.serverSettings = {json.dumps(doc)} ;",
                        media_type="application/javascript", headers=vary)
    return json_response(doc, headers=vary)


def _json_asked(request: Request) -> bool:
    """A status request that accepts anything (no Accept, or `*/*`) and says its body is JSON:
    ZeppNightscout checks a site so and parses the reply as JSON (Nightscout would answer
    its HTML page there). Only /status: its reply is never kept for other clients."""
    accept = (request.headers.get("accept") or "*/*").strip()
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return accept == "*/*" and media == "application/json"


@router.get("/verifyauth", responses={200: {"description": "What the credential may do",
            "content": {"application/json": {}}}}, summary="What the credential may do.")
@router.get("/verifyauth.json", include_in_schema=False)  # Nightscout strips extensions
async def verifyauth(request: Request) -> Response:
    """Always 200: canRead, canWrite, isAdmin and OK or UNAUTHORIZED under `message`."""
    try:
        _, grant = await resolve(request)
    except NSError as exc:
        if exc.status not in (401, 404):
            raise
        grant = None
    read = grant is not None and grant.allows("*:*:read")
    found = grant is not None and grant.authenticated
    return json_response({"status": 200, "message": {
        "canRead": read,
        "canWrite": grant is not None and grant.allows("*:*:create"),
        "isAdmin": grant is not None and grant.allows("*:*:admin"),
        "message": "OK" if read and found else "UNAUTHORIZED",
        "rolefound": "FOUND" if grant is not None and grant.kind in ("token", "jwt", "member")
        else "NOTFOUND",
        "permissions": "ROLE" if found else "DEFAULT",
    }})


@router.get("/adminnotifies", responses={200: {"description": "The server's notices to "
            "its admin (none here)", "content": {"application/json": {}}}},
            summary="Admin notices (always none).")
@router.get("/adminnotifies.json", include_in_schema=False)
async def adminnotifies(request: Request) -> Response:
    """Nightscout's notices to its admin (failed logins, deprecated settings): this server has
    none to give, so always 200 with an empty list, to any caller, as Nightscout answers a
    caller who is no admin (cli-anything-nightscout's `notifications admin` reads it)."""
    return json_response({"status": 200, "message": {"notifies": [], "notifyCount": 0}})


@router.get("/experiments/test", responses={200: {"description": "The credential is the "
            "site's admin", "content": {"application/json": {}}}, **_ERRORS},
            summary="Check admin credentials (Loop's login check).")
async def experiments_test(request: Request) -> Response:
    """200 {"status":"ok"} for the API secret or an admin token; 401 otherwise."""
    await need(request, "authorization:debug:test")
    return json_response({"status": "ok"})


@router.get("/notifications/ack", responses={200: {"description": "Done", "content": {
            "text/plain": {}}}, **_ERRORS}, summary="Acknowledge the site's alarms.")
async def notifications_ack(request: Request) -> Response:
    """Nightscout's `GET /api/v1/notifications/ack?level=&group=&time=` (cli-anything-nightscout
    and the socket's `ack` use it): silences the site's alarms of that level and below in the
    group (`default`) for `time` ms (30 minutes by default, two hours at most), acknowledges
    its open alerts and tells its `/alarm` sockets "All Clear". Takes `notifications:*:ack`
    (the API secret or an admin token, not `readable`); answers `OK` as Nightscout does."""
    from nightlink.nightscout.sockets import ACK_PERMISSION

    site, grant = await need(request, ACK_PERMISSION)
    params = request.query_params
    await request.app.state.nightscout_sockets.acknowledge(
        site.key, _finite_number(params.get("level")), params.get("group"),
        _finite_number(params.get("time")), grant)
    return Response(b"OK", media_type="text/plain; charset=utf-8")


def _finite_number(text: str | None) -> float | None:
    """JavaScript's Number() of a query value where it is a finite number, else None."""
    try:
        value = float((text or "").strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


# -- routes outside /api/v1 ------------------------------------------------------------------------

_root = APIRouter(tags=["nightscout v1"])


@_root.get("/api/versions", responses={200: {"description": "The API versions served",
           "content": {"application/json": {}}}}, summary="API versions.")
async def versions() -> JSONResponse:
    """The API versions this server speaks."""
    return JSONResponse([{"version": "1.0.0", "url": "/api/v1"},
                         {"version": "2.0.0", "url": "/api/v2"},
                         {"version": "3.0.3-alpha", "url": "/api/v3"}])


@_root.get("/pebble", responses={200: {"description": "Readings for watch faces",
           "content": {"application/json": {}}}, **_ERRORS}, summary="Pebble watch data.")
async def pebble(request: Request) -> Response:
    """Nightscout's /pebble: the newest `count` readings (sgv as text), trend, delta, battery,
    insulin and carbs on board."""
    site, _ = await need(request, "api:pebble,entries:read")
    params = request.query_params
    count = parse_count(params.get("count"), 1, 1000)
    mmol = (params.get("units") or site.units) == "mmol"

    def work() -> dict:
        sgvs = [r.doc for r in site.docs.latest(documents.ENTRIES, kind="sgv", count=max(count, 12))]
        statuses = [r.doc for r in site.docs.latest(documents.DEVICESTATUS, count=10)]
        now = _now()
        doc = pebble_document(sgvs, statuses, count=count, mmol=mmol, now_ms=now)
        if doc["bgs"]:  # Nightscout adds both, as their plugins' display, when they are enabled
            # (status.json always lists them here): GlucoDataHandler and watch faces read them
            props = properties.compute(site.docs, now, mmol=mmol, names=["iob", "cob"])
            for name in ("iob", "cob"):
                doc["bgs"][0][name] = (props.get(name) or {}).get("display") or 0
        return doc

    return json_response(await run_in_threadpool(work))




def trend_number(direction: Any) -> int:
    """Nightscout's trend number of a direction; 8 (NOT COMPUTABLE) when unknown."""
    try:
        return units.DIRECTIONS.index(direction)
    except ValueError:
        return 8


def pebble_document(sgvs: list[dict], statuses: list[dict], *, count: int, mmol: bool,
                    now_ms: int) -> dict:
    """The /pebble reply from sgv entries and device statuses (both newest first)."""
    bgs = []
    for doc in sgvs[:count]:
        value = doc.get("sgv")
        if not isinstance(value, int | float):
            continue
        bg = {"sgv": (f"{units.to_mmoll(value):.1f}" if mmol and value >= 39 else
                      str(int(round(value)))),
              "trend": trend_number(doc.get("direction")), "datetime": int(doc["date"])}
        if "direction" in doc:
            bg["direction"] = doc["direction"]
        bgs.append(bg)
    if bgs:
        delta = _pebble_delta(sgvs)
        bgs[0]["bgdelta"] = f"{units.to_mmoll(delta):.1f}" if mmol else round(delta)
        battery = next((s["uploader"].get("battery") for s in statuses
                        if isinstance(s.get("uploader"), dict)), None)
        if isinstance(battery, int | float) and not isinstance(battery, bool) and battery >= 0:
            bgs[0]["battery"] = str(battery)
    return {"status": [{"now": now_ms}], "bgs": bgs, "cals": []}


def _pebble_delta(sgvs: list[dict]) -> float:
    """mg/dL per 5 min between the newest reading and the valid one before it (0 if none)."""
    first = sgvs[0]
    if not isinstance(first.get("sgv"), int | float) or first["sgv"] < 39:
        return 0
    delta = first.get("delta")
    if isinstance(delta, int | float) and not isinstance(delta, bool):
        return delta
    for prev in sgvs[1:]:
        gap = int(first["date"]) - int(prev["date"])
        if gap > documents.DELTA_MAX_GAP_MS:
            break
        if gap >= documents.DELTA_MIN_GAP_MS and isinstance(prev.get("sgv"), int | float) \
                and prev["sgv"] >= 39:
            return (first["sgv"] - prev["sgv"]) * 5 / (gap / 60_000)
    return 0
