"""Times as clients write them (nightscout/times.py): JavaScript's and Java's Date.toString()
count their GMT offset, a zone given only by an unknown name is refused rather than read as
UTC, and numbers too large for a date are refused, never a 500."""

from __future__ import annotations

import pytest

from nightlink.nightscout import times


@pytest.mark.parametrize(("text", "iso", "offset"), [
    ("Thu Dec 03 2026 09:00:00 GMT+0100 (CET)", "2026-12-03T08:00:00.000Z", 60),  # Node
    ("Thu Dec 03 2026 09:00:00 GMT+0100 (Central European Standard Time)",
     "2026-12-03T08:00:00.000Z", 60),
    ("Thu Dec 03 09:00:00 GMT+01:00 2026", "2026-12-03T08:00:00.000Z", 60),  # Java
    ("Thu Dec 03 2026 09:00:00 GMT-0500 (EST)", "2026-12-03T14:00:00.000Z", -300),
    ("Thu Dec 03 2026 09:00:00 GMT+0530 (India Standard Time)", "2026-12-03T03:30:00.000Z",
     330),
    ("Sun Mar 08 18:03:54 PST 2015", "2015-03-09T02:03:54.000Z", -480),  # legacy uploader
    ("Wed, 02 Dec 2026 10:00:00 GMT", "2026-12-02T10:00:00.000Z", 0),
    ("2026-12-03T09:00:00+01:00", "2026-12-03T08:00:00.000Z", 60),
    ("Thu Dec 03 2026 09:00:00 GMT+1", "2026-12-03T08:00:00.000Z", 60),  # no minutes
    ("Dec 3, 2026 9:00:00 PM", "2026-12-03T21:00:00.000Z", None),  # as Node reads it (UTC)
    ("Dec 3, 2026 12:05:00 AM", "2026-12-03T00:05:00.000Z", None),
    ("Thu, 03 Dec 2026 12:30:00 PM GMT", "2026-12-03T12:30:00.000Z", 0),
])
def test_parse__written_dates_keep_their_offset(text, iso, offset):
    ms, minutes = times.parse(text)
    assert (times.iso(ms), minutes) == (iso, offset)


@pytest.mark.parametrize(("text", "says"), [
    ("Thu Dec 03 09:00:00 CET 2026", "names its zone 'CET'"),
    ("Thu, 03 Dec 2026 09:00:00 IST", "names its zone 'IST'"),
    ("03 Dec 99999999999 10:00:00", "is not an ISO 8601 time"),
    ("Thu, 03 Dec 2026 10:00:00 +99999999999999999", "is not an ISO 8601 time"),
    ("x" * 101, "at most 100 characters"),
    ("Dec 3, 2026 13:00:00 PM", "an hour of 13 with PM"),
])
def test_parse__refused_in_one_sentence(text, says):
    with pytest.raises(times.TimeError, match=says):
        times.parse(text)


def test_parse_http_date__an_offset_too_large_is_no_date():
    assert times.parse_http_date("Thu, 03 Dec 2026 10:00:00 +99999999999999999") is None
    assert times.parse_http_date("03 Dec 99999999999 10:00:00") is None
    assert times.parse_http_date("Thu, 03 Dec 2026 10:00:00 GMT") == 1_796_292_000_000
