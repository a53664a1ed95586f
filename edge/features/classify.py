"""The edge's classifiers over a night: sleep stages, breathing events and glucose risk.

Three small int8 models (edge/models/*.tflite, trained by `nightlink train`) run on LiteRT
(`ai-edge-litert`; `tflite_runtime` on old installs) over the night's stored epoch features.
Their per-epoch outputs become stream 5 ("inference") records, and the night summary gets the
sleep, breathing and glucose-risk figures they imply. Feature preparation lives here so
training and the edge compute exactly the same inputs.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nightlink.edge.features import sleep_decode
from nightlink.edge.features.audio import SNORE_FEATURES
from nightlink.edge.features.night_summary import night_columns
from nightlink.edge.features.reducers import to_raw
from nightlink.shared import features, sleep_epochs
from nightlink.shared.clinical import ahi_severity
from nightlink.shared.epoch import EPOCHS_PER_HOUR

_LOGGER = logging.getLogger(__name__)
MODELS = Path(__file__).parent.parent / "models"
STAGES = ("Wake", "Light", "Deep", "REM")

# Inputs of the breathing model, by stream and feature name.
BREATH_FEATURES = (
    ("audio", "silence_max_s"), ("audio", "breath_periodicity"), ("audio", "snore_ratio"),
    ("audio", "loud_mean_dbfs"), ("audio", "loud_max_dbfs"), ("audio", "breath_rate_bpm"),
    ("audio", "centroid_hz"), ("audio", "flatness"), ("audio", "mfcc1_mean"),
    ("audio", "transient_count"), ("wearable", "spo2_min_pct"), ("wearable", "spo2_mean_pct"),
    ("wearable", "desat3_count"), ("wearable", "desat4_count"), ("wearable", "hr_max_bpm"),
    ("wearable", "hr_mean_bpm"), ("wearable", "movement"),
)
BREATH_CONTEXT = 2


def columns(streams: dict[str, dict[str, np.ndarray]], wanted) -> np.ndarray:
    """[n, len(wanted)] float array of the named features (NaN where missing)."""
    return np.stack([streams[s][f] for s, f in wanted], axis=1).astype(np.float64)


def _robust(x: np.ndarray) -> np.ndarray:
    """Per-night standardization: median 0, interquartile range 1; missing -> 0."""
    out = np.zeros_like(x)
    for j in range(x.shape[1]):
        col = x[:, j]
        ok = ~np.isnan(col)
        if ok.sum() < 2:
            continue
        q1, med, q3 = np.percentile(col[ok], (25, 50, 75))
        spread = q3 - q1 if q3 - q1 > 1e-6 else (np.std(col[ok]) or 1.0)
        out[ok, j] = np.clip((col[ok] - med) / spread, -8, 8)
    return out


def _window(z: np.ndarray, k: int) -> np.ndarray:
    n, m = z.shape
    pad = np.zeros((n + 2 * k, m))
    pad[k:k + n] = z
    return np.concatenate([pad[i:i + n] for i in range(2 * k + 1)], axis=1)


# Inputs of the sleep model, by modality. Any subset may be missing (a watch that only
# exports motion counts, a night without the microphone, a dropout): a missing modality is
# fed as zeros with its presence flag off, never as a typical value, and the model is trained
# on every subset (modality dropout, tools/train/nightmodels.py).
SLEEP_MODALITIES = (
    ("motion", (("wearable", "activity_count"), ("wearable", "movement"))),
    ("hr", (("wearable", "hr_mean_bpm"), ("wearable", "hr_max_bpm"))),
    ("hrv", (("wearable", "rmssd_ms"), ("wearable", "sdnn_ms"))),
    ("audio", (("audio", "loud_mean_dbfs"), ("audio", "loud_max_dbfs"), ("audio", "snore_ratio"),
               ("audio", "breath_periodicity"), ("audio", "breath_rate_bpm"),
               ("audio", "transient_count"), ("audio", "flatness"), ("audio", "mfcc0_std"))),
    ("room", (("room", "light_lux"), ("room", "noise_dba"))),
)
SLEEP_FEATURES = tuple(f for _, group in SLEEP_MODALITIES for f in group)
# The subsets the model is trained and evaluated on, by name.
SLEEP_SUBSETS = {"motion": ("motion",), "motion_hr": ("motion", "hr"),
                 "motion_hr_hrv": ("motion", "hr", "hrv"),
                 "full": ("motion", "hr", "hrv", "audio", "room"),
                 # Without motion: a chest strap or ring that sends beats but no movement, the
                 # same with the phone's microphone and room sensors, and the phone alone.
                 "hr_hrv": ("hr", "hrv"), "hr_hrv_audio_room": ("hr", "hrv", "audio", "room"),
                 "audio_room": ("audio", "room")}
# Fixed transforms (no per-night statistics): ("log", s): log1p(x) / s; ("lin", s): x / s;
# ("local", s): (x - median of the epochs within LOCAL_EPOCHS) / s, which removes a person's
# baseline (resting heart rate, room loudness) from a bounded stretch of the night only.
_TRANSFORM = {
    "activity_count": ("log", 5.0), "movement": ("lin", 1.0),
    "hr_mean_bpm": ("local", 8.0), "hr_max_bpm": ("local", 15.0),
    "rmssd_ms": ("loglocal", 0.5), "sdnn_ms": ("loglocal", 0.5),
    "loud_mean_dbfs": ("local", 6.0), "loud_max_dbfs": ("local", 10.0),
    "snore_ratio": ("lin", 1.0), "breath_periodicity": ("lin", 1.0),
    "breath_rate_bpm": ("local", 4.0), "transient_count": ("log", 2.0),
    "flatness": ("lin", 1.0), "mfcc0_std": ("lin", 10.0),
    "light_lux": ("log", 3.0), "noise_dba": ("local", 5.0),
}
LOCAL_EPOCHS = 60  # +-30 minutes: the widest context any sleep input sees
SLEEP_CONTEXT = 6  # epochs either side (3 minutes)
SLEEP_SMOOTH = 2  # stage probabilities averaged over +-1 minute before the call
ROLL = (10, 30)  # rolling-mean windows (epochs) for the slow sleep context
ROLL_FEATURES = ("activity_count", "movement", "hr_mean_bpm", "rmssd_ms")
MIN_PRESENT = 0.1  # a modality counts as used for a night when it covers 10 % of its epochs
# Actigraphy (Cole et al., Sleep 1992, with Webster's rescoring rules): the floor of the
# sleep/wake call wherever motion is the only input. Weights for the minutes -4..+2 around an
# epoch; an epoch is wake when the weighted sum of per-minute activity reaches 1. The scale
# puts that threshold at a steady ACTIGRAPHY_WAKE_COUNTS counts per 30 s (the edge's counts:
# summed acceleration magnitude, 0.01 g units), and each epoch's count is capped at twice
# that, as Cole-Kripke scorers cap counts, so one twitch cannot wake a whole window. Scale
# and cap were chosen on simulated training nights (sleep/wake kappa 0.38 there, against
# 0.36 for the cloud's 3-of-5-moving-epochs rule); a new watch needs its own scale.
CK_WEIGHTS = (404.0, 598.0, 326.0, 441.0, 1408.0, 508.0, 350.0)
ACTIGRAPHY_WAKE_COUNTS = 60.0
ACTIGRAPHY_CAP = 2 * ACTIGRAPHY_WAKE_COUNTS
CK_SCALE = 1.0 / (sum(CK_WEIGHTS) * 2 * ACTIGRAPHY_WAKE_COUNTS)


def _local_median(x: np.ndarray, k: int = LOCAL_EPOCHS) -> np.ndarray:
    """Median of the present values within +-k epochs of each epoch (NaN if none)."""
    pad = np.concatenate([np.full(k, np.nan), x, np.full(k, np.nan)])
    win = np.lib.stride_tricks.sliding_window_view(pad, 2 * k + 1)
    out = np.full(x.size, np.nan)
    ok = (~np.isnan(win)).any(axis=1)
    if ok.any():
        out[ok] = np.nanmedian(win[ok], axis=1)
    return out


def _transformed(raw: np.ndarray) -> np.ndarray:
    out = np.empty_like(raw)
    for j, (_, name) in enumerate(SLEEP_FEATURES):
        kind, scale = _TRANSFORM[name]
        col = raw[:, j]
        if kind == "loglocal":
            col = np.log1p(np.maximum(col, 0))
            col = col - _local_median(col)
        elif kind == "local":
            col = col - _local_median(col)
        elif kind == "log":
            col = np.log1p(np.maximum(col, 0))
        out[:, j] = np.clip(col / scale, -8, 8)
    return out


def modality_masks(streams: dict[str, dict[str, np.ndarray]]) -> np.ndarray:
    """[n, modalities] 1.0 where the modality has its first feature in the epoch."""
    return np.stack([~np.isnan(streams[s][f]) for _, ((s, f), *_rest) in SLEEP_MODALITIES],
                    axis=1).astype(np.float64)


# The person's own signals. Room light and noise alone cannot stage sleep (the model never
# learned from them alone): an epoch with only the room's readings is unscored.
SCORING_MODALITIES = ("motion", "hr", "hrv", "audio")


def scored_epochs(streams: dict[str, dict[str, np.ndarray]]) -> np.ndarray:
    """[n] True where an epoch has one of the person's own signals."""
    cols = [i for i, (name, _) in enumerate(SLEEP_MODALITIES) if name in SCORING_MODALITIES]
    return modality_masks(streams)[:, cols].any(axis=1)


