"""The one exception type the command line turns into a one-sentence error."""


class NightlinkError(Exception):
    """A user-facing error: its message is a full sentence, shown without a traceback."""


def has_control_chars(text: str) -> bool:
    """Whether text someone typed holds a control character (C0 or DEL): a line break in a
    configuration line writes a setting of its own, a NUL ends a C string."""
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


def one_line_each(**values) -> None:
    """ValueError naming the option when a value for a line of mosquitto.conf holds a line
    break or another control character: `--bind $'0.0.0.0\\nallow_anonymous true'` would
    otherwise write a setting of its own into the broker's configuration."""
    for name, value in values.items():
        if has_control_chars(str(value)):
            raise ValueError(f"--{name.replace('_', '-')} holds a line break or another "
                             "control character, which mosquitto.conf cannot take.")


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


def cloud_url(url: str) -> str:
    """The cloud's base URL as given (no trailing slash), or NightlinkError in one sentence
    when it is not an http(s) URL; a password written into it is never echoed."""
    import httpx

    shown = url.split("@", 1)[-1] if "@" in url else url
    if not url.startswith(("http://", "https://")):
        raise NightlinkError(f"The cloud address {shown!r} must start with http:// or https://.")
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise NightlinkError(f"The cloud address {shown!r} is not a URL ({exc}).") from None
    if not parsed.host:
        raise NightlinkError(f"The cloud address {shown!r} names no host.")
    if parsed.userinfo:
        raise NightlinkError("Give the cloud address without a user or password in it; the "
                             "commands ask for those.")
    return url.rstrip("/")


def finite_range(low: float, high: float):
    """A click float option within [low, high] that also refuses nan and inf (click's
    FloatRange lets nan through: every comparison with it is false)."""
    import math

    import click

    class _Finite(click.FloatRange):
        def convert(self, value, param, ctx):
            number = super().convert(value, param, ctx)
            if not math.isfinite(number):
                self.fail(f"{value!r} is not a number.", param, ctx)
            return number

    return _Finite(low, high)
