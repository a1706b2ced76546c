"""Attack evaluation metrics: balanced accuracy, ROC AUC, TPR at low FPR; the ROC points a
record keeps and the strongest of several attacks.

Resolution: with n non-members the smallest non-zero FPR is 1/n, so a TPR at an FPR level
below 1/n is not measurable: it is NaN (reported as "n/m" with the reason), never a number."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

FPR_LEVELS = {"tpr_at_1fpr": 0.01, "tpr_at_0.1fpr": 0.001}


def balanced_accuracy(predictions: np.ndarray, is_member: np.ndarray) -> float:
    """½(TPR + TNR) of boolean member predictions (NaN if one group is empty)."""
    pred = np.asarray(predictions, dtype=bool)
    mem = np.asarray(is_member, dtype=bool)
    if mem.all() or not mem.any():
        return float("nan")
    tpr = pred[mem].mean()
    tnr = (~pred[~mem]).mean()
    return float(0.5 * (tpr + tnr))


def roc_points(scores: np.ndarray, is_member: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FPR and TPR arrays of the ROC curve of ``scores`` (higher = member), for plotting."""
    fpr, tpr, _ = roc_curve(
        np.asarray(is_member, dtype=bool), np.asarray(scores, dtype=np.float64),
        drop_intermediate=False,
    )
    return fpr, tpr


def measurable(level: float, n_nonmembers: int) -> bool:
    """Whether an FPR ``level`` is resolved by ``n_nonmembers`` non-members (level ≥ 1/n)."""
    return n_nonmembers > 0 and level * n_nonmembers >= 1.0 - 1e-9


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, level: float, n_nonmembers: int | None = None) -> float:
    """Largest TPR among ROC points with FPR ≤ ``level``; NaN when ``n_nonmembers`` is given and
    ``level`` < 1/n_nonmembers (not measurable)."""
    if n_nonmembers is not None and not measurable(level, n_nonmembers):
        return float("nan")
    ok = fpr <= level
    return float(tpr[ok].max()) if ok.any() else 0.0


def attack_metrics(
    scores: np.ndarray, predictions: np.ndarray, is_member: np.ndarray
) -> dict[str, float]:
    """``balanced_acc`` of the predictions; ``auc``, ``tpr_at_1fpr``, ``tpr_at_0.1fpr`` of the
    scores (a level below 1/n_nonmembers is NaN: not measurable). All NaN-valued when members or
    non-members are missing."""
    mem = np.asarray(is_member, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    out = {"balanced_acc": balanced_accuracy(predictions, mem)}
    if mem.all() or not mem.any():
        out["auc"] = float("nan")
        out.update({k: float("nan") for k in FPR_LEVELS})
        return out
    out["auc"] = float(roc_auc_score(mem, scores))
    fpr, tpr = roc_points(scores, mem)
    n_non = int((~mem).sum())
    for key, level in FPR_LEVELS.items():
        out[key] = tpr_at_fpr(fpr, tpr, level, n_non)
    return out


def thinned_roc(scores: np.ndarray, is_member: np.ndarray, n_points: int = 200) -> dict[str, list[float]]:
    """The ROC curve of ``scores`` cut down to about ``n_points`` points (``{"fpr", "tpr"}``
    lists) spaced evenly in log(FPR) from the resolution 1/n_nonmembers to 1, so the low-FPR end
    of a log-log plot keeps its detail; the first and last points are always kept."""
    fpr, tpr = roc_points(scores, is_member)
    n_non = max(int((~np.asarray(is_member, dtype=bool)).sum()), 1)
    levels = np.logspace(np.log10(1.0 / n_non), 0, n_points)
    # FPR values are multiples of 1/n_non; logspace can land a hair above one (0.2 → 0.20000000000000004),
    # which would skip the points at exactly that FPR: search with a relative tolerance
    grid = np.searchsorted(fpr, levels * (1.0 - 1e-9))
    keep = np.unique(np.clip(np.r_[0, grid, grid - 1, len(fpr) - 1], 0, len(fpr) - 1))
    return {"fpr": fpr[keep].tolist(), "tpr": tpr[keep].tolist()}


def strongest_attack(metrics: Mapping[str, Mapping[str, float]]) -> tuple[str, float]:
    """The attack with the highest balanced accuracy (the first one on ties) and that accuracy;
    ``("", nan)`` when there are none."""
    if not metrics:
        return "", float("nan")
    name = max(metrics, key=lambda a: metrics[a]["balanced_acc"])
    return name, metrics[name]["balanced_acc"]
