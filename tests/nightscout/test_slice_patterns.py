"""Brace expansion of Nightscout's slices (nightscout/query.py), as bash and the `braces`
package cgm-remote-monitor uses read `/api/v1/times/2015-04/T{13..18}:{00..15}`."""

from __future__ import annotations

import pytest

from nightlink.nightscout.query import QueryError, expand_braces, slice_conditions


@pytest.mark.parametrize(("text", "expanded"), [
    (".*", [".*"]),
    ("T{13..15}", ["T13", "T14", "T15"]),
    ("{00..03}", ["00", "01", "02", "03"]),  # a leading zero pads every value
    ("{3..1}", ["3", "2", "1"]),
    ("{1..7..3}", ["1", "4", "7"]),
    ("{1..10..4}", ["1", "5", "9"]),  # a step never passes the end
    ("{-5..5..3}", ["-5", "-2", "1", "4"]),
    ("{a..c}", ["a", "b", "c"]),
    ("20{14,15}-{a,b{1,2}}", ["2014-a", "2014-b1", "2014-b2", "2015-a", "2015-b1", "2015-b2"]),
    (r"\d{2}", [r"\d{2}"]),  # a regex quantifier stays
    (r"\{1,2\}", [r"\{1,2\}"]),  # an escaped brace stays
    ("{only}", ["{only}"]),
    ("{,x}", ["", "x"]),
])
def test_expand_braces__as_bash(text, expanded):
    assert expand_braces(text) == expanded


@pytest.mark.parametrize("text", ["{1..5000}", "{1..40}{1..40}", "{a,b}" * 11])
def test_expand_braces__past_the_limit_is_a_query_error(text):
    with pytest.raises(QueryError, match="more than 1000"):
        expand_braces(text)


def test_slice_conditions__one_prefix_is_a_regex_of_its_own():
    doc = {"type": "sgv", "dateString": "2026-04-01T13:05:00.000Z"}
    conds = slice_conditions("dateString", "2026-04", "T{12..13}")
    assert [c.path for c in conds] == ["dateString", "dateString"]
    assert all(c.matches(doc) for c in conds)
    assert not slice_conditions("dateString", "2026-05", None)[1].matches(doc)
    several = slice_conditions("dateString", "2026-0{3,4}", "T13")
    assert len(several) == 1 and several[0].matches(doc)
    assert not several[0].matches({"dateString": "2025-04-01T13:00:00.000Z", "x": "2026-04"})


@pytest.mark.parametrize("field", ["$where", "a..b", "", "a" * 65, "x;y"])
def test_slice_conditions__a_field_that_is_no_name_is_refused(field):
    with pytest.raises(QueryError):
        slice_conditions(field, None, None)


def test_slice_conditions__a_long_prefix_is_refused_before_any_expansion():
    """A 529-byte request once held the event loop for seconds (each brace rescanned the rest
    of the text, for each of a thousand patterns): the text is bounded first, and expanding
    what is allowed stays linear."""
    import time

    with pytest.raises(QueryError, match="at most 256 characters"):
        slice_conditions("dateString", "x/{1..999}" + "{" * 250 + "}" * 250, None)
    started = time.perf_counter()
    assert expand_braces("{" * 2000 + "}" * 2000) == ["{" * 2000 + "}" * 2000]
    assert len(expand_braces("{1..999}" + "{" * 120 + "}" * 120)) == 999
    assert time.perf_counter() - started < 5  # (seconds to minutes before)
