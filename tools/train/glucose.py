"""Glucose risk model: P(sensor glucose < 70 mg/dL within 30 minutes) and a 30-minute forecast,
from the last hour of CGM. One small int8 network of two chains from the same input (the risk,
and the forecast with its own layers); the clock runs both in pure MicroPython
(shared/lowrisk.py), the edge on LiteRT.

Alarms (on the clock and in the evaluation) fire when the risk crosses the threshold chosen on
held-out adult nights, at most once per `REFRACTORY_MIN`; evaluation follows Prendin 2022:
an event is a reference (true blood) glucose episode below 70 mg/dL lasting >= 15 minutes; it
is detected when an alarm falls between 30 minutes before its onset and 15 minutes after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from nightlink.edge.features.glucose_risk import (
    DELTA_SCALE,
    AlarmPolicy,
    LiteRtGlucose,
    QuantModel,
    describe,
    filled_rows,
    history_rows,
    normalize,
    permille_table,
)
from nightlink.tools.train import glucose_data, int8

REFRACTORY_MIN = 60
PERSIST = 1  # readings in a row above the threshold before the predicted-low alarm sounds
EARLY_MIN, LATE_MIN = 30, 15
HIDDEN = (32, 16)  # the risk chain, which the clock runs too
FORECAST_HIDDEN = (16, 8)  # the forecast's own chain from the input ((): one layer on the trunk)
HISTORY_READINGS = glucose_data.HISTORY
REAL_ALARM_PERMILLE = 850  # the threshold the forecast floor is chosen at, before the model's own
# threshold is (glucose_real.choose_threshold); the edge then calibrates it per person
SEED = 7


def export(model, representative: np.ndarray) -> QuantModel:
    return describe(int8.to_tflite(model, representative))


def build(seed: int = SEED):
    import tensorflow as tf

    tf.keras.backend.clear_session()  # layer names restart, so the .tflite bytes repeat
    tf.keras.utils.set_random_seed(seed)
    inp = tf.keras.Input(shape=(glucose_data.HISTORY,), name="cgm")
    h = inp
    for k, width in enumerate(HIDDEN):
        h = tf.keras.layers.Dense(width, activation="relu", name=f"hidden{k}")(h)
    logit = tf.keras.layers.Dense(1, name="low_logit")(h)
    f = inp if FORECAST_HIDDEN else h
    for k, width in enumerate(FORECAST_HIDDEN):
        f = tf.keras.layers.Dense(width, activation="relu", name=f"fc{k}")(f)
    delta = tf.keras.layers.Dense(1, name="delta30")(f)
    return tf.keras.Model(inp, [logit, delta])


def train(series: list[glucose_data.CgmSeries], *, seed: int = SEED, epochs: int = 60):
    """A trained Keras model from simulated nights; same data and seed give the same weights."""
    s = glucose_data.samples(series)
    return fit(s.x, s.low30, s.future, seed=seed, epochs=epochs)


def fit(x_mgdl: np.ndarray, low30: np.ndarray, future: np.ndarray, *, seed: int = SEED,
        epochs: int = 60, batch_size: int = 256):
    """(Keras model, normalized inputs) from histories, the low-ahead target and the reading
    30 minutes ahead (NaN where none); balanced classes, the forecast as a change from now."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    x = normalize(x_mgdl)
    ok = ~np.isnan(future)
    delta = np.where(ok, (future - x_mgdl[:, -1]) / DELTA_SCALE, 0.0).astype(np.float32)
    model = build(seed)
    pos = min(max(float(low30.mean()), 1e-3), 1 - 1e-3)
    model.compile(
        optimizer=tf.keras.optimizers.Adam(3e-3),
        loss=[tf.keras.losses.BinaryCrossentropy(from_logits=True), tf.keras.losses.Huber(0.5)],
        loss_weights=[1.0, 2.0],
    )
    weights = np.where(low30 == 1, 0.5 / pos, 0.5 / (1 - pos)).astype(np.float32)
    model.fit(x, [low30.astype(np.float32)[:, None], delta[:, None]],
              sample_weight=[weights, ok.astype(np.float32)],
              epochs=epochs, batch_size=batch_size, shuffle=True, verbose=0)
    return model, x


# -- alarms and evaluation -------------------------------------------------------------------


def reference_events(bg: np.ndarray) -> list[tuple[int, int]]:
    """(onset, end) reading indexes of reference-glucose episodes < 70 mg/dL for >= 15 min.

    Episodes already under way in the first 30 minutes of a record are left out: no alarm,
    the threshold baseline's included, could come before them."""
    below = np.asarray(bg) < glucose_data.LOW_MGDL
    out, i, n = [], 0, below.size
    need = 3  # readings spanning 15 minutes
    while i < n:
        if below[i] and i + need <= n and below[i:i + need].all():
            j = i
            while j < n and below[j]:
                j += 1
            if i >= glucose_data.HORIZON:
                out.append((i, j))
            i = j
        else:
            i += 1
    return out


