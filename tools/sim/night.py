"""Simulate one bedside night: every modality plus ground truth and a manifest, into a folder."""

import hashlib
import json
import logging
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from nightlink.errors import NightlinkError
from nightlink.tools.sim.audio import SAMPLE_RATE, audio_chunks, make_scene, write_audio
from nightlink.tools.sim.dropouts import kept, plan_dropouts
from nightlink.tools.sim.events import EVENT_TYPES, Event, NightPlan, plan_night
from nightlink.tools.sim.glucose import (
    MMOL_PER_MGDL,
    check_patient,
    hypoglycemia_events,
    simulate_cgm,
)
from nightlink.tools.sim.hypnogram import (
    EPOCH_S,
    STAGE4_NAMES,
    STAGE_NAMES,
    W,
    epochs_for_hours,
)
from nightlink.tools.sim.room import make_room
from nightlink.tools.sim.wearable import make_wearable

_LOGGER = logging.getLogger(__name__)
FORMAT = "nightlink.sim-night/1"
DEFAULT_START = datetime(2026, 1, 15, 22, 30, tzinfo=UTC)
AUDIO_FORMATS = ("wav", "flac")
__all__ = ["audio_chunks", "epochs_for_hours", "simulate_night"]


def _iso(t: datetime) -> str:
    if t.microsecond:
        return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _align(start: datetime | None) -> datetime:
    if start is None:
        return DEFAULT_START
    start = start.replace(tzinfo=UTC) if start.tzinfo is None else start.astimezone(UTC)
    return datetime.fromtimestamp(int(start.timestamp()) // EPOCH_S * EPOCH_S, tz=UTC)


def _prepare(out: Path) -> None:
    try:
        (out / "truth").mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise NightlinkError(f"Cannot write to the output folder {out}: {reason}.") from exc


class _Writer:
    """Writes files under the output folder and records them for the manifest."""

    def __init__(self, out: Path):
        self.out = out
        self.files: list[dict] = []

    def csv(self, rel: str, description: str, columns: dict, header: str, rows: list[str],
            **extra) -> None:
        data = ("\n".join([header, *rows]) + "\n").encode()
        (self.out / rel).write_bytes(data)
        self.files.append({"path": rel, "description": description, "columns": columns, **extra,
                           "rows": len(rows), "bytes": len(data),
                           "sha256": hashlib.sha256(data).hexdigest()})


def simulate_night(out: Path, seed: int, patient: str = "adult#001", hours: float = 8.0,
                   audio_format: str | None = "wav", start: datetime | None = None,
                   dropouts: bool = True) -> dict:
    """Write a simulated night (sensors, audio, truth, manifest.json) into out; return the manifest.

    audio_format is "wav", "flac", or None for no audio. With dropouts, the wearable, CGM
    and room files lose the samples of a few seeded outages (truth/dropouts.csv lists them).
    """
    check_patient(patient)
    n_epochs = epochs_for_hours(hours)
    if audio_format is not None and audio_format not in AUDIO_FORMATS:
        raise NightlinkError(f"Audio format must be wav or flac, not {audio_format!r}.")
    out = Path(out)
    _prepare(out)
    t0 = _align(start)
    epoch0 = int(t0.timestamp()) // EPOCH_S
    plan = plan_night(seed, patient, n_epochs)
    duration = plan.duration_s
    _LOGGER.info("night plan: %d epochs, %s apnea band, AHI target %.1f",
                 n_epochs, plan.severity, plan.ahi_target)

    cgm = simulate_cgm(seed, patient, duration // 60)
    _LOGGER.info("CGM: %s scenario, %d readings", cgm.scenario["mode"], cgm.sgv.size)
    hypo = hypoglycemia_events(cgm, float(duration))
    scene = make_scene(plan)
    wear = make_wearable(plan, scene.airflow)
    room = make_room(plan, scene.epoch_level_dbfs())
    truth = sorted([e for e in plan.events if e.type in EVENT_TYPES] + hypo,
                   key=lambda e: (e.start_s, e.type))

    lost = plan_dropouts(seed, float(duration)) if dropouts else []
    keep_cgm = kept(lost, "cgm", cgm.minutes * 60.0)
    keep_rr = kept(lost, "wearable", wear.beat_t_s)
    keep_sec = kept(lost, "wearable", np.arange(len(wear.spo2)))
    keep_room = kept(lost, "room", np.arange(n_epochs) * EPOCH_S)

    w = _Writer(out)
    at = lambda s: _iso(t0 + timedelta(seconds=float(s)))  # noqa: E731
    ms0 = int(t0.timestamp()) * 1000
    w.csv("cgm.csv", "CGM every 5 minutes from the UVA/Padova model with GuardianRT sensor noise. "
          "Nightscout convention: sgv below 39 is an error code (see error_code), not glucose.",
          {"time": "ISO 8601 UTC", "epoch_ms": "ms since Unix epoch",
           "sgv_mgdl": "mg/dL, sensor reading clipped to 40..400 (or an error code < 39)",
           "bg_true_mgdl": "mg/dL, blood glucose truth", "error_code": "empty when fine"},
          "time,epoch_ms,sgv_mgdl,bg_true_mgdl,error_code",
          [f"{at(m * 60)},{ms0 + m * 60000},{s},{b:.1f},{e if e else ''}"
           for m, s, b, e, k in zip(cgm.minutes.tolist(), cgm.sgv.tolist(), cgm.bg_true.tolist(),
                                    cgm.error_code.tolist(), keep_cgm.tolist(), strict=True) if k],
          sample_period_s=300)
    w.csv("rr.csv", "Beat-to-beat RR intervals; t_s is the time of the beat ending each interval.",
          {"t_s": "s since night start", "rr_ms": "ms"}, "t_s,rr_ms",
          [f"{t:.3f},{r}" for t, r, k in zip(wear.beat_t_s.tolist(), wear.rr_ms.tolist(),
                                             keep_rr.tolist(), strict=True) if k])
    w.csv("spo2.csv", "Pulse-oximeter oxygen saturation.", {"t_s": "s since night start",
          "spo2_pct": "%"}, "t_s,spo2_pct",
          [f"{i},{v:.1f}" for i, v in enumerate(wear.spo2.tolist()) if keep_sec[i]],
          sample_rate_hz=1)
    w.csv("accel.csv", "Wrist activity counts per second on three axes.",
          {"t_s": "s since night start", "ax": "counts", "ay": "counts", "az": "counts"},
          "t_s,ax,ay,az", [f"{i},{a},{b},{c}" for i, (a, b, c) in enumerate(wear.accel.tolist())
                           if keep_sec[i]],
          sample_rate_hz=1)
    w.csv("room.csv", "Bedroom sensors every 30 s; noise_dba from the audio scene's energy.",
          {"time": "ISO 8601 UTC", "epoch": "unix seconds // 30", "temp_c": "degC",
           "humidity_pct": "% RH", "light_lux": "lux", "co2_ppm": "ppm",
           "noise_dba": "dB SPL (approximate A-weighted)"},
          "time,epoch,temp_c,humidity_pct,light_lux,co2_ppm,noise_dba",
          [f"{at(i * EPOCH_S)},{epoch0 + i},{room.temp_c[i]:.2f},{room.humidity_pct[i]:.1f},"
           f"{room.light_lux[i]:.1f},{room.co2_ppm[i]},{room.noise_dba[i]:.1f}"
           for i in range(n_epochs) if keep_room[i]], sample_period_s=EPOCH_S)
    w.csv("truth/hypnogram.csv", "Ground-truth sleep stage per 30-second epoch (AASM).",
          {"epoch": "unix seconds // 30", "time": "ISO 8601 UTC, epoch start",
           "stage": "W/N1/N2/N3/REM", "stage4": "Wake/Light/Deep/REM"},
          "epoch,time,stage,stage4",
          [f"{epoch0 + i},{at(i * EPOCH_S)},{STAGE_NAMES[s]},{STAGE4_NAMES[s]}"
           for i, s in enumerate(plan.stages.tolist())])
    w.csv("truth/events.csv", "Ground-truth events.",
          {"type": "|".join(EVENT_TYPES), "start": "ISO 8601 UTC", "end": "ISO 8601 UTC",
           "start_s": "s since night start", "end_s": "s since night start",
           "detail": "key=value;... (drop_pct, nadir_mgdl, airflow_drop_pct, f0_hz)"},
          "type,start,end,start_s,end_s,detail",
          [f"{e.type},{at(e.start_s)},{at(e.end_s)},{e.start_s:.1f},{e.end_s:.1f},{e.detail}"
           for e in truth])

    w.csv("truth/dropouts.csv", "Outages: samples of this source inside [start, end) were "
          "not written.", {"source": "wearable|cgm|room", "start": "ISO 8601 UTC",
                           "end": "ISO 8601 UTC", "start_s": "s since night start",
                           "end_s": "s since night start"},
          "source,start,end,start_s,end_s",
          [f"{d.source},{at(d.start_s)},{at(d.end_s)},{d.start_s:.1f},{d.end_s:.1f}"
           for d in lost])

    for fmt in AUDIO_FORMATS:  # a stale recording from an earlier run would not match
        if fmt != audio_format:
            (out / f"audio.{fmt}").unlink(missing_ok=True)
    if audio_format is not None:
        rel = f"audio.{audio_format}"
        _LOGGER.info("writing %s (%d samples)", rel, scene.n_samples)
        digest = write_audio(out / rel, scene, audio_format)
        w.files.append({"path": rel, "description": "Bedroom microphone: breathing, snoring, "
                        "apnea pauses, fan, traffic and talk.", "columns": {"mono": "int16 PCM"},
                        "sample_rate_hz": SAMPLE_RATE, "samples": scene.n_samples,
                        "format": audio_format.upper(), "bytes": (out / rel).stat().st_size,
                        "sha256": digest})

    manifest = _manifest(plan, t0, epoch0, hours, w.files, truth, cgm, scene.background_log())
    manifest["summary"]["dropouts"] = [
        {"source": d.source, "start_s": d.start_s, "end_s": d.end_s} for d in lost
    ]
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _manifest(plan: NightPlan, t0: datetime, epoch0: int, hours: float, files: list[dict],
              truth: list[Event], cgm, background: list[dict]) -> dict:
    sleep_h = float(np.count_nonzero(plan.stages != W)) * EPOCH_S / 3600
    counts = Counter(e.type for e in truth)
    resp = counts["apnea"] + counts["hypopnea"]
    valid = cgm.sgv[cgm.valid]
    return {
        "format": FORMAT,
        "seed": plan.seed,
        "patient": plan.patient,
        "hours": hours,
        "start": _iso(t0),
        "end": _iso(t0 + timedelta(seconds=plan.duration_s)),
        "epoch_grid": {"epoch_s": EPOCH_S, "first_epoch": epoch0, "epoch_count": plan.n_epochs},
        "files": files,
        "summary": {
            "events": {t: counts.get(t, 0) for t in EVENT_TYPES},
            "sleep_hours": round(sleep_h, 3),
            "ahi_truth": round(resp / sleep_h, 2) if sleep_h else 0.0,
            "apnea_band_drawn": plan.severity,
            "ahi_target": round(plan.ahi_target, 2),
            "glucose_scenario": cgm.scenario,
            "sgv_min_mgdl": int(valid.min()) if valid.size else None,
            "sgv_max_mgdl": int(valid.max()) if valid.size else None,
            "sgv_mean_mmol": round(float(valid.mean()) * MMOL_PER_MGDL, 2) if valid.size else None,
            "sensor_errors": int((~cgm.valid).sum()),
            "audio_background": background,
        },
    }