def sleep_modalities(streams: dict[str, dict[str, np.ndarray]]) -> list[str]:
    """The modalities a night's sleep call used (each present on >= MIN_PRESENT of epochs)."""
    masks = modality_masks(streams)
    if not masks.shape[0]:
        return []
    return [name for (name, _), share in zip(SLEEP_MODALITIES, masks.mean(axis=0), strict=True)
            if share >= MIN_PRESENT]


def motion_only(streams: dict[str, dict[str, np.ndarray]]) -> np.ndarray:
    """Epochs whose only sleep input is motion: their sleep/wake is the actigraphy rule's."""
    masks = modality_masks(streams)
    return (masks[:, 0] > 0) & (masks[:, 1:].sum(axis=1) == 0)


def _local_sum(z: np.ndarray, w: int) -> np.ndarray:
    """Sum over the w epochs centred on each epoch (fewer at the ends), column by column.
    Summed window by window, not as a running total, so float rounding from the far end
    of the night cannot tip a close call."""
    k = w // 2
    pad = np.concatenate([np.zeros((k, z.shape[1])), z, np.zeros((k, z.shape[1]))])
    return np.lib.stride_tricks.sliding_window_view(pad, 2 * k + 1, axis=0).sum(axis=-1)


def _masked_rolling(z: np.ndarray, present: np.ndarray, w: int) -> np.ndarray:
    total = _local_sum(z * present, w)
    count = _local_sum(present, w)
    return np.where(count > 0, total / np.maximum(count, 1e-9), 0.0)


