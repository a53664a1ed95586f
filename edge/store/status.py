"""What the node records about its nights: the state of each source, gaps in the data, night
summaries, and dead letters (input it could not use, kept with the reason)."""

from __future__ import annotations

import json
import logging
import time

from nightlink.sql import Database

_LOGGER = logging.getLogger(__name__)


class Status:
    db: Database

    def set_source(self, source: str, kind: str, state: str, detail: str = "") -> None:
        self.db.execute(
            "INSERT INTO sources (source, kind, state, detail, updated_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (source) DO UPDATE SET kind = excluded.kind, "
            "state = excluded.state, detail = excluded.detail, updated_at = excluded.updated_at",
            (source, kind, state, detail, time.time()),
        )

    def sources(self) -> dict[str, dict]:
        rows = self.db.query("SELECT source, kind, state, detail, updated_at FROM sources")
        return {r.pop("source"): r for r in rows}

    def add_gap(self, source: str, start_epoch: int, end_epoch: int, reason: str) -> None:
        self.db.execute(
            "INSERT INTO gaps (source, start_epoch, end_epoch, reason) VALUES (?, ?, ?, ?)",
            (source, start_epoch, end_epoch, reason),
        )

    def put_night_gap(self, source: str, start_epoch: int, end_epoch: int,
                      reason: str | None, kind: str) -> None:
        """The gap of kind `kind` (its reason's start) a night's summary found, replacing the
        one an earlier summary of the same night (a stop mid-night, then the close) recorded
        from the same start; reason None: the night has no such gap (any earlier one goes)."""
        self.db.execute("DELETE FROM gaps WHERE source = ? AND start_epoch = ? AND "
                        "substr(reason, 1, ?) = ?", (source, start_epoch, len(kind), kind))
        if reason is not None:
            self.add_gap(source, start_epoch, end_epoch, reason)

    def gaps(self, source: str | None = None) -> list[dict]:
        sql, args = "SELECT source, start_epoch, end_epoch, reason FROM gaps", []
        if source is not None:
            sql, args = sql + " WHERE source = ?", [source]
        return self.db.query(sql + " ORDER BY start_epoch", args)

    def put_night(self, night: str, summary: dict) -> None:
        self.db.execute(
            "INSERT INTO nights (night, summary, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (night) DO UPDATE SET summary = excluded.summary, "
            "updated_at = excluded.updated_at",
            (night, json.dumps(summary, sort_keys=True, separators=(",", ":")), time.time()),
        )

    def night(self, night: str) -> dict | None:
        summary = self.db.scalar("SELECT summary FROM nights WHERE night = ?", (night,))
        return json.loads(summary) if summary is not None else None

    def night_labels(self, since: str) -> list[str]:
        """The nights with a summary, from the night `since` on, oldest first."""
        return [r["night"] for r in self.db.query(
            "SELECT night FROM nights WHERE night >= ? ORDER BY night", (since,))]

    def recent_nights(self, n: int) -> list[tuple[str, dict]]:
        """(night, summary) of the n newest nights summarized, newest first."""
        return [(r["night"], json.loads(r["summary"])) for r in self.db.query(
            "SELECT night, summary FROM nights ORDER BY night DESC LIMIT ?", (n,))]

    def newest_night(self) -> tuple[str, dict, float] | None:
        """(night, summary, updated_at) of the newest night summarized, or None."""
        row = self.db.one(
            "SELECT night, summary, updated_at FROM nights ORDER BY night DESC LIMIT 1")
        if row is None:
            return None
        return row["night"], json.loads(row["summary"]), row["updated_at"]

    def dead_letter(self, source: str, reason: str, payload: bytes | None = None) -> None:
        _LOGGER.warning("dead letter from %s: %s", source, reason)
        self.db.execute(
            "INSERT INTO dead_letters (source, reason, payload, created_at) VALUES (?, ?, ?, ?)",
            (source, reason, payload, time.time()),
        )

    def dead_letters(self) -> list[dict]:
        return self.db.query("SELECT source, reason, payload FROM dead_letters ORDER BY id")
