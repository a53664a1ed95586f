"""A night's sleep-apnea screen from whatever of heart rhythm, oximetry and audio it has.

Three estimates of events (or apnea minutes) per hour, each only from a modality that was
actually recorded for at least an hour of the night:
- `rr`: the heart-rhythm apnea index (edge/features/cvhr.py): apnea minutes per hour of
  minutes with clean beats, from the beats when the night has them, else from the stored
  per-30-s wearable columns (RMSSD/SDNN present: beat intervals, not a plain pulse rate), with
  the cyclic-variation features the reducer keeps per epoch when the night has them
  (`epochs`), the summaries alone for nights stored before (`epochs_summary`);
- `spo2`: the oxygen desaturation index, drops of >= 3 % below the preceding 2-minute
  baseline lasting >= 10 s (counted by edge/features/reducers.py) per hour of oximetry;
- `audio`: the AHI of the audio breathing model (events per hour of sleep).

The night's estimate is the highest of the estimates present (each input sees only some
events); at 15 or more per hour the screen suggests seeing a doctor. A modality that is missing is left out, never read as "normal", and
the figures name the inputs used. Details: docs/apnea-from-rr.md.
"""

from __future__ import annotations

import numpy as np

from nightlink.edge.features import cvhr
from nightlink.shared.clinical import ahi_severity
from nightlink.shared.epoch import EPOCHS_PER_HOUR

MIN_EPOCHS = 120  # a modality counts when it covers at least an hour of 30-s epochs
INPUTS = ("rr", "spo2", "audio")

_DEFAULT: dict[str, cvhr.RrApneaModel | None] = {}


def default_model() -> cvhr.RrApneaModel | None:
    """The committed heart-rhythm model, loaded once (None if the file is not there)."""
    if "model" not in _DEFAULT:
        _DEFAULT["model"] = cvhr.RrApneaModel.load()
    return _DEFAULT["model"]


def rr_estimate(streams: dict, model: cvhr.RrApneaModel | None) -> dict | None:
    """The heart-rhythm apnea index of a night, or None without an hour of beat data.
    `streams["beats"]` (optional): {"t_s", "rr_ms", "start_s"}: beat times and the start of
    the night's first epoch, in seconds on one clock (Unix time on the edge)."""
    if model is None:
        return None
    beats = streams.get("beats")
    if beats is not None and "beats" in model.heads and len(beats["t_s"]) >= 60 * 40:
        n_min = len(streams["wearable"]["sdnn_ms"]) // 2
        res = model.from_beats(beats["t_s"], beats["rr_ms"], n_min, beats.get("start_s", 0.0),
                               streams["wearable"])
        source = "beats+" + res["with"] if res["with"] else "beats"
    elif model.epoch_head(streams["wearable"]) is not None:
        source = model.epoch_head(streams["wearable"])
        res = model.from_epochs(streams["wearable"], source)
    else:
        return None
    if res["index"] is None:
        return None
    return {"apnea_index": round(res["index"], 1), "source": source,
            "minutes": res["valid_minutes"], "apnea_minutes": int(res["apnea_minutes"].sum())}


def spo2_estimate(wearable: dict[str, np.ndarray]) -> dict | None:
    """ODI (3 % and 4 %) per hour of epochs with oximetry read often enough to see
    desaturations (edge/features/reducers.py), or None under an hour of it."""
    present = ~np.isnan(wearable["desat3_count"])
    if present.sum() < MIN_EPOCHS:
        return None
    hours = float(present.sum()) / EPOCHS_PER_HOUR
    d3 = float(np.nansum(np.where(present, wearable["desat3_count"], 0.0)))
    d4 = float(np.nansum(np.where(present, wearable["desat4_count"], 0.0)))
    return {"odi3": round(d3 / hours, 1), "odi4": round(d4 / hours, 1), "hours": round(hours, 2)}


def audio_present(streams: dict) -> bool:
    audio = streams.get("audio")
    return audio is not None and int((~np.isnan(audio["loud_mean_dbfs"])).sum()) >= MIN_EPOCHS


def fuse(estimates: dict[str, float]) -> dict:
    """The night's estimate and its screening message: the highest of the per-input
    estimates. Each input sees only some events (heart rhythm the ones with an arousal surge,
    oximetry the ones with a desaturation, audio the audible ones), so each tends to read
    low, and a mean lets one that missed the events pull a severe night under 15; for a
    suggestion to see a doctor a missed night costs more than a check."""
    if not estimates:
        return {"ahi_estimate": None, "ahi_estimate_from": [], "screen": None}
    value = float(max(estimates.values()))
    return {"ahi_estimate": round(value, 1), "ahi_estimate_from": sorted(estimates),
            "screen": cvhr.screen(value)}


def breathing_screen(streams: dict, audio_ahi: float | None,
                     model: cvhr.RrApneaModel | None = None) -> dict:
    """The breathing figures this module adds to (or corrects in) a night's figures.
    `audio_ahi`: the audio model's events per hour of sleep (ignored without audio)."""
    model = model if model is not None else default_model()
    rr = rr_estimate(streams, model)
    spo2 = spo2_estimate(streams["wearable"])
    audio = audio_present(streams) and audio_ahi is not None
    estimates = {}
    if rr is not None:
        estimates["rr"] = rr["apnea_index"]
    if spo2 is not None:
        estimates["spo2"] = spo2["odi3"]
    if audio:
        estimates["audio"] = float(audio_ahi)
    out = {"breathing_inputs": [k for k in INPUTS if k in estimates], "rr": rr, "spo2": spo2}
    out.update(fuse(estimates))
    out["screen_severity"] = ahi_severity(out["ahi_estimate"])
    if spo2 is None:  # no oximetry: no desaturation index, rather than zero
        out["odi3"] = out["odi4"] = None
    if not audio:  # the audio model's events mean nothing without audio
        out["apnea_events"] = out["ahi"] = out["severity"] = None
    return out