def sleep_inputs(streams: dict[str, dict[str, np.ndarray]]) -> np.ndarray:
    """Model rows: each epoch's transformed features in a +-SLEEP_CONTEXT window, the modality
    flags, slow rolling means and the time into the recording. An epoch's row depends only
    on epochs within LOCAL_EPOCHS + SLEEP_CONTEXT of it."""
    raw = columns(streams, SLEEP_FEATURES)
    masks = modality_masks(streams)
    feature_mask = np.concatenate([np.repeat(masks[:, [k]], len(group), axis=1)
                                   for k, (_, group) in enumerate(SLEEP_MODALITIES)], axis=1)
    z = _transformed(raw)
    ok = ~np.isnan(z) & (feature_mask > 0)
    z = np.where(ok, z, 0.0)
    n = z.shape[0]
    idx = [i for i, (_, f) in enumerate(SLEEP_FEATURES) if f in ROLL_FEATURES]
    slow = [_masked_rolling(z[:, idx], ok[:, idx].astype(np.float64), w) for w in ROLL]
    t = np.minimum(np.arange(n) / 960.0, 1.5)[:, None]  # hours into the recording / 8
    return np.concatenate([_window(z, SLEEP_CONTEXT), masks] + slow + [t, t * t],
                          axis=1).astype(np.float32)


