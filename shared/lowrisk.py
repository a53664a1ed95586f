# Predicted-low model of the clock (and of the cloud's predicted_low alert): P(glucose < 70 mg/dL
# within 30 min) and a 30-minute forecast from the last hour of CGM.
# Int8 network run with integer arithmetic only, bit for bit what LiteRT computes at the edge.

import struct
from array import array

try:
    from micropython import const
except ImportError:  # CPython (host port, tests)

    def const(x):
        return x


from nightlink.shared import alerts, lowrisk_weights, units

HISTORY = const(12)  # readings, 5 minutes apart, oldest first; 0 = missing
ALARM_PERMILLE = lowrisk_weights.ALARM_PERMILLE
# The policy the weights were committed with; older weights have no forecast head (floor off).
FORECAST_FLOOR_MGDL = getattr(lowrisk_weights, "FORECAST_FLOOR_MGDL", 400)
CARB_HOLD_MIN = getattr(lowrisk_weights, "CARB_HOLD_MIN", 0)
URGENT_MGDL = getattr(lowrisk_weights, "URGENT_MGDL", 54)
# Calibration to a person's nights (the edge's, or the cloud's without a bedside node): the
# thresholds allowed and the false alarms a week accepted by default.
LOWEST_PERMILLE = getattr(lowrisk_weights, "LOWEST_PERMILLE", 800)
HIGHEST_PERMILLE = getattr(lowrisk_weights, "HIGHEST_PERMILLE", 925)
BUDGET_PER_WEEK = getattr(lowrisk_weights, "BUDGET_PER_WEEK", 1.4)
MAX_BUDGET_PER_WEEK = 14.0  # two a night: a larger budget is no alarm worth having
CAL_MIN_NIGHTS = const(5)  # fewer recent nights with CGM: the model's own threshold, said so
CAL_RECENT_NIGHTS = const(14)  # the nights a calibration reads, the newest
CAL_STEP = const(25)  # candidate thresholds, permille apart
# The rest of the policy when the edge sends none (its AlarmPolicy's defaults).
PERSIST = const(1)  # risky predictions in a row
REFRACTORY_MIN = const(60)  # no second predicted-low alarm this soon
RISING_MGDL_MIN = 0.5  # no predicted low while the last 15 minutes rise faster
# (permille, persist, refractory_min, rising, floor, carb_hold_min, urgent): policy_values' shape
DEFAULT_POLICY = (ALARM_PERMILLE, PERSIST, REFRACTORY_MIN, RISING_MGDL_MIN, FORECAST_FLOOR_MGDL,
                  CARB_HOLD_MIN, URGENT_MGDL)
_CARB_AHEAD_MS = const(600000)  # carbs entered up to 10 minutes ahead of now hold it off too
PREDICT_GAP_MS = const(270000)  # readings this far apart are separate predictions (5-min slots)
_MASK = const(0x7FFF)
_MAX_MGDL = const(400)
_SLOT_MS = const(300000)  # CGM readings every 5 minutes
_FAST_SPAN_MS = const(900000)  # 1-minute sensors: more than _FAST_COUNT readings in 15 minutes
_FAST_COUNT = const(5)


def _requant(acc, m0, m1, m2, shift):
    # TFLite's requantization, acc * M / 2^31 with its nudge, then a rounding shift. M is given
    # as 15-bit limbs m2:m1:m0 and acc split likewise, so every product stays a small int.
    if shift > 0:
        acc <<= shift
    neg = acc < 0
    a = -acc if neg else acc
    a0 = a & _MASK
    a1 = a >> 15
    if neg:  # nudge 2^30 - 1, then truncation toward zero
        c0 = _MASK
        c1 = _MASK
        c2 = 0
    else:  # nudge 2^30
        c0 = 0
        c1 = 0
        c2 = 1
    t = a0 * m0 + c0
    carry = t >> 15
    t = a0 * m1
    u = a1 * m0
    lo = (t & _MASK) + (u & _MASK) + carry + c1
    carry = (t >> 15) + (u >> 15) + (lo >> 15)
    t = a1 * m1
    lo = (t & _MASK) + a0 * m2 + carry + c2
    carry = (t >> 15) + (lo >> 15)
    q = ((a1 * m2 + carry) << 14) + ((lo & _MASK) >> 1)
    x = -q if neg else q
    if shift < 0:
        x = (x + (1 << (-shift - 1))) >> -shift
    return x


