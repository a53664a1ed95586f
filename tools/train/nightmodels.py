"""Sleep-stage and breathing-event models: training on simulated nights, int8 export, and the
held-out evaluation (`nightlink eval sleep|breathing`), which runs the exported .tflite files
through the edge's own runtime (edge/features/classify.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from nightlink.edge.features import classify
from nightlink.shared import features
from nightlink.tools.sim import stage_stats
from nightlink.tools.train import apnea_real, int8
from nightlink.tools.train.nights import INPUT_STREAMS, Night

SEED = 11


def streams_of(night: Night) -> dict[str, dict[str, np.ndarray]]:
    out, col = {}, 0
    for s in INPUT_STREAMS:
        names = features.names(s)
        out[features.stream(s)[features.S_NAME]] = {n: night.x[:, col + i].astype(np.float64)
                                      for i, n in enumerate(names)}
        col += len(names)
    return out


def _seed(seed: int):
    import tensorflow as tf

    tf.keras.backend.clear_session()  # layer names restart, so the .tflite bytes repeat
    tf.keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    return tf


def with_only(streams: dict[str, dict[str, np.ndarray]], modalities) -> dict:
    """A copy of a night's streams where every sleep modality not named is missing."""
    out = {name: dict(cols) for name, cols in streams.items()}
    for name, group in classify.SLEEP_MODALITIES:
        if name not in modalities:
            for s, f in group:
                out[s][f] = np.full_like(out[s][f], np.nan)
    return out


