"""Request bodies read safely: size, compression, nesting, numbers and text that JSON allows but
storage and later replies do not.

Whatever an uploader sends, what comes out of `loads` can be stored, read back and written as
JSON again: lone UTF-16 surrogates (half an emoji) become U+FFFD, numbers JSON cannot write
(1e400, NaN) become null, integral floats become ints (JavaScript has one number type, so
Nightscout answers 112 for 112.0). What would cost far more to hold than to send is refused
with a one-sentence BodyError: nesting deeper than MAX_DEPTH, an array longer than
MAX_ARRAY_ITEMS, more than MAX_NODES values, a number written with more than
MAX_NUMBER_DIGITS digits (a 5,000-digit integer takes quadratic time to convert, and one of
400 digits cannot become a float). docs/nightscout.md ("Limits") says why each bound is
far above what a real client sends.
"""

from __future__ import annotations

import json
import math
import zlib
from typing import Any

MAX_BODY_BYTES = 8 * 1024 * 1024  # a week of xDrip+ backlog is well under 1 MB
MAX_DEPTH = 32  # AndroidAPS's and Loop's devicestatus are 5-6 deep, a profile 5
MAX_ARRAY_ITEMS = 20_000  # as many documents as one upload may hold
MAX_NODES = 500_000
MAX_NUMBER_DIGITS = 40  # a double needs 17 significant digits, a 64-bit integer 19
_STORED_DEPTH = 64  # what earlier releases accepted, so that their rows still read
_INT_LIMIT = 2**63


class BodyError(ValueError):
    """A body that cannot be used; `status` is the HTTP status to answer, the message one sentence."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def decompress(body: bytes, encoding: str, max_bytes: int = MAX_BODY_BYTES) -> bytes:
    """The body without its Content-Encoding (gzip or deflate), at most `max_bytes`: a
    compressed body is inflated no further than that (a 10 KB gzip of 10 MB of zeros is
    refused after inflating max_bytes + 1, not inflated whole)."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise BodyError(f"Content-Encoding {encoding!r} is not supported; send gzip or plain "
                        "JSON.", 415)
    wbits = 16 + zlib.MAX_WBITS if "gzip" in encoding else zlib.MAX_WBITS
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise BodyError(f"The {encoding} body cannot be decompressed ({exc}).") from None
    if len(out) > max_bytes or inflater.unconsumed_tail:
        raise BodyError(f"The body is larger than {max_bytes} bytes once decompressed.", 413)
    if not inflater.eof:
        raise BodyError(f"The {encoding} body is cut short.")
    return out


def _too_long(text: str) -> BodyError:
    return BodyError(f"A number in the JSON has more than {MAX_NUMBER_DIGITS} digits "
                     f"({text[:12]}…).")


def _integer(text: str) -> int:
    """A JSON integer, refused before conversion when it has too many digits."""
    if len(text) - text.startswith("-") > MAX_NUMBER_DIGITS:
        raise _too_long(text)
    return int(text)


def _finite(text: str) -> float | None:
    """A JSON number with a fraction or exponent; null when a float cannot hold it (1e400)."""
    mantissa = text.lower().partition("e")[0]
    if sum(c.isdigit() for c in mantissa) > MAX_NUMBER_DIGITS:
        raise _too_long(text)
    value = float(text)
    return value if math.isfinite(value) else None


def loads(body: bytes | str) -> Any:
    """Parse JSON into storable values (see the module docstring); BodyError if it is not JSON."""
    try:
        value = json.loads(body, parse_int=_integer, parse_float=_finite,
                           parse_constant=lambda _: None)
    except BodyError:
        raise
    except RecursionError:
        raise BodyError(f"The JSON is nested deeper than {MAX_DEPTH} levels.") from None
    except UnicodeDecodeError as exc:
        raise BodyError(f"The body is not UTF-8 text ({exc.reason}).") from None
    except ValueError as exc:  # JSONDecodeError, and integers longer than Python parses
        raise BodyError(f"The body is not valid JSON ({exc}).") from None
    budget = [MAX_NODES]
    return clean(value, 0, budget)


def clean(value: Any, depth: int = 0, budget: list[int] | None = None,
          max_depth: int = MAX_DEPTH) -> Any:
    """A JSON value made storable (see the module docstring); BodyError when too deep or big.
    `depth` counts the arrays and objects around `value`."""
    if budget is not None:
        budget[0] -= 1
        if budget[0] < 0:
            raise BodyError(f"The JSON holds more than {MAX_NODES} values.")
    if isinstance(value, str):
        return text(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if -_INT_LIMIT < value < _INT_LIMIT else _big(value)
    if isinstance(value, float):
        return number(value)
    if isinstance(value, list | dict) and depth >= max_depth:
        raise BodyError(f"The JSON is nested deeper than {max_depth} levels.")
    if isinstance(value, list):
        if len(value) > MAX_ARRAY_ITEMS:
            raise BodyError(f"An array in the JSON holds at most {MAX_ARRAY_ITEMS} values, "
                            f"not {len(value)}.")
        return [clean(v, depth + 1, budget, max_depth) for v in value]
    if isinstance(value, dict):
        return {text(str(k)): clean(v, depth + 1, budget, max_depth) for k, v in value.items()}
    return text(str(value))


def _big(value: int) -> float | None:
    """An integer beyond 64 bits as JavaScript holds it (a float), null beyond a float."""
    try:
        return number(float(value))
    except OverflowError:
        return None


def number(value: float) -> int | float | None:
    """A float as JavaScript would write it: integral values as ints, non-finite as null."""
    if not math.isfinite(value):
        return None
    if value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def text(value: str) -> str:
    """The string with lone surrogates replaced, so it encodes as UTF-8."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def finite_size(value: Any) -> int | None:
    """Characters of `value` as JSON (json.dumps' default separators), None when it is not
    JSON or holds NaN or infinity (a later read, and PostgreSQL's JSON, would refuse it)."""
    try:
        return len(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError):
        return None


def dumps(value: Any) -> str:
    """Compact JSON text of a cleaned value (for storage)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def load_stored(text_: str | bytes | None) -> Any:
    """A stored document read back; an unreadable old row reads as None rather than failing."""
    if text_ is None:
        return None
    try:
        if isinstance(text_, bytes | bytearray | memoryview):
            text_ = bytes(text_).decode("utf-8", "replace")
        return clean(json.loads(text_, parse_float=_finite, parse_constant=lambda _: None),
                     max_depth=_STORED_DEPTH)
    except (ValueError, RecursionError, BodyError):
        return None
