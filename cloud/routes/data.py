"""The Nightlink API for one tenant: epoch rows, nights, glucose for charts, alerts.

Everything lives under `/api/nl/v1/tenants/{tenant}` and needs a member's Bearer token.
Times are given as ISO 8601 (`2026-01-15T22:00:00Z`; no offset means UTC) or as an epoch
index on the 30-second grid (Unix seconds // 30, the `epoch` field of every row).
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Body, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from nightlink.cloud import alerts as alert_rules
from nightlink.cloud.deps import ERRORS, MemberAccess, require_actor
from nightlink.cloud.routes.fields import RowId, night_param
from nightlink.cloud.store import Row, TenantStore, row_values
from nightlink.shared import features, units
from nightlink.shared.epoch import EPOCH_S

router = APIRouter(prefix="/api/nl/v1/tenants/{tenant}", tags=["nightlink"],
                   responses=ERRORS)

MAX_DAYS = 31
MAX_EPOCH_INDEX = 200_000_000  # the year 2160; larger integers are Unix seconds or ms
PAGE_MAX = 5000
CSV_PAGE = 5000
GLUCOSE_MAX = 50_000  # 31 days of 1-minute readings
_META = ("epoch", "time", "device", "boot", "seq", "flags")


class BadQuery(ValueError):
    """A query parameter that cannot be used; the message is the sentence for the 422."""


def _bad(message: str) -> HTTPException:
    return HTTPException(422, message)


# -- time, stream and cursor parsing -----------------------------------------------------


def parse_time(name: str, text: str) -> float:
    """Unix seconds for an ISO 8601 time or an epoch index; BadQuery with a sentence otherwise."""
    text = text.strip()
    if re.fullmatch(r"\d+", text, flags=re.ASCII):
        index = int(text) if len(text) < 19 else MAX_EPOCH_INDEX  # Python refuses 4,300 digits
        if index >= MAX_EPOCH_INDEX:
            raise BadQuery(f"{name}={text[:24]} is too large for an epoch index (Unix seconds // 30); "
                           "give an ISO 8601 time such as 2026-01-15T22:00:00Z or an epoch index.")
        return float(index * EPOCH_S)
    try:
        # A "+01:00" offset arrives as " 01:00" when the client did not encode the "+".
        t = datetime.fromisoformat(re.sub(r" (\d\d:?\d\d)$", r"+\1", text).replace("Z", "+00:00"))
    except ValueError:
        raise BadQuery(f"{name}={text!r} is neither an ISO 8601 time such as "
                       "2026-01-15T22:00:00Z nor an epoch index.") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    if t.timestamp() < 0:  # nothing is stored before 1970, and a year 0 cannot be written back
        raise BadQuery(f"{name}={text!r} is before 1970.")
    return t.timestamp()


def parse_range(start: str, end: str, max_days: int = MAX_DAYS) -> tuple[float, float]:
    s, e = parse_time("start", start), parse_time("end", end)
    if e <= s:
        raise BadQuery("end must be after start.")
    if e - s > max_days * 86400:
        raise BadQuery(f"The time range is {(e - s) / 86400:.1f} days; at most {max_days} days "
                       "may be asked for at once.")
    return s, e


def parse_stream(name: str) -> int:
    s = features.stream_by_name(name)
    if s is None:
        known = ", ".join(x[features.S_NAME] for x in features.STREAMS)
        raise BadQuery(f"stream={name!r} is not a stream; use one of {known}.")
    return s[features.S_ID]


def encode_cursor(row: Row) -> str:
    raw = json.dumps([row.epoch, row.device, row.boot, row.seq], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str, int, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        if len(raw) > 512:  # a real cursor is under 100 bytes
            raise ValueError
        e, d, b, s = json.loads(raw)
        if not (isinstance(d, str) and d.isascii() and len(d) <= 64
                and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**62
                        for v in (e, b, s))):
            raise ValueError
        return e, d, b, s
    except (ValueError, TypeError, binascii.Error, RecursionError):
        raise BadQuery("The cursor is not valid: pass next_cursor from the previous page "
                       "unchanged.") from None


def iso(unix_s: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix_s))


# -- row decoding ----------------------------------------------------------------------------


def decode_row(row: Row) -> dict:
    """A stored row as {epoch, time, device, boot, seq, flags, <feature>: value or None}."""
    return {"epoch": row.epoch, "time": iso(row.epoch * EPOCH_S), "device": row.device,
            "boot": row.boot, "seq": row.seq, "flags": row.flags,
            **row_values(row.stream, row.nfeat, row.row_data)}


def _feature_info(stream_id: int) -> list[dict]:
    return [{"name": f[features.F_NAME], "unit": f[features.F_UNIT]} for f in features.features(stream_id)]


class EpochQuery:
    """The validated query of the epoch routes."""

    def __init__(self, stream: str, start: str, end: str):
        try:
            self.stream_id = parse_stream(stream)
            s, e = parse_range(start, end)
        except BadQuery as exc:
            raise _bad(str(exc)) from None
        self.stream = stream
        # Epochs that overlap [s, e): the first holding s, up to the one holding e (excluded
        # unless e falls inside it).
        self.start_epoch = int(s // EPOCH_S)
        self.end_epoch = int(-(-e // EPOCH_S))
        self.start, self.end = s, e


def _epoch_query(stream: str, start: str, end: str) -> EpochQuery:
    return EpochQuery(stream, start, end)


# -- epochs ----------------------------------------------------------------------------------


@router.get("/epochs")
def epochs(access: MemberAccess, stream: str, start: str, end: str,
           limit: Annotated[int, Query(ge=1, le=PAGE_MAX)] = 1000,
           cursor: str | None = None) -> dict:
    """One page of a stream's epoch rows in [start, end), decoded; follow `next_cursor`."""
    q = _epoch_query(stream, start, end)
    try:
        after = decode_cursor(cursor) if cursor else None
    except BadQuery as exc:
        raise _bad(str(exc)) from None
    rows = access.data.rows(q.stream_id, q.start_epoch, q.end_epoch, after=after,
                            limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "stream": q.stream,
        "start": iso(q.start),
        "end": iso(q.end),
        "features": _feature_info(q.stream_id),
        "rows": [decode_row(r) for r in rows],
        "next_cursor": encode_cursor(rows[-1]) if more else None,
    }


