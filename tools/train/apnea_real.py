"""The heart-rhythm apnea model (edge/features/cvhr.py) on real recordings: leave-record-out
cross-validation and the committed model, trained on every recording of the folders given.

Data: the PhysioNet Apnea-ECG learning set as kept in ../shared/data/apnea-ecg-learning
(`<rec>_beats.csv.gz`: t_min,rr_s; `<rec>_apnea_minutes.csv`: minute,apnea), and its test set
as PhysioNet publishes it (WFDB `.hea`/`.qrs`, labels as `.apn` or `event-2-answers`). Source: Penzel,
Moody, Mark, Goldberger, Peter, "The Apnea-ECG Database", Computers in Cardiology
2000;27:255-258; PhysioNet apnea-ecg 1.0.0, Open Data Commons Attribution License 1.0.

Every head of the model file is scored: `beats` (features from the RR intervals), `epochs`
(the per-30-s wearable columns the edge stores: heart-rate summaries and the trailing-window
cyclic-variation features, computed by running the recording's beats through the edge's own
WearableReducer and the wire's quantization) and `epochs_summary` (the summaries alone, for
nights stored before the cyclic-variation columns). Folds are grouped by recording, so every
figure comes from recordings the scoring model never saw.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import os
import re
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nightlink.edge.features import cvhr
from nightlink.edge.features.reducers import WearableReducer, to_raw
from nightlink.edge.sources.samples import Beat
from nightlink.shared import features
from nightlink.shared.epoch import EPOCH_S

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("NIGHTLINK_SHARED_DATA") or ROOT.parent / "shared" / "data")
DEFAULT_DATA = SHARED / "apnea-ecg-learning"
KINDS = cvhr.HEADS
L2 = 1.0  # ridge penalty on the standardized weights (the intercept is free)
# How each head turns per-minute features into model inputs (cvhr.head_inputs) and its ridge
# penalty. The beats head: 16 of its 22 features (no absolute RR-spectrum powers, ratios or
# breathing-band peak: they separate one laboratory's controls from another's, not apnea
# from its absence) and their difference from the night's median, for the minute, the 2
# minutes either side and the +-5-minute mean (192 inputs); its probability is averaged with
# the `epochs` head's on the same night's stored epochs.
BEATS_HEAD_COLUMNS = cvhr.BEAT_FEATURES + ("log_rr", "log_sdnn", "log_rmssd", "pnn50",
                                           "log_sd_1min")
HEAD_INPUTS = {
    "beats": {"night_relative": True, "context_minutes": [-2, -1, 0, 1, 2], "context_mean_minutes": 11,
              "columns": list(BEATS_HEAD_COLUMNS), "average_with": "epochs"},
}
HEAD_L2 = {"beats": 10.0}
CREDIT = ("PhysioNet Apnea-ECG Database (Penzel et al., Computers in Cardiology 2000;27:255-258), "
          "learning set, Open Data Commons Attribution License 1.0")
TEST_SET_CREDIT = ("PhysioNet Apnea-ECG Database (Penzel et al., Computers in Cardiology "
                   "2000;27:255-258), test set (x01-x35), Open Data Commons Attribution License "
                   "1.0")


@dataclass
class Recording:
    name: str
    beat_t_s: np.ndarray
    rr_ms: np.ndarray
    apnea: np.ndarray  # uint8 per minute (expert label: apnea or hypopnea in that minute)
    notes: list[str] = field(default_factory=list)  # what the figures should be read with

    @property
    def minutes(self) -> int:
        return int(self.apnea.size)

    @property
    def index(self) -> float:
        """Reference apnea index: labelled apnea minutes per hour of recording."""
        return float(self.apnea.mean()) * 60.0


BEATS_SUFFIXES = ("_beats.csv.gz", "_beats.csv")
LABELS_SUFFIX = "_apnea_minutes.csv"
RR_RANGE_S = (0.2, 3.0)  # a heart's beat-to-beat interval in seconds; a median outside: wrong unit
LABEL_CELLS = {"0": 0, "1": 1, "n": 0, "a": 1}  # PhysioNet writes N (normal) and A (apnea)
MAX_LABELLED_MIN = 2 * 1440  # a label later than this is a wrong number, not a night's
UNBEATEN_NOTE_MIN = 5  # labelled minutes outside the beats past which the figures say so
UNBEATEN_REFUSE_SHARE = 0.4  # more minutes without beats: not these labels' beats (30-s
# labels read as minutes leave half the minutes without beats)
CONTEXT_PAST_LABELS_MIN = 5  # beats kept after the last labelled minute (the +-5-minute context)


def _record_name(path: Path) -> tuple[str, str] | None:
    """(recording, "beats" or "labels") of a file in the folder's layout, any case; None else."""
    low = path.name.lower()
    for suffix in BEATS_SUFFIXES:
        if low.endswith(suffix):
            return path.name[:-len(suffix)], "beats"
    if low.endswith(LABELS_SUFFIX):
        return path.name[:-len(LABELS_SUFFIX)], "labels"
    return None


