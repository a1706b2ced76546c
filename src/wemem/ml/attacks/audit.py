"""Audit views of one attack's result (SPEC §8): an empirical ε lower bound from its ROC and its
exposure of the victim's high- versus low-memorisation members.

Empirical ε (Jagielski et al. 2020; Nasr et al. 2021). A membership test that flags TP of
n_mem members and FP of n_non non-members bounds every (ε, δ)-DP training run from below:
TPR ≤ e^ε·FPR + δ and 1 − FPR ≤ e^ε·(1 − TPR) + δ. With Clopper–Pearson bounds at confidence
1 − α (two-sided, α/2 each side) FPR_hi and TPR_lo,
ε_lb = max over the ROC's thresholds of max(log((TPR_lo − δ)/FPR_hi), log((1 − FPR_hi − δ)/(1 − TPR_lo))),
floored at 0. The maximum over thresholds is not corrected for multiple comparisons (as in the
literature), so it is a point figure for comparison, not a certificate.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import beta
from sklearn.metrics import roc_auc_score

from .metrics import roc_points

__all__ = ["clopper_pearson", "epsilon_lower_bound", "slice_metrics"]


def clopper_pearson(k: np.ndarray, n: int, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Exact two-sided (1 − α) binomial confidence bounds (lower, upper) of k successes in n:
    lower = Beta(α/2; k, n − k + 1) (0 at k = 0), upper = Beta(1 − α/2; k + 1, n − k) (1 at k = n)."""
    k = np.asarray(k, dtype=np.float64)
    if n <= 0:
        raise ValueError(f"clopper_pearson: n must be positive, got {n}")
    lo = np.where(k > 0, beta.ppf(alpha / 2, np.maximum(k, 1), n - k + 1), 0.0)
    hi = np.where(k < n, beta.ppf(1 - alpha / 2, k + 1, np.maximum(n - k, 1)), 1.0)
    return lo, hi


def epsilon_lower_bound(scores: np.ndarray, is_member: np.ndarray, delta: float = 1e-5,
                        alpha: float = 0.05) -> float:
    """ε lower bound at confidence 1 − α of the membership test ``score ≥ t`` over every
    threshold t of the ROC (module docstring); NaN without members or non-members."""
    mem = np.asarray(is_member, dtype=bool)
    n_mem, n_non = int(mem.sum()), int((~mem).sum())
    if n_mem == 0 or n_non == 0:
        return float("nan")
    fpr, tpr = roc_points(scores, mem)
    _, fpr_hi = clopper_pearson(np.rint(fpr * n_non), n_non, alpha)
    tpr_lo, _ = clopper_pearson(np.rint(tpr * n_mem), n_mem, alpha)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(tpr_lo - delta > 0, np.log((tpr_lo - delta) / fpr_hi), -np.inf)
        num = 1.0 - fpr_hi - delta
        b = np.where((num > 0) & (tpr_lo < 1), np.log(num / (1.0 - tpr_lo)), -np.inf)
    return float(max(0.0, np.max(a), np.max(b)))


def slice_metrics(scores: np.ndarray, predictions: np.ndarray, is_member: np.ndarray,
                  high: np.ndarray) -> dict[str, float]:
    """TPR at the attack's decision and AUC of its scores on the members with ``high`` set
    (memorisation score ≥ τ) and on the other members, each against all non-members:
    ``tpr_high``, ``tpr_low``, ``auc_high``, ``auc_low`` (NaN for an empty slice), and the
    decision's FPR on the non-members ``fpr_decision`` (the level both TPRs are read at)."""
    scores = np.asarray(scores, dtype=np.float64)
    pred = np.asarray(predictions, dtype=bool)
    mem = np.asarray(is_member, dtype=bool)
    high = np.asarray(high, dtype=bool)
    out: dict[str, float] = {"fpr_decision": float(pred[~mem].mean()) if (~mem).any() else float("nan")}
    for name, part in (("high", mem & high), ("low", mem & ~high)):
        keep = part | ~mem
        ok = part.any() and (~mem).any()
        out[f"tpr_{name}"] = float(pred[part].mean()) if part.any() else float("nan")
        out[f"auc_{name}"] = float(roc_auc_score(part[keep], scores[keep])) if ok else float("nan")
    return out
