"""The edge node's local Nightscout-compatible endpoint (API v1 entries, status, verifyauth).

Phone uploaders (xDrip+, Juggluco) post here over the LAN when the internet is down;
clocks and followers read back. Contract: NIGHTSCOUT.md in the team's shared reference folder.

Authentication. Every route needs a credential; the edge has no public read.
- Header `api-secret: <lowercase SHA1 hex of the secret>` (what Nightscout uploaders send)
  may read and write.
- Query `?token=<access_token(secret)>` may read only: give it to clocks and followers so
  that a token kept in a clock's flash cannot write. The token is derived from the secret
  (`edge-` + 16 hex digits of an HMAC-SHA256), so it changes when the secret changes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from nightlink.edge.store import EdgeStore
from nightlink.shared import units

_LOGGER = logging.getLogger(__name__)

DEAD_LETTER_SOURCE = "nightscout-upload"
ENTRY_TYPES = ("sgv", "mbg", "cal")
MIN_SECRET_LENGTH = 12  # Nightscout itself refuses API_SECRETs shorter than 12 characters.
MAX_BODY_BYTES = 5 * 1024 * 1024  # a week of xDrip+ backlog (~2000 entries) is well under 1 MB
MAX_COUNT = 100_000
SGV_MAX = 1000  # the upper bound of a plausible sgv or mbg in mg/dL
# Plausible entry dates: after 2000-01-01 and at most one day ahead of this clock.
DATE_MIN_MS = 946_684_800_000
FUTURE_SLACK_MS = 24 * 3600 * 1000
# A reading re-sent with a slightly shifted time or another device string (NIGHTSCOUT.md):
# an sgv entry less than this far from a stored sgv entry with the same value is not stored.
# Strictly less, so that one-minute sensors (Libre 2/3 via Juggluco) keep equal readings
# taken a whole minute apart.
NEAR_DUPLICATE_WINDOW_MS = 60_000
# The delta is mg/dL per 5 minutes, computed from the previous reading when the uploader
# gives none, if that reading is 30 s to 10 min older.
_DELTA_MIN_GAP_MS = 30_000
_DELTA_MAX_GAP_MS = 600_000
# Nightscout's default alarm thresholds (mg/dL), as status.json reports them.
THRESHOLDS = {"bgHigh": 260, "bgTargetTop": 180, "bgTargetBottom": 70, "bgLow": 55}
# Fields a `find[...]` query may filter on, and the SQL column behind each.
_FIND_COLUMNS = {"date": "date", "dateString": "date", "sgv": "sgv", "type": "type",
                 "device": "device", "direction": "direction"}
_FIND_OPS = {"$gte": ">=", "$gt": ">", "$lte": "<=", "$lt": "<", "$eq": "=", "$ne": "!="}
_INT_FIELDS = ("date", "sgv")

HEADER_STORED = "X-Nightlink-Stored"
HEADER_DUPLICATES = "X-Nightlink-Duplicates"
HEADER_NEAR_DUPLICATES = "X-Nightlink-Near-Duplicates"
HEADER_REJECTED = "X-Nightlink-Rejected"


def api_secret_hash(secret: str) -> str:
    """The value of the `api-secret` header for a secret: its SHA1, lowercase hex."""
    return hashlib.sha1(secret.encode("utf-8")).hexdigest()


def access_token(secret: str) -> str:
    """The read-only `?token=` value derived from a secret."""
    mac = hmac.new(secret.encode("utf-8"), b"nightlink edge read token", hashlib.sha256)
    return "edge-" + mac.hexdigest()[:16]


def entry_id(type_: str, date_ms: int) -> str:
    """A stable 24-hex-digit id (shaped like a Mongo ObjectId) for the entry keyed (date, type)."""
    return hashlib.sha1(f"{type_}:{date_ms}".encode()).hexdigest()[:24]


def date_string(date_ms: int) -> str:
    """ISO 8601 UTC text of a time in ms, as Nightscout writes dateString."""
    dt = datetime.fromtimestamp(date_ms / 1000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{date_ms % 1000:03d}Z"


class EntryError(ValueError):
    """An uploaded entry is not valid: the message is one sentence."""


def _as_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EntryError(f"{name} must be a number, not {value!r}.")
    if isinstance(value, float) and not value.is_integer():
        raise EntryError(f"{name} must be a whole number, not {value!r}.")
    return int(value)


def validate_entry(item: Any, now_ms: int) -> dict:
    """Check one uploaded entry and return the document to store; raise EntryError if invalid."""
    if not isinstance(item, dict):
        raise EntryError(f"An entry must be a JSON object, not {type(item).__name__}.")
    type_ = item.get("type")
    if type_ not in ENTRY_TYPES:
        raise EntryError(f"type must be one of {', '.join(ENTRY_TYPES)}, not {type_!r}.")
    if "date" not in item:
        raise EntryError("date (ms since the epoch) is required.")
    date_ms = _as_int(item["date"], "date")
    if date_ms < DATE_MIN_MS:
        hint = " (it looks like seconds, not ms)" if date_ms > DATE_MIN_MS // 1000 else ""
        raise EntryError(f"date {date_ms} is before the year 2000{hint}.")
    if date_ms > now_ms + FUTURE_SLACK_MS:
        raise EntryError(f"date {date_ms} is more than a day in the future.")
    doc = {k: v for k, v in item.items() if k != "_id"}
    doc["date"] = date_ms
    if type_ == "sgv":
        if "sgv" not in item:
            raise EntryError("sgv is required for an sgv entry.")
        sgv = _as_int(item["sgv"], "sgv")
        if not 0 <= sgv <= SGV_MAX:
            raise EntryError(f"sgv {sgv} is outside 0..{SGV_MAX} mg/dL.")
        doc["sgv"] = sgv
        if units.is_sensor_error(sgv):
            # Kept as Nightscout keeps it (clients read sgv < 39 as an error code), and flagged.
            doc["sensorError"] = units.SENSOR_ERRORS.get(sgv, f"sensor error {sgv}")
    elif type_ == "mbg":
        mbg = _as_int(item.get("mbg"), "mbg")
        if not 0 < mbg <= SGV_MAX:
            raise EntryError(f"mbg {mbg} is outside 1..{SGV_MAX} mg/dL.")
        doc["mbg"] = mbg
    else:
        for key in ("slope", "intercept", "scale"):
            if key in item and (isinstance(item[key], bool) or
                                not isinstance(item[key], int | float)):
                raise EntryError(f"{key} of a cal entry must be a number, not {item[key]!r}.")
    if not isinstance(doc.get("dateString"), str) or not doc["dateString"]:
        doc["dateString"] = date_string(date_ms)
    doc["_id"] = entry_id(type_, date_ms)
    return doc


@dataclass
class UploadResult:
    stored: list[dict]
    duplicates: int = 0
    near_duplicates: int = 0
    rejected: int = 0


class EntriesService:
    """Upload and query logic over the edge store's entries table."""

    def __init__(self, store: EdgeStore):
        self.store = store

    # -- writes -------------------------------------------------------------------------

    def upload(self, items: list[Any]) -> UploadResult:
        """Validate, dedupe and store uploaded items, oldest first; invalid ones are dead letters."""
        now_ms = int(time.time() * 1000)
        result = UploadResult(stored=[])
        valid: list[dict] = []
        for index, item in enumerate(items):
            try:
                valid.append(validate_entry(item, now_ms))
            except EntryError as exc:
                result.rejected += 1
                self.store.dead_letter(
                    DEAD_LETTER_SOURCE, f"entry {index}: {exc}", json_bytes(item)
                )
        valid.sort(key=lambda d: d["date"])  # oldest first, so each delta sees its predecessor
        batch_keys: set[tuple[int, str]] = set()
        with self.store.transaction():  # the check and the insert under the one writer lock
            for doc in valid:
                key = (doc["date"], doc["type"])
                if key in batch_keys or self._exists(*key):
                    result.duplicates += 1
                    continue
                if doc["type"] == "sgv":
                    near = self._near_duplicate(doc)
                    if near is not None:
                        result.near_duplicates += 1
                        _LOGGER.info(
                            "near-duplicate sgv %s at %s from %r not stored: "
                            "the same value is stored at %s",
                            doc["sgv"], doc["dateString"], doc.get("device"), near,
                        )
                        continue
                    self._fill_delta(doc)
                stored, _ = self.store.add_entries([doc])
                if stored:
                    batch_keys.add(key)
                    result.stored.append(doc)
        return result

    def _exists(self, date_ms: int, type_: str) -> bool:
        row = self.store.db.execute(
            "SELECT 1 FROM entries WHERE date = ? AND type = ?", [date_ms, type_]
        ).fetchone()
        return row is not None

    def _near_duplicate(self, doc: dict) -> str | None:
        window = NEAR_DUPLICATE_WINDOW_MS - 1
        row = self.store.db.execute(
            "SELECT date FROM entries WHERE type = 'sgv' AND sgv = ? AND date BETWEEN ? AND ? "
            "ORDER BY abs(date - ?) LIMIT 1",
            [doc["sgv"], doc["date"] - window, doc["date"] + window, doc["date"]],
        ).fetchone()
        return date_string(row[0]) if row else None

    def _fill_delta(self, doc: dict) -> None:
        if "delta" in doc or units.is_sensor_error(doc["sgv"]):
            return
        row = self.store.db.execute(
            "SELECT date, sgv FROM entries WHERE type = 'sgv' AND sgv >= ? "
            "AND date BETWEEN ? AND ? ORDER BY date DESC LIMIT 1",
            [units.SGV_MIN_VALID, doc["date"] - _DELTA_MAX_GAP_MS,
             doc["date"] - _DELTA_MIN_GAP_MS],
        ).fetchone()
        if row:
            gap_min = (doc["date"] - row[0]) / 60_000
            doc["delta"] = round((doc["sgv"] - row[1]) * 5 / gap_min, 1)

    # -- reads --------------------------------------------------------------------------

    def query(self, find: list[tuple[str, str, Any]], count: int) -> list[dict]:
        """Entries matching (column, SQL operator, value) conditions, newest first."""
        sql, args = "SELECT doc FROM entries WHERE 1=1", []
        for column, op, value in find:
            sql, args = f"{sql} AND {column} {op} ?", [*args, value]
        rows = self.store.db.execute(f"{sql} ORDER BY date DESC LIMIT ?", [*args, count])
        return [public_entry(json.loads(r[0])) for r in rows.fetchall()]

    def last_modified(self) -> float | None:
        """When the entries table last gained a row (Unix seconds), None if it is empty."""
        return self.store.db.execute("SELECT max(created_at) FROM entries").fetchone()[0]