def load_folder(data: Path, names: list[str] | None = None,
                skipped: list[str] | None = None) -> list[Recording]:
    """Every recording with both files in `data` (`<rec>_beats.csv.gz` or `.csv`, and
    `<rec>_apnea_minutes.csv`), sorted by name (or only `names`). A recording missing one of
    them, or whose files cannot be read, is left out and why is added to `skipped`; a folder
    without any readable recording is refused. A folder of PhysioNet's WFDB files as the
    Apnea-ECG database publishes them (`.hea`, `.qrs`, `.apn`, and the test set's
    `event-2-answers`) is read through that layout (wfdb_files.convert)."""
    import tempfile

    from nightlink.errors import NightlinkError
    from nightlink.tools.train import wfdb_files

    data = Path(data)
    if not wfdb_files.records(data) or any(_record_name(p) for p in data.iterdir()):
        return _load_folder(data, names, skipped, data)
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="nightlink-wfdb-") as converted:
        wfdb_files.convert(data, Path(converted), notes)
        if skipped is not None:
            skipped.extend(notes)
        if not any(Path(converted).iterdir()):
            raise NightlinkError(f"No recording of the WFDB files in {data} could be read "
                                 f"({notes[0].rstrip('.')}).")
        return _load_folder(Path(converted), names, skipped, data)


def load_folders(folders: list[Path], skipped: list[str] | None = None,
                 sources: list[str] | None = None) -> list[Recording]:
    """The recordings of several folders together, sorted by name (load_folder on each; a
    folder given twice is read once); a recording named in two of them is refused: the same
    night twice, or two nights told apart by nothing but their folder. What each folder
    holds (source_of) is added to `sources`."""
    from nightlink.errors import NightlinkError

    found: dict[str, tuple[Recording, Path]] = {}
    for folder in dict.fromkeys(Path(f).resolve() for f in folders):
        recs = load_folder(folder, skipped=skipped)
        if sources is not None:
            sources.append(source_of(folder, [r.name for r in recs]))
        for rec in recs:
            other = found.setdefault(rec.name.lower(), (rec, folder))[1]
            if other != folder:
                raise NightlinkError(f"{rec.name} is in both {other} and {folder}; give each "
                                     "recording once.")
    return [rec for _key, (rec, _folder) in sorted(found.items())]


def _load_folder(data: Path, names: list[str] | None, skipped: list[str] | None,
                 shown: Path) -> list[Recording]:
    from nightlink.errors import NightlinkError

    parts: dict[str, dict[str, Path]] = {}
    spelled: dict[str, str] = {}  # a recording's name as its labels file spells it
    twice: dict[str, list[str]] = {}
    for path in sorted(Path(data).iterdir()):
        found = _record_name(path) if path.is_file() else None
        if found and (names is None or found[0].lower() in {n.lower() for n in names}):
            key = found[0].lower()
            have = parts.setdefault(key, {})
            if found[1] in have:  # a01_beats.csv next to a01_beats.csv.gz: which is meant?
                twice.setdefault(key, [have[found[1]].name]).append(path.name)
            have.setdefault(found[1], path)
            if found[1] == "labels" or key not in spelled:
                spelled[key] = found[0]
    out, reasons = [], []
    for key in sorted(parts):
        have, name = parts[key], spelled[key]
        if key in twice:
            reasons.append(f"{name} left out: {' and '.join(twice[key])} are both its files; "
                           "keep one.")
            continue
        if len(have) < 2:
            missing = "apnea_minutes.csv" if "labels" not in have else "beats.csv.gz"
            reasons.append(f"{name} left out: no {name}_{missing} next to {have.popitem()[1].name}.")
            continue
        try:
            out.append(load_recording(have["beats"], have["labels"], name))
        except NightlinkError as exc:
            reasons.append(f"{name} left out: {exc}")
    if not out:
        why = f" ({reasons[0].rstrip('.')})" if reasons else ""
        raise NightlinkError(f"No recordings (<rec>_beats.csv.gz with t_min,rr_s and "
                             f"<rec>_apnea_minutes.csv with minute,apnea, or PhysioNet's WFDB "
                             f"files) in {shown}{why}.")
    if skipped is not None:
        skipped.extend(reasons)
    return out


def _table(path: Path, columns: tuple[str, str]) -> list[tuple[int, str, str]]:
    """(line number, first cell, second cell) of a small CSV with these two columns (comma,
    semicolon or tab; gzip or plain; UTF-8 with or without a byte-order mark)."""
    from nightlink.errors import NightlinkError

    try:
        with open(path, "rb") as fh:
            gz = fh.read(2) == b"\x1f\x8b"
        with (gzip.open(path, "rt", encoding="utf-8-sig", errors="replace") if gz
              else open(path, encoding="utf-8-sig", errors="replace")) as fh:
            lines = fh.read().splitlines()
    except (OSError, EOFError, zlib.error) as exc:
        raise NightlinkError(f"Cannot read {path.name}: {str(exc).rstrip('.')}.") from None
    first = lines[0] if lines else ""
    delimiter = max((";", "\t", ","), key=first.count)
    parsed = csv.reader(lines, delimiter=delimiter)  # quoted cells too (R's write.csv)
    header = [h.strip().lower() for h in next(parsed, [])]
    if not set(columns) <= set(header):  # in any order, among other columns
        raise NightlinkError(f"{path.name} needs the columns {','.join(columns)}; its first line "
                             f"is {first[:60]!r}.")
    a, b = header.index(columns[0]), header.index(columns[1])
    rows = []
    for number, row in enumerate(parsed, start=2):
        cells = [c.strip() for c in row]
        if any(cells):
            rows.append((number, cells[a] if len(cells) > a else "",
                         cells[b] if len(cells) > b else ""))
    return rows


