# Glucose alert rules shared by the clock and the cloud: pure functions over readings.
# readings: list of (t_ms, sgv) oldest first; every rule returns (level, value) or None.

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


from nightlink.shared import units

MINUTE_MS = const(60000)
CURRENT_MIN = const(15)  # a reading is current for 15 minutes (Nightscout)
RISE_WINDOW_MIN = const(15)
PREDICT_WINDOW_MIN = const(20)
PREDICT_HORIZON_MIN = const(20)
MIN_SPAN_MIN = const(10)  # a slope needs readings spanning at least this

URGENT = "urgent"
WARNING = "warning"


def valid(readings):
    """The readings that are glucose (sensor error codes below 39 removed), oldest first."""
    return [r for r in readings if r[1] >= units.SGV_MIN_VALID]


def current(readings, now_ms):
    """The latest reading if it is at most 15 minutes old at now_ms, else None."""
    if not readings:
        return None
    last = readings[-1]
    if now_ms - last[0] > CURRENT_MIN * MINUTE_MS:
        return None
    return last


def slope(readings, now_ms, window_min):
    """Least-squares slope (mg/dL per minute) of the readings in the last window_min minutes
    before now_ms; None with fewer than 3 readings or less than 10 minutes between them.

    Times are taken relative to the first point in whole milliseconds before any float
    arithmetic, so the result is the same with the single-precision floats of the board.
    """
    start = now_ms - window_min * MINUTE_MS
    pts = [r for r in readings if start <= r[0] <= now_ms]
    if len(pts) < 3 or pts[-1][0] - pts[0][0] < MIN_SPAN_MIN * MINUTE_MS:
        return None
    t0 = pts[0][0]
    n = len(pts)
    xs = [(p[0] - t0) / MINUTE_MS for p in pts]
    mt = sum(xs) / n
    mg = sum(p[1] for p in pts) / n
    sxx = 0.0
    sxy = 0.0
    for i in range(n):
        dx = xs[i] - mt
        sxx += dx * dx
        sxy += dx * (pts[i][1] - mg)
    return sxy / sxx


def urgent_low(readings, now_ms, threshold=units.VERY_LOW):
    """(level, value) when the current reading is below threshold, else None."""
    r = current(readings, now_ms)
    return (URGENT, r[1]) if r is not None and r[1] < threshold else None


def low(readings, now_ms, threshold=units.LOW):
    r = current(readings, now_ms)
    return (WARNING, r[1]) if r is not None and r[1] < threshold else None


def high(readings, now_ms, threshold=units.VERY_HIGH):
    r = current(readings, now_ms)
    return (WARNING, r[1]) if r is not None and r[1] > threshold else None


def rising_fast(readings, now_ms, threshold=3.0):
    """(level, rate) when the 15-minute slope exceeds threshold mg/dL/min."""
    if current(readings, now_ms) is None:
        return None
    rate = slope(readings, now_ms, RISE_WINDOW_MIN)
    return (WARNING, round(rate, 2)) if rate is not None and rate > threshold else None


def predicted_low(readings, now_ms, threshold=units.LOW):
    """(level, projected value) when the reading is not yet below threshold but the straight
    line through the last 20 minutes falls below it within 20 minutes of the reading."""
    r = current(readings, now_ms)
    if r is None or r[1] < threshold:
        return None
    rate = slope(readings, r[0], PREDICT_WINDOW_MIN)
    if rate is None or rate >= 0:
        return None
    projected = r[1] + rate * PREDICT_HORIZON_MIN
    return (WARNING, round(projected)) if projected < threshold else None


def stale_data(readings, now_ms, threshold=units.STALE_MIN):
    """(level, minutes since the last reading) when it is threshold minutes or more (warning)
    or twice that (urgent). Without any reading there is nothing to be stale: None."""
    if not readings:
        return None
    age = (now_ms - readings[-1][0]) / MINUTE_MS
    if age >= 2 * threshold:
        return (URGENT, round(age, 1))
    if age >= threshold:
        return (WARNING, round(age, 1))
    return None


RULE_FUNCTIONS = {
    "urgent_low": urgent_low,
    "low": low,
    "high": high,
    "rising_fast": rising_fast,
    "predicted_low": predicted_low,
    "stale_data": stale_data,
}
