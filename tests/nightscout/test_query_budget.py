"""The time limit on a query's patterns (nightscout/query.py): it counts the patterns' own
time, not the scan's (paging rows, decoding JSON), so a cheap pattern over a long history is
answered, and a pattern slow on every document is refused at once."""

import time

import pytest
import regex

from nightlink.nightscout import query


def test_a_cheap_pattern_over_a_long_slow_scan_is_not_refused():
    """Found in review: the budget was wall-clock from the start of find(), so 80,000 stored
    readings (3.5 s of scanning) made `find[type][$regex]=sgv` a 400."""
    pattern = regex.compile("sgv")
    with query.regex_budget(0.3):
        for _ in range(1000):
            time.sleep(0.0008)  # the scan's own work between documents: 0.8 s in all
            assert query._search(pattern, "sgv")


def test_a_pattern_slow_on_every_document_is_refused_naming_it():
    slow = regex.compile(r"(\d|.)*(\d|.)*(\d|.)*(\d|.)*\d{5}")
    with query.regex_budget(), pytest.raises(query.SlowQuery, match="takes too long"):
        for _ in range(100):
            query._search(slow, "2026-01-15T22:05:00.000Z" * 4)
    assert query._search(slow, "x") is False  # outside a find(): no match, no error