def load_recording(beats: Path, labels: Path, name: str) -> Recording:
    """One recording: its beats (time in minutes, RR interval in seconds) sorted, repeated
    beats dropped, and its expert label for every minute from 0 (0/1 or N/A). Anything else
    is refused in one sentence naming the file and line: a wrong unit, a label other than
    apnea or not, a minute missing or negative, beats that do not cover the labelled minutes."""
    from nightlink.errors import NightlinkError

    times, rrs, unread = [], [], []
    for number, t, rr in _table(beats, ("t_min", "rr_s")):
        if not rr:
            continue  # a beat without its interval
        try:  # (a spreadsheet with semicolons writes decimal commas)
            at, interval = float(t.replace(",", ".")), float(rr.replace(",", "."))
        except ValueError:  # an artefact mark, "NA": that beat left out, said
            unread.append(number)
            continue
        times.append(at)
        rrs.append(interval)
    minute_flags: dict[int, int] = {}
    for number, minute, flag in _table(labels, ("minute", "apnea")):
        try:
            m = float(minute)
        except ValueError:
            m = -1.0
        if not math.isfinite(m) or m < 0 or m != int(m) or flag.lower() not in LABEL_CELLS:
            raise NightlinkError(f"{labels.name} line {number} needs a minute from 0 and an apnea "
                                 f"label of 0/1 (or N/A): {minute!r}, {flag!r}.")
        if m > MAX_LABELLED_MIN:
            raise NightlinkError(f"{labels.name} line {number} labels minute {int(m)}: more than "
                                 "two days into a night's recording.")
        label = LABEL_CELLS[flag.lower()]
        if minute_flags.get(int(m), label) != label:
            raise NightlinkError(f"{labels.name} line {number} labels minute {int(m)} again, "
                                 "differently; each minute needs one label.")
        minute_flags[int(m)] = label
    if not minute_flags:
        raise NightlinkError(f"{labels.name} has no labelled minute.")
    n = max(minute_flags) + 1
    if len(minute_flags) < n:
        gap = next(m for m in range(n) if m not in minute_flags)
        raise NightlinkError(f"{labels.name} has no label for minute {gap}; every minute from 0 "
                             "to the last needs one.")
    if unread and len(unread) > len(rrs):  # mostly not numbers: a wrong file, not artefacts
        raise NightlinkError(f"{beats.name} line {unread[0]} is not two numbers, nor are "
                             f"{len(unread) - 1} more of its lines.")
    t = np.array(times, dtype=np.float64)
    rr = np.array(rrs, dtype=np.float64)
    ok = np.isfinite(t) & np.isfinite(rr)
    t, rr = t[ok], rr[ok]
    if t.size < 2:
        raise NightlinkError(f"{beats.name} has fewer than 2 beats.")
    median = float(np.median(rr))
    if not RR_RANGE_S[0] <= median <= RR_RANGE_S[1]:
        raise NightlinkError(f"{beats.name} has a median RR interval of {median:g}: rr_s is in "
                             f"seconds ({RR_RANGE_S[0]}-{RR_RANGE_S[1]} for a heart).")
    order = np.argsort(t, kind="stable")
    t, rr = t[order], rr[order]
    keep = np.r_[True, np.diff(t) > 0]
    t, rr = t[keep], rr[keep]
    # Beats one RR interval apart: in minutes they are rr/60 apart, in seconds rr apart.
    spacing = float(np.median(np.diff(t))) * 60 / median if t.size > 2 else 1.0
    seconds = spacing > 20
    if t[0] > n or seconds:
        raise NightlinkError(f"{beats.name} has beats from minute {t[0]:.0f} to {t[-1]:.0f} but "
                             f"{labels.name} labels minutes 0 to {n - 1}: t_min is minutes from "
                             "the first labelled minute" + (" (these look like seconds)."
                                                            if seconds else "."))
    apnea = np.array([minute_flags[m] for m in range(n)], dtype=np.uint8)
    notes = []
    if unread:
        notes.append(f"{name}: {len(unread)} lines of {beats.name} are not two numbers (first: "
                     f"line {unread[0]}); those beats were left out.")
    past = int(np.count_nonzero(t >= n + CONTEXT_PAST_LABELS_MIN))
    if past:  # only the labelled minutes are scored (and the few after them, their context)
        notes.append(f"{name}: {past} beats more than {CONTEXT_PAST_LABELS_MIN} minutes after "
                     f"its last labelled minute ({n - 1}) were left out.")
        keep = t < n + CONTEXT_PAST_LABELS_MIN
        t, rr = t[keep], rr[keep]
        if t.size < 2:
            raise NightlinkError(f"{beats.name} has fewer than 2 beats in the labelled minutes.")
    beaten = np.unique(np.floor(t).astype(np.int64))
    unbeaten = n - int(np.count_nonzero((beaten >= 0) & (beaten < n)))
    if unbeaten > UNBEATEN_REFUSE_SHARE * n:
        raise NightlinkError(f"{unbeaten} of the {n} minutes {labels.name} labels have no beats "
                             f"in {beats.name} (beats from minute {t[0]:.0f} to {t[-1]:.0f}): "
                             "labels every 30 s read as minutes, or beats on another clock than "
                             "the labels? One label per minute, t_min on the labels' clock.")
    if unbeaten > UNBEATEN_NOTE_MIN:
        notes.append(f"{name}: {unbeaten} of its {n} labelled minutes have no beats (beats "
                     f"from minute {t[0]:.0f} to {t[-1]:.0f}); its reference index counts "
                     "them, the estimate cannot.")
    return Recording(name, t * 60.0, rr * 1000.0, apnea, notes)