def train_sleep(nights: list[Night], seed: int = SEED, epochs: int = 30):
    """(.tflite bytes, meta) for the sleep stager. Modality dropout: every training night is
    seen once per input subset (classify.SLEEP_SUBSETS), the missing modalities flagged off,
    so one model serves a motion-only watch as well as the full bedside set."""
    tf = _seed(seed)
    x = np.concatenate([classify.sleep_inputs(with_only(streams_of(n), subset))
                        for n in nights for subset in classify.SLEEP_SUBSETS.values()])
    y = np.concatenate([n.stage for n in nights for _ in classify.SLEEP_SUBSETS]).astype(np.int32)
    counts = np.bincount(y, minlength=4).astype(np.float64)
    weight = (counts.sum() / (4 * np.maximum(counts, 1)))[y] ** 0.5
    inp = tf.keras.Input(shape=(x.shape[1],), name="epochs")
    h = tf.keras.layers.Dense(64, activation="relu", name="h0")(inp)
    h = tf.keras.layers.Dropout(0.2, name="drop")(h)
    h = tf.keras.layers.Dense(32, activation="relu", name="h1")(h)
    out = tf.keras.layers.Dense(4, activation="softmax", name="stage")(h)
    model = tf.keras.Model(inp, out)
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-3),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy())
    model.fit(x, y, sample_weight=weight, epochs=epochs, batch_size=256, shuffle=True, verbose=0)
    meta = {"inputs": x.shape[1], "stages": list(classify.STAGES),
            "modalities": [name for name, _ in classify.SLEEP_MODALITIES],
            "trained_subsets": list(classify.SLEEP_SUBSETS),
            "train_epochs": int(y.size // len(classify.SLEEP_SUBSETS)),
            "fit_epochs": epochs, "decoder": decoder_meta(counts / len(classify.SLEEP_SUBSETS))}
    return int8.to_tflite(model, x[::23][:2000], int8_io=False), meta


# The sequence decoder's settings (edge/features/sleep_decode.py). REM prior: a likelihood
# factor by minutes since sleep onset. None of the 25 Dreem DOD-H consensus nights had REM
# within 65 minutes of onset (shortest 65, median 106.5); the factor stays at its floor to
# 45 minutes, rises to 1 at 75, and the floor keeps a sustained, confident early REM period
# (a sleep-onset REM period) possible. Emission weight: the stager's log-probabilities
# as they are (1.0); no setting here was tuned on the held-out nights.
REM_PRIOR = ((0.0, 0.05), (45.0, 0.05), (75.0, 1.0))
EMISSION_WEIGHT = 1.0


def decoder_meta(label_counts, table: dict | None = None) -> dict:
    """The decoder's settings: the transition matrix (Wake, Light, Deep, REM, epoch to next
    epoch) from the real nights' epoch transitions (N1 and N2 pooled as Light, a
    pseudo-count of 1), start probabilities, the REM prior, and the stage shares the stager
    was trained towards (label_counts: training epochs per stage; the square-root class
    weights of train_sleep make those shares proportional to the counts' square roots)."""
    table = table or stage_stats.load_table()
    counts5 = np.array(table["epoch_transition_counts"], dtype=np.float64)
    to4 = stage_stats.TO4
    counts = np.zeros((4, 4))
    np.add.at(counts, (to4[:, None], to4[None, :]), counts5)
    counts += 1.0
    trans = counts / counts.sum(axis=1, keepdims=True)
    prior = np.sqrt(np.maximum(np.asarray(label_counts, dtype=np.float64), 1.0))
    return {"transitions": [[round(float(v), 6) for v in row] for row in trans],
            "start": [0.7, 0.1, 0.1, 0.1],
            "class_prior": [round(float(v), 4) for v in prior / prior.sum()],
            "rem_prior": [list(point) for point in REM_PRIOR],
            "emission_weight": EMISSION_WEIGHT,
            "source": "transitions: epoch-to-epoch stage changes of the 25 consensus "
                      "hypnograms of the Dreem Open Dataset DOD-H (Guillot et al. 2020, MIT); "
                      "rem_prior: no REM within 65 min of sleep onset on those nights; "
                      "class_prior: the training labels' shares under the class weights"}


def train_breathing(nights: list[Night], seed: int = SEED, epochs: int = 30):
    """(.tflite bytes, meta) for the snore / respiratory-event model."""
    tf = _seed(seed)
    x = np.concatenate([classify.breath_inputs(streams_of(n)) for n in nights])
    snore = np.concatenate([n.snore for n in nights]).astype(np.float32)
    starts = np.concatenate([_starts(n) for n in nights]).astype(np.float32)
    inp = tf.keras.Input(shape=(x.shape[1],), name="epochs")
    h = tf.keras.layers.Dense(48, activation="relu", name="h0")(inp)
    h = tf.keras.layers.Dense(24, activation="relu", name="h1")(h)
    s_out = tf.keras.layers.Dense(1, activation="sigmoid", name="snore")(h)
    c_out = tf.keras.layers.Dense(1, activation="relu", name="events")(h)
    model = tf.keras.Model(inp, [s_out, c_out])
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-3),
                  loss=[tf.keras.losses.BinaryCrossentropy(), tf.keras.losses.MeanSquaredError()])
    model.fit(x, [snore[:, None], starts[:, None]], epochs=epochs, batch_size=256, shuffle=True,
              verbose=0)
    blob = int8.to_tflite(model, x[::23][:2000], int8_io=False)
    meta = {"snore_threshold": 0.5, "count_offset": 0.5, "inputs": x.shape[1]}
    # Calibrate the rounding offset of the event count so the total matches on training nights.
    outs = classify.Int8Model(blob)(x)
    # Which .tflite output is the snore head: the one that follows the Keras snore output.
    ref = model.predict(x[:2000], verbose=0)[0][:, 0]
    k = int(np.argmin([np.abs(o[:2000, 0] - ref).mean() for o in outs]))
    meta["snore_output"] = k
    count = outs[1 - k]
    best = min(np.arange(0.2, 0.81, 0.05),
               key=lambda off: abs(np.floor(count[:, 0] + off).clip(0, 3).sum() - starts.sum()))
    meta["count_offset"] = round(float(best), 2)
    return blob, meta


