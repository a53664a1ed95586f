"""The demo's daytime CGM: between two simulated nights, the day's simulated readings
(tools/sim/daytime.py) as a Nightscout JSON export, which the edge node imports as any CGM
export (`nightlink edge import`) and syncs with the nights. The 14-day report then has whole
days of CGM, as a patient wearing a sensor day and night would."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path

DEVICE = "nightlink-sim daytime (simulated)"


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def _cgm(folder: Path) -> list[dict]:
    with (folder / "cgm.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def write_day(before: Path, after: Path, path: Path, seed: int, patient: str) -> int:
    """Simulate the day from the night in `before` to the night in `after` and write it to
    `path` as Nightscout JSON entries; return the number of readings."""
    from nightlink.tools.sim.daytime import simulate_day

    first, second = _manifest(before), _manifest(after)
    start_ms, end_ms = _ms(first["end"]), _ms(second["start"])
    minutes = (end_ms - start_ms) // 60_000
    rows = _cgm(before)
    start_bg = float(rows[-1]["bg_true_mgdl"]) if rows else None
    next_ok = [r for r in _cgm(after) if not r["error_code"]]
    end_sgv = float(next_ok[0]["sgv_mgdl"]) if next_ok else None
    day = simulate_day(seed, patient, int(minutes), start_bg,
                       second["summary"]["glucose_scenario"], end_sgv)
    entries = []
    for m, sgv in zip(day.minutes.tolist(), day.sgv.tolist(), strict=True):
        t = start_ms + m * 60_000
        entries.append({"type": "sgv", "sgv": sgv, "date": t, "device": DEVICE,
                        "dateString": datetime.fromtimestamp(t / 1000, UTC).strftime(
                            "%Y-%m-%dT%H:%M:%S.000Z")})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"simulated": True, "meals": day.meals, "result": entries},
                               indent=1) + "\n")
    return len(entries)