def stored_epochs(rec: Recording) -> dict[str, np.ndarray]:
    """The recording's wearable epoch columns as the edge would store them: each beat through
    WearableReducer, each epoch row quantized to the wire's resolution and back."""
    n = rec.minutes * 2
    reducer = WearableReducer()
    names = features.names(features.WEARABLE)
    feats = features.features(features.WEARABLE)
    cols = np.full((n, len(names)), np.nan)
    epoch_of = (rec.beat_t_s // EPOCH_S).astype(int)
    bounds = np.searchsorted(epoch_of, np.arange(n + 1))
    for e in range(n):
        for t, rr in zip(rec.beat_t_s[bounds[e]:bounds[e + 1]], rec.rr_ms[bounds[e]:bounds[e + 1]],
                         strict=True):
            reducer.add(Beat(float(t), float(rr)))
        raw = to_raw(features.WEARABLE, reducer.close(e))
        for i, (f, r) in enumerate(zip(feats, raw, strict=True)):
            if r is not None and r != features.MISSING[f[features.F_TYPE]]:
                cols[e, i] = features.dequantize(f, r)
    return {name: cols[:, i] for i, name in enumerate(names)}


def minute_features(rec: Recording, kinds=KINDS) -> dict[str, np.ndarray]:
    """Per-minute features of the recording for each head (the stored epochs computed once)."""
    out = {}
    if "beats" in kinds:
        out["beats"] = cvhr.minute_features(rec.beat_t_s, rec.rr_ms, rec.minutes)
    if any(kind != "beats" for kind in kinds):
        epochs = stored_epochs(rec)
        for kind in kinds:
            if kind != "beats":
                out[kind] = cvhr.epoch_minute_features(epochs, cyclic=kind == "epochs")[:rec.minutes]
    return out


def fit_head(feats: list[np.ndarray], labels: list[np.ndarray], kind: str) -> dict:
    """A ridge logistic regression (Newton steps, deterministic) on the minutes whose own
    features are present; the meta a cvhr.LogisticHead reads."""
    inputs = HEAD_INPUTS.get(kind, {"context_minutes": list(cvhr.CONTEXT),
                                    "context_mean_minutes": cvhr.CONTEXT_MEAN})
    x = np.concatenate([cvhr.head_inputs(f, inputs) for f in feats])
    y = np.concatenate(labels).astype(np.float64)
    own = ~np.isnan(np.concatenate(feats)).any(axis=1)
    x, y = x[own], y[own]
    if not y.size:
        from nightlink.errors import NightlinkError

        raise NightlinkError(f"No minute with clean beats to fit the {kind} head on.")
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a column with no value: mean 0, scale 1
        mean = np.nan_to_num(np.nanmean(x, axis=0))
        scale = np.nan_to_num(np.nanstd(x, axis=0))
    scale[scale < 1e-9] = 1.0
    z = np.nan_to_num((x - mean) / scale)
    design = np.hstack([z, np.ones((z.shape[0], 1))])
    w = np.zeros(design.shape[1])
    penalty = np.full(design.shape[1], HEAD_L2.get(kind, L2))
    penalty[-1] = 0.0
    for _ in range(30):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ w, -30, 30)))
        grad = design.T @ (p - y) + penalty * w
        hess = (design * (p * (1 - p))[:, None]).T @ design + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return {"mean": mean.round(6).tolist(), "scale": scale.round(6).tolist(),
            "weights": w[:-1].round(6).tolist(), "bias": round(float(w[-1]), 6), "threshold": 0.5,
            "features": list(inputs.get("columns", head_features(kind))), **inputs}


def head_features(kind: str) -> tuple[str, ...]:
    if kind == "beats":
        return cvhr.BEATS_HEAD_FEATURES
    return cvhr.EPOCH_FEATURES + (cvhr.TRAILING_FEATURES if kind == "epochs" else ())


def folds(recs: list[Recording], k: int) -> list[list[Recording]]:
    """k groups of whole recordings, dealt in name order so each holds a, b and c nights."""
    return [recs[i::k] for i in range(k)]


def score(per_record: list[tuple[Recording, dict]]) -> dict:
    """Per-minute and per-recording figures from (recording, night result) pairs."""
    y = np.concatenate([r.apnea for r, _ in per_record]).astype(bool)
    flags = np.concatenate([res["apnea_minutes"] for _, res in per_record])
    valid = np.concatenate([~np.isnan(res["probability"]) for _, res in per_record])
    yv, fv = y[valid], flags[valid]
    ref = np.array([r.index for r, _ in per_record])
    est = np.array([res["index"] if res["index"] is not None else np.nan for _, res in per_record])
    pos, flagged = ref >= cvhr.SCREEN_INDEX, est >= cvhr.SCREEN_INDEX
    ok = ~np.isnan(est)
    return {
        "minutes": int(y.size), "minutes_scored": int(valid.sum()),
        "accuracy": _share(yv == fv),
        "sensitivity": _share(fv[yv]),
        "specificity": _share(~fv[~yv]),
        "recordings": len(per_record), "recordings_index15": int(pos.sum()),
        "index15_sensitivity": round(float(flagged[pos & ok].mean()), 3) if (pos & ok).any() else None,
        "index15_specificity": round(float((~flagged[~pos & ok]).mean()), 3) if (~pos & ok).any() else None,
        "index_mae": round(float(np.abs(est - ref)[ok].mean()), 1) if ok.any() else None,
        "index_r": (round(float(np.corrcoef(ref[ok], est[ok])[0, 1]), 3)
                    if ok.sum() > 2 and ref[ok].std() > 0 and est[ok].std() > 0 else None),
        "index_pairs": {r.name: [round(r.index, 1), None if np.isnan(e) else round(float(e), 1)]
                        for (r, _), e in zip(per_record, est, strict=True)},
    }


