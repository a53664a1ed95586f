# Runs under MicroPython: the clock's low-risk model over held-out histories from a file.
# Prints one JSON line: the int8 logits, the forecasts, and the heap allocated by 10, 10 again
# and 200 predictions.
import gc
import json

from nightlink.shared import lowrisk

with open("/histories.json") as fh:
    rows = json.load(fh)
m = lowrisk.LowRisk()
logits = []
permille = []
forecast = []
for h in rows:
    permille.append(m.predict(h))
    logits.append(m.logit if permille[-1] >= 0 else None)
    forecast.append(m.forecast)
h = rows[0]
grown = []
for n in (10, 10, 200):
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    for _ in range(n):
        m.predict(h)
    grown.append(gc.mem_alloc() - before)
    gc.enable()
print(json.dumps({"logits": logits, "permille": permille, "forecast": forecast, "alloc": grown,
                  "too_short": m.predict([0] * 11 + [120])}))
