"""A readable text summary of a simulated night, read back from its files."""

import csv
from collections import defaultdict
from pathlib import Path

from nightlink.tools.sim.glucose import MMOL_PER_MGDL

_STAGES = ("W", "N1", "N2", "N3", "REM")


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _mg(v: float) -> str:
    return f"{v:.0f} mg/dL ({v * MMOL_PER_MGDL:.1f} mmol/L)"


def summarize(out: Path, manifest: dict) -> str:
    """Time in bed, stages, events, glucose, audio and room figures as multi-line text."""
    out = Path(out)
    lines = [f"Night {manifest['start']} to {manifest['end']}  seed {manifest['seed']}  "
             f"patient {manifest['patient']}"]
    hyp = _rows(out / "truth" / "hypnogram.csv")
    epoch_min = manifest["epoch_grid"]["epoch_s"] / 60
    tib = len(hyp) * epoch_min
    per = {s: sum(1 for r in hyp if r["stage"] == s) * epoch_min for s in _STAGES}
    tst = tib - per["W"]
    lines.append(f"Time in bed {tib:.0f} min, total sleep {tst:.0f} min "
                 f"(efficiency {100 * tst / tib:.0f}%)")
    lines.append("Stages: " + ", ".join(f"{s} {per[s]:.0f} min ({100 * per[s] / tib:.0f}%)"
                                        for s in _STAGES))

    counts: dict[str, list[float]] = defaultdict(list)
    for r in _rows(out / "truth" / "events.csv"):
        counts[r["type"]].append(float(r["end_s"]) - float(r["start_s"]))
    lines.append("Events:")
    for kind in manifest["summary"]["events"]:
        d = counts.get(kind, [])
        lines.append(f"  {kind:<16} {len(d):4d}  total {sum(d) / 60:6.1f} min")
    lines.append(f"  AHI (truth) {manifest['summary']['ahi_truth']:.1f}/h of sleep")

    cgm = _rows(out / "cgm.csv")
    good = [int(r["sgv_mgdl"]) for r in cgm if not r["error_code"]]
    errors = len(cgm) - len(good)
    if good:
        mean = sum(good) / len(good)
        lines.append(f"Glucose (sensor, {len(good)} readings, {errors} error rows excluded): "
                     f"min {_mg(min(good))}, mean {_mg(mean)}, max {_mg(max(good))}")
        below70 = sum(5 for g in good if g < 70)
        below54 = sum(5 for g in good if g < 54)
        lines.append(f"  time <70 mg/dL {below70} min, time <54 mg/dL {below54} min")
    else:
        lines.append(f"Glucose: no valid readings ({errors} error rows).")

    audio = [f for f in manifest["files"] if f["path"].startswith("audio.")]
    if audio:
        a = audio[0]
        lines.append(f"Audio {a['path']}: {a['bytes'] / 1e6:.1f} MB, {a['sample_rate_hz']} Hz, "
                     f"{a['samples'] / a['sample_rate_hz'] / 3600:.2f} h")
    else:
        lines.append("Audio: not generated.")

    room = _rows(out / "room.csv")
    temps = [float(r["temp_c"]) for r in room]
    co2 = [int(r["co2_ppm"]) for r in room]
    noise = [float(r["noise_dba"]) for r in room]
    lines.append(f"Room: temperature {min(temps):.1f}-{max(temps):.1f} degC, "
                 f"CO2 {min(co2)}-{max(co2)} ppm, noise {min(noise):.0f}-{max(noise):.0f} dBA")
    lost = manifest["summary"].get("dropouts", [])
    if lost:
        parts = [f"{d['source']} {(d['end_s'] - d['start_s']) / 60:.0f} min" for d in lost]
        lines.append("Dropouts (samples not written): " + ", ".join(parts))
    else:
        lines.append("Dropouts: none")
    return "\n".join(lines)