def _share(hits: np.ndarray) -> float | None:
    """The share of True in `hits`, None when there is nothing to share (no apnea minute among
    the recordings gives no sensitivity)."""
    return round(float(hits.mean()), 3) if hits.size else None


# The beats head also learns from a copy of each training recording's beats spoiled the way
# a pulse sensor (a ring's or a watch's PPG) spoils them: beat times jittered and beats
# missed, drawn per recording from these ranges. Trained on ECG beats alone, 10 ms of jitter
# took held-out per-minute accuracy from 0.872 to 0.842 (the added beat-to-beat variability
# read as apnea).
PULSE_JITTER_MS = (5.0, 25.0)  # standard deviation of the beat times' jitter
PULSE_MISSED = (0.0, 0.1)  # share of beats the sensor misses


def pulse_like(rec: Recording) -> Recording:
    """The recording with its beats as a pulse sensor might give them (jitter and missed
    beats from PULSE_JITTER_MS and PULSE_MISSED), the same copy every time for a name."""
    from dataclasses import replace

    rng = np.random.default_rng(zlib.crc32(rec.name.lower().encode()))
    jitter_s, missed = rng.uniform(*PULSE_JITTER_MS) / 1000, rng.uniform(*PULSE_MISSED)
    keep = rng.random(rec.beat_t_s.size) >= missed
    t = np.sort(rec.beat_t_s[keep] + rng.normal(0.0, jitter_s, int(keep.sum())))
    rr = np.diff(t, prepend=t[0] - rec.rr_ms[0] / 1000) * 1000 if t.size else t
    return replace(rec, beat_t_s=t, rr_ms=rr)


def training_features(rec: Recording, kinds=KINDS) -> dict[str, np.ndarray]:
    """minute_features, and for the beats head those of the pulse-like copy (`beats_pulse`)."""
    out = minute_features(rec, kinds)
    if "beats" in kinds:
        copy = pulse_like(rec)
        out["beats_pulse"] = cvhr.minute_features(copy.beat_t_s, copy.rr_ms, copy.minutes)
    return out


def _fit(kind: str, train: list[Recording], feats: dict[str, dict[str, np.ndarray]]) -> dict:
    """A head fitted on the training recordings' features (and for beats, their pulse-like
    copies' too)."""
    rows = [feats[kind][r.name] for r in train]
    labels = [r.apnea for r in train]
    if kind == "beats":
        rows += [feats["beats_pulse"][r.name] for r in train]
        labels += labels
    return fit_head(rows, labels, kind)


def _features_by_kind(recs: list[Recording], kinds) -> dict[str, dict[str, np.ndarray]]:
    """training_features of every recording, by head (and `beats_pulse`), then by name."""
    per_rec = {r.name: training_features(r, kinds) for r in recs}
    return {kind: {name: f[kind] for name, f in per_rec.items()}
            for kind in next(iter(per_rec.values()), {})}


def cross_validate(recs: list[Recording], k: int, kinds=KINDS, progress=None) -> dict:
    """Grouped k-fold by recording: each recording scored by a model trained without it."""
    feats = _features_by_kind(recs, kinds)
    out, fold_heads = {}, {}
    for kind in sorted(kinds, key=lambda kd: kd == "beats"):  # its partner's fold heads first
        scored = []
        for i, test in enumerate(folds(recs, k)):
            if progress:
                progress(kind, i + 1, k)
            names = {r.name for r in test}
            train = [r for r in recs if r.name not in names]
            head = fold_heads[kind, i] = cvhr.LogisticHead(_fit(kind, train, feats))
            model = cvhr.RrApneaModel({})
            model.heads[kind] = head
            partner = head.meta.get("average_with")
            if (partner, i) in fold_heads:
                model.heads[partner] = fold_heads[partner, i]
            scored += [(r, model.night(kind, feats[kind][r.name],
                                       feats[partner][r.name] if partner in feats else None))
                       for r in test]
        scored.sort(key=lambda pair: pair[0].name)
        out[kind] = score(scored)
        out[kind]["cv_folds"] = k
    return out


def fingerprint(rec: Recording) -> str:
    """A short digest of a recording's first 2,000 beats and its labels: tells whether a model
    was trained on this very recording, whatever its files are called."""
    import hashlib

    body = np.rint(rec.rr_ms[:2000]).astype(np.int16).tobytes() + rec.apnea.tobytes()
    return hashlib.sha256(body).hexdigest()[:16]


LABEL_MARK_RUNS = 3  # consecutive runs of apnea and not (whole runs: not the first or last)
LABEL_MARK_MIN_MINUTES = 20  # ... lasting this long together make a mark
LABEL_MARK_MATCHES = 2  # marks shared with one trained recording: the same recording


