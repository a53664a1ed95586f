"""Patterns the API's request bodies share, and the check of a night's date in a query."""

from typing import Annotated

from fastapi import HTTPException, Path
from pydantic import AfterValidator, Field

from nightlink.errors import has_control_chars

# A row's id in a path: a positive 64-bit integer (a larger one could not be stored, and was
# a 500 from the database driver instead of a 422).
ROW_ID_MAX = 2**63 - 1
RowId = Annotated[int, Path(ge=1, le=ROW_ID_MAX)]

# No spaces, no control characters (a NUL or a line break has no place in a mail header).
EMAIL = r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+$"
SLUG = r"^[a-z0-9][a-z0-9_-]{0,31}$"
DEVICE_ID = r"^[0-9a-f]{12}$"


NAME_MAX = 100  # characters of a person's, a space's or an account's name
LABEL_MAX = 64  # characters of a device's label


def one_line(value: str) -> str:
    """A name as typed, its runs of spaces made one; a control character refused: a line
    break or form feed in a name closed the string of the PDF footer's style and wrote style
    rules of its own (which fetched any address from the server), and has no place in a
    mail or a CSV either."""
    if has_control_chars(value):
        raise ValueError("control characters (a line break, a tab, a NUL) have no place in "
                         "a name")
    return " ".join(value.split())


# The name of a person, a space or a device, as shown on pages, reports, mails and exports.
Name = Annotated[str, Field(max_length=NAME_MAX), AfterValidator(one_line)]
Label = Annotated[str, Field(max_length=LABEL_MAX), AfterValidator(one_line)]


def night_param(name: str, value: str | None, *, optional: bool = True) -> str | None:
    """value unchanged when it names a night by the date of its evening (None or "" as None
    when the night is optional); else a 422 saying how to write one."""
    from nightlink.cloud.fusion import check_night_date

    if optional and (value is None or value == ""):
        return None
    try:
        check_night_date(value)
    except ValueError:
        raise HTTPException(422, f"{name}={value!r} is not a night; use the date of its "
                                 "evening as YYYY-MM-DD (2026-01-15), 1990 to 2099.") from None
    return value
