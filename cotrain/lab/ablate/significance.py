"""Statistics of an ablation: summaries, Welch t-tests, Holm correction and compact letter displays.

- Welch's test (`scipy.stats.ttest_ind(equal_var=False)`) does not assume equal variances:
  t = (m1 - m2) / sqrt(s1^2/n1 + s2^2/n2) with the Welch-Satterthwaite degrees of freedom, and a
  two-sided Student-t tail. scipy answers NaN for constant samples and warns below two values, so
  those cases are decided here: both samples constant with equal means gives t = 0, p = 1; with
  different means t is infinite but p is NaN (no test). Closed-loop rates are counts out of a few
  dozen episodes, so three seeds can land on the same count by chance (2/48 each against 3/48
  each); p = 0 there would claim a certainty that only the missing spread produced. Fewer than 2
  values in a group also gives no test (NaN), as the variance is undefined.
- Holm's step-down correction is written out: scipy has only false-discovery-rate adjustments
  (`false_discovery_control`), and statsmodels' `multipletests` would add ~65 MB plus patsy and
  formulaic for eight lines.
- A compact letter display (Piepho 2004, "insert-and-absorb"; no library has one): start with one
  letter shared by all treatments; for every significant pair, each letter column holding both is
  split into a copy without the first and a copy without the second, then columns contained in
  another are absorbed. Letters are then named in the order of the treatments (best mean first), so
  "a" marks the best group. Two treatments share a letter exactly when their difference is not
  significant.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

__all__ = ["Summary", "WelchResult", "compact_letter_display", "holm", "pairwise_welch", "summarise", "welch_t_test"]


@dataclass(frozen=True)
class Summary:
    """n, mean and sample standard deviation (ddof 1; NaN below two values) of finite values."""

    n: int
    mean: float
    sd: float


def summarise(values: Sequence[float]) -> Summary:
    """Count, mean and sample standard deviation of the finite values."""
    arr = _finite(values)
    if arr.size == 0:
        return Summary(0, math.nan, math.nan)
    return Summary(int(arr.size), float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else math.nan)


@dataclass(frozen=True)
class WelchResult:
    """Welch's two-sample t-test of a against b (two-sided p)."""

    t: float
    df: float
    p: float
    diff: float  # mean(a) - mean(b)


def welch_t_test(a: Sequence[float], b: Sequence[float]) -> WelchResult:
    """Two-sided Welch t-test (see module docstring); NaN fields when a group has fewer than 2 values."""
    x, y = _finite(a), _finite(b)
    if x.size < 2 or y.size < 2:
        diff = float(x.mean() - y.mean()) if x.size and y.size else math.nan
        return WelchResult(math.nan, math.nan, math.nan, diff)
    diff = float(x.mean() - y.mean())
    if x.var() == 0.0 and y.var() == 0.0:  # no spread in either group: see the module docstring
        n = float(x.size + y.size - 2)
        if diff == 0:
            return WelchResult(0.0, n, 1.0, diff)
        return WelchResult(math.copysign(math.inf, diff), n, math.nan, diff)
    res = scipy_stats.ttest_ind(x, y, equal_var=False)
    return WelchResult(float(res.statistic), float(res.df), float(res.pvalue), diff)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order; NaN entries stay NaN and are not counted."""
    idx = [i for i, p in enumerate(p_values) if not math.isnan(p)]
    order = sorted(idx, key=lambda i: p_values[i])
    m, running = len(order), 0.0
    out = [math.nan] * len(p_values)
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        out[i] = running
    return out


def pairwise_welch(groups: Sequence[Sequence[float]]) -> np.ndarray:
    """Symmetric [k, k] matrix of Holm-adjusted two-sided Welch p-values over all k(k-1)/2 pairs."""
    k = len(groups)
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    raw = [welch_t_test(groups[i], groups[j]).p for i, j in pairs]
    adjusted = holm(raw)
    out = np.ones((k, k))
    for (i, j), p in zip(pairs, adjusted):
        out[i, j] = out[j, i] = p
    return out


def compact_letter_display(p_matrix: np.ndarray, order: Sequence[int] | None = None, alpha: float = 0.05) -> list[str]:
    """Letters per treatment from a symmetric p-value matrix (insert-and-absorb, module docstring).

    `order` lists treatment indices best first (letters are named in that order); default 0..k-1.
    A NaN p-value counts as not significant.
    """
    p = np.asarray(p_matrix, dtype=np.float64)
    k = p.shape[0]
    if p.shape != (k, k):
        raise ValueError(f"p-value matrix must be square, got {p.shape}")
    columns: list[frozenset[int]] = [frozenset(range(k))]
    for i in range(k):
        for j in range(i + 1, k):
            if not p[i, j] < alpha:  # NaN compares False: not significant
                continue
            split: list[frozenset[int]] = []
            for col in columns:
                split += [col - {i}, col - {j}] if i in col and j in col else [col]
            columns = _absorb(split)
    rank = {t: r for r, t in enumerate(order if order is not None else range(k))}
    columns.sort(key=lambda col: sorted(rank[t] for t in col))
    letters = [""] * k
    for n, col in enumerate(columns):
        for t in col:
            letters[t] += _letter(n)
    return letters


def _absorb(columns: list[frozenset[int]]) -> list[frozenset[int]]:
    """Drop empty, duplicate and contained columns, keeping the first of equals."""
    unique = list(dict.fromkeys(c for c in columns if c))
    return [c for c in unique if not any(c < other for other in unique)]


def _letter(n: int) -> str:
    """a..z, then A..Z, then aa, ab, ... (more than 52 groups is unusual but must not fail)."""
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return alphabet[n] if n < len(alphabet) else _letter(n // len(alphabet) - 1) + alphabet[n % len(alphabet)]


def _finite(values: Sequence[float]) -> np.ndarray:
    arr = np.asarray([v for v in values if v is not None], dtype=np.float64)
    return arr[np.isfinite(arr)]