def label_marks(rec: Recording) -> list[str]:
    """Marks of a recording's labels: the lengths of each LABEL_MARK_RUNS consecutive runs of
    apnea and normal minutes (lasting LABEL_MARK_MIN_MINUTES together), hashed. The labels
    are the expert's, the same whoever detects the beats and however the files are written
    or trimmed (the first and last runs, which trimming cuts, are left out), so a copy of a
    recording a model was trained on is recognised by them where the beats' digest
    (`fingerprint`) is not. Controls without apnea runs have none. Among Apnea-ECG's 35
    recordings 27 have marks and no two share one; all 27 are recognised by them."""
    import hashlib

    a = rec.apnea.astype(np.int8)
    cuts = np.flatnonzero(np.diff(a)) + 1
    runs = [(int(part[0]), part.size) for part in np.split(a, cuts)][1:-1]
    out = set()
    for i in range(len(runs) - LABEL_MARK_RUNS + 1):
        group = runs[i:i + LABEL_MARK_RUNS]
        if sum(n for _, n in group) >= LABEL_MARK_MIN_MINUTES:
            out.add(hashlib.sha256(repr(group).encode()).hexdigest()[:10])
    return sorted(out)


def seen_by_labels(rec: Recording, marks_by_recording: dict[str, list[str]]) -> bool:
    """Whether LABEL_MARK_MATCHES of the recording's label marks (all, when it has fewer) are
    one trained recording's."""
    own = set(label_marks(rec))
    need = min(LABEL_MARK_MATCHES, len(own))
    return bool(own) and any(len(own.intersection(m)) >= need
                             for m in marks_by_recording.values())


def score_committed(model: cvhr.RrApneaModel, recs: list[Recording], kinds=KINDS) -> dict:
    """The committed model, as it is, on recordings: per head, the figures `score` gives, and
    who of them it was trained on (by their beats, not their names)."""
    per_rec = {r.name: minute_features(r, kinds) for r in recs}
    out: dict = {"data": "real", "validation": "committed model, not retrained"}
    for kind in kinds:
        if kind in model.heads:
            partner = model.heads[kind].meta.get("average_with")
            out[kind] = score([(r, model.night(kind, per_rec[r.name][kind],
                                               per_rec[r.name].get(partner))) for r in recs])
    train = model.meta.get("train", {})
    trained, marks = set(train.get("fingerprints", [])), train.get("label_marks", {})
    out["seen_in_training"] = sorted(r.name for r in recs if fingerprint(r) in trained
                                     or seen_by_labels(r, marks))
    # Beats derived again, cut or cleaned differ from the training copy: a recording named
    # as one the model was trained on, but not recognised, may still be it.
    named = {n.lower() for n in train.get("recordings", [])}
    out["named_like_training"] = sorted(r.name for r in recs if r.name.lower() in named
                                        and r.name not in out["seen_in_training"])
    return out


def source_of(data: Path, names: list[str] | None = None) -> str:
    """What the recordings are, for the model's meta and the figures: the Apnea-ECG credit
    for the shared folder, and for its test set (recordings x01-x35, `names` or the folder's
    WFDB records, in any layout), else the folder's name (another set is credited by its
    user; a machine's path is not written into a model file)."""
    from nightlink.tools.train import wfdb_files

    if Path(data).resolve() == Path(DEFAULT_DATA).resolve():
        return CREDIT
    names = names if names is not None else wfdb_files.records(Path(data))
    if names and all(re.fullmatch(r"x(0[1-9]|[12]\d|3[0-5])", n.lower()) for n in names):
        return TEST_SET_CREDIT
    return f"recordings in {Path(data).resolve().name}"


def train_all(recs: list[Recording], kinds=KINDS, source: str = CREDIT) -> dict:
    """The committed model's meta: every head trained on every recording."""
    feats = _features_by_kind(recs, kinds)
    meta = {}
    for kind in kinds:
        meta[kind] = _fit(kind, recs, feats)
    meta["train"] = {"recordings": [r.name for r in recs], "data": source,
                     "pulse_like_copies": {"jitter_ms": list(PULSE_JITTER_MS),
                                           "missed": list(PULSE_MISSED)},
                     "fingerprints": sorted(fingerprint(r) for r in recs),
                     "label_marks": {r.name: m for r in recs if (m := label_marks(r))},
                     "screen_index": cvhr.SCREEN_INDEX}
    return meta


def train_and_validate(recs: list[Recording], cv: int, progress=None,
                       source: str = CREDIT) -> tuple[dict, dict]:
    """(the committed model's meta, the cross-validation figures labelled real data);
    `source` names the recordings (source_of)."""
    figures = {}
    if cv:
        figures = {"data": "real", "source": source, "validation": f"{cv}-fold leave-recordings-out",
                   **cross_validate(recs, cv, progress=progress)}
    meta = train_all(recs, source=source)
    if figures:
        meta["cross_validation"] = {k: ({m: v[m] for m in HEADLINE} if isinstance(v, dict) else v)
                                    for k, v in figures.items()}
    return meta, figures


HEADLINE = ("accuracy", "sensitivity", "specificity", "recordings", "recordings_index15",
            "index15_sensitivity", "index15_specificity", "index_mae", "index_r", "cv_folds")


def write_model(models: Path, meta: dict) -> Path:
    models.mkdir(parents=True, exist_ok=True)
    path = models / cvhr.MODEL_FILE
    try:
        text = json.dumps(meta, indent=1, sort_keys=True, allow_nan=False)
    except ValueError:
        from nightlink.errors import NightlinkError

        raise NightlinkError("The fitted heart-rhythm model has weights that are not numbers; "
                             "nothing was written.") from None
    path.write_text(text + "\n")
    return path


# -- the edge's screen per input, on simulated nights next to the real-data figures ------------

