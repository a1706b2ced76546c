"""The quadratic threshold scan: every candidate threshold against every value.

Not part of the library: it is the yardstick of ``benchmarks/threshold_search.py`` and the
tests check that the library's sorting search (:func:`wemem.ml.attacks.best_threshold`) returns
exactly what it returns. It evaluates the same candidates (the sorted unique values, then +inf)
in the same order with the same float formula
(:func:`wemem.ml.attacks.metric.balanced_objective`) and keeps the first (lowest) maximiser.
"""

from __future__ import annotations

import numpy as np

from wemem.ml.attacks.metric import as_values, balanced_objective

__all__ = ["brute_force_threshold"]


def brute_force_threshold(
    member_values: np.ndarray, nonmember_values: np.ndarray, chunk_size: int = 256
) -> tuple[float, float]:
    """Threshold maximising ½(TPR + TNR) of ``value ≥ threshold``, by comparing every candidate
    with every value (O(n²), vectorised over ``chunk_size`` candidates at a time).

    Returns ``(threshold, balanced_accuracy)``; ``(inf, nan)`` when both inputs are empty.
    """
    m = as_values(member_values)
    nm = as_values(nonmember_values)
    n_m, n_n = m.size, nm.size
    if n_m + n_n == 0:
        return float("inf"), float("nan")
    candidates = np.append(np.unique(np.concatenate([m, nm])), np.inf)
    best_t, best_ba = float("inf"), -np.inf
    for i in range(0, candidates.size, chunk_size):
        c = candidates[i : i + chunk_size, None]
        tp = np.count_nonzero(m[None, :] >= c, axis=1)
        tn = np.count_nonzero(nm[None, :] < c, axis=1)
        ba = balanced_objective(tp, tn, n_m, n_n)
        k = int(np.argmax(ba))
        if ba[k] > best_ba:
            best_t, best_ba = float(c[k, 0]), float(ba[k])
    return best_t, best_ba
