"""The one exception type the command line turns into a one-sentence error."""


class NightlinkError(Exception):
    """A user-facing error: its message is a full sentence, shown without a traceback."""


def http_detail(response) -> str:
    """Why an HTTP answer (an httpx.Response) refused, for a sentence: the API's `detail`
    (FastAPI's validation errors joined), else the reason phrase; no final full stop."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, list):  # FastAPI validation errors
        detail = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d)
                           for d in detail)
    return str(detail or response.reason_phrase or "no reason given").rstrip(".")