_WEARABLE_RR = ("hr_mean_bpm", "hr_min_bpm", "hr_max_bpm", "rmssd_ms", "sdnn_ms", *cvhr.TRAILING_FEATURES)
_WEARABLE_SPO2 = ("spo2_mean_pct", "spo2_min_pct", "desat3_count", "desat4_count")
SUBSETS = {"rr": ("rr",), "spo2": ("spo2",), "audio": ("audio",), "all": ("rr", "spo2", "audio")}


def only(streams: dict, keep: tuple[str, ...]) -> dict:
    """The night's columns with every input not in `keep` missing (motion and room stay)."""
    out = {name: dict(cols) for name, cols in streams.items()}
    gone = [f for key, names in (("rr", _WEARABLE_RR), ("spo2", _WEARABLE_SPO2)) if key not in keep
            for f in names]
    for f in gone:
        out["wearable"][f] = np.full_like(streams["wearable"][f], np.nan)
    if "audio" not in keep:
        out["audio"] = {f: np.full_like(v, np.nan) for f, v in streams["audio"].items()}
    return out


def _screen_figures(pairs: list[tuple[float, float | None]]) -> dict:
    truth = np.array([t for t, _ in pairs])
    est = np.array([np.nan if e is None else e for _, e in pairs])
    ok = ~np.isnan(est)
    pos, flagged = truth >= cvhr.SCREEN_INDEX, est >= cvhr.SCREEN_INDEX
    return {"data": "simulated", "nights": len(pairs), "nights_with_estimate": int(ok.sum()),
            "nights_ahi15": int(pos.sum()),
            "ahi15_sensitivity": round(float(flagged[pos & ok].mean()), 3) if (pos & ok).any() else None,
            "ahi15_specificity": round(float((~flagged[~pos & ok]).mean()), 3) if (~pos & ok).any() else None,
            "estimate_mae": round(float(np.abs(est[ok] - truth[ok]).mean()), 1) if ok.any() else None}


def _audio_ahi(clf, streams: dict) -> float | None:
    """The audio breathing model's events per hour of classifier-scored sleep."""
    stage, _conf, _ = clf.scored_stages(streams)  # -1 (unscored) is not sleep
    tst_h = float((stage > 0).sum()) / 120.0
    events = clf.breathing(streams, stage > 0)["apnea_events"]
    return float(events.sum()) / tst_h if tst_h > 0 else None


def by_inputs(clf, nights, streams_of, subsets=SUBSETS) -> dict:
    """The night screen (edge/features/apnea_screen.py) fed each input alone and all together:
    on simulated nights (against the simulator's AHI), and the heart-rhythm model's
    real-data cross-validation figures stored with it (labelled real)."""
    from nightlink.edge.features.apnea_screen import breathing_screen

    pairs: dict[str, list] = {name: [] for name in subsets}
    for n in nights:
        full = streams_of(n)
        for name, keep in subsets.items():
            st = only(full, keep)
            res = breathing_screen(st, _audio_ahi(clf, st) if "audio" in keep else None,
                                   clf.rr_apnea)
            pairs[name].append((n.ahi_truth, res["ahi_estimate"]))
    out = {name: {"simulated": _screen_figures(p)} for name, p in pairs.items()}
    real = (clf.rr_apnea.meta.get("cross_validation") if clf.rr_apnea is not None else None) or {}
    for head in KINDS:
        if head in real:
            out["rr"][f"real_{head}"] = {"data": "real", "source": real.get("source"),
                                         "validation": real.get("validation"), **real[head]}
    return out


# -- night-level index: does anything beyond counting apnea minutes find more nights? ---------
#
# A study, not part of the committed model: each candidate maps a night's per-minute
# probabilities (and the night's own feature distribution) to its apnea index with a small
# ridge regression on (night statistics, reference index) pairs of training recordings. The
# pairs come from inner folds (the training recordings scored by models that did not see
# them), so a held-out recording is never used to fit or to choose anything.

NIGHT_MAPS = {
    "count": None,  # apnea minutes per hour, as the edge reports it
    "mean_probability": None,  # expected apnea minutes per hour (sum of probabilities)
    "count_linear": ("count_index",),
    "count_swing": ("count_index", "swing_peak"),
    "count_vlf": ("count_index", "vlf_peak"),
    "count_regular_swing": ("count_index", "regular_share", "swing_peak"),
    "count_cvhr_p90": ("count_index", "cvhr_p90"),
    "count_prob_p90": ("count_index", "prob_p90"),
}
NIGHT_L2 = 1.0