def actigraphy_wake(activity: np.ndarray) -> np.ndarray:
    """Cole-Kripke wake calls (True = wake) from per-epoch activity counts, NaN = no motion
    data (scored as sleep, then left to the rescoring)."""
    act = np.minimum(np.nan_to_num(np.asarray(activity, dtype=np.float64)), ACTIGRAPHY_CAP)
    minute = act + np.concatenate(([0.0], act[:-1]))  # the minute ending at each epoch
    n = act.size
    pad = np.concatenate([np.zeros(8), minute, np.zeros(4)])
    score = sum(w * pad[8 + 2 * lag:8 + 2 * lag + n] for w, lag in zip(CK_WEIGHTS, range(-4, 3),
                                                                       strict=True))
    return _webster(score * CK_SCALE >= 1.0)


def _runs(flags: np.ndarray) -> list[tuple[bool, int, int]]:
    """(value, start, end) of each run of equal values."""
    edges = np.flatnonzero(np.diff(flags.astype(np.int8))) + 1
    starts = np.concatenate(([0], edges)).astype(int)
    ends = np.concatenate((edges, [flags.size])).astype(int)
    return [(bool(flags[a]), int(a), int(b)) for a, b in zip(starts, ends, strict=True)]


def _webster(wake: np.ndarray) -> np.ndarray:
    """Webster's rescoring (in 30-s epochs): after 4/10/15 min of wake the next 1/3/4 min of
    sleep are wake; sleep of <= 6 (10) min between >= 10 (20) min of wake is wake."""
    out = wake.copy()
    if not out.size:
        return out
    runs = _runs(wake)
    for k, (is_wake, a, b) in enumerate(runs):
        if is_wake:
            length = b - a
            extra = 8 if length >= 30 else 6 if length >= 20 else 2 if length >= 8 else 0
            out[b:b + extra] = True
        elif 0 < k < len(runs) - 1:
            before, after = runs[k - 1][2] - runs[k - 1][1], runs[k + 1][2] - runs[k + 1][1]
            if (b - a <= 12 and min(before, after) >= 20) or (b - a <= 20 and min(before, after) >= 40):
                out[a:b] = True
    return out


def smooth_probabilities(prob: np.ndarray, k: int = SLEEP_SMOOTH) -> np.ndarray:
    """Stage probabilities averaged over +-k epochs: a bounded stand-in for an HMM decode,
    so no epoch's call depends on the far end of the night."""
    count = _local_sum(np.ones((prob.shape[0], 1)), 2 * k + 1)
    return _local_sum(prob, 2 * k + 1) / count


def breath_inputs(streams: dict[str, dict[str, np.ndarray]]) -> np.ndarray:
    raw = columns(streams, BREATH_FEATURES)
    z = _robust(raw)
    # Absolute cues the per-night scaling would hide: pause length and desaturation counts.
    names = [f for _, f in BREATH_FEATURES]
    absolute = np.nan_to_num(raw[:, [names.index("silence_max_s"), names.index("desat3_count"),
                                     names.index("desat4_count")]]) / np.array([10.0, 1.0, 1.0])
    return np.concatenate([_window(z, BREATH_CONTEXT), _window(absolute, BREATH_CONTEXT)],
                          axis=1).astype(np.float32)


