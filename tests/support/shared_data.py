"""Where the recorded data sets are (../shared/data beside the repository, or the folder
NIGHTLINK_SHARED_DATA names): tests that need them skip, saying so, where they are absent."""

import csv
import os
from datetime import UTC, datetime
from pathlib import Path

from tests.support.micropython import ROOT

SHARED = Path(os.environ.get("NIGHTLINK_SHARED_DATA") or ROOT.parent / "shared" / "data")
BRIS = SHARED / "cgm-bris-t1d-open"  # real CGM (BrisT1D-Open, CC BY 4.0)


def bris_readings(person: str) -> list[tuple[int, float]]:
    """A BrisT1D-Open person's readings as (Unix ms, mg/dL), oldest first (times in UTC)."""
    with open(BRIS / "csv" / f"{person}.csv") as fh:
        return sorted(
            (int(datetime.strptime(r["timestamp"], "%Y-%m-%d %H:%M:%S").replace(
                tzinfo=UTC).timestamp() * 1000), float(r["glucose_value_mg_dl"]))
            for r in csv.DictReader(fh) if r["glucose_value_mg_dl"])
