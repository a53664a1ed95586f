"""The query grammars of Nightscout: API v1's `find[...]` (MongoDB operators written as nested
query keys) and API v3's `field$op=value`, read into one predicate.

A predicate is evaluated in Python on each stored document, so every field of every
collection can be filtered with MongoDB's meaning (a missing field is not equal to anything;
`$ne` matches it; an array matches when one element does). What the store can use to narrow
its SQL (the time range, the type or eventType, ids) is collected on the side as `Hints`.

Values are coerced as Nightscout's readers expect: time fields (date, created_at, dateString,
sysTime, startDate, srvModified, ...) are read as instants whatever their form (ISO with any
offset, a bare date, epoch ms as number, text or with a fraction) and compared as instants;
the numeric fields Nightscout parses (sgv, insulin, carbs, ...) as numbers; other text matches
a stored number or boolean of the same value. A regex runs with a time limit.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import itertools
import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import regex

from nightlink.nightscout import documents, times

TIME_FIELDS = {"date", "created_at", "dateString", "sysTime", "startDate", "srvModified",
               "srvCreated", "mills", "timestamp", "eventTime"}
NUMBER_FIELDS = {"sgv", "mbg", "filtered", "unfiltered", "rssi", "noise", "delta", "insulin",
                 "carbs", "glucose", "duration", "percent", "absolute", "rate", "utcOffset",
                 "targetTop", "targetBottom", "protein", "fat", "trend", "slope", "intercept",
                 "scale"}
# Treatments fields whose value may be written /pattern/flags (Nightscout's parseRegEx).
REGEX_TEXT_FIELDS = {"notes", "eventType", "enteredBy"}
OPS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists", "$regex", "$not")
V3_OPS = {"eq": "$eq", "ne": "$ne", "gt": "$gt", "gte": "$gte", "lt": "$lt", "lte": "$lte",
          "in": "$in", "nin": "$nin", "re": "$regex"}
V3_RESERVED = {"token", "sort", "sort$desc", "limit", "skip", "fields", "now"}
MAX_CONDITIONS = 100
MAX_KEY_PARTS = 8
REGEX_TIMEOUT_S = 0.05  # one pattern on one document
REGEX_BUDGET_S = 2.0  # a query's patterns on all the documents it reads (within find())
DEFAULT_WINDOW_MS = 4 * 24 * 3600 * 1000  # Nightscout's default window without a time filter
_FLAGS = {"i": regex.IGNORECASE, "m": regex.MULTILINE, "s": regex.DOTALL, "x": regex.VERBOSE}


class QueryError(ValueError):
    """A query that cannot be read; the message is one sentence naming the parameter."""


class SlowQuery(QueryError):
    """A query whose patterns took too long on the stored documents (a pattern that
    backtracks without end, or one slow on each of many documents)."""


_BUDGET = threading.local()  # the running find()'s patterns: seconds left to them


@contextlib.contextmanager
def regex_budget(seconds: float = REGEX_BUDGET_S):
    """Within it (one find() on this thread), a pattern that times out on a document, or
    patterns running longer than `seconds` in all (their own time, not the scan's), raise
    SlowQuery instead of reading on."""
    before = getattr(_BUDGET, "left", None)
    _BUDGET.left = seconds
    try:
        yield
    finally:
        _BUDGET.left = before


def _search(pattern, value: str) -> bool:
    """Whether the pattern occurs in the text, within REGEX_TIMEOUT_S (and what is left of
    the running find()'s budget, if any): past it, no match, or SlowQuery inside
    regex_budget."""
    left = getattr(_BUDGET, "left", None)
    timeout = REGEX_TIMEOUT_S if left is None else min(REGEX_TIMEOUT_S, left)
    started = time.monotonic()
    try:
        return pattern.search(value, timeout=max(timeout, 1e-6)) is not None
    except TimeoutError:
        if left is None:
            return False
        if timeout < REGEX_TIMEOUT_S:
            raise SlowQuery("The query's patterns took too long on the stored documents; "
                            "narrow it (a time range) or simplify the pattern.") from None
        raise SlowQuery(f"The pattern {pattern.pattern[:60]!r} takes too long on the stored "
                        "documents; simplify it.") from None
    finally:
        if left is not None:
            _BUDGET.left = left - (time.monotonic() - started)


# -- the predicate --------------------------------------------------------------------------------


@dataclass
class Cond:
    """One condition: field (a dotted path), operator, operand (already coerced)."""

    path: str
    op: str
    operand: Any

    def matches(self, doc: dict) -> bool:
        if self.path == "_id":  # an `_id` names the ObjectId or, as Nightscout reads a
            found = True        # non-ObjectId _id, the identifier
            value = [doc.get("_id"), doc.get("identifier")]
        else:
            found, value = _lookup(doc, self.path)
        op = self.op
        if op == "$exists":
            return found == self.operand
        if op in ("$ne", "$nin"):
            return not Cond(self.path, "$eq" if op == "$ne" else "$in", self.operand).matches(doc)
        if not found:
            return False
        values = value if isinstance(value, list) and op != "$eq" else [value]
        if isinstance(value, list) and op == "$eq":
            values = [value, *value]
        return any(self._one(v) for v in values)

    def _one(self, value: Any) -> bool:
        op, operand = self.op, self.operand
        if op == "$in":
            return any(_equal(value, o, self.path) for o in operand)
        if op == "$eq":
            return _equal(value, operand, self.path)
        if op == "$regex":
            return isinstance(value, str) and _search(operand, value)
        left, right = _comparable(value, operand, self.path)
        if left is None:
            return False
        return {"$gt": left > right, "$gte": left >= right, "$lt": left < right,
                "$lte": left <= right}[op]


@dataclass
class Any_:
    """$or of sub-predicates."""

    parts: list

    def matches(self, doc: dict) -> bool:
        return any(p.matches(doc) for p in self.parts)


@dataclass
class Not:
    """$not of a field's operators: true where they do not all hold, the field missing too
    (MongoDB's rule; Urchin asks for loop statuses without `failureReason`)."""

    part: All

    def matches(self, doc: dict) -> bool:
        return not self.part.matches(doc)


@dataclass
class All:
    """$and of sub-predicates (also the top level)."""

    parts: list

    def matches(self, doc: dict) -> bool:
        return all(p.matches(doc) for p in self.parts)


def _lookup(doc: Any, path: str) -> tuple[bool, Any]:
    for part in path.split("."):
        if isinstance(doc, dict) and part in doc:
            doc = doc[part]
        elif isinstance(doc, list) and part.isdecimal() and int(part) < len(doc):
            doc = doc[int(part)]
        else:
            return False, None
    return True, doc


def _leaf(path: str) -> str:
    return path.rsplit(".", 1)[-1]


def _as_time(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    return times.try_ms(value)


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _comparable(value: Any, operand: Any, path: str) -> tuple[Any, Any]:
    """Both sides in one type for an ordering comparison, or (None, None) when they have none."""
    if isinstance(operand, Instant):
        got = _as_time(value)
        return (got, operand.ms) if got is not None else (None, None)
    if isinstance(operand, float):
        got = _as_number(value)
        return (got, operand) if got is not None else (None, None)
    if isinstance(operand, str) and isinstance(value, str):
        return value, operand
    return None, None


def _equal(value: Any, operand: Any, path: str) -> bool:
    if isinstance(operand, Instant):
        return _as_time(value) == operand.ms
    if isinstance(operand, regex.Pattern):
        return isinstance(value, str) and _search(operand, value)
    if isinstance(operand, bool) or isinstance(value, bool):
        if isinstance(operand, str):
            operand = {"true": True, "false": False}.get(operand.lower(), operand)
        return value is operand or value == operand and type(value) is type(operand)
    if operand is None:
        return value is None
    if isinstance(operand, float):
        return _as_number(value) == operand
    if isinstance(value, int | float):
        return _as_number(operand) == float(value)
    return value == operand


@dataclass(frozen=True)
class Instant:
    ms: int


# -- what the store can narrow its SQL with -----------------------------------------------------


@dataclass
class Hints:
    """Conditions on indexed columns, taken from the top-level AND of a query."""

    lo: int | None = None  # date_ms >= lo
    hi: int | None = None  # date_ms <= hi
    kinds: set[str] | None = None  # type / eventType / device in
    ids: set[str] | None = None  # oid or identifier in
    names_time: bool = False  # the query constrains the collection's time field
    names_id: bool = False

    def narrow(self, lo: int | None = None, hi: int | None = None) -> None:
        if lo is not None:
            self.lo = lo if self.lo is None else max(self.lo, lo)
        if hi is not None:
            self.hi = hi if self.hi is None else min(self.hi, hi)


_KIND_FIELD = {documents.ENTRIES: "type", documents.TREATMENTS: "eventType", documents.DEVICESTATUS: "device"}
# (`mills` of entries and treatments is their stored time as queries see it: Row.view)
_INDEXED_TIME = {documents.ENTRIES: {"date", "dateString", "sysTime", "mills"},
                 documents.TREATMENTS: {"created_at", "mills"},
                 documents.DEVICESTATUS: {"created_at"}, documents.PROFILE: {"startDate"},
                 documents.FOOD: {"created_at"}, documents.ACTIVITY: {"created_at"}, documents.SETTINGS: set()}


def _hint(coll: str, cond: Cond, hints: Hints) -> None:
    time_fields = _INDEXED_TIME.get(coll, set())
    if cond.path in time_fields | {documents.time_field(coll)}:
        hints.names_time = True
    if cond.path == "_id":
        hints.names_id = True
    if cond.path in time_fields and isinstance(cond.operand, Instant):
        ms = cond.operand.ms
        bound = {"$gt": (ms + 1, None), "$gte": (ms, None), "$lt": (None, ms - 1),
                 "$lte": (None, ms), "$eq": (ms, ms)}.get(cond.op)
        if bound:
            hints.narrow(*bound)
    elif cond.path == _KIND_FIELD.get(coll) and cond.op in ("$eq", "$in"):
        values = cond.operand if cond.op == "$in" else [cond.operand]
        if all(isinstance(v, str) for v in values):
            kinds = set(values)
            hints.kinds = kinds if hints.kinds is None else hints.kinds & kinds
    elif cond.path in ("_id", "identifier") and cond.op in ("$eq", "$in"):
        values = cond.operand if cond.op == "$in" else [cond.operand]
        if all(isinstance(v, str) for v in values):
            hints.ids = set(values) if hints.ids is None else hints.ids & set(values)


@dataclass
class Query:
    """A parsed query: the predicate, hints for SQL, and whether it names the time field."""

    coll: str
    where: All = field(default_factory=lambda: All([]))
    hints: Hints = field(default_factory=Hints)

    def matches(self, doc: dict) -> bool:
        return self.where.matches(doc)

    def default_window(self, now_ms: int) -> None:
        """Nightscout's last-4-days window when the query names neither time nor _id."""
        if not self.hints.names_time and not self.hints.names_id:
            self.hints.narrow(lo=now_ms - DEFAULT_WINDOW_MS)

    def add(self, cond: Cond) -> None:
        self.where.parts.append(cond)
        _hint(self.coll, cond, self.hints)

    def set_type(self, kind: str) -> None:
        """Only entries of this type, whatever `find[type]` asked (a path's type replaces it,
        as Nightscout's routes set `find.type`)."""
        self.where.parts = [p for p in self.where.parts if getattr(p, "path", None) != "type"]
        if _KIND_FIELD.get(self.coll) == "type":
            self.hints.kinds = None  # only the type conditions just dropped set it
        self.add(Cond("type", "$eq", kind))


# -- coercion -------------------------------------------------------------------------------------


def _coerce(coll: str, path: str, raw: Any, key: str, *, v3: bool = False) -> Any:
    """The operand for a raw query value on a field."""
    name = _leaf(path)
    if isinstance(raw, list):
        raise QueryError(f"{key} takes one value, not a list.")
    if isinstance(raw, dict):
        raise QueryError(f"{key} takes a value, not an object.")
    text = str(raw)
    if name in TIME_FIELDS:
        try:
            return Instant(times.parse_ms(text.replace(" ", "+", 1) if _space_offset(text)
                                           else text, seconds_ok=v3))
        except times.TimeError as exc:
            raise QueryError(f"{key}={text}: {exc}") from None
    if name in NUMBER_FIELDS:
        number = _as_number(text)
        return number if number is not None else _NaN
    if v3:
        if len(text) >= 2 and text[0] == text[-1] == "'":
            return text[1:-1]
        if text in ("true", "false"):
            return text == "true"
        number = _as_number(text)
        return number if number is not None and text.strip() else text
    if coll == documents.TREATMENTS and name in REGEX_TEXT_FIELDS and len(text) > 2 \
            and text.startswith("/") and text.rfind("/") > 0:
        end = text.rfind("/")
        return _compile(text[1:end], text[end + 1:], key)
    return text


def _space_offset(text: str) -> bool:
    """An ISO time whose `+hh:mm` offset arrived as a space (a `+` not escaped in the URL)."""
    return " " in text.strip() and "T" in text and text.count(" ") == 1 \
        and text.rsplit(" ", 1)[1][:2].isdecimal() and ":" in text.rsplit(" ", 1)[0]


class _NotANumber:
    """Nightscout's parseInt of text that is not a number: matches nothing."""

    def __repr__(self) -> str:
        return "NaN"


_NaN = _NotANumber()


MAX_EXPANSION = 50_000  # what the patterns of one query may expand to when compiled
_QUANTIFIER = regex.compile(r"\{(\d*)(?:,(\d*))?\}")
_VERBOSE = regex.compile(r"\(\?[\^a-zA-Z-]*x")  # (?x), (?ix:, (?-x: … in the pattern itself
_EXPANSION: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar(
    "nightscout_pattern_budget", default=None)


def expansion(pattern: str) -> int:
    """About how many atoms the regex engine expands a pattern to when it compiles it: each
    atom counts 1, times the counted repeats ({m}, {m,n}, {m,}) around it, summed over the
    pattern (alternatives included). `(?:x{3000}){3000}` is 19 characters and 9 million,
    gigabytes and seconds of compiling; a length limit cannot bound that. Comments (?#…) are
    skipped; a verbose pattern (flag x) is refused before this is asked."""
    levels, last, i = [0], 1, 0  # the sum within each open group; the last atom's size
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            last, i = 1, i + 2
            levels[-1] += 1
            continue
        if c == "[":  # a character class is one atom, whatever braces it holds
            j = i + 1 + (pattern[i + 1:i + 2] == "^")
            j += pattern[j:j + 1] == "]"
            while j < len(pattern) and pattern[j] != "]":
                j += 2 if pattern[j] == "\\" else 1
            last, i = 1, j + 1
            levels[-1] += 1
            continue
        if pattern.startswith("(?#", i):  # a comment: to its first ")"
            end = pattern.find(")", i)
            i = len(pattern) if end < 0 else end + 1
            continue
        if c == "(":
            levels.append(0)
            i += 1
            continue
        if c == ")":
            last = max(levels.pop(), 1) if len(levels) > 1 else 1
            levels[-1] += last
            i += 1
            continue
        if c == "{":
            m = _QUANTIFIER.match(pattern, i)
            if m and (m.group(1) or m.group(2)):
                bound = max(int(m.group(1) or 0), int(m.group(2) or 0), 1)
                levels[-1] += last * (bound - 1)
                last *= bound
                i = m.end()
                continue
        last = 1
        levels[-1] += 1
        i += 1
    return sum(levels)


def _budgeted(fn):
    """fn with one budget of pattern expansion (MAX_EXPANSION) for every pattern it compiles,
    unless a caller's is already running: a slice expands to up to 1,000 patterns and a v3
    search takes many conditions, so a budget per pattern alone would multiply."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        if _EXPANSION.get() is not None:
            return fn(*args, **kwargs)
        token = _EXPANSION.set([MAX_EXPANSION])
        try:
            return fn(*args, **kwargs)
        finally:
            _EXPANSION.reset(token)

    return run


def _compile(pattern: str, flags: str, key: str):
    if len(pattern) > 256:
        raise QueryError(f"{key}: a pattern is at most 256 characters long.")
    if "x" in flags or _VERBOSE.search(pattern):  # spaces and # would hide its quantifiers
        raise QueryError(f"{key}: the x (verbose) flag is not supported; write the pattern "
                         "without spaces and comments.")
    budget = _EXPANSION.get() or [MAX_EXPANSION]
    budget[0] -= expansion(pattern)
    if budget[0] < 0:
        raise QueryError(f"{key}: the query's patterns expand to more than {MAX_EXPANSION:,} "
                         "atoms when compiled (counted repeats multiply when nested).")
    bits = 0
    for flag in flags:
        if flag not in _FLAGS and flag not in "gu":
            raise QueryError(f"{key}: {flag!r} is not a regex flag (use i, m or s).")
        bits |= _FLAGS.get(flag, 0)
    try:  # not kept in the module's cache: 500 big patterns would stay in memory
        return regex.compile(pattern, bits, cache_pattern=False)
    except regex.error as exc:
        raise QueryError(f"{key}: the pattern is not a valid regex ({exc}).") from None


def _exists(raw: Any) -> bool:
    return str(raw).strip().lower() not in ("false", "0", "no")


# -- API v1: find[...] ----------------------------------------------------------------------------


def _key_parts(key: str) -> list[str] | None:
    """`find[a][$gte]` -> ["a", "$gte"]; None when the key is not a find key."""
    if not key.startswith("find[") or not key.endswith("]"):
        return None
    parts = key[len("find["):-1].split("][")
    if len(parts) > MAX_KEY_PARTS or any("[" in p or "]" in p for p in parts):
        raise QueryError(f"The query key {key} is not of the form find[field][$operator].")
    return parts


def _tree(params: Iterable[tuple[str, str]]) -> dict:
    """The `find` object as qs builds it: nested dicts, `[]` and numeric keys as lists."""
    root: dict = {}
    count = 0
    for key, value in params:
        parts = _key_parts(key)
        if parts is None:
            continue
        count += 1
        if count > MAX_CONDITIONS:
            raise QueryError(f"A query has at most {MAX_CONDITIONS} find conditions.")
        node = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if part == "":
                part = str(sum(1 for k in node if k.isdecimal()))  # `[]` appends
            if last:
                if part in node and isinstance(node[part], dict):
                    raise QueryError(f"{key} repeats a condition given as an object.")
                node[part] = value
            else:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    raise QueryError(f"{key} mixes a value and conditions on one field.")
                node = child
    return root


def _items(value: Any) -> list:
    if isinstance(value, dict):
        if value and all(k.isdecimal() for k in value):
            return [value[k] for k in sorted(value, key=int)]
        return [value]
    return [value]


def _compile_object(coll: str, obj: dict, prefix: str, key: str, query: Query | None,
                    parts: list) -> None:
    for name, value in obj.items():
        where = f"{key}[{name}]"
        if name in ("$or", "$and"):
            subs = []
            for sub in _items(value):
                if not isinstance(sub, dict):
                    raise QueryError(f"{where} takes conditions, not a value.")
                inner: list = []
                _compile_object(coll, sub, prefix, where, None, inner)
                subs.append(All(inner))
            parts.append(Any_(subs) if name == "$or" else All(subs))
            continue
        if name.startswith("$"):
            raise QueryError(f"{where}: {name} is not supported; use {', '.join(OPS)}.")
        if not name or len(name) > 64:
            raise QueryError(f"{where} does not name a field.")
        path = f"{prefix}{name}"
        if isinstance(value, dict) and any(k.startswith("$") for k in value):
            _operators(coll, path, value, where, query, parts)
        elif isinstance(value, dict):
            _compile_object(coll, value, f"{path}.", where, query, parts)
        else:
            _append(Cond(path, "$eq", _coerce(coll, path, value, where)), query, parts)


def _operators(coll: str, path: str, ops: dict, key: str, query: Query | None,
               parts: list) -> None:
    options = ops.get("$options", "")
    for op, raw in ops.items():
        where = f"{key}[{op}]"
        if op == "$options":
            continue
        if op not in OPS:
            raise QueryError(f"{where}: {op} is not supported; use {', '.join(OPS)}.")
        if op == "$not":  # no hint for SQL: the documents it leaves are read and tested
            if not isinstance(raw, dict) or not raw or not all(
                    isinstance(k, str) and k.startswith("$") for k in raw):
                raise QueryError(f"{where} takes operators such as [$exists]=true.")
            inner: list = []
            _operators(coll, path, raw, where, None, inner)
            (query.where.parts if query is not None else parts).append(Not(All(inner)))
            continue
        if op == "$exists":
            operand: Any = _exists(raw)
        elif op == "$regex":
            operand = _compile(str(raw), str(options), where)
        elif op in ("$in", "$nin"):
            operand = [_coerce(coll, path, v, where) for v in _items(raw)]
        else:
            operand = _coerce(coll, path, raw, where)
        _append(Cond(path, op, operand), query, parts)


def _append(cond: Cond, query: Query | None, parts: list) -> None:
    if query is not None:
        query.add(cond)
    else:
        parts.append(cond)


@_budgeted
def parse_find(coll: str, params: Iterable[tuple[str, str]]) -> Query:
    """The Query of a v1 request's `find[...]` parameters (others are ignored)."""
    query = Query(coll)
    _compile_object(coll, _tree(params), "", "find", query, query.where.parts)
    return query


def parse_count(raw: str | None, default: int | None, maximum: int) -> int:
    """How many documents `count` asks for, read as Nightscout's parseInt reads it: leading
    digits count, 0 and `all` mean as many as allowed, text that is no number means the
    default; never more than `maximum`."""
    text = (raw or "").strip().lower()
    match = _COUNT.match(text)
    if text == "all":
        return maximum
    if match is None:
        return maximum if default is None else default
    value = int(match.group(1)[:12])
    return maximum if value == 0 or value > maximum else value


_COUNT = regex.compile(r"[+-]?(\d+)")


# -- API v1 slices: /slice/{storage}/{field}/{type}/{prefix}/{regex} and /times ------------------
#
# Nightscout turns the path's prefix and regex into patterns by bash-style brace expansion
# (`2015-04/T{13..18}:{00..15}` asks for those hours and minutes on any day of April 2015):
# the field must match one of the expanded patterns and, when the prefix expands to one
# pattern only, start with it.

MAX_PATTERNS = 1000  # expanded patterns of one slice
MAX_SLICE_TEXT = 256  # characters of a slice's prefix or regex, before expansion
_RANGE = regex.compile(r"(-?\d+)\.\.(-?\d+)(?:\.\.(-?\d+))?|([A-Za-z])\.\.([A-Za-z])")
_FIELD = regex.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}(?:\.[A-Za-z_][A-Za-z0-9_]{0,63}){0,7}")


def expand_braces(text: str, limit: int = MAX_PATTERNS) -> list[str]:
    """Bash-style brace expansion as Nightscout's `braces` reads a slice: `{a,b}` lists,
    `{1..3}` and `{01..12}` (zero-padded) and `{a..e}` ranges, nested; a brace that is
    neither (a regex quantifier such as `\\d{2}`), or one escaped with a backslash, stays
    as written. More than `limit` results is a QueryError."""
    out: list[str] = []
    pending = [text]
    while pending:
        item = pending.pop()
        found = _first_group(item)
        if found is None:
            out.append(item)
            if len(out) > limit:
                raise QueryError(f"The slice expands to more than {limit} patterns.")
            continue
        start, end, options = found
        if len(options) + len(out) + len(pending) > limit:
            raise QueryError(f"The slice expands to more than {limit} patterns.")
        pending.extend(item[:start] + o + item[end + 1:] for o in reversed(options))
    return out


def _first_group(text: str) -> tuple[int, int, list[str]] | None:
    """(start, end, alternatives) of the first brace group that expands, or None. One pass
    with a stack: each comma belongs to the innermost open brace, a backslash escapes the
    character after it."""
    groups, stack = [], []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            stack.append((i, []))
        elif c == "," and stack:
            stack[-1][1].append(i)
        elif c == "}" and stack:
            start, commas = stack.pop()
            groups.append((start, i, commas))
        i += 1
    for start, end, commas in sorted(groups):
        if commas:
            cuts = [start, *commas, end]
            return start, end, [text[x + 1:y] for x, y in itertools.pairwise(cuts)]
        span = _range(text[start + 1:end])
        if span is not None:
            return start, end, span
    return None


def _range(body: str) -> list[str] | None:
    match = _RANGE.fullmatch(body)
    if match is None:
        return None
    if match.group(4):
        a, b = ord(match.group(4)), ord(match.group(5))
        step = 1 if b >= a else -1
        return [chr(c) for c in range(a, b + step, step)]
    first, last = match.group(1), match.group(2)
    a, b = int(first), int(last)
    by = abs(int(match.group(3) or 1)) or 1
    if abs(b - a) // by >= MAX_PATTERNS:
        raise QueryError(f"The range {{{body}}} has more than {MAX_PATTERNS} values.")
    padded = any(len(x.lstrip("-")) > 1 and x.lstrip("-").startswith("0") for x in (first, last))
    width = max(len(first), len(last)) if padded else 0
    values = range(a, b + (1 if b >= a else -1), by if b >= a else -by)  # b at most
    return [(f"-{str(-v).zfill(width - 1)}" if v < 0 else str(v).zfill(width)) for v in values]


@_budgeted
def slice_conditions(field_name: str, prefix: str | None, pattern: str | None) -> list[Cond]:
    """The conditions of a slice: the field matching one of the patterns the prefix and regex
    expand to (and starting with the prefix when it is one pattern). A type the slice names is
    the query's own (Query.set_type)."""
    if not _FIELD.fullmatch(field_name):
        raise QueryError(f"{field_name!r} is not a field name.")
    for part, text in (("prefix", prefix), ("regex", pattern)):
        if text and len(text) > MAX_SLICE_TEXT:
            raise QueryError(f"The slice's {part} is at most {MAX_SLICE_TEXT} characters long.")
    prefixes = expand_braces(prefix or ".*")
    parts = ["^" + prefix] if prefix and len(prefixes) > 1 else []
    if pattern:
        parts.append(".*" + pattern)
    patterns = expand_braces("".join(parts)) or [""]
    key = f"the slice of {field_name}"
    conds = [Cond(field_name, "$in", [_compile(p, "", key) for p in patterns])]
    if len(prefixes) == 1:
        conds.append(Cond(field_name, "$regex", _compile("^" + prefixes[0], "", key)))
    return conds


# -- API v3: field$op=value -----------------------------------------------------------------------


@_budgeted
def parse_v3(coll: str, params: Iterable[tuple[str, str]]) -> Query:
    """The Query of a v3 search's filter parameters (every parameter but the reserved ones)."""
    query = Query(coll)
    count = 0
    for key, raw in params:
        if key in V3_RESERVED:
            continue
        count += 1
        if count > MAX_CONDITIONS:
            raise QueryError(f"A query has at most {MAX_CONDITIONS} filters.")
        path, _, op_name = key.rpartition("$") if "$" in key else (key, "", "eq")
        if not path:
            raise QueryError(f"{key} does not name a field.")
        op = V3_OPS.get(op_name)
        if op is None:
            raise QueryError(f"Unsupported filter operator {op_name}")
        if op == "$regex":
            operand: Any = _compile(raw, "", key)
        elif op in ("$in", "$nin"):
            operand = [_coerce(coll, path, v, key, v3=True) for v in raw.split("|")]
        else:
            operand = _coerce(coll, path, raw, key, v3=True)
        query.add(Cond(path, op, operand))
    return query