def night_stats(feats: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    """A night's statistics from its beats-head features and per-minute probabilities: the
    count index, the mean-probability index, the 90th percentile probability, the 90th
    percentile CVHR share, the share of minutes whose heart rate cycles regularly
    (autocorrelation > 0.3 at 20-100 s), and how peaked the night's swings are (log of the
    90th over the 50th percentile of the 3-minute swing; of the VLF power: difference of logs),
    low when the cycling lasts all night, high when a calm night has a few surges."""
    valid = ~np.isnan(prob)
    f = feats[~np.isnan(feats).any(axis=1)]
    col = {name: f[:, i] for i, name in enumerate(cvhr.BEATS_HEAD_FEATURES)}
    swing = np.percentile(col["swing_3min_pct"], (50, 90))
    vlf = np.percentile(col["log_vlf_power"], (50, 90))
    return {"count_index": cvhr.apnea_index(cvhr.smooth_minutes(prob, 0.5), prob) or 0.0,
            "mean_index": float(prob[valid].mean()) * 60.0,
            "prob_p90": float(np.percentile(prob[valid], 90)),
            "cvhr_p90": float(np.percentile(col["cvhr_fraction"], 90)),
            "regular_share": float((col["cycle_regularity"] > 0.3).mean()),
            "swing_peak": float(np.log(swing[1] / swing[0])), "vlf_peak": float(vlf[1] - vlf[0])}


def fit_night_map(rows: list[dict], refs: list[float], keys: tuple[str, ...]) -> dict:
    """Ridge regression (standardized inputs, free intercept) of the reference index."""
    x = np.array([[r[k] for k in keys] for r in rows])
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-9
    design = np.hstack([(x - mean) / scale, np.ones((len(rows), 1))])
    penalty = np.diag([NIGHT_L2] * len(keys) + [0.0])
    w = np.linalg.solve(design.T @ design + penalty, design.T @ np.asarray(refs))
    return {"keys": keys, "mean": mean, "scale": scale, "weights": w[:-1], "bias": float(w[-1])}


def night_index(name: str, row: dict, fitted: dict | None) -> float:
    if name == "count":
        return row["count_index"]
    if name == "mean_probability":
        return row["mean_index"]
    x = (np.array([row[k] for k in fitted["keys"]]) - fitted["mean"]) / fitted["scale"]
    return max(float(x @ fitted["weights"]) + fitted["bias"], 0.0)


def _screen_errors(name: str, rows: dict, refs: dict) -> tuple[int, float]:
    """Leave-one-out over the training recordings: screen errors at 15, then index error."""
    est = {}
    for held in rows:
        others = [n for n in rows if n != held]
        fitted = None if NIGHT_MAPS[name] is None else fit_night_map(
            [rows[n] for n in others], [refs[n] for n in others], NIGHT_MAPS[name])
        est[held] = night_index(name, rows[held], fitted)
    errors = sum((est[n] >= cvhr.SCREEN_INDEX) != (refs[n] >= cvhr.SCREEN_INDEX) for n in rows)
    return errors, float(np.mean([abs(est[n] - refs[n]) for n in rows]))


def _beats_probabilities(train: list[Recording], test: list[Recording], feats: dict) -> dict:
    head = cvhr.LogisticHead(fit_head([feats[r.name] for r in train], [r.apnea for r in train], "beats"))
    return {r.name: head.probability(feats[r.name]) for r in test}


def night_study(recs: list[Recording], k: int, inner: int = 5, progress=None) -> dict:
    """Per night-level map: held-out per-recording figures (outer folds of whole recordings,
    maps fitted on inner-fold predictions of the training recordings), and `nested`: the map
    each outer fold picks by leave-one-out screen errors on its own training recordings."""
    feats = {r.name: cvhr.minute_features(r.beat_t_s, r.rr_ms, r.minutes) for r in recs}
    refs = {r.name: r.index for r in recs}
    est: dict[str, dict[str, float]] = {name: {} for name in [*NIGHT_MAPS, "nested"]}
    picked = []
    for i, test in enumerate(folds(recs, k)):
        if progress:
            progress("night", i + 1, k)
        held_names = {r.name for r in test}
        train = [r for r in recs if r.name not in held_names]
        inner_prob = {}
        for inner_test in folds(train, inner):
            inner_names = {r.name for r in inner_test}
            inner_prob.update(_beats_probabilities([r for r in train if r.name not in inner_names],
                                                   inner_test, feats))
        rows = {n: night_stats(feats[n], p) for n, p in inner_prob.items()}
        held = {n: night_stats(feats[n], p) for n, p in _beats_probabilities(train, test, feats).items()}
        fitted = {name: None if keys is None else fit_night_map(
            list(rows.values()), [refs[n] for n in rows], keys) for name, keys in NIGHT_MAPS.items()}
        best = min(NIGHT_MAPS, key=lambda name: _screen_errors(name, rows, refs))
        picked.append(best)
        for n, row in held.items():
            for name in NIGHT_MAPS:
                est[name][n] = night_index(name, row, fitted[name])
            est["nested"][n] = est[best][n]
    out = {name: _index_figures(refs, e) for name, e in est.items()}
    out["nested"]["picked"] = {name: picked.count(name) for name in sorted(set(picked))}
    return out


def _index_figures(refs: dict[str, float], est: dict[str, float]) -> dict:
    names = sorted(refs)
    ref, e = np.array([refs[n] for n in names]), np.array([est[n] for n in names])
    pos, flagged = ref >= cvhr.SCREEN_INDEX, e >= cvhr.SCREEN_INDEX
    return {"index15_found": f"{int((pos & flagged).sum())}/{int(pos.sum())}",
            "index15_cleared": f"{int((~pos & ~flagged).sum())}/{int((~pos).sum())}",
            "missed": [n for n, p, f in zip(names, pos, flagged, strict=True) if p and not f],
            "false_positive": [n for n, p, f in zip(names, pos, flagged, strict=True) if f and not p],
            "index_mae": round(float(np.abs(e - ref).mean()), 1),
            "index_r": round(float(np.corrcoef(ref, e)[0, 1]), 3)}


if __name__ == "__main__":  # python -m nightlink.tools.train.apnea_real [folds]
    import sys

    study = night_study(load_folder(DEFAULT_DATA), int(sys.argv[1]) if len(sys.argv) > 1 else 35,
                        progress=lambda *a: sys.stderr.write(f"{a}\n"))
    sys.stdout.write(json.dumps(study) + "\n")
