"""Mean ± 95 % confidence intervals over seeds with Student's t distribution (no scipy needed).

A handful of seeds is a small sample, so the normal 1.96 would make intervals too narrow: with
3 seeds the right factor is 4.30. ``t95(df)`` gives the two-sided 95 % factor from a table for
df <= 30 and from the Cornish-Fisher expansion above (error < 0.001 there).
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import LabError

# Two-sided 95 % quantiles t_{0.975, df} for df = 1..30.
_T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
         2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
         2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)
_Z975 = 1.959964


def t95(df: float) -> float:
    """The factor that turns a standard error into a 95 % half-width for ``df`` degrees of freedom.

    Non-integer df (Welch) round down, which widens the interval slightly: the safe side.
    """
    if not df >= 1:
        raise LabError(f"a confidence interval needs at least 1 degree of freedom (2 values), got df={df}.")
    df = math.floor(df)
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def _values(values) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    return arr[np.isfinite(arr)]


def mean_ci(values) -> tuple[float, float]:
    """(mean, half-width of its 95 % CI) of finite values; the half-width is NaN for fewer than 2."""
    arr = _values(values)
    if arr.size == 0:
        return float("nan"), float("nan")
    if arr.size == 1:
        return float(arr[0]), float("nan")
    return float(arr.mean()), t95(arr.size - 1) * float(arr.std(ddof=1)) / math.sqrt(arr.size)


def difference_ci(a, b) -> tuple[float, float]:
    """(mean(a) - mean(b), half-width of its 95 % CI) by Welch's t: unequal variances allowed."""
    a, b = _values(a), _values(b)
    if a.size < 2 or b.size < 2:
        diff = a.mean() - b.mean() if a.size and b.size else float("nan")
        return float(diff), float("nan")
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    if se == 0:
        return float(a.mean() - b.mean()), 0.0
    share_a, share_b = va / (va + vb), vb / (va + vb)  # scaled, so tiny variances cannot underflow
    df = 1.0 / (share_a ** 2 / (a.size - 1) + share_b ** 2 / (b.size - 1))  # Welch-Satterthwaite
    return float(a.mean() - b.mean()), t95(df) * se


def format_ci(mean: float, half: float, digits: int = 2) -> str:
    """``"97.12 ± 0.31"``, or just the mean when there is no interval."""
    if not math.isfinite(mean):
        return "n/a"
    return f"{mean:.{digits}f}" + (f" ± {half:.{digits}f}" if math.isfinite(half) else " (one seed, no CI)")