def public_entry(doc: dict) -> dict:
    """An entry as the API returns it: stored fields plus `_id` and `dateString` if missing."""
    out = dict(doc)
    date_ms = int(out["date"])
    out.setdefault("_id", entry_id(out["type"], date_ms))
    out.setdefault("dateString", date_string(date_ms))
    return out


class UploadNotJSON(ValueError):
    """An upload body that is not JSON; `reason` for the dead letter, `body` as received."""

    def __init__(self, detail: str, body: bytes):
        super().__init__(detail)
        self.detail = detail
        self.reason = f"body is not JSON: {detail}"
        self.body = body


async def read_upload(request: Request) -> list[Any]:
    """An upload's items: the JSON body as a list (one object becomes a list of one).

    413 (HTTPException) above MAX_BODY_BYTES; UploadNotJSON when the body does not parse.
    NaN and Infinity are not JSON: they read as null, so one odd field cannot break replies.
    """
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise HTTPException(413, f"The upload is larger than {MAX_BODY_BYTES} bytes.")
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise HTTPException(413, f"The upload is larger than {MAX_BODY_BYTES} bytes.")
    try:
        payload = json.loads(body, parse_constant=lambda _: None)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UploadNotJSON(str(exc), body) from None
    return payload if isinstance(payload, list) else [payload]


