"""Attack evaluation metrics: balanced accuracy, ROC AUC, TPR at low FPR; the ROC points a
record keeps and the strongest of several attacks."""

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


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, level: float) -> float:
    """Largest TPR among ROC points with FPR ≤ ``level``."""
    ok = fpr <= level
    return float(tpr[ok].max()) if ok.any() else 0.0


def attack_metrics(
    scores: np.ndarray, predictions: np.ndarray, is_member: np.ndarray
) -> dict[str, float]:
    """``balanced_acc`` of the predictions; ``auc``, ``tpr_at_1fpr``, ``tpr_at_0.1fpr`` of the
    scores. All NaN-valued when members or non-members are missing."""
    mem = np.asarray(is_member, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    out = {"balanced_acc": balanced_accuracy(predictions, mem)}
    if mem.all() or not mem.any():
        out["auc"] = float("nan")
        out.update({k: float("nan") for k in FPR_LEVELS})
        return out
    out["auc"] = float(roc_auc_score(mem, scores))
    fpr, tpr = roc_points(scores, mem)
    for key, level in FPR_LEVELS.items():
        out[key] = tpr_at_fpr(fpr, tpr, level)
    return out


def thinned_roc(scores: np.ndarray, is_member: np.ndarray, n_points: int = 200) -> dict[str, list[float]]:
    """The ROC curve of ``scores`` cut down to about ``n_points`` points (``{"fpr", "tpr"}``
    lists) spaced evenly in log(FPR) from 1e-5 to 1, so the low-FPR end of a log-log plot keeps
    its detail; the first and last points are always kept."""
    fpr, tpr = roc_points(scores, is_member)
    grid = np.searchsorted(fpr, np.logspace(-5, 0, n_points))
    keep = np.unique(np.clip(np.r_[0, grid, grid - 1, len(fpr) - 1], 0, len(fpr) - 1))
    return {"fpr": fpr[keep].tolist(), "tpr": tpr[keep].tolist()}


def strongest_attack(metrics: Mapping[str, Mapping[str, float]]) -> tuple[str, float]:
    """The attack with the highest balanced accuracy (the first one on ties) and that accuracy;
    ``("", nan)`` when there are none."""
    if not metrics:
        return "", float("nan")
    name = max(metrics, key=lambda a: metrics[a]["balanced_acc"])
    return name, metrics[name]["balanced_acc"]
