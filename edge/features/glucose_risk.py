"""Glucose risk at the edge: P(glucose < 70 mg/dL within 30 min) and a 30-minute forecast from
the last hour of CGM, on LiteRT. The clock runs the same network, both chains, in MicroPython
(shared/lowrisk.py); both take their inputs through the same lookup and give the same int8
outputs (tests/edge/test_classifiers.py). Trained by `nightlink train glucose` (tools/train).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from nightlink.shared import lowrisk

HISTORY = 12  # readings, 5 minutes apart: the last hour
HORIZON = 6  # readings ahead: 30 minutes
CENTER, SPREAD = 120.0, 60.0  # input normalization, mg/dL
DELTA_SCALE = 50.0  # forecast head predicts (future - now) / DELTA_SCALE
EPOCHS_PER_READING = 10  # 5 minutes of 30-s epochs
SLOT_MIN = 5  # the model's grid
MAX_JOIN_MIN = 20  # readings further apart are not joined (interpolation, lows)
LOW_MGDL = 70
EVENT_SLOTS = 3  # a low lasts >= 15 minutes
# an alarm detects a low when it sounds from 30 minutes before its onset to 15 minutes after
EARLY_SLOTS, LATE_SLOTS = 30 // SLOT_MIN, 15 // SLOT_MIN


def normalize(x_mgdl: np.ndarray) -> np.ndarray:
    return ((np.asarray(x_mgdl, dtype=np.float32) - CENTER) / SPREAD).astype(np.float32)


def fill_history(h: np.ndarray) -> np.ndarray | None:
    """Carry the last reading forward over missing ones (0); None without enough recent data.

    Enough: the newest reading present and at least 3 of the newest 4 (the clock's rule too).
    """
    recent = h[-4:]
    if h[-1] == 0 or np.count_nonzero(recent) < 3:
        return None
    out = h.astype(np.float32).copy()
    first = np.flatnonzero(out)[0]
    out[:first] = out[first]
    for i in range(first + 1, out.size):
        if out[i] == 0:
            out[i] = out[i - 1]
    return out



def bridge_gaps(histories: np.ndarray, max_missing: int = 3) -> np.ndarray:
    """Readings between two present ones at most 20 minutes apart (up to `max_missing` slots),
    on a straight line: a 15-minute sensor (Libre) then gives the model the 5-minute hour it
    was trained on. Slots before the first and after the last reading stay missing."""
    out = np.asarray(histories, dtype=np.float32).copy()
    for r in np.flatnonzero((out == 0).any(axis=1) & (out > 0).any(axis=1)):
        row = out[r]
        present = np.flatnonzero(row > 0)
        for a, b in zip(present[:-1], present[1:], strict=True):
            if 1 < b - a <= max_missing + 1:
                row[a + 1:b] = np.linspace(row[a], row[b], b - a + 1)[1:-1]
    return out


def history_rows(readings: np.ndarray) -> np.ndarray:
    """[n, HISTORY]: the hour of readings ending at each reading, 0 before the first."""
    padded = np.concatenate([np.zeros(HISTORY - 1, dtype=np.float32),
                             np.asarray(readings, dtype=np.float32)])
    return np.lib.stride_tricks.sliding_window_view(padded, HISTORY)


def filled_rows(histories: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The histories with enough data, gaps filled (fill_history), and their row indexes."""
    rows, idx = [], []
    for i in range(histories.shape[0]):
        f = fill_history(histories[i])
        if f is not None:
            rows.append(f)
            idx.append(i)
    return np.array(rows, dtype=np.float32).reshape(-1, HISTORY), np.array(idx, dtype=int)


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite's QuantizeMultiplier: real = q * 2^(shift - 31) with q in [2^30, 2^31)."""
    if real == 0.0:
        return 0, 0
    frac, shift = math.frexp(real)
    q = int(round(frac * (1 << 31)))
    if q == 1 << 31:
        q //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return q, shift


@dataclass
class Dense:
    """One int8 fully-connected layer as the .tflite file holds it."""

    weights: np.ndarray  # int8 [out, in]
    bias: np.ndarray  # int32 [out]
    multiplier: list[int]  # per output channel
    shift: list[int]
    in_zp: int
    out_zp: int
    out_scale: float
    relu: bool


@dataclass
class QuantModel:
    """The exported model: .tflite bytes and the integer layers the clock runs."""

    tflite: bytes
    in_scale: float
    in_zp: int
    layers: list  # int8.Dense, trunk then the risk head
    logit_scale: float
    logit_zp: int
    delta_scale: float
    delta_zp: int
    logit_index: int
    delta_layers: list = field(default_factory=list)  # the forecast chain the clock runs
    delta_on_trunk: bool = False  # it starts from the risk trunk's last hidden layer, not the input

    @property
    def delta_q16(self) -> int:
        """mg/dL per int8 step of the forecast head, x 65536: the clock's integer forecast."""
        return int(round(self.delta_scale * DELTA_SCALE * 65536))

    def quantize_input(self, x_mgdl: np.ndarray) -> np.ndarray:
        """int8 model input from mg/dL (the lookup table the clock carries gives the same)."""
        q = np.round(normalize(x_mgdl).astype(np.float64) / self.in_scale) + self.in_zp
        return np.clip(q, -128, 127).astype(np.int8)


def describe(blob: bytes) -> QuantModel:
    """Read the quantization and integer weights back out of a .tflite model."""
    from nightlink.edge.features.classify import interpreter

    it = interpreter(blob)
    details = {d["index"]: d for d in it.get_tensor_details()}
    inp = it.get_input_details()[0]
    fcs = [op for op in it._get_ops_details() if op["op_name"] == "FULLY_CONNECTED"]
    produced = {int(op["outputs"][0]): op for op in fcs}
    heads = {}
    for op in fcs:
        wname = details[int(op["inputs"][1])]["name"]
        for head in ("low_logit", "delta30"):
            if f"/{head}" in wname:
                heads[head] = details[int(op["outputs"][0])]
    logit_o, delta_o = heads["low_logit"], heads["delta30"]
    # Walk back from the risk output to the input: that chain is what the clock runs.
    chain = _chain(produced, logit_o["index"], stop=-1)
    layers = [_dense(it, details, op, relu=k < len(chain) - 1) for k, op in enumerate(chain)]
    # The forecast: its own chain from the input, or (older models) one layer on the trunk.
    trunk_out = int(chain[-2]["outputs"][0]) if len(chain) > 1 else -1
    fchain = _chain(produced, delta_o["index"], stop=trunk_out)
    on_trunk = bool(fchain) and int(fchain[0]["inputs"][0]) == trunk_out
    if fchain and not on_trunk and int(fchain[0]["inputs"][0]) != int(inp["index"]):
        fchain = []  # neither: the clock cannot run it
    delta_layers = [_dense(it, details, op, relu=k < len(fchain) - 1)
                    for k, op in enumerate(fchain)]
    iq = inp["quantization_parameters"]
    lq = logit_o["quantization_parameters"]
    dq = delta_o["quantization_parameters"]
    return QuantModel(blob, float(iq["scales"][0]), int(iq["zero_points"][0]), layers,
                      float(lq["scales"][0]), int(lq["zero_points"][0]),
                      float(dq["scales"][0]), int(dq["zero_points"][0]), int(logit_o["index"]),
                      delta_layers, on_trunk)


def _chain(produced: dict, idx: int, stop: int) -> list:
    """The FULLY_CONNECTED ops from the model's input (or the tensor `stop`) to tensor `idx`."""
    chain = []
    while idx in produced and idx != stop:
        op = produced[idx]
        chain.append(op)
        idx = int(op["inputs"][0])
    chain.reverse()
    return chain


def _dense(it, details: dict, op: dict, relu: bool) -> Dense:
    """One FULLY_CONNECTED op of the .tflite file as integer weights and requantization."""
    src, w_i, b_i = (int(v) for v in op["inputs"][:3])
    out_i = int(op["outputs"][0])
    s_in = details[src]["quantization_parameters"]
    s_w = details[w_i]["quantization_parameters"]
    s_out = details[out_i]["quantization_parameters"]
    in_scale = float(s_in["scales"][0])
    out_scale = float(s_out["scales"][0])
    wscales = [float(v) for v in s_w["scales"]]
    w = it.get_tensor(w_i).astype(np.int8)
    b = it.get_tensor(b_i).astype(np.int64)
    if len(wscales) == 1:
        wscales = wscales * w.shape[0]
    mult, shift = [], []
    for c in range(w.shape[0]):
        real = float(np.float32(in_scale) * np.float32(wscales[c])) / out_scale
        m, s = quantize_multiplier(real)
        mult.append(m)
        shift.append(s)
    return Dense(w, b, mult, shift, int(s_in["zero_points"][0]), int(s_out["zero_points"][0]),
                 out_scale, relu)


class LiteRtGlucose:
    """Edge runtime: both heads on LiteRT for many histories at once."""

    def __init__(self, blob: bytes):
        from nightlink.edge.features.classify import interpreter  # LiteRT only when used

        self.q = describe(blob)
        self.it = interpreter(blob)
        self._in = self.it.get_input_details()[0]["index"]
        outs = self.it.get_output_details()
        self._logit = self.q.logit_index
        self._delta = next(o["index"] for o in outs if o["index"] != self._logit)
        self._n = 1
        self.permille = permille_table(self.q)

    def raw(self, x_mgdl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        xq = self.q.quantize_input(x_mgdl)
        if xq.shape[0] != self._n:
            self.it.resize_tensor_input(self._in, [xq.shape[0], HISTORY])
            self.it.allocate_tensors()
            self._n = xq.shape[0]
        self.it.set_tensor(self._in, xq)
        self.it.invoke()
        return (self.it.get_tensor(self._logit)[:, 0].copy(),
                self.it.get_tensor(self._delta)[:, 0].copy())

    def predict(self, x_mgdl: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(int8 logit, risk in permille, 30-minute forecast in mg/dL) per history row.

        The permille comes from the same table the clock carries, so both decide alike."""
        lq, dq = self.raw(x_mgdl)
        delta = (dq.astype(np.float64) - self.q.delta_zp) * self.q.delta_scale
        forecast = np.asarray(x_mgdl, dtype=np.float64)[:, -1] + delta * DELTA_SCALE
        return lq, self.permille[lq.astype(np.int16) + 128], forecast


def permille_table(q: QuantModel) -> np.ndarray:
    """Risk in permille for every int8 logit (-128..127): the clock carries this table."""
    logit = (np.arange(-128, 128, dtype=np.float64) - q.logit_zp) * q.logit_scale
    return np.rint(1000.0 / (1.0 + np.exp(-logit))).astype(np.uint16)



class GlucoseRisk:
    """Risk and forecast per epoch of a night, from its CGM epochs."""

    def __init__(self, blob: bytes, meta: dict):
        self.runtime = LiteRtGlucose(blob)
        self.alarm_permille = int(meta["alarm_permille"])

    def histories(self, glucose: np.ndarray, minutes_since: np.ndarray) -> np.ndarray:
        """[n, HISTORY] readings (0 = missing) ending at each epoch, 5 minutes apart."""
        n = glucose.size
        fresh = np.where(np.nan_to_num(minutes_since, nan=99) <= 5.0, np.nan_to_num(glucose), 0.0)
        out = np.zeros((n, HISTORY), dtype=np.float32)
        for k in range(HISTORY):
            back = (HISTORY - 1 - k) * EPOCHS_PER_READING
            if back < n:
                out[back:, k] = fresh[:n - back]
        return out

    def per_epoch(self, glucose: np.ndarray, minutes_since: np.ndarray):
        """(risk 0..1, forecast mg/dL), NaN where the last hour has too few readings."""
        h = bridge_gaps(self.histories(glucose, minutes_since))
        rows, idx = filled_rows(h)
        risk = np.full(h.shape[0], np.nan)
        forecast = np.full(h.shape[0], np.nan)
        if rows.size:
            _lq, permille, fc = self.runtime.predict(rows)
            risk[idx] = permille / 1000.0
            forecast[idx] = np.clip(fc, 39, 600)
        return risk, forecast


# -- the alarm policy ------------------------------------------------------------------------
#
# The risk alone sounds too often at night: real CGM dips toward 70 and comes back. The policy
# asks for a risky prediction whose forecast actually heads low, no rise under way and no carbs
# just eaten; after an alarm it waits before sounding again. The threshold itself follows the
# person: each morning the edge scores every candidate threshold on their recent nights and
# keeps, among those within the false alarms a week they accept, the one that would have
# warned of the most of their lows before they began, the least sensitive of equals (a more
# sensitive threshold that warns of nothing more only adds false alarms); never outside safe
# bounds. An alarm once a low has begun is no warning: the clock shows the low itself.
#
# Carbs: glucose falling toward 70 right after a snack or a treated low is about to turn (fast
# carbohydrate raises glucose within about 15 minutes and most of its effect is in by 45), so a
# predicted low is held off for CARB_HOLD_MIN after a treatment with carbs, unless the forecast
# is already below the level-2 line (54 mg/dL). A glucose already < 70 is the clock's low
# alarm, not a prediction, and is never held.

CARB_HOLD_MIN = 45
URGENT_MGDL = 54.0
MIN_CAL_NIGHTS = lowrisk.CAL_MIN_NIGHTS  # fewer nights with CGM: the model's own threshold
BUDGET_PER_WEEK = 1.4  # false alarms a week, by default (0.2 a night, the target)
MAX_BUDGET_PER_WEEK = lowrisk.MAX_BUDGET_PER_WEEK  # two a night


@dataclass
class AlarmPolicy:
    alarm_permille: int  # risk at or above which a prediction counts (the calibrated value)
    persist: int = 1  # risky predictions in a row before it sounds
    refractory_min: int = 60  # no second alarm this soon after one
    forecast_floor_mgdl: float = 400.0  # the 30-minute forecast must be below this (400: off)
    rising_mgdl_per_min: float = 0.5  # suppressed while the last 15 minutes rise faster
    budget_per_week: float = BUDGET_PER_WEEK  # false alarms a week the person accepts
    lowest_permille: int = 800  # calibration never goes more sensitive than this
    highest_permille: int = 925  # nor less sensitive than this (safety)
    carb_hold_min: int = CARB_HOLD_MIN  # no predicted low this long after carbs were entered
    urgent_mgdl: float = URGENT_MGDL  # ... unless the forecast is below this
    # what the last calibration found (calibrated_policy): the person's recent nights it had,
    # and how often this threshold would have sounded falsely on them (None: not measured)
    nights: int = 0
    false_per_week: float | None = None

    @property
    def calibrated(self) -> bool:
        return self.nights >= MIN_CAL_NIGHTS

    def describe(self, *, state: bool = True) -> str:
        """The policy in words; with `state`, also what its last calibration found (False:
        the rules alone, for figures scored at a threshold calibrated night by night)."""
        floor = (f"forecast < {self.forecast_floor_mgdl:g} mg/dL, "
                 if self.forecast_floor_mgdl < 400 else "")
        carbs = (f"held {self.carb_hold_min} min after carbs unless forecast < "
                 f"{self.urgent_mgdl:g}, " if self.carb_hold_min > 0 else "")
        text = (f"risk >= {self.alarm_permille} permille for {self.persist} readings, {floor}"
                f"not while rising > {self.rising_mgdl_per_min:g} mg/dL/min, {carbs}"
                f"{self.refractory_min} min apart; budget {self.budget_per_week:g} false alarms "
                "a week")
        if not state:
            return text
        if not self.calibrated:
            return (text + f"; not calibrated yet ({self.nights} of {MIN_CAL_NIGHTS} nights "
                    "with CGM needed): the model's own threshold")
        text += (f"; on the last {self.nights} nights it would have sounded falsely "
                 f"{self.false_per_week:.1f} a week")
        if self.false_per_week > self.budget_per_week:
            text += (", more than the budget even at the least sensitive threshold allowed "
                     f"({self.highest_permille})")
        return text


def policy_from_meta(meta: dict, **overrides) -> AlarmPolicy:
    """The policy a model was committed with (its .json), or its bare threshold for older ones."""
    fields = dict(meta.get("policy") or {})
    fields["alarm_permille"] = int(fields.get("alarm_permille", meta["alarm_permille"]))
    fields.update({k: v for k, v in overrides.items() if v is not None})
    known = AlarmPolicy.__dataclass_fields__
    return AlarmPolicy(**{k: v for k, v in fields.items() if k in known})


def slope_mgdl_per_min(x: np.ndarray) -> np.ndarray:
    """Least-squares slope of the last 4 grid readings (15 minutes) ending at each slot."""
    x = np.asarray(x, dtype=np.float64)
    out = np.zeros(x.size)
    if x.size < 4:
        return out
    w = np.array([-1.5, -0.5, 0.5, 1.5]) / (5.0 * 5.0)  # sum(w * x) over 4 slots, 5 min apart
    win = np.lib.stride_tricks.sliding_window_view(x, 4)
    ok = (win > 0).all(axis=1)
    out[3:] = np.where(ok, win @ w, 0.0)
    return out


def carb_hold(slots: np.ndarray, carb_slots, glucose: np.ndarray, forecast: np.ndarray,
              policy: AlarmPolicy, slot_min: int = SLOT_MIN) -> np.ndarray:
    """Per prediction: held off by carbs entered up to `carb_hold_min` before it (a treatment
    at most one slot after the reading counts too: it was entered while the reading was
    newest), unless glucose is already < 70 or the forecast is below the urgent level."""
    slots = np.asarray(slots, dtype=np.int64)
    held = np.zeros(slots.size, dtype=bool)
    carb_slots = np.asarray(carb_slots if carb_slots is not None else [], dtype=np.int64)
    if policy.carb_hold_min <= 0 or not carb_slots.size or not slots.size:
        return held
    carb_slots = np.sort(carb_slots)
    hold = -(-policy.carb_hold_min // slot_min)
    # the newest carbs at or before the slot after each prediction
    k = np.searchsorted(carb_slots, slots + 1, side="right") - 1
    since = np.where(k >= 0, slots - carb_slots[np.maximum(k, 0)], 10**9)
    held = (k >= 0) & (since >= -1) & (since < hold)
    urgent = (np.asarray(glucose) < LOW_MGDL) | (np.asarray(forecast) < policy.urgent_mgdl)
    return held & ~urgent


def policy_alarms(slots: np.ndarray, permille: np.ndarray, forecast: np.ndarray,
                  slope: np.ndarray, policy: AlarmPolicy, slot_min: int = 5, *,
                  carbs=None, glucose: np.ndarray | None = None) -> list[int]:
    """Slots where the predicted-low alarm sounds, from the predictions made at `slots`
    (ascending; risk, forecast and glucose slope at each); `carbs`, the slots of treatments
    with carbs, and `glucose` now at each prediction hold it off after carbs (carb_hold)."""
    active = ((permille >= policy.alarm_permille) & (forecast < policy.forecast_floor_mgdl)
              & (slope <= policy.rising_mgdl_per_min))
    if carbs is not None and len(carbs):
        now = np.full(len(slots), 1e9) if glucose is None else glucose
        active &= ~carb_hold(slots, carbs, now, forecast, policy, slot_min)
    held = active.copy()
    for k in range(1, policy.persist):
        held[k:] &= active[:-k]
        held[:k] = False
    out, last = [], -10**12
    gap = policy.refractory_min // slot_min
    for i in np.flatnonzero(held):
        s = int(slots[i])
        if s - last >= gap:
            out.append(s)
            last = s
    return out


def calibrate_threshold(false_per_night: dict[int, np.ndarray],
                        caught_per_night: dict[int, np.ndarray], policy: AlarmPolicy,
                        candidates: np.ndarray, min_nights: int = MIN_CAL_NIGHTS) -> int:
    """Among the candidate thresholds (ascending) within the policy's bounds whose false alarms
    on the person's recent nights (`false_per_night`: night -> false alarms per candidate) fit
    the budget, the one that warned of the most of their lows before they began
    (`caught_per_night`, the same nights: lows warned of per candidate, lows_caught), the least
    sensitive of equals; the least sensitive allowed when none fits; the policy's own threshold
    with fewer than `min_nights` nights."""
    if len(false_per_night) < min_nights:
        return policy.alarm_permille
    return pick_threshold(np.sum(list(false_per_night.values()), axis=0),
                          np.sum([caught_per_night[n] for n in false_per_night], axis=0),
                          len(false_per_night), policy, candidates)


def pick_threshold(false: np.ndarray, caught: np.ndarray, nights: int, policy: AlarmPolicy,
                   candidates: np.ndarray) -> int:
    """The calibration's rule on totals over `nights` nights (false alarms and lows warned of
    per candidate): also how the training picks the model's own threshold on its people."""
    # in whole counts: 1 false alarm in 5 nights is 1.4 a week, within a budget of 1.4
    fit = np.asarray(false) * 7 <= policy.budget_per_week * nights + 1e-9
    inside = (candidates >= policy.lowest_permille) & (candidates <= policy.highest_permille)
    fits = np.flatnonzero(inside & fit)
    if not fits.size:
        return int(candidates[np.flatnonzero(inside)[-1]])
    caught = np.asarray(caught)[fits]
    return int(candidates[fits[np.flatnonzero(caught == caught.max())[-1]]])


# -- any sensor on the model's grid ----------------------------------------------------------


def sampling_interval(t_min: np.ndarray) -> int:
    """The sensor's cadence in minutes (1, 5 or 15) from the median step between readings."""
    if t_min.size < 2:
        return SLOT_MIN
    step = float(np.median(np.diff(t_min)))
    return min((1, 5, 15), key=lambda c: abs(c - step))


def cgm_grid(t_min: np.ndarray, g: np.ndarray):
    """(interval, x, observed, held) on the 5-minute grid from slot 0 = the first reading.

    x: model input, readings with gaps of up to 20 minutes bridged on a straight line, 0 else;
    observed: a reading arrived in this slot (predictions only there: nothing from the future);
    held: for labels, each reading held until the next (or one sampling interval before a gap),
    NaN in gaps, so lows last readings x interval (a 15-minute reading < 70 is a 15-minute low).
    1-minute readings are averaged per slot, in whole mg/dL as the clock does. t_min
    ascending, one reading per minute."""
    interval = sampling_interval(t_min)
    t0 = int(t_min[0])
    if interval == 1:
        slot = (t_min - t0) // SLOT_MIN
        uniq, first, counts = np.unique(slot, return_index=True, return_counts=True)
        # whole mg/dL, rounded half up, as the clock averages them (device/app._fill_history)
        sums = np.add.reduceat(np.rint(np.asarray(g, dtype=np.float64)).astype(np.int64), first)
        slot, g = uniq, ((sums + counts // 2) // counts).astype(np.float32)
        hold_default = 1
    else:
        slot = np.rint((t_min - t0) / SLOT_MIN).astype(np.int64)
        # A sensor reads at its own phase: one near half a slot from the first reading's
        # rounds to either side as its timestamps jitter, and two readings five minutes
        # apart would share a slot (the first lost). A reading at least half a slot after
        # the one before takes the next slot instead, unless that slot lies a whole slot or
        # more past its time (a sensor reading more often than every 5 minutes would drift).
        apart = np.r_[False, np.diff(t_min) >= SLOT_MIN / 2].tolist()
        at = ((t_min - t0) / SLOT_MIN).tolist()
        slots = slot.tolist()
        for i in range(1, len(slots)):  # (in order: a bump moves the next reading on too)
            if apart[i] and slots[i] <= slots[i - 1] and slots[i - 1] + 1 - at[i] < 1:
                slots[i] = slots[i - 1] + 1
        slot = np.maximum.accumulate(np.array(slots, dtype=np.int64))
        last = np.r_[slot[1:] != slot[:-1], True]
        slot, g = slot[last], np.asarray(g, dtype=np.float32)[last]
        hold_default = max(1, interval // SLOT_MIN)
    n = int(slot[-1]) + hold_default
    x = np.zeros(n, dtype=np.float32)
    held = np.full(n, np.nan, dtype=np.float32)
    observed = np.zeros(n, dtype=bool)
    x[slot] = g
    observed[slot] = True
    gaps = np.diff(slot)
    join = gaps * SLOT_MIN <= MAX_JOIN_MIN
    hold = np.r_[np.where(join, gaps, hold_default), hold_default]
    for k, (s, v, h) in enumerate(zip(slot, g, hold, strict=True)):
        held[s:s + h] = v
        if k < gaps.size and join[k] and gaps[k] > 1:
            e = slot[k + 1]
            x[s + 1:e] = np.linspace(v, g[k + 1], e - s + 1, dtype=np.float32)[1:-1]
    return interval, x, observed, held


def low_events(held: np.ndarray) -> list[tuple[int, int]]:
    """(onset, end) slots of episodes < 70 mg/dL lasting >= 15 minutes."""
    below = np.nan_to_num(held, nan=1e9) < LOW_MGDL
    edges = np.diff(np.r_[0, below.astype(np.int8), 0])
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return [(int(s), int(e)) for s, e in zip(starts, ends, strict=True) if e - s >= EVENT_SLOTS]


def lows_caught(alarms, events: list[tuple[int, int]], period: np.ndarray):
    """(period of its onset, warned) per low: an alarm sounded in the 30 minutes before its
    onset (the figures' window, is_false_alarm's, up to the onset: an alarm once the low
    has begun detects it in the figures but warns of nothing)."""
    alarms = np.asarray(alarms, dtype=np.int64)
    for onset, _end in events:
        hit = ((alarms >= onset - EARLY_SLOTS) & (alarms < onset)).any()
        yield int(period[onset]), bool(hit)


def is_false_alarm(a: int, events: list[tuple[int, int]]) -> bool | None:
    """True for an alarm no low followed (none from 30 minutes before its onset to 15 after),
    None for one sounding inside a low already under way, False for a true alarm."""
    if any(on - EARLY_SLOTS <= a <= on + LATE_SLOTS for on, _ in events):
        return False
    if any(on + LATE_SLOTS < a < end for on, end in events):
        return None
    return True


# -- the edge's calibration, each morning ------------------------------------------------------

CANDIDATES = np.arange(100, 1000, lowrisk.CAL_STEP)
RECENT_NIGHTS = lowrisk.CAL_RECENT_NIGHTS


NIGHT_MIN = (22 * 60, 7 * 60)  # the nights scored: 22:00-07:00 (the issue's, the model card's)


def calibrated_policy(runtime: LiteRtGlucose, policy: AlarmPolicy, t_s: np.ndarray,
                      sgv: np.ndarray, utc_offset_min=0,
                      carbs_s: np.ndarray | None = None,
                      night_min: tuple[int, int] = NIGHT_MIN) -> AlarmPolicy:
    """The policy with the threshold calibrated on the person's last RECENT_NIGHTS nights
    (local, >= 70 % covered) of the readings given (Unix s, mg/dL); alarms that carbs
    (`carbs_s`, Unix s of treatments with carbs) held off are not counted. `night_min`: the
    night as (start, end) minutes of the local day, the person's own bedtime and wake time
    (22:00-07:00 by default); a start after the end runs past midnight.

    `utc_offset_min` is the local offset from UTC in minutes: a number, or a function giving
    it for an array of Unix minutes, so that nights on either side of a change of clocks are
    each the same hours by the clock of their own date. The readings stay on their own (UTC)
    time line; only which slots are night depends on the offset."""
    t_min = np.asarray(t_s, dtype=np.int64) // 60
    order = np.argsort(t_min, kind="stable")
    t_min, g = t_min[order], np.asarray(sgv, dtype=np.float32)[order]
    keep = (g >= 39) & np.r_[t_min[1:] != t_min[:-1], True]
    t_min, g = t_min[keep], np.clip(g[keep], 39, 400)
    if t_min.size < HISTORY:
        return policy
    _interval, x, observed, held = cgm_grid(t_min, g)
    slot_min = t_min[0] + SLOT_MIN * np.arange(x.size)
    local = slot_min + (np.asarray(utc_offset_min(slot_min), dtype=np.int64)
                        if callable(utc_offset_min) else int(utc_offset_min))
    tod = local % 1440
    start, end = night_min
    inside = ((tod >= start) | (tod < end)) if start > end else ((tod >= start) & (tod < end))
    night = np.where(inside, (local + (1440 - start)) // 1440, -1)
    span = (end - start) % 1440 or 1440
    ids, counts = np.unique(night[(night >= 0) & ~np.isnan(held)], return_counts=True)
    ids = ids[counts >= 0.7 * span / SLOT_MIN][-RECENT_NIGHTS:]
    slots = np.flatnonzero(observed)
    rows, ok = filled_rows(history_rows(x)[slots])
    if not ok.size:
        return policy
    slots = slots[ok]
    _lq, permille, forecast = runtime.predict(rows)
    slope = slope_mgdl_per_min(x)[slots]
    carbs = None
    if carbs_s is not None and len(carbs_s):
        carb_min = np.asarray(carbs_s, dtype=np.int64) // 60 - t_min[0]
        carbs = np.floor_divide(carb_min, SLOT_MIN)
    events = low_events(held)
    false = {int(n): np.zeros(CANDIDATES.size) for n in ids}
    caught = {int(n): np.zeros(CANDIDATES.size) for n in ids}
    for k, c in enumerate(CANDIDATES):
        cand = AlarmPolicy(**{**policy.__dict__, "alarm_permille": int(c)})
        alarms = policy_alarms(slots, permille, forecast, slope, cand, carbs=carbs,
                               glucose=x[slots])
        for a in alarms:
            if int(night[a]) in false and is_false_alarm(a, events):
                false[int(night[a])][k] += 1
        for n, hit in lows_caught(alarms, events, night):
            if n in caught and hit:
                caught[n][k] += 1
    thr = calibrate_threshold(false, caught, policy, CANDIDATES)
    hit = np.flatnonzero(CANDIDATES == thr)  # the chosen threshold's column, if a candidate
    measured = (round(float(sum(f[hit[0]] for f in false.values())) / len(false) * 7, 2)
                if false and hit.size else None)
    return AlarmPolicy(**{**policy.__dict__, "alarm_permille": thr, "nights": len(false),
                          "false_per_week": measured})


def clock_policy(policy: AlarmPolicy) -> dict:
    """What the clock takes in its glucose message (device/alarms.py set_policy)."""
    return {"permille": int(policy.alarm_permille), "persist": int(policy.persist),
            "refractory_min": int(policy.refractory_min),
            "rising": float(policy.rising_mgdl_per_min),
            "floor": int(round(min(policy.forecast_floor_mgdl, 400))),
            "carb_hold_min": int(policy.carb_hold_min), "urgent": int(round(policy.urgent_mgdl)),
            "calibrated": policy.calibrated}