def _starts(n: Night) -> np.ndarray:
    """Respiratory events (apnea or hypopnea) starting in each epoch."""
    c = np.zeros(n.n, dtype=np.int32)
    for _kind, a, _b in n.events:
        i = int(a // 30)
        if 0 <= i < n.n:
            c[i] += 1
    return np.minimum(c, 3)


# -- evaluation -------------------------------------------------------------------------------


def cohen_kappa(y: np.ndarray, p: np.ndarray, k: int = 4) -> float:
    """Cohen's kappa over k classes (the same statistic as the scorers' ceiling)."""
    return stage_stats.kappa(y, p, k)


def stage_scores(y: np.ndarray, p: np.ndarray) -> dict:
    """Accuracy, kappa, wake specificity, sleep/wake agreement and per-stage F1 (4 stages)."""
    cm = np.zeros((4, 4), dtype=int)
    np.add.at(cm, (y, p), 1)
    f1 = {}
    for k, name in enumerate(classify.STAGES):
        tp = cm[k, k]
        if not cm[k].sum() and not cm[:, k].sum():
            f1[name] = None  # the stage neither in the truth nor called: nothing to score
            continue
        prec = tp / cm[:, k].sum() if cm[:, k].sum() else 0.0
        rec = tp / cm[k].sum() if cm[k].sum() else 0.0
        f1[name] = round(2 * prec * rec / (prec + rec), 3) if prec + rec else 0.0
    wake_spec = cm[0, 0] / cm[0].sum() if cm[0].sum() else None  # wake epochs scored wake
    sw_y, sw_p = (y > 0).astype(int), (p > 0).astype(int)
    return {
        "epochs": int(y.size),
        "accuracy": round(float((y == p).mean()), 3),
        "kappa": round(cohen_kappa(y, p), 3),
        "wake_specificity": round(float(wake_spec), 3) if wake_spec is not None else None,
        "sleep_wake_accuracy": round(float((sw_y == sw_p).mean()), 3),
        "sleep_wake_kappa": round(cohen_kappa(sw_y, sw_p, 2), 3),
        "f1": f1,
        "confusion": {"rows_truth_cols_predicted": list(classify.STAGES), "matrix": cm.tolist()},
    }


def _sleep_wake(y: np.ndarray, wake: np.ndarray) -> dict:
    """Sleep/wake figures of a wake call (True = wake)."""
    sw_y, sw_p = (y > 0).astype(int), (~wake).astype(int)
    return {"sleep_wake_accuracy": round(float((sw_y == sw_p).mean()), 3),
            "sleep_wake_kappa": round(cohen_kappa(sw_y, sw_p, 2), 3),
            "wake_specificity": round(float(wake[y == 0].mean()), 3) if (y == 0).any() else None}


def _by_inputs(clf: classify.Classifiers, nights: list[Night],
               subsets) -> tuple[dict, int, list[float]]:
    """The nights staged through the edge's own runtime once per input subset (names of
    classify.SLEEP_SUBSETS): the figures per subset, with motion's
    actigraphy rule and the model's own motion call beside it (`actigraphy_rule`,
    `motion_model_alone`); the epochs scored; the seconds each staging took."""
    by: dict[str, tuple[list, list]] = {name: ([], []) for name in subsets}
    alone, rule, seconds = [], [], []
    for n in nights:
        for name in subsets:
            st = with_only(streams_of(n), classify.SLEEP_SUBSETS[name])
            start = time.perf_counter()
            path, _conf, prob = clf.stages(st)
            seconds.append(time.perf_counter() - start)
            by[name][0].append(n.stage.astype(int))
            by[name][1].append(path.astype(int))
            if name == "motion":
                alone.append(np.argmax(prob, axis=1) == 0)
                rule.append(classify.actigraphy_wake(st["wearable"]["activity_count"]))
    y = np.concatenate(next(iter(by.values()))[0])
    result = {name: {**stage_scores(np.concatenate(ys), np.concatenate(ps)),
                     **night_timing_errors(ys, ps)}
              for name, (ys, ps) in by.items()}
    if "motion" in result:
        result["motion"]["actigraphy_rule"] = _sleep_wake(y, np.concatenate(rule))
        result["motion"]["motion_model_alone"] = _sleep_wake(y, np.concatenate(alone))
    return result, int(y.size), seconds


_HEADLINE = ("accuracy", "kappa", "wake_specificity", "sleep_wake_kappa", "f1", "confusion")


def eval_sleep(clf: classify.Classifiers, nights: list[Night]) -> dict:
    """Held-out simulated nights, once per input subset, through the edge's own runtime.
    For motion alone the runtime's sleep/wake is the actigraphy rule; the model's own
    sleep/wake call from motion is reported next to it (`motion_model_alone`)."""
    result, epochs, seconds = _by_inputs(clf, nights, classify.SLEEP_SUBSETS)
    figures = {"nights": len(nights), "epochs": epochs, "data": "in silico",
               **{k: result["full"][k] for k in _HEADLINE}, "by_inputs": result}
    figures["rem_latency_abs_error_min"] = result["full"]["rem_latency_abs_error_min"]
    figures["stage_seconds_per_night_max"] = round(max(seconds), 3) if seconds else None
    figures["targets_real_motion"] = _targets(result)
    figures["real"] = real_block()
    return figures



def eval_sleep_real(clf: classify.Classifiers, nights: list[Night], source: str,
                    with_hr: list[Night] | None = None) -> dict:
    """Real wrist nights with PSG stages (the Walch 2019 layout), scored by the committed
    model through the edge's own runtime with motion alone (every night) and with motion and
    heart rate (the nights `with_hr`, all of them when not given): per-subset figures and the
    wrist targets, measured; the headline is motion and heart rate when any night has it."""
    with_hr = nights if with_hr is None else with_hr
    result, epochs, _seconds = _by_inputs(clf, nights, ("motion",))
    hr_epochs = 0
    if with_hr:
        both, hr_epochs, _seconds = _by_inputs(clf, with_hr, ("motion_hr",))
        result["motion_hr"] = both["motion_hr"]
    targets = {name: {key: {"target": value, "measured": result[name][key],
                            "met": result[name][key] is not None and result[name][key] >= value}
                      for key, value in REAL_TARGETS[name].items()}
               for name in REAL_TARGETS if name in result}
    headline = "motion_hr" if with_hr else "motion"
    return {"nights": len(nights), "nights_with_heart_rate": len(with_hr), "epochs": epochs,
            "data": f"real: {source} (wrist acceleration, heart rate on {len(with_hr)} of "
                    "them; PSG stages; scored epochs only; activity counts from the "
                    "acceleration as tools/train/readers.py wrist_night makes them)",
            "headline_inputs": headline,
            "headline_nights": len(with_hr) if with_hr else len(nights),
            "headline_epochs": hr_epochs if with_hr else epochs,
            **{k: result[headline][k] for k in _HEADLINE},
            "by_inputs": result, "targets_real_wrist": targets}


def _onset_and_rem_latency(stages: list) -> tuple[int | None, float | None]:
    """(sleep onset epoch, REM latency in minutes) by the shared rule of the edge and cloud."""
    from nightlink.shared.sleep_epochs import first_rem, sleep_onset

    onset = sleep_onset(stages)
    rem = first_rem(stages, onset, 3)
    return onset, (None if rem is None else (rem - onset) / 2.0)


def _abs_error_summary(errors: list[float]) -> dict:
    return {"median": round(float(np.median(errors)), 1) if errors else None,
            "p90": round(float(np.percentile(errors, 90)), 1) if errors else None,
            "nights": len(errors)}


def night_timing_errors(truths: list[np.ndarray], paths: list[np.ndarray]) -> dict:
    """|predicted - true| sleep onset and REM latency per night (minutes): median, 90th
    percentile, and the nights where only one of the two hypnograms has a REM period
    (those have no latency error and are counted apart, not dropped silently)."""
    rem, onset, only_truth, only_pred = [], [], 0, 0
    for truth, path in zip(truths, paths, strict=True):
        t_onset, t_rem = _onset_and_rem_latency(truth.tolist())
        p_onset, p_rem = _onset_and_rem_latency(path.tolist())
        if t_onset is not None and p_onset is not None:
            onset.append(abs(t_onset - p_onset) / 2.0)
        if t_rem is not None and p_rem is not None:
            rem.append(abs(t_rem - p_rem))
        only_truth += t_rem is not None and p_rem is None
        only_pred += t_rem is None and p_rem is not None
    return {"rem_latency_abs_error_min": {**_abs_error_summary(rem),
                                          "nights_rem_missed": int(only_truth),
                                          "nights_rem_spurious": int(only_pred)},
            "sleep_onset_abs_error_min": _abs_error_summary(onset)}


# What the sleep/wake call must reach on real wrist nights; only measurable with real signals.
REAL_TARGETS = {"motion": {"sleep_wake_kappa": 0.35, "wake_specificity": 0.5},
                "motion_hr": {"sleep_wake_accuracy": 0.88, "wake_specificity": 0.6}}


def _targets(result: dict) -> dict:
    out = {"note": "Targets for real wrist nights. No real motion or heart-rate signals are in "
                   "the shared data, so they cannot be measured here; the figures next to "
                   "them are in silico (simulated nights) and only show the model can reach "
                   "them where the simulator is right. `nightlink eval sleep --data DIR` "
                   "measures them on real nights in the Walch 2019 layout."}
    for name, targets in REAL_TARGETS.items():
        out[name] = {key: {"target": value, "in_silico": result[name][key]}
                     for key, value in targets.items()}
    return out


def real_block() -> dict:
    """What real data allows here: the 25 multi-scored Dreem DOD-H hypnograms (no signals)."""
    from nightlink.tools.sim.stage_stats import load_table

    table = load_table()
    return {
        "data": "Dreem Open Dataset DOD-H: 25 real PSG nights, hypnograms from 5 scorers each "
                "(Guillot et al. 2020, MIT); hypnograms only, no signals",
        "signals": "none: no real motion, heart-rate or audio recordings are in the shared "
                   "data, so the model itself is not scored on real nights here",
        "inter_scorer_ceiling": table["inter_scorer"],
        "rem_latency_inter_scorer_ceiling": table["rem_latency_inter_scorer"],
        "sleep_statistics_consensus": table["night"],
        "stage_pct_of_sleep_period": table["stage_pct_of_sleep_period"],
    }


def _pred_events(count: np.ndarray) -> list[float]:
    """Predicted event start times (s): `count` events spread over their epoch."""
    out = []
    for i in np.flatnonzero(count):
        c = int(count[i])
        out.extend(i * 30 + 30 * (j + 0.5) / c for j in range(c))
    return out


def _match(truth: np.ndarray, pred: list[float], tol_s: float = 30.0) -> int:
    """Greedy one-to-one matches: a predicted start within tol of a true event's span."""
    used = np.zeros(len(pred), dtype=bool)
    hits = 0
    for _k, a, b in truth:
        for j, t in enumerate(pred):
            if not used[j] and a - tol_s <= t <= b + tol_s:
                used[j] = True
                hits += 1
                break
    return hits


def eval_breathing(clf: classify.Classifiers, nights: list[Night]) -> dict:
    tp = n_true = n_pred = 0
    ahi_err, rows = [], []
    snore_y, snore_p = [], []
    for n in nights:
        st = streams_of(n)
        stage, _conf, _ = clf.scored_stages(st)  # -1 (unscored) is not sleep
        b = clf.breathing(st, stage > 0)
        pred = _pred_events(b["apnea_events"])
        tp += _match(n.events, pred)
        n_true += len(n.events)
        n_pred += len(pred)
        tst_h = float((stage > 0).sum()) / classify.EPOCHS_PER_HOUR
        ahi = len(pred) / tst_h if tst_h else 0.0
        ahi_err.append(abs(ahi - n.ahi_truth))
        rows.append((n.ahi_truth, ahi))
        snore_y.append(n.snore)
        snore_p.append(b["snore"])
    prec = tp / n_pred if n_pred else 0.0
    rec = tp / n_true if n_true else 0.0
    truth15 = np.array([t >= 15 for t, _ in rows])
    pred15 = np.array([p >= 15 for _, p in rows])
    sy, sp = np.concatenate(snore_y), np.concatenate(snore_p)
    return {
        "nights": len(nights),
        "event_f1": round(2 * prec * rec / (prec + rec), 3) if prec + rec else 0.0,
        "event_precision": round(prec, 3), "event_recall": round(rec, 3),
        "ahi_mae": round(float(np.mean(ahi_err)), 2),
        "ahi15_sensitivity": round(float(pred15[truth15].mean()), 3) if truth15.any() else None,
        "ahi15_specificity": round(float((~pred15[~truth15]).mean()), 3) if (~truth15).any() else None,
        "nights_ahi15": int(truth15.sum()),
        "snore_epoch_accuracy": round(float((sy == sp).mean()), 3),
        "ahi_pairs": [[round(t, 1), round(p, 1)] for t, p in rows],
        # The apnea screen per input (heart rhythm, oximetry, audio, all), real and simulated.
        "by_inputs": apnea_real.by_inputs(clf, nights, streams_of),
    }


def write_model(models: Path, name: str, blob: bytes, meta: dict) -> None:
    models.mkdir(parents=True, exist_ok=True)
    (models / f"{name}.tflite").write_bytes(blob)
    (models / f"{name}.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
