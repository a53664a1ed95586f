"""Int8 export helpers: Keras -> .tflite (full integer), the quantization a model carries, and
the same integer arithmetic as TFLite's reference kernels, so other runtimes can match it.

TFLite requantizes an int32 accumulator with a Q31 multiplier and a shift: a saturating
rounding doubling high multiply, then a rounding right shift. LiteRT's optimized CPU kernels
(the ones the edge runs, without delegates) round that last shift's ties upwards, not away from
zero as the reference kernels do; `requantize` here does what the optimized kernels do (checked
bit for bit in tests/edge/test_classifiers.py), and shared/lowrisk.py does the same with 15-bit
limbs so MicroPython never leaves small integers.
"""

from __future__ import annotations

import numpy as np


def to_tflite(model, representative: np.ndarray, *, int8_io: bool = True) -> bytes:
    """Full-integer int8 .tflite bytes for a Keras model, calibrated on representative rows."""
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    rows = np.asarray(representative, dtype=np.float32)

    def gen():
        for i in range(rows.shape[0]):
            yield [rows[i:i + 1]]

    conv.representative_dataset = gen
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if int8_io:
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    return bytes(conv.convert())


def srdhm(a: int, b: int) -> int:
    """SaturatingRoundingDoublingHighMul on int32 values."""
    if a == b == -(1 << 31):
        return (1 << 31) - 1
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    return _trunc_div(ab + nudge, 1 << 31)


def _trunc_div(x: int, d: int) -> int:
    q = abs(x) // d
    return q if x >= 0 else -q


def rounding_shift(x: int, exponent: int) -> int:
    """x / 2^exponent rounded to nearest, ties upwards (LiteRT's optimized kernels)."""
    if exponent <= 0:
        return x
    return (x + (1 << (exponent - 1))) >> exponent


def requantize(acc: int, multiplier: int, shift: int) -> int:
    left = shift if shift > 0 else 0
    right = -shift if shift < 0 else 0
    return rounding_shift(srdhm(acc * (1 << left), multiplier), right)


def run_dense(layer, x: list[int]) -> list[int]:
    """One int8 fully-connected layer in Python integers, as LiteRT computes it."""
    out = []
    lo = layer.out_zp if layer.relu else -128
    for o in range(layer.weights.shape[0]):
        acc = int(layer.bias[o])
        for i, w in enumerate(layer.weights[o]):
            acc += (x[i] - layer.in_zp) * int(w)
        v = requantize(acc, layer.multiplier[o], layer.shift[o]) + layer.out_zp
        out.append(min(max(v, lo), 127))
    return out