def snore_inputs(streams: dict[str, dict[str, np.ndarray]], meta: dict) -> np.ndarray:
    """The snore model's inputs: the epoch's own gain- and rate-invariant audio features,
    scaled by constants fixed at training (never by the night), missing -> 0. Nothing from
    other epochs or other streams: an epoch's call is the same in any night."""
    names = meta.get("features", SNORE_FEATURES)  # the features the model was trained on
    x = np.stack([streams["audio"][f] for f in names], axis=1).astype(np.float64)
    z = (x - np.asarray(meta["center"])) / np.asarray(meta["scale"])
    return np.clip(np.nan_to_num(z, nan=0.0), -8, 8).astype(np.float32)


def interpreter(blob: bytes):
    """A LiteRT interpreter on the builtin CPU kernels (no delegate)."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:  # old installs: the predecessor package
        from tflite_runtime.interpreter import Interpreter, OpResolverType
    it = Interpreter(model_content=blob, num_threads=1,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    return it


class Int8Model:
    """A full-integer .tflite model: float rows in, dequantized outputs (by name) out."""

    def __init__(self, blob: bytes):
        self.it = interpreter(blob)
        self.inp = self.it.get_input_details()[0]
        self.outs = self.it.get_output_details()
        self.n = int(self.inp["shape"][0])

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        if self.inp["dtype"] == np.int8:
            s, zp = self.inp["quantization"]
            xq = np.clip(np.round(x / s) + zp, -128, 127).astype(np.int8)
        else:  # int8 inside, float at the edges (the model quantizes its own input)
            xq = np.asarray(x, dtype=np.float32)
        if xq.shape[0] != self.n:
            self.it.resize_tensor_input(self.inp["index"], list(xq.shape))
            self.it.allocate_tensors()
            self.n = xq.shape[0]
            self.outs = self.it.get_output_details()
        self.it.set_tensor(self.inp["index"], xq)
        self.it.invoke()
        out = []
        for o in self.outs:
            v = self.it.get_tensor(o["index"]).astype(np.float64)
            s, zp = o["quantization"]
            out.append((v - zp) * s if o["dtype"] == np.int8 else v)
        return out


def load_meta(name: str, models: Path = MODELS) -> tuple[bytes, dict]:
    return (models / f"{name}.tflite").read_bytes(), json.loads((models / f"{name}.json").read_text())


@dataclass
class NightOutputs:
    stage: np.ndarray  # int8 [n] 0..3, or -1 where none of the person's signals was recorded
    stage_conf: np.ndarray
    snore: np.ndarray  # 0/1, NaN where the epoch had no audio
    apnea_events: np.ndarray  # 0-3, NaN without audio
    desat3: np.ndarray  # 0/1, NaN without oximetry
    desat4: np.ndarray
    low_risk: np.ndarray  # 0..1, NaN without CGM history
    forecast30: np.ndarray  # mg/dL, NaN without CGM history


class Classifiers:
    """The three edge models, loaded once."""

    def __init__(self, models: Path = MODELS):
        blob, self.sleep_meta = load_meta("sleep_stage", models)
        self.sleep = Int8Model(blob)
        blob, self.breath_meta = load_meta("breathing", models)
        self.breath = Int8Model(blob)
        blob, self.snore_meta = load_meta("snore", models)
        self.snore = Int8Model(blob)
        from nightlink.edge.features.glucose_risk import GlucoseRisk

        self.glucose = GlucoseRisk((models / "glucose_risk.tflite").read_bytes(),
                                   json.loads((models / "glucose_risk.json").read_text()))
        from nightlink.edge.features.cvhr import RrApneaModel

        self.rr_apnea = RrApneaModel.load(models)  # heart-rhythm apnea (numpy, JSON weights)

    def stages(self, streams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-epoch stage, its confidence and the (smoothed) stage probabilities. Where the
        night has more than motion, the stages are the sequence decoder's
        (edge/features/sleep_decode.py) over the model's probabilities; with motion alone,
        each epoch's most likely stage (in silico the decoder lowered the motion-only
        4-stage kappa from 0.31 to 0.23 and did not help its REM latency: motion says
        little about the stage, and a decoder then follows its transition prior). Where
        motion is the only input, sleep/wake is the actigraphy rule's call (the floor: on
        real wrist nights the model fed motion alone called nearly every epoch sleep) and
        the model only picks the stage of the sleep epochs."""
        raw = np.clip(self.sleep(sleep_inputs(streams))[0], 0, None)
        raw /= np.clip(raw.sum(axis=1, keepdims=True), 1e-6, None)
        prob = smooth_probabilities(raw)
        only = motion_only(streams)
        wake = actigraphy_wake(streams["wearable"]["activity_count"]) if only.any() else None
        decoder = self.sleep_meta.get("decoder")
        if decoder is not None and (modality_masks(streams)[:, 1:] > 0).any():
            path = sleep_decode.decode(raw, decoder, wake, only)
        else:  # motion alone, or a model from before the decoder: each epoch's best stage
            path = np.argmax(prob, axis=1).astype(np.int8)
            if wake is not None:
                asleep = (1 + np.argmax(prob[:, 1:], axis=1)).astype(np.int8)
                path[only] = np.where(wake, 0, asleep)[only]
        return path, np.clip(prob[np.arange(path.size), path], 0.0, 1.0), prob

    def breathing(self, streams, asleep: np.ndarray) -> dict[str, np.ndarray]:
        m = self.breath_meta
        outs = self.breath(breath_inputs(streams))
        count = outs[1 - m["snore_output"]]  # its snore head is not used: see snoring()
        snore = self.snoring(streams)
        events = np.clip(np.floor(count[:, 0] + m["count_offset"]), 0, 3).astype(np.uint8)
        events[~asleep] = 0  # AASM scores respiratory events during sleep only
        w = streams["wearable"]
        d3 = (np.nan_to_num(w["desat3_count"]) > 0).astype(np.uint8)
        d4 = (np.nan_to_num(w["desat4_count"]) > 0).astype(np.uint8)
        return {"snore": snore, "apnea_events": events, "desat3": d3, "desat4": d4}

    def snoring(self, streams) -> np.ndarray:
        """Snoring per epoch (uint8) from that epoch's audio alone (edge/models/snore.md)."""
        m = self.snore_meta
        if not streams["audio"][SNORE_FEATURES[0]].size:
            return np.zeros(0, dtype=np.uint8)
        p = self.snore(snore_inputs(streams, m))[0][:, 0]
        names = m.get("features", SNORE_FEATURES)
        # No call without the model's own inputs (no audio, or a record from before they were
        # on the wire: all-missing inputs would sit at the training centre, a coin toss).
        heard = ~np.all([np.isnan(streams["audio"][f]) for f in names], axis=0)
        if "sn_burst_s" in names:
            # Snoring comes with breaths: an epoch where nothing rises over its own floor (a
            # steady hum, a fan, silence) is not snoring, whatever its pitch says.
            heard &= np.nan_to_num(streams["audio"]["sn_burst_s"], nan=0.0) > 0
        return ((p >= m["threshold"]) & heard).astype(np.uint8)

    def scored_stages(self, streams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`stages`, with -1 (and confidence NaN) where an epoch has none of the person's
        signals: such an epoch is unscored, neither sleep nor wake. Also the mask of scored
        epochs."""
        stage, conf, _ = self.stages(streams)
        scored = scored_epochs(streams)
        return (np.where(scored, stage, -1).astype(np.int8), np.where(scored, conf, np.nan),
                scored)

    def run(self, streams: dict[str, dict[str, np.ndarray]], glucose: np.ndarray) -> NightOutputs:
        stage, conf, scored = self.scored_stages(streams)
        b = self.breathing(streams, stage > 0)
        risk, forecast = self.glucose.per_epoch(glucose, streams["cgm"]["minutes_since"])
        # A call only where its inputs were recorded (NaN elsewhere, never a normal 0):
        # snoring and the audio model's respiratory events from audio (without it the model
        # would read the missing sound as a quiet, normal one: oximetry alone is screened by
        # its desaturation index instead, apnea_screen.py), desaturations from oximetry, all
        # only in scored epochs.
        audio = ~np.isnan(streams["audio"]["loud_mean_dbfs"]) & scored
        # oximetry read often enough to see desaturations (a watch's reading a minute is not)
        spo2 = ~np.isnan(streams["wearable"]["desat3_count"]) & scored
        return NightOutputs(stage, conf, _where(b["snore"], audio),
                            _where(b["apnea_events"], audio), _where(b["desat3"], spo2),
                            _where(b["desat4"], spo2), risk, forecast)


def _where(values: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """values as floats where measured, NaN elsewhere."""
    return np.where(measured, np.asarray(values, dtype=np.float64), np.nan)


def night_figures(out: NightOutputs, streams, rr_model=None) -> dict:
    """Sleep, breathing and glucose-risk figures of a night from the classifier outputs.
    `rr_model`: the heart-rhythm apnea model (default: the committed one)."""
    inputs = sleep_modalities(streams)
    if not (out.stage >= 0).any():  # nothing recorded that tells sleep: no sleep figures,
        # not a perfect night
        return _no_sleep_figures(out, streams, rr_model)
    stage = out.stage
    asleep, scored = stage > 0, stage >= 0  # -1: no input in that epoch (unscored)
    onset = sleep_epochs.sleep_onset(stage.tolist())
    first_scored = int(np.argmax(scored))
    last = int(stage.size - 1 - np.argmax(asleep[::-1])) if asleep.any() else None
    rem = sleep_epochs.first_rem(stage.tolist(), onset, 3)
    breath_seen = not np.isnan(np.asarray(out.apnea_events, dtype=np.float64)).all()
    events = int(np.nansum(out.apnea_events))
    w = streams["wearable"]
    # ODI per hour of the sleep whose oximetry was read often enough to see desaturations
    oxi = asleep & ~np.isnan(w["desat3_count"])
    oxi_h = float(oxi.sum()) / EPOCHS_PER_HOUR
    d3 = float(np.nansum(np.where(oxi, w["desat3_count"], 0)))
    d4 = float(np.nansum(np.where(oxi, w["desat4_count"], 0)))
    # per hour of the sleep the audio model heard (its events are counted there only)
    heard_h = float((asleep & ~np.isnan(np.asarray(out.apnea_events, dtype=np.float64))).sum()
                    ) / EPOCHS_PER_HOUR
    ahi = events / heard_h if heard_h > 0 and breath_seen else None
    efficiency = float(asleep.sum() / scored.sum())  # over the epochs with an input
    fig = {
        "sleep": {
            "tib_min": round(stage.size / 2.0, 1),
            "tst_min": round(float(asleep.sum()) / 2.0, 1),
            "unscored_min": round(float((~scored).sum()) / 2.0, 1),
            "efficiency": round(efficiency, 3),
            "efficiency_pct": round(efficiency * 100, 1),
            "sol_min": round((onset - first_scored) / 2.0, 1) if onset is not None else None,
            "waso_min": round(float((stage[onset:last + 1] == 0).sum()) / 2.0, 1)
            if onset is not None else None,
            "rem_latency_min": round((rem - onset) / 2.0, 1) if rem is not None else None,
            "stage_pct": {STAGES[k]: round(float((stage[asleep] == k).mean()) * 100, 1)
                          if asleep.any() else None for k in (1, 2, 3)},
            "sleep_inputs": inputs,
            "actigraphy_pct": round(float(motion_only(streams).mean()) * 100, 1)
            if stage.size else None,
        },
        "breathing": {
            "apnea_events": events if breath_seen else None,
            "ahi": round(ahi, 1) if ahi is not None else None,
            "severity": ahi_severity(ahi),
            "odi3": round(d3 / oxi_h, 1) if oxi_h > 0 else None,
            "odi4": round(d4 / oxi_h, 1) if oxi_h > 0 else None,
            "snore_pct_tst": (round(float(np.nanmean(out.snore[asleep])) * 100, 1)
                              if asleep.any() and "audio" in inputs else None),
        },
        "glucose_risk": _glucose_risk_figures(out),
    }
    from nightlink.edge.features.apnea_screen import breathing_screen

    # The apnea screen from whichever of heart rhythm, oximetry and audio the night has.
    fig["breathing"].update(breathing_screen(streams, ahi, rr_model))
    return fig


def _no_sleep_figures(out: NightOutputs, streams, rr_model) -> dict:
    """The figures of a night with no input that tells sleep (no motion, heart, audio or
    room): every sleep figure and the audio model's per-hour-of-sleep ones None, the oximetry
    index per hour of oximetry, the glucose figures as they are."""
    from nightlink.edge.features.apnea_screen import breathing_screen

    sleep = {"tib_min": round(out.stage.size / 2.0, 1), "tst_min": None,
             "unscored_min": round(out.stage.size / 2.0, 1), "efficiency": None,
             "efficiency_pct": None, "sol_min": None, "waso_min": None, "rem_latency_min": None,
             "stage_pct": {STAGES[k]: None for k in (1, 2, 3)}, "sleep_inputs": [],
             "actigraphy_pct": None}
    breathing = {"apnea_events": None, "ahi": None, "severity": ahi_severity(None), "odi3": None,
                 "odi4": None, "snore_pct_tst": None}
    breathing.update(breathing_screen(streams, None, rr_model))
    if breathing["spo2"] is not None:  # no sleep time: desaturations per hour of oximetry
        breathing["odi3"], breathing["odi4"] = breathing["spo2"]["odi3"], breathing["spo2"]["odi4"]
    return {"sleep": sleep, "breathing": breathing, "glucose_risk": _glucose_risk_figures(out)}


def _glucose_risk_figures(out: NightOutputs) -> dict:
    risk = out.low_risk
    return {
        "max_low_risk": round(float(np.nanmax(risk)), 3) if np.isfinite(risk).any() else None,
        "min_forecast30_mgdl": round(float(np.nanmin(out.forecast30)))
        if np.isfinite(out.forecast30).any() else None,
    }


_LOADED: dict[str, Classifiers] = {}


def load(models: Path = MODELS) -> Classifiers | None:
    """The committed models, loaded once per process; None if they are not there."""
    key = str(models)
    if key not in _LOADED:
        if not (models / "sleep_stage.tflite").exists():
            _LOGGER.warning("no classifier models in %s; nights get no stream 5 records", models)
            return None
        _LOADED[key] = Classifiers(models)
    return _LOADED[key]


def _int(v) -> int | None:
    return None if np.isnan(v) else int(v)


def classify_night(store, first: int, count: int, clf: Classifiers | None = None,
                   streams: dict | None = None) -> dict | None:
    """Run the classifiers over a stored night, store their outputs as stream 5 records (one
    per hour), and return the figures for the night summary (None without models).
    `streams`: the night's columns (night_summary.night_columns), if already read."""
    clf = clf or load()
    if clf is None or count <= 0:
        return None
    streams = streams or night_columns(store, first, count)
    out = clf.run(streams, streams["cgm"]["glucose_mgdl"])
    rows = []
    for i in range(count):
        risk, fc = out.low_risk[i], out.forecast30[i]
        rows.append(to_raw(features.INFER, (
            None if out.stage[i] < 0 else int(out.stage[i]),
            None if out.stage[i] < 0 else float(out.stage_conf[i]), _int(out.snore[i]),
            _int(out.apnea_events[i]), _int(out.desat3[i]), _int(out.desat4[i]),
            None if np.isnan(risk) else float(risk), None if np.isnan(fc) else float(fc))))
    with store.transaction():
        for k in range(0, count, EPOCHS_PER_HOUR):
            store.append(features.INFER, first + k, rows[k:k + EPOCHS_PER_HOUR])
    fig = night_figures(out, streams, clf.rr_apnea)
    fig["glucose_risk"]["alarm_at"] = clf.glucose.alarm_permille / 1000
    return fig
