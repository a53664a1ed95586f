"""Fixtures of the edge tests."""

import time

import pytest

from nightlink.edge.store import EdgeStore


@pytest.fixture
def store(tmp_path):
    """A fresh edge store in a real SQLite file."""
    s = EdgeStore(tmp_path / "edge.db")
    yield s
    s.close()


@pytest.fixture
def machine_zone(monkeypatch):
    """Set the machine's own time zone (TZ) for one test: `machine_zone("Europe/Berlin")`."""

    def use(name: str) -> None:
        monkeypatch.setenv("TZ", name)
        time.tzset()

    yield use
    monkeypatch.undo()
    time.tzset()
