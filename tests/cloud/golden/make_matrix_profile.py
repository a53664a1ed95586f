"""Writes matrix_profile.json: STUMPY's self-join matrix profile of two seeded glucose-like
series (one with a gap), the oracle tests/cloud/test_insights.py checks cloud/insights.py
against. STUMPY compiles with numba for minutes, too slow to run in every test session, so
its answers are kept here. Run: .venv/bin/python tests/cloud/golden/make_matrix_profile.py
(needs `pip install stumpy`, in the dev extra)."""

import json
from pathlib import Path

import numpy as np
import stumpy

M = 24


def series(seed: int, n: int, gap: bool) -> np.ndarray:
    """A random walk around 140 mg/dL with a daily meal bump; NaN for an hour if gap."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    x = 140 + np.cumsum(rng.normal(0, 2.0, n)) + 40 * np.exp(-(((t % 288) - 100) / 12.0) ** 2)
    if gap:
        x[300:312] = np.nan
    return x


def main() -> None:
    cases = []
    for seed, n, gap in ((1, 900, False), (2, 1200, True)):
        x = np.round(series(seed, n, gap), 6)  # as stored, so the test reads the same input
        mp = stumpy.stump(x, M)
        cases.append({"seed": seed, "n": n, "gap": gap, "m": M,
                      "x": [round(float(v), 6) if np.isfinite(v) else None for v in x],
                      "profile": [float(v) if np.isfinite(v) else None for v in mp[:, 0]],
                      "index": [int(v) for v in mp[:, 1]],
                      "stumpy": stumpy.__version__})
    out = Path(__file__).with_name("matrix_profile.json")
    out.write_text(json.dumps(cases, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()