def _layer(n_in, n_out, in_zp, out_zp, relu, w, b, m, sh):
    if len(w) != n_in * n_out:
        raise ValueError("lowrisk_weights: layer shapes do not chain")
    mult = struct.unpack("<%dI" % n_out, m)
    return (
        n_in, n_out, in_zp, out_zp, relu,
        array("b", [v - 256 if v > 127 else v for v in w]),
        array("i", struct.unpack("<%di" % n_out, b)),
        array("H", [v & _MASK for v in mult]),
        array("H", [(v >> 15) & _MASK for v in mult]),
        array("H", [v >> 30 for v in mult]),
        array("b", [v - 256 if v > 127 else v for v in sh]),
        bytearray(n_out),
    )


def _run(layer, x):
    n_in, n_out, in_zp, out_zp, relu, w, b, m0, m1, m2, sh, out = layer
    lo = out_zp if relu else -128
    k = 0
    for o in range(n_out):
        acc = b[o]
        for i in range(n_in):
            v = x[i]
            if v > 127:
                v -= 256
            acc += (v - in_zp) * w[k]
            k += 1
        v = _requant(acc, m0[o], m1[o], m2[o], sh[o]) + out_zp
        if v < lo:
            v = lo
        elif v > 127:
            v = 127
        out[o] = v & 0xFF
    return out


class LowRisk:
    """Allocate once with `LowRisk()`; `predict(history)` then allocates nothing. After a
    prediction, `forecast` is the 30-minute forecast in whole mg/dL (-1 without the head)."""

    def __init__(self):
        self.layers = []
        width = HISTORY
        for spec in lowrisk_weights.LAYERS:
            if spec[0] != width:
                raise ValueError("lowrisk_weights: layer shapes do not chain")
            self.layers.append(_layer(*spec))
            width = spec[1]
        # The forecast: its own layers from the input, or (older weights) one on the trunk.
        self.delta = []
        self.delta_on_trunk = getattr(lowrisk_weights, "DELTA_ON_TRUNK", True)
        delta = getattr(lowrisk_weights, "DELTA", None)
        if delta and (len(self.layers) > 1 or not self.delta_on_trunk):
            width = self.layers[-2][1] if self.delta_on_trunk else HISTORY
            for spec in delta:
                if spec[0] != width:
                    raise ValueError("lowrisk_weights: the forecast layers do not chain")
                self.delta.append(_layer(*spec))
                width = spec[1]
            self.delta_zp = lowrisk_weights.DELTA_ZP
            self.delta_q16 = lowrisk_weights.DELTA_Q16
        self.forecast = -1
        self.x = bytearray(HISTORY)  # int8 input, stored as bytes (two's complement)
        self.filled = array("h", [0] * HISTORY)
        self.lut = lowrisk_weights.INPUT_LUT
        self.permille = array("H", struct.unpack("<256H", lowrisk_weights.PERMILLE))
        self.logit = 0

    def load(self, history):
        """Put the hour into the network's input (`x`, int8 as bytes; `filled`, the readings
        with gaps filled); False without enough recent readings."""
        f = self.filled
        present = 0
        for i in range(HISTORY - 4, HISTORY):
            if history[i] > 0:
                present += 1
        if history[HISTORY - 1] <= 0 or present < 3:
            return False
        first = -1
        for i in range(HISTORY):
            g = history[i]
            if g > 0:
                if g > _MAX_MGDL:
                    g = _MAX_MGDL
                if first < 0:
                    first = i
                    for k in range(i):
                        f[k] = g
                f[i] = g
            elif first >= 0:
                f[i] = f[i - 1]
        x = self.x
        lut = self.lut
        for i in range(HISTORY):
            x[i] = lut[f[i]]
        return True

    def predict(self, history):
        """Risk in permille (0..1000), or -1 without enough recent readings."""
        self.forecast = -1
        if not self.load(history):
            return -1
        f = self.filled
        x = self.x
        trunk = x
        for layer in self.layers:
            trunk = x
            x = _run(layer, x)
        v = x[0]
        self.logit = v - 256 if v > 127 else v
        if self.delta:
            d = trunk if self.delta_on_trunk else self.x
            for layer in self.delta:
                d = _run(layer, d)
            d = d[0]
            if d > 127:
                d -= 256
            self.forecast = f[HISTORY - 1] + (((d - self.delta_zp) * self.delta_q16) >> 16)
        return self.permille[self.logit + 128]


