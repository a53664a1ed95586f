"""Fixtures of the edge tests."""

import pytest

from nightlink.edge.store import EdgeStore


@pytest.fixture
def store(tmp_path):
    """A fresh edge store in a real SQLite file."""
    s = EdgeStore(tmp_path / "edge.db")
    yield s
    s.close()