def json_bytes(item: Any) -> bytes:
    return json.dumps(item, sort_keys=True, separators=(",", ":")).encode("utf-8")


# -- query parsing --------------------------------------------------------------------------


class QueryError(ValueError):
    """A query parameter is not supported or not well formed; the message is one sentence."""


def parse_find(params: list[tuple[str, str]]) -> list[tuple[str, str, Any]]:
    """`find[field][$op]=v` / `find[field]=v` query items as (column, SQL operator, value);
    QueryError for anything else. Shared by the edge and the cloud endpoints."""
    out = []
    for key, raw in params:
        if not key.startswith("find["):
            continue
        parts = key[len("find["):].rstrip("]").split("][")
        name = parts[0]
        op = parts[1] if len(parts) > 1 else "$eq"
        if name not in _FIND_COLUMNS:
            raise QueryError(f"Entries cannot be filtered on {name!r}; use find[date], "
                             f"find[dateString], find[sgv], find[type], find[device] or "
                             f"find[direction].")
        if op not in _FIND_OPS or len(parts) > 2:
            raise QueryError(f"The query {key} is not supported; use one of "
                             f"{', '.join(_FIND_OPS)} as the operator.")
        value: Any = raw
        if name == "dateString":
            try:
                dt = datetime.fromisoformat(raw.replace("Z", "+00:00"))
            except ValueError:
                raise QueryError(f"{key}={raw} is not an ISO 8601 time.") from None
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=UTC)
            value = round(dt.timestamp() * 1000)
        elif name in _INT_FIELDS:
            try:
                value = int(float(raw))
            except ValueError:
                raise QueryError(f"{key}={raw} is not a number.") from None
        out.append((_FIND_COLUMNS[name], _FIND_OPS[op], value))
    return out


