"""The clock's predicted-low network (shared/lowrisk.py) over many hours of CGM at once, in
NumPy, bit for bit what `LowRisk.predict` computes, for the cloud's calibrations
(cloud/alert_calibration.py), which ask for a prediction at every reading of two weeks.

`LowRisk` runs its int8 layers one multiply at a time, as MicroPython must: about 0.4 ms a
prediction, 2 s of one API process's interpreter for a tenant's two weeks, during which that
process answers its polls slowly. Here a pass first records the hours the policy asks about
(`Recorder`), then runs the layers on all of them as integer matrix products and answers the
pass again from the results (`Answered`): the policy's own code decides both times, so only
the arithmetic is done another way, and the tests compare it with `LowRisk` on every input
they make.
"""

from __future__ import annotations

import numpy as np

from nightlink.shared import lowrisk

_ACC_LIMIT = 1 << 31  # TFLite's accumulator is 32-bit; the products below stay in int64


class Recorder:
    """A stand-in model that records each hour it is asked about and answers as no real
    prediction would stop a policy's pass: risk 1000, no forecast (so the pass asks about
    every hour the real one could)."""

    def __init__(self):
        self.seen: dict[tuple, None] = {}
        self.forecast = -1

    def predict(self, history) -> int:
        self.seen[tuple(history)] = None
        self.forecast = -1
        return 1000


class Answered:
    """A stand-in model answering from `predict_many`'s results; an hour not among them (none
    should be) is predicted by `LowRisk` itself."""

    def __init__(self, histories: list[tuple]):
        self.answers = dict(zip(histories, predict_many(histories), strict=True))
        self.forecast = -1
        self._model: lowrisk.LowRisk | None = None

    def predict(self, history) -> int:
        got = self.answers.get(tuple(history))
        if got is None:
            self._model = self._model or lowrisk.LowRisk()
            risk = self._model.predict(history)
            self.forecast = self._model.forecast
            return risk
        risk, self.forecast = got
        return risk


def _prepared(model: lowrisk.LowRisk, history) -> tuple[list[int], int] | None:
    """LowRisk.predict's input: (the model's int8 inputs, the newest reading as filled), or
    None when it would answer -1 (too few recent readings)."""
    if not model.load(history):
        return None
    return [v - 256 if v > 127 else v for v in model.x], model.filled[lowrisk.HISTORY - 1]


def _requant(acc: np.ndarray, mult: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """lowrisk._requant on arrays: acc * M / 2^31 with TFLite's nudge, truncated toward zero,
    then a rounding shift right."""
    acc = acc << np.maximum(shift, 0)
    if np.abs(acc).max(initial=0) >= _ACC_LIMIT:
        raise OverflowError("accumulator beyond 32 bits")
    neg = acc < 0
    q = (np.abs(acc) * mult + np.where(neg, (1 << 30) - 1, 1 << 30)) >> 31
    x = np.where(neg, -q, q)
    right = np.maximum(-shift, 0)
    half = np.where(right > 0, np.left_shift(1, np.maximum(right - 1, 0)), 0)
    return (x + half) >> right


def _run(layer: tuple, x: np.ndarray) -> np.ndarray:
    n_in, n_out, in_zp, out_zp, relu, w, b, m0, m1, m2, sh, _out = layer
    weights = np.asarray(w, dtype=np.int64).reshape(n_out, n_in)
    mult = (np.asarray(m0, dtype=np.int64) + (np.asarray(m1, dtype=np.int64) << 15)
            + (np.asarray(m2, dtype=np.int64) << 30))
    acc = np.asarray(b, dtype=np.int64) + (x - in_zp) @ weights.T
    v = _requant(acc, mult, np.asarray(sh, dtype=np.int64)) + out_zp
    return np.clip(v, out_zp if relu else -128, 127)


def predict_many(histories: list) -> list[tuple[int, int]]:
    """(risk in permille or -1, forecast in mg/dL or -1) for each hour, as LowRisk.predict
    and its `forecast` give them."""
    model = lowrisk.LowRisk()
    out: list[tuple[int, int]] = [(-1, -1)] * len(histories)
    rows, inputs, newest = [], [], []
    for k, h in enumerate(histories):
        got = _prepared(model, h)
        if got is not None:
            rows.append(k)
            inputs.append(got[0])
            newest.append(got[1])
    if not rows:
        return out
    x0 = np.asarray(inputs, dtype=np.int64)
    try:
        x = trunk = x0
        for layer in model.layers:
            trunk = x
            x = _run(layer, x)
        logits = x[:, 0]
        forecast = None
        if model.delta:
            d = trunk if model.delta_on_trunk else x0
            for layer in model.delta:
                d = _run(layer, d)
            forecast = (np.asarray(newest, dtype=np.int64)
                        + (((d[:, 0] - model.delta_zp) * model.delta_q16) >> 16))
    except OverflowError:  # weights no int8 network would have: the clock's arithmetic
        for k in rows:
            out[k] = (model.predict(histories[k]), model.forecast)
        return out
    permille = model.permille
    for j, k in enumerate(rows):
        out[k] = (permille[int(logits[j]) + 128],
                  -1 if forecast is None else int(forecast[j]))
    return out
