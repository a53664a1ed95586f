"""The Nightscout core's only door to the database: the documents of every collection
(`collections.py`) and the subjects that hold access tokens (`subjects.py`), one table each
for all sites, written once for SQLite and PostgreSQL."""

from nightlink.nightscout.store.collections import (
    DDL,
    TABLE,
    DocumentStore,
    Outcome,
    Row,
    between,
)
from nightlink.nightscout.store.subjects import (
    SUBJECTS_DDL,
    SUBJECTS_TABLE,
    Subject,
    Subjects,
    find_token,
)

__all__ = ["DDL", "SUBJECTS_DDL", "SUBJECTS_TABLE", "TABLE", "DocumentStore", "Outcome", "Row",
           "Subject", "Subjects", "between", "find_token"]