def _find_or_400(params: list[tuple[str, str]]) -> list[tuple[str, str, Any]]:
    try:
        return parse_find(params)
    except QueryError as exc:
        raise HTTPException(400, str(exc)) from None


def parse_count(raw: str | None, default: int = 10) -> int:
    if raw is None or raw == "":
        return default
    try:
        count = int(raw)
    except ValueError:
        raise HTTPException(400, f"count={raw} is not a whole number.") from None
    if not 1 <= count <= MAX_COUNT:
        raise HTTPException(400, f"count must be between 1 and {MAX_COUNT}, not {count}.")
    return count


# -- the application ------------------------------------------------------------------------


@dataclass(frozen=True)
class Access:
    """What the credential of one request may do."""

    can_read: bool
    can_write: bool


class _Auth:
    def __init__(self, api_secret: str):
        self._hash = api_secret_hash(api_secret).encode()
        self._token = access_token(api_secret).encode()

    def access(self, request: Request) -> Access:
        header = request.headers.get("api-secret")
        if header and hmac.compare_digest(header.strip().lower().encode(), self._hash):
            return Access(can_read=True, can_write=True)
        token = request.query_params.get("token")
        if token and hmac.compare_digest(token.strip().encode(), self._token):
            return Access(can_read=True, can_write=False)
        return Access(can_read=False, can_write=False)


def _access(request: Request) -> Access:
    return request.app.state.auth.access(request)


def _require_read(request: Request) -> Access:
    acc = _access(request)
    if not acc.can_read:
        raise HTTPException(401, "Unauthorized: send the api-secret header (SHA1 of the API "
                                 "secret) or a valid token.")
    return acc


def _require_write(request: Request) -> Access:
    acc = _access(request)
    if not acc.can_write:
        raise HTTPException(401, "Unauthorized: writing needs the api-secret header (SHA1 of "
                                 "the API secret).")
    return acc


AnyAccess = Annotated[Access, Depends(_access)]
Reader = Annotated[Access, Depends(_require_read)]
Writer = Annotated[Access, Depends(_require_write)]


