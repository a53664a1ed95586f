# The shared alert rules on fixed scenarios; run under CPython and MicroPython (same imports).
import json

from nightlink.shared import alerts

T = 1768516200000  # 2026-01-15T22:30:00Z in ms: a big int on the board
M = 60000


def series(values, step_min=5, end=T):
    n = len(values)
    return [(end - (n - 1 - i) * step_min * M, v) for i, v in enumerate(values)]


falling = series([130, 118, 106, 95, 86])  # about -2.2 mg/dL/min
rising = series([120, 140, 162, 185])
low = series([80, 72, 66])
errors = series([100, 5, 9])
out = {
    "urgent_low": alerts.urgent_low(series([70, 60, 52]), T),
    "low": alerts.low(low, T),
    "low_stale": alerts.low(low, T + 20 * M),
    "high": alerts.high(series([240, 255]), T),
    "rising_fast": alerts.rising_fast(rising, T),
    "slope_falling": round(alerts.slope(falling, T, 20), 4),
    "predicted_low": alerts.predicted_low(falling, T),
    "no_predicted_low_when_flat": alerts.predicted_low(series([100, 100, 100, 100]), T),
    "stale_warning": alerts.stale_data(falling, T + 16 * M),
    "stale_urgent": alerts.stale_data(falling, T + 31 * M),
    "valid": alerts.valid(errors),
    "rules": sorted(alerts.RULE_FUNCTIONS),
}
print(json.dumps(out))