def alarms_from(active: np.ndarray, persist: int = 1) -> list[int]:
    """Reading indexes where an alarm sounds: the condition has held for `persist` readings
    in a row, and no alarm sounded in the last hour."""
    held = active.copy()
    for k in range(1, persist):
        held[k:] &= active[:-k]
        held[:k] = False
    return refractory(np.flatnonzero(held), REFRACTORY_MIN)


def refractory(slots: np.ndarray, refractory_min: int) -> list[int]:
    """The 5-minute slots, in order, that come at least `refractory_min` after the last kept."""
    out, last = [], -10**12
    for s in slots:
        if s - last >= refractory_min // 5:
            out.append(int(s))
            last = s
    return out


@dataclass
class Tally:
    """Alarm and forecast figures summed over periods (nights or days): the real-CGM
    evaluation (tools/train/glucose_real.py) adds one per period, `add` one simulated series."""

    periods: float = 0
    hours: float = 0.0
    events: int = 0
    detected: int = 0
    alarms: int = 0  # true + false
    true_alarms: int = 0
    near_misses: int = 0
    dips: int = 0
    leads: list = field(default_factory=list)
    sq_err: float = 0.0
    n_err: int = 0

    def __iadd__(self, o: Tally) -> Tally:
        for k in ("periods", "hours", "events", "detected", "alarms", "true_alarms",
                  "near_misses", "dips", "sq_err", "n_err"):
            setattr(self, k, getattr(self, k) + getattr(o, k))
        self.leads = self.leads + o.leads
        return self

    def add(self, events, alarms, hours, low_now) -> None:
        """One simulated series: `events` of reference glucose, `alarms` (reading indexes),
        its length in hours; an alarm while reference glucose is low (`low_now`) and outside
        any detection window counts neither way. Days are the periods (hours / 24)."""
        self.hours += hours
        self.periods += hours / 24
        self.events += len(events)
        window = [(onset - EARLY_MIN // 5, onset, onset + LATE_MIN // 5) for onset, _ in events]
        for lo, onset, hi in window:
            hits = [a for a in alarms if lo <= a <= hi]
            if hits:
                self.detected += 1
                self.leads.append((onset - hits[0]) * 5)
        for a in alarms:
            if any(lo <= a <= hi for lo, _onset, hi in window):
                self.true_alarms += 1
                self.alarms += 1
            elif not low_now[a]:
                self.alarms += 1

    @property
    def false_alarms(self) -> int:
        return self.alarms - self.true_alarms

    def figures(self, per: str, prefix: str = "") -> dict:
        def r(v, d=3):
            return None if v is None else round(float(v), d)

        return {
            f"{prefix}recall": r(self.detected / self.events if self.events else None),
            f"{prefix}precision": r(self.true_alarms / self.alarms if self.alarms else None),
            f"{prefix}false_alarms_per_{per}": r(self.false_alarms / self.periods
                                                 if self.periods else None),
            f"{prefix}near_misses_per_{per}": r(self.near_misses / self.periods
                                                if self.periods else None),
            f"{prefix}median_lead_min": r(np.median(self.leads) if self.leads else None, 1),
        }


def series_inputs(s: glucose_data.CgmSeries) -> tuple[np.ndarray, np.ndarray]:
    """History rows for every reading of a series that has enough data, and their indexes."""
    return filled_rows(history_rows(s.sgv))


def evaluate(runtime: LiteRtGlucose, series: list[glucose_data.CgmSeries], alarm_permille: int) -> dict:
    model, base = Tally(), Tally()
    sq_err = []
    for s in series:
        rows, idx = series_inputs(s)
        if not rows.size:
            continue
        _lq, risk, forecast = runtime.predict(rows)
        active = np.zeros(s.sgv.size, dtype=bool)
        active[idx] = risk >= alarm_permille
        events = reference_events(s.bg)
        hours = s.sgv.size * 5 / 60
        low_now = s.bg < glucose_data.LOW_MGDL
        model.add(events, alarms_from(active, PERSIST), hours, low_now)
        base.add(events, alarms_from((s.sgv > 0) & (s.sgv < glucose_data.LOW_MGDL)), hours, low_now)
        for k, i in enumerate(idx):
            j = i + glucose_data.HORIZON
            if j < s.sgv.size and s.sgv[j] > 0:
                sq_err.append((forecast[k] - s.sgv[j]) ** 2)
    out = {"rmse_30": round(float(np.sqrt(np.mean(sq_err))), 2)}
    for tally, prefix in ((model, ""), (base, "baseline_")):
        figures = tally.figures("day", prefix)
        figures.pop(f"{prefix}near_misses_per_day")  # no near misses told apart here
        out.update(figures)
    out["events"] = model.events
    out["days"] = round(model.hours / 24, 2)
    return out


def choose_threshold(runtime: LiteRtGlucose, series: list[glucose_data.CgmSeries]) -> int:
    """Alarm threshold in permille, on held-out adult nights: the highest precision that keeps
    recall >= 0.9 and false alarms <= 0.25 a day, else the best recall."""
    best, best_key = 500, None
    for thr in range(200, 975, 25):
        f = evaluate(runtime, series, thr)
        if f["recall"] is None:
            continue
        ok = f["recall"] >= 0.9 and (f["false_alarms_per_day"] or 0) <= 0.25
        key = (ok, f["precision"] or 0.0 if ok else f["recall"], f["median_lead_min"] or 0)
        if best_key is None or key > best_key:
            best, best_key = thr, key
    return best


# -- the clock's copy ------------------------------------------------------------------------


def input_table(q: QuantModel) -> bytes:
    """int8 model input (as a byte) for every glucose value 0..400 mg/dL."""
    return q.quantize_input(np.arange(0, 401, dtype=np.float32)).tobytes()


def _bytes_literal(b: bytes, indent: str) -> str:
    lines, step = [], 32
    for i in range(0, len(b), step):
        lines.append(indent + repr(bytes(b[i:i + step])))
    return "(\n" + "\n".join(lines) + "\n" + indent[:-4] + ")"


def _layer_lines(L) -> list[str]:
    n_out, n_in = L.weights.shape
    w = L.weights.astype(np.int8).tobytes()
    b = np.asarray(L.bias, dtype="<i4").tobytes()
    m = np.asarray(L.multiplier, dtype="<u4").tobytes()
    sh = np.asarray(L.shift, dtype=np.int8).tobytes()
    out = [f"    ({n_in}, {n_out}, {L.in_zp}, {L.out_zp}, {L.relu},"]
    for part in (w, b, m, sh):
        out.append("        " + _bytes_literal(part, " " * 12) + ",")
    out.append("    ),")
    return out


def micropython_module(q: QuantModel, alarm_permille: int, source: str,
                       policy: AlarmPolicy | None = None) -> str:
    """Source of shared/lowrisk_weights.py: the risk head's and the forecast head's integer
    weights as bytes, and the policy the model was committed with (the clock's defaults
    until the edge sends the person's own)."""
    policy = policy or AlarmPolicy(int(alarm_permille))
    out = [
        "# Weights of the clock's predicted-low model (shared/lowrisk.py), int8 as bytes.",
        f"# Generated by `nightlink train glucose` from {source}; do not edit.",
        "",
        f"ALARM_PERMILLE = {int(alarm_permille)}",
        f"FORECAST_FLOOR_MGDL = {int(round(min(policy.forecast_floor_mgdl, 400)))}",
        f"CARB_HOLD_MIN = {int(policy.carb_hold_min)}",
        f"URGENT_MGDL = {int(round(policy.urgent_mgdl))}",
        f"LOWEST_PERMILLE = {int(policy.lowest_permille)}",
        f"HIGHEST_PERMILLE = {int(policy.highest_permille)}",
        f"BUDGET_PER_WEEK = {float(policy.budget_per_week)!r}",
        "",
        "# (inputs, outputs, input zero point, output zero point, relu, weights int8 [out][in],",
        "#  bias <i32, multiplier <u32 (Q31), shift int8), one per layer",
        "LAYERS = (",
    ]
    for L in q.layers:
        out.extend(_layer_lines(L))
    out.append(")")
    out.append("")
    if q.delta_layers:
        src = "the last hidden layer above" if q.delta_on_trunk else "the same int8 input"
        out.append(f"# the 30-minute forecast, its own layers from {src};")
        out.append("# forecast mg/dL = newest reading + ((output - DELTA_ZP) * DELTA_Q16 >> 16)")
        out.append(f"DELTA_ON_TRUNK = {bool(q.delta_on_trunk)}")
        out.append("DELTA = (")
        for L in q.delta_layers:
            out.extend(_layer_lines(L))
        out.append(")")
        out.append(f"DELTA_ZP = {int(q.delta_zp)}")
        out.append(f"DELTA_Q16 = {q.delta_q16}")
        out.append("")
    out.append("# int8 input for glucose 0..400 mg/dL")
    out.append("INPUT_LUT = " + _bytes_literal(input_table(q), " " * 4))
    out.append("")
    out.append("# risk permille for each int8 logit -128..127, <u16")
    out.append("PERMILLE = " + _bytes_literal(permille_table(q).astype("<u2").tobytes(), " " * 4))
    out.append("")
    return "\n".join(out)