def policy_values(d, persist, refractory_min, rising, floor, carb_hold_min, urgent):
    """The edge's calibrated predicted-low policy as it sends it, {"permille", "persist",
    "refractory_min", "rising", "floor", "carb_hold_min", "urgent"} (all but "permille"
    optional: the given values stand in), as the tuple (permille, persist, refractory_min,
    rising, floor, carb_hold_min, urgent); None when a value is missing, not a number or
    outside safe bounds (the whole policy is then refused)."""
    try:
        p = int(d["permille"])
        k = int(d.get("persist", persist))
        r = int(d.get("refractory_min", refractory_min))
        up = float(d.get("rising", rising))
        fl = int(d.get("floor", floor))
        hold = int(d.get("carb_hold_min", carb_hold_min))
        urg = int(d.get("urgent", urgent))
    except (AttributeError, KeyError, TypeError, ValueError, OverflowError):
        return None
    if not (500 <= p <= 990 and 1 <= k <= 6 and 0 <= r <= 180 and 0 <= up <= 5
            and 70 <= fl <= 400 and 0 <= hold <= 120 and 40 <= urg <= 70):
        return None
    return (p, k, r, up, fl, hold, urg)


def fill_history(readings, now_ms, h, c):
    """The last HISTORY readings on the 5-minute grid ending at the newest reading (if it is
    under 15 minutes old, else now), oldest first, 0 = missing, written into h (c: the same
    length, for counts); returns h. readings: (t_ms, sgv), oldest first, sensor error codes
    allowed (skipped). Gaps of up to 15 minutes between readings are bridged on a straight
    line, so a 15-minute sensor (Libre) gives the model the 5-minute hour it was trained on; a
    1-minute sensor (Libre 3) gives the mean of each 5 minutes ending at the newest reading,
    as the edge averages them (edge/features/glucose_risk.cgm_grid). The clock calls it with
    buffers allocated once; the cloud with its own."""
    n = len(h)
    for i in range(n):
        h[i] = 0
        c[i] = 0
    end = now_ms
    for t, sgv in readings:
        if sgv >= units.SGV_MIN_VALID and 0 <= now_ms - t < 3 * _SLOT_MS:
            end = t
    fast = 0
    for t, sgv in readings:
        if sgv >= units.SGV_MIN_VALID and 0 <= end - t < _FAST_SPAN_MS:
            fast += 1
    fast = fast > _FAST_COUNT
    for t, sgv in readings:
        if sgv < units.SGV_MIN_VALID:
            continue
        if fast:
            k = (end - t) // _SLOT_MS  # the 5 minutes ending at the newest, and before
        else:
            k = (end - t + _SLOT_MS // 2) // _SLOT_MS
        if 0 <= k < n:
            if fast:
                h[n - 1 - k] += sgv
                c[n - 1 - k] += 1
            else:
                h[n - 1 - k] = sgv
    if fast:
        for i in range(n):
            if c[i] > 1:
                h[i] = (h[i] + c[i] // 2) // c[i]
    a = -1
    for i in range(n):
        if h[i] > 0:
            if 1 < i - a <= 4 and a >= 0:
                for j in range(a + 1, i):
                    h[j] = h[a] + (h[i] - h[a]) * (j - a) // (i - a)
            a = i
    return h


def predict_at(model, readings, now_ms):
    """(permille, forecast in mg/dL) of the model on the hour of readings ((t_ms, sgv), oldest
    first) ending at the newest one at or before now_ms, as the clock predicts; None when the
    newest is over 15 minutes old or the hour has too few readings. Readings in fractions of
    a mg/dL (a Nightscout upload's) count in whole mg/dL, rounded as the edge rounds those it
    sends the clocks (round(), half to even). Allocates its hour (the clock keeps its own
    buffers)."""
    upto = [(r[0], int(round(r[1]))) for r in readings if r[0] <= now_ms]
    if alerts.current(alerts.valid(upto), now_ms) is None:
        return None
    h = [0] * HISTORY
    risk = model.predict(fill_history(upto, now_ms, h, [0] * HISTORY))
    if risk < 0:
        return None
    return (risk, model.forecast)


def predicted_low(model, readings, now_ms, policy=DEFAULT_POLICY, carbs_ms=None):
    """The clock's predicted low decided from the readings alone (the clock keeps state across
    passes instead, device/alarms.py): (permille, forecast) of the newest prediction when the
    policy (policy_values' tuple) sounds at now_ms, else None. See sounding_permille."""
    got = sounding_permille(model, readings, now_ms, policy, carbs_ms)
    if got is None or got[0] < policy[0]:
        return None
    return got[1]


def sounding_permille(model, readings, now_ms, policy=DEFAULT_POLICY, carbs_ms=None):
    """(p, (permille, forecast) of the newest prediction): the policy sounds at now_ms at any
    threshold up to p, whatever the policy's own; None when it would not sound at any. The
    newest reading must be current and at or above 70 mg/dL in whole mg/dL (below, it is a
    low, not a predicted one); `persist` predictions in a row, p the lowest risk among them,
    each with a forecast below the floor (400: no floor), counted as the clock counts them:
    one per reading, readings at least 4.5 minutes apart (a 1-minute sensor's count once per
    5 minutes, a 15-minute sensor's each); not while the last 15 minutes rise faster than
    `rising` mg/dL/min; not within `carb_hold_min` after carbs entered at carbs_ms (Unix ms;
    up to 10 minutes ahead counts too) unless the forecast is below `urgent`. The refractory
    period is the caller's: it knows when it last sounded. One pass over the readings gives
    the decision at every threshold (the cloud's calibration, cloud/alert_calibration.py)."""
    _permille, persist, _refractory, rising, floor, hold, urgent = policy
    good = alerts.valid([(r[0], int(round(r[1]))) for r in readings if r[0] <= now_ms])
    newest = alerts.current(good, now_ms)
    if newest is None or newest[1] < units.LOW:
        return None
    first = None
    lowest = 1000
    at = newest[0]
    k = len(good) - 1
    for _ in range(persist):
        while k >= 0 and good[k][0] > at:
            k -= 1
        if k < 0:
            return None
        got = predict_at(model, good, good[k][0])
        if got is None:
            return None
        if floor < 400 and got[1] >= 0 and got[1] >= floor:
            return None
        if first is None:
            first = got
        lowest = min(lowest, got[0])
        at = good[k][0] - PREDICT_GAP_MS
    rate = alerts.slope(good, now_ms, 15)
    if rate is not None and rate > rising:
        return None
    if carbs_ms is not None and hold and -_CARB_AHEAD_MS <= now_ms - carbs_ms < hold * 60000:
        if first[1] < 0 or first[1] >= urgent:
            return None
    return (lowest, first)
