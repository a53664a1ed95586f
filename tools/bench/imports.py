"""`nightlink bench import`: peak memory and time of `nightlink edge import` on long exports
made up here, as a person brings them the first day: five years of an Apple Watch's heart
rate (Apple Health export.xml), five years of a Dexcom's readings (Clarity CSV), three days
and nights of a watch's 1-second heart rate (FIT). Each import runs in a fresh interpreter
into a new store, so the peak is the import's own (an edge node may be a 512 MB Pi).

Run one import alone: python -m nightlink.tools.bench.imports FORMAT FILE
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DAY = 86400
# (format, days, what the figures are called)
CASES = (("apple-health", 5 * 365, "apple_health_5y"), ("clarity", 5 * 365, "clarity_5y"),
         ("fit", 3, "fit_3d"))


def _end() -> float:
    """Midnight UTC today: every export ends before now, as a real one does."""
    return math.floor(time.time() / DAY) * DAY


def _utc(t: float, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    return time.strftime(fmt, time.gmtime(t))


def make_apple_health(path: Path, days: int, end: float) -> None:
    """An export.xml ordered as Apple writes it, by type: heart rate every 4 minutes, then SpO2
    every hour of the night, then an HRV record with its beats every 2 hours."""
    start = end - days * DAY
    with open(path, "w", encoding="utf-8") as fh:
        fh.write('<?xml version="1.0" encoding="UTF-8"?>\n<HealthData locale="en_US">\n'
                 f' <ExportDate value="{_utc(end)} +0000"/>\n')
        row = (' <Record type="{type}" sourceName="Apple Watch" sourceVersion="10.1" '
               'unit="{unit}" creationDate="{t} +0000" startDate="{t} +0000" '
               'endDate="{t} +0000" value="{value}"/>\n')
        for k, t in enumerate(range(int(start), int(end), 240)):
            fh.write(row.format(type="HKQuantityTypeIdentifierHeartRate", unit="count/min",
                                t=_utc(t), value=58 + (k * 7919) % 23))
        for t in range(int(start), int(end), 3600):
            if time.gmtime(t).tm_hour < 7:
                fh.write(row.format(type="HKQuantityTypeIdentifierOxygenSaturation", unit="%",
                                    t=_utc(t), value=0.96))
        for t in range(int(start), int(end), 7200):
            fh.write(f' <Record type="HKQuantityTypeIdentifierHeartRateVariabilitySDNN" '
                     f'sourceName="Apple Watch" unit="ms" startDate="{_utc(t)} +0000" '
                     f'endDate="{_utc(t + 60)} +0000" value="48">\n'
                     '  <HeartRateVariabilityMetadataList>\n')
            for b in range(60):
                clock = time.strftime("%I:%M:%S", time.gmtime(t + b)) + f".{b % 100:02d} " + (
                    "AM" if time.gmtime(t + b).tm_hour < 12 else "PM")
                fh.write(f'   <InstantaneousBeatsPerMinute bpm="{60 + b % 5}" '
                         f'time="{clock}"/>\n')
            fh.write('  </HeartRateVariabilityMetadataList>\n </Record>\n')
        fh.write("</HealthData>\n")


def make_clarity(path: Path, days: int, end: float) -> None:
    """A Dexcom Clarity export: its header rows, then a reading every 5 minutes."""
    start = end - days * DAY
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write("Index,Timestamp (YYYY-MM-DDThh:mm:ss),Event Type,Event Subtype,Patient Info,"
                 "Device Info,Source Device ID,Glucose Value (mg/dL),Insulin Value (u),"
                 "Carb Value (grams),Duration (hh:mm:ss),Glucose Rate of Change (mg/dL/min),"
                 "Transmitter Time (Long Integer),Transmitter ID\r\n"
                 "1,,FirstName,,Jane,,,,,,,,,\r\n2,,LastName,,Doe,,,,,,,,,\r\n"
                 "3,,Device,,,Dexcom G6 Mobile App,Android G6,,,,,,,\r\n")
        for k, t in enumerate(range(int(start), int(end), 300)):
            g = round(140 + 60 * math.sin(k / 37.0) + 15 * math.sin(k / 5.3))
            fh.write(f"{k + 4},{_utc(t, '%Y-%m-%dT%H:%M:%S')},EGV,,,,Android G6,{g},,,,,"
                     f"{4_000_000 + 300 * k},8XXXXX\r\n")


def make_fit(path: Path, days: int, end: float) -> None:
    """A watch's recording of `days` days: a record with the heart rate every second."""
    from nightlink.tools.sim.fitwriter import FitWriter

    start = end - days * DAY
    w = FitWriter()
    w.file_id(start, kind=4)
    for k in range(days * DAY):
        w.record(start + k, heart_rate=55 + (k * 7919) % 30)
    path.write_bytes(w.to_bytes())


MAKERS = {"apple-health": make_apple_health, "clarity": make_clarity, "fit": make_fit}
SUFFIX = {"apple-health": ".xml", "clarity": ".csv", "fit": ".fit"}


def import_once(fmt: str, path: Path) -> dict:
    """Import the file into a new store in this process; its figures."""
    from nightlink.edge.importers.importer import import_file
    from nightlink.edge.store import EdgeStore
    from nightlink.tools.bench.edge import _peak_rss_mb

    with tempfile.TemporaryDirectory(prefix="nl-bench-import-") as tmp:
        store = EdgeStore(Path(tmp) / "edge.db")
        before = _peak_rss_mb()
        t = time.perf_counter()
        result = import_file(store, path, fmt, say=lambda _text: None)
        seconds = time.perf_counter() - t
        store.close()
    return {"seconds": round(seconds, 1), "peak_rss_mb": round(_peak_rss_mb(), 1),
            "rss_before_mb": round(before, 1), "samples": result.samples,
            "epochs": result.epochs_written}


def bench_import() -> dict:
    """Each case: the file made, then imported in a child; its size, time and peak memory."""
    out: dict = {}
    end = _end()
    with tempfile.TemporaryDirectory(prefix="nl-bench-imports-") as tmp:
        for fmt, days, name in CASES:
            path = Path(tmp) / f"{name}{SUFFIX[fmt]}"
            MAKERS[fmt](path, days, end)
            proc = subprocess.run([sys.executable, "-m", "nightlink.tools.bench.imports", fmt,
                                   str(path)], capture_output=True, text=True, check=False)
            out[f"{name}_file_mb"] = round(path.stat().st_size / 2**20, 1)
            path.unlink()
            if proc.returncode != 0:
                out[f"{name}_error"] = (proc.stderr.strip().splitlines() or ["failed"])[-1]
                continue
            got = json.loads(proc.stdout.strip().splitlines()[-1])
            for key in ("seconds", "peak_rss_mb", "samples"):
                out[f"{name}_{key}"] = got[key]
    return out


if __name__ == "__main__":
    sys.stdout.write(json.dumps(import_once(sys.argv[1], Path(sys.argv[2]))) + "\n")