def create_app(
    store: EdgeStore, api_secret: str, *, development: bool = False, name: str = "Nightlink edge"
) -> FastAPI:
    """The local Nightscout endpoint over `store`, guarded by `api_secret`."""
    if not api_secret:
        raise ValueError("The Nightscout API secret must not be empty, even in development.")
    if len(api_secret) < MIN_SECRET_LENGTH and not development:
        raise ValueError(
            f"The Nightscout API secret must be at least {MIN_SECRET_LENGTH} characters "
            "(a default or short secret is refused outside development)."
        )
    service = EntriesService(store)
    version = _version()

    app = FastAPI(title="Nightlink edge Nightscout API", docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.auth = _Auth(api_secret)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"status": exc.status_code, "message": exc.detail},
                            status_code=exc.status_code, headers=exc.headers)

    @app.post("/api/v1/entries")
    @app.post("/api/v1/entries.json")
    async def post_entries(request: Request, _: Writer) -> JSONResponse:
        """Store one entry or an array of entries; answer with the stored documents."""
        try:
            items = await read_upload(request)
        except UploadNotJSON as exc:
            await run_in_threadpool(store.dead_letter, DEAD_LETTER_SOURCE, exc.reason, exc.body)
            raise HTTPException(400, f"The upload is not valid JSON ({exc.detail}).") from None
        result = await run_in_threadpool(service.upload, items)
        _LOGGER.info("nightscout upload: %d stored, %d duplicates, %d near-duplicates, "
                     "%d rejected", len(result.stored), result.duplicates,
                     result.near_duplicates, result.rejected)
        # 200 even when items were rejected: they are kept as dead letters, and an error
        # status would make uploaders such as xDrip+ retry the same bad item forever.
        return JSONResponse(
            [public_entry(d) for d in result.stored],
            headers={
                HEADER_STORED: str(len(result.stored)),
                HEADER_DUPLICATES: str(result.duplicates),
                HEADER_NEAR_DUPLICATES: str(result.near_duplicates),
                HEADER_REJECTED: str(result.rejected),
            },
        )

    def entries_response(request: Request, find: list, count: int) -> Response:
        changed = service.last_modified()
        headers = {}
        if changed is not None:
            stamp = int(changed)
            ims = if_modified_since(request.headers.get("if-modified-since"))
            if ims is not None and stamp <= ims:
                return Response(status_code=304)
            if int(time.time()) <= stamp:
                # Entries may still arrive within this second: announce the one before, so
                # the client's next If-Modified-Since cannot hide them.
                stamp -= 1
            headers["Last-Modified"] = format_datetime(
                datetime.fromtimestamp(stamp, tz=UTC), usegmt=True)
        return JSONResponse(service.query(find, count), headers=headers)

    @app.get("/api/v1/entries")
    @app.get("/api/v1/entries.json")
    def get_entries(request: Request, _: Reader) -> Response:
        """Entries, newest first: `count=N` (default 10) and `find[...]` filters."""
        params = request.query_params
        return entries_response(request, _find_or_400(params.multi_items()),
                                parse_count(params.get("count")))

    @app.get("/api/v1/entries/{spec}")
    def get_entries_of(spec: str, request: Request, _: Reader) -> Response:
        """`current` (newest sgv entry) or one entry type (`sgv.json`, `mbg.json`, `cal.json`)."""
        name = spec.removesuffix(".json")
        params = request.query_params
        find = _find_or_400(params.multi_items())
        if name == "current":
            return entries_response(request, [*find, ("type", "=", "sgv")], 1)
        if name not in ENTRY_TYPES:
            raise HTTPException(404, f"There is no entries route {spec!r}; use current, "
                                     "sgv, mbg or cal.")
        return entries_response(request, [*find, ("type", "=", name)],
                                parse_count(params.get("count")))

    @app.get("/api/v1/status.json")
    @app.get("/api/v1/status")
    def status(acc: Reader) -> dict:
        """Server status and settings, as Nightscout reports them."""
        now = datetime.now(tz=UTC)
        return {
            "status": "ok",
            "name": name,
            "version": version,
            "serverTime": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z",
            "serverTimeEpoch": int(now.timestamp() * 1000),
            "apiEnabled": True,
            "careportalEnabled": False,
            "boluscalcEnabled": False,
            "settings": {
                "units": "mg/dl",
                "thresholds": dict(THRESHOLDS),
                "alarmTimeagoWarnMins": units.STALE_MIN,
                "alarmTimeagoUrgentMins": units.URGENT_STALE_MIN,
                "authDefaultRoles": "",
                "enable": [],
            },
            "extendedSettings": {},
            "authorized": {"canRead": acc.can_read, "canWrite": acc.can_write},
        }

    @app.get("/api/v1/verifyauth")
    def verifyauth(acc: AnyAccess) -> dict:
        """What the given credential may do; 200 with message UNAUTHORIZED when nothing."""
        ok = acc.can_read or acc.can_write
        return {
            "status": 200,
            "message": {
                "canRead": acc.can_read,
                "canWrite": acc.can_write,
                "isAdmin": acc.can_write,
                "message": "OK" if ok else "UNAUTHORIZED",
                "rolefound": "FOUND" if ok else "NOTFOUND",
                "permissions": "ROLE" if ok else "DEFAULT",
            },
        }

    return app


def if_modified_since(value: str | None) -> int | None:
    """The Unix second of an If-Modified-Since header, None when absent or unreadable."""
    if not value:
        return None
    try:
        dt = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp())


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nightlink")
    except PackageNotFoundError:
        return "0.0.0"