def _csv_lines(data: TenantStore, q: EpochQuery) -> Iterator[str]:
    names = features.names(q.stream_id)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*_META, *names])
    after = None
    while True:
        rows = data.rows(q.stream_id, q.start_epoch, q.end_epoch, after=after, limit=CSV_PAGE)
        for r in rows:
            d = decode_row(r)
            writer.writerow(["" if d[k] is None else d[k] for k in (*_META, *names)])
        yield buf.getvalue()
        buf.seek(0)
        buf.truncate()
        if len(rows) < CSV_PAGE:
            return
        last = rows[-1]
        after = (last.epoch, last.device, last.boot, last.seq)


@router.get("/epochs.csv")
def epochs_csv(access: MemberAccess, stream: str, start: str, end: str) -> StreamingResponse:
    """Every row of a stream in [start, end) as CSV (empty cells where not measured)."""
    q = _epoch_query(stream, start, end)
    name = f"{access.tenant_id}-{q.stream}-{iso(q.start)[:10]}.csv"
    return StreamingResponse(_csv_lines(access.data, q), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="{name}"'})


# -- nights ----------------------------------------------------------------------------------


@router.get("/nights")
def nights(access: MemberAccess, limit: Annotated[int, Query(ge=1, le=366)] = 30) -> dict:
    """The last `limit` nights that hold data, newest first, with their headline figures.

    Sleep score, sleep time, efficiency, AHI and lows, as the morning card shows them; the
    summaries edge nodes sent are under `edge`."""
    from nightlink.cloud import morning
    from nightlink.cloud.reports.settings import patient_settings

    ps = patient_settings(access.data)
    return {"nights": morning.nights_summary(access.data, ps, limit),
            "edge": access.data.nights(limit=limit)}


@router.get("/nights/{night}")
def night(access: MemberAccess, night: str) -> dict:
    """One night's morning card (night = the date of its evening, YYYY-MM-DD).

    Sleep with its score and formula, breathing, lows with their context, the room, 7- and
    30-night trends and screening flags; `edge` holds the summary an edge node sent, if any."""
    from nightlink.cloud import morning
    from nightlink.cloud.reports.settings import patient_settings

    night_param("night", night, optional=False)
    try:
        edge = access.data.night(night)
    except LookupError:
        edge = None
    got = morning.card(access.data, patient_settings(access.data), night)
    if not got["has_data"] and edge is None:
        raise HTTPException(404, f"There is no data for the night of {night}.")
    return {**got, "edge": edge}


@router.get("/insights")
def insights(access: MemberAccess, end: str | None = None,
             nights: Annotated[int, Query(ge=7, le=120)] = 30) -> dict:
    """Insights over `nights` nights ending with the night of `end` (default: last night).

    Associations between sleep, breathing, the room, evening carbs and exercise and that
    night's, the next day's and the next night's glucose (effect size, n, 95 % interval,
    Benjamini-Hochberg q), unusual nights, and recurring glucose patterns."""
    from nightlink.cloud import insights as across_nights
    from nightlink.cloud.reports.settings import patient_settings

    if end is not None:
        night_param("end", end)
    return across_nights.insights(access.data, patient_settings(access.data), end, nights)


# -- glucose ---------------------------------------------------------------------------------


@router.get("/glucose")
def glucose(access: MemberAccess, start: str | None = None, end: str | None = None) -> dict:
    """Glucose readings in [start, end) for charts, oldest first (default: the last 24 h).

    Sensor error codes (sgv below 39) are left out: they are not glucose.
    """
    try:
        e = parse_time("end", end) if end else time.time()
        s = parse_time("start", start) if start else e - 86400
        if e <= s:
            raise BadQuery("end must be after start.")
        if e - s > MAX_DAYS * 86400:
            raise BadQuery(f"At most {MAX_DAYS} days of glucose may be asked for at once.")
    except BadQuery as exc:
        raise _bad(str(exc)) from None
    docs = access.data.entries(count=GLUCOSE_MAX, type_="sgv",
                               where=[("date", ">=", int(s * 1000)),
                                      ("date", "<", int(e * 1000))])
    points = [{"date": d["date"], "sgv": d["sgv"], "direction": d.get("direction", "NONE")}
              for d in reversed(docs)
              if d.get("sgv") is not None and not units.is_sensor_error(d["sgv"])]
    return {"start": iso(s), "end": iso(e), "unit": units.MGDL, "entries": points}


# -- alerts ----------------------------------------------------------------------------------


class AlertRuleIn(BaseModel):
    enabled: bool = True
    threshold: float | None = None  # None: the default


class AlertRulePublic(BaseModel):
    enabled: bool
    threshold: float
    unit: str
    default: float
    min: float
    max: float
    description: str


class AlertPublic(BaseModel):
    id: int
    rule: str
    level: str
    at_ms: int
    at: str
    message: str
    detail: dict
    acked_by: int | None
    acked_at: float | None


@router.get("/alerts")
def list_alerts(access: MemberAccess, unacked: bool = False,
                limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict:
    """The tenant's alerts, newest first (`unacked=true`: only those nobody acknowledged)."""
    rows = access.data.alerts(limit=limit, unacked=unacked)
    return {"alerts": [alert_rules.public(r) for r in rows]}


@router.post("/alerts/{alert_id}/ack")
def ack_alert(access: MemberAccess, alert_id: RowId, request: Request) -> AlertPublic:
    """Acknowledge an alert (patients and caregivers); acknowledging twice changes nothing.
    As in the app: audited, published, and "All Clear" to socket.io alarm clients when it was
    the last one open."""
    store = request.app.state.store
    require_actor(store, access, "acknowledge its alerts")
    if access.data.alert(alert_id) is None:
        raise HTTPException(404, f"No alert {alert_id}.")
    alert_rules.acknowledge_one(store, request.app.state.events, access.tenant_id, alert_id,
                                user_id=access.user["id"], via="api")
    return AlertPublic(**alert_rules.public(access.data.alert(alert_id)))


def _settings_public(data: TenantStore, user_id: int) -> dict[str, AlertRulePublic]:
    mine = alert_rules.settings_with_defaults(data.alert_settings(user_id))
    return {rule: AlertRulePublic(enabled=mine[rule]["enabled"],
                                  threshold=mine[rule]["threshold"], unit=unit, default=default,
                                  min=lo, max=hi, description=desc)
            for rule, (default, unit, lo, hi, desc) in alert_rules.RULES.items()}


@router.get("/alert-settings")
def get_alert_settings(access: MemberAccess) -> dict[str, AlertRulePublic]:
    """The signed-in person's alert rules for this tenant (defaults where never set)."""
    return _settings_public(access.data, access.user["id"])


@router.put("/alert-settings")
def put_alert_settings(access: MemberAccess,
                       body: Annotated[dict[str, AlertRuleIn], Body()]
                       ) -> dict[str, AlertRulePublic]:
    """Change some of the signed-in person's rules; rules not named stay as they are."""
    for rule, s in body.items():
        if rule not in alert_rules.RULES:
            raise _bad(f"{rule!r} is not an alert rule; the rules are "
                       f"{', '.join(alert_rules.RULES)}.")
        _default, unit, lo, hi, _desc = alert_rules.RULES[rule]
        if s.threshold is not None and not lo <= s.threshold <= hi:
            raise _bad(f"The {rule} threshold must lie between {lo} and {hi} {unit}, "
                       f"not {s.threshold:g}.")
    for rule, s in body.items():
        access.data.set_alert_setting(access.user["id"], rule, s.enabled, s.threshold)
    return _settings_public(access.data, access.user["id"])

