"""What every part of the cloud store shares: its two errors and how documents are kept."""

from __future__ import annotations

import json

from nightlink.nightscout.auth import kept_hash


class NotFoundError(LookupError):
    """The tenant, user or device does not exist (or is not visible to the caller)."""


class ConflictError(ValueError):
    """The write clashes with what is stored (a taken email, slug or device id)."""


def secret_hash(value: str) -> str:
    """How secrets and tokens are kept: SHA-256 of what the client sends, never the value."""
    return kept_hash(value)


def to_json(doc, *, sort_keys: bool = True) -> str:
    """A document as stored in a TEXT column: compact, keys sorted unless their order
    matters to the reader."""
    return json.dumps(doc, sort_keys=sort_keys, separators=(",", ":"))


def from_json(text: str | None):
    """A stored document back (None stays None)."""
    return None if text is None else json.loads(text)
