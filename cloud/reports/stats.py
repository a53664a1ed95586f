"""The statistics behind the report's associations across nights: the two-sided p-value of a
Pearson r (Student's t with n - 2 degrees of freedom, as R's cor.test), the slope's 95 %
interval, and Benjamini-Hochberg q-values over the rows tested together (docs/clinical.md).
Plain Python: the cloud does not depend on SciPy for a handful of numbers."""

from __future__ import annotations

import math

_EPS = 1e-14


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((a + m2 - 1) * (a + m2)),
                    -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < _EPS:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                     + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_sf2(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with df degrees of freedom."""
    return betainc(df / 2.0, 0.5, df / (df + t * t))


def t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p (0.5 < p < 1), by bisection on the tail."""
    lo, hi = 0.0, 1.0
    while t_sf2(hi, df) / 2.0 > 1.0 - p:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if t_sf2(mid, df) / 2.0 > 1.0 - p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


def pearson_p(r: float, n: int) -> float:
    """Two-sided p of H0: rho = 0 for a Pearson r over n pairs."""
    if abs(r) >= 1.0:
        return 0.0
    df = n - 2
    return t_sf2(r * math.sqrt(df / (1.0 - r * r)), df)


def slope_ci(r: float, slope: float, n: int) -> list[float]:
    """The 95 % interval of the least-squares slope: slope x (1 +- t / t_obs), since the
    slope's standard error is slope / t_obs with t_obs = r sqrt((n-2)/(1-r^2))."""
    if abs(r) >= 1.0 or r == 0.0:
        se = 0.0 if abs(r) >= 1.0 else math.inf
    else:
        se = abs(slope) * math.sqrt(1.0 - r * r) / (abs(r) * math.sqrt(n - 2))
    half = t_quantile(0.975, n - 2) * se
    return [slope - half, slope + half]


def bh_qvalues(ps: list[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (q-values), in the order given: q_(i) =
    min over j >= i of p_(j) m / j, capped at 1."""
    m = len(ps)
    order = sorted(range(m), key=lambda i: ps[i])
    out = [1.0] * m
    running = 1.0
    for rank in range(m, 0, -1):
        i = order[rank - 1]
        running = min(running, ps[i] * m / rank)
        out[i] = min(1.0, running)
    return out
