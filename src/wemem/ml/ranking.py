"""Per-class memorisation-score ranking and sliding windows (SPEC §5, §7).

A ranking is a mapping ``class -> positions`` where positions index the arrays it was built from
(e.g. a model's training set), sorted by score inside the class. Ties are broken by position, so
rankings are deterministic. Each class gets its own window: a small class never shortens the
window of another (the reference implementation clipped the window end in place, which did).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["ORDERS", "order_key", "rank_per_class", "rankings_table", "preview_table", "class_window", "epoch_window", "window_preview",
           "TAU_MODES", "risky_mask", "risk_threshold"]

ORDERS = ("h2l", "l2h")


def order_key(order: str) -> str:
    """``h2l`` / ``l2h`` from the spellings users write (``H2L``, ``h->l``, ``h→l``, ``h_2_l``)."""
    return order.lower().replace("→", "2").replace("->", "2").replace("_", "")


def _check_order(order: str) -> str:
    key = order_key(order)
    if key not in ORDERS:
        raise ValueError(f"unknown ranking order {order!r}; use 'h2l' (highest first) or 'l2h' (lowest first)")
    return key


def rank_per_class(scores: np.ndarray, labels: np.ndarray, order: str = "h2l") -> dict[int, np.ndarray]:
    """Sorts positions by score inside each class.

    Args:
        scores: (n,) scores, higher = more memorised.
        labels: (n,) integer class labels.
        order: ``h2l`` (highest score first) or ``l2h`` (lowest first).

    Returns:
        ``{class: positions}`` for every class present, positions as int64 arrays; ties keep
        ascending position order in both orders.
    """
    order = _check_order(order)
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.shape != labels.shape or scores.ndim != 1:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must be 1-D of equal length")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN; every sample needs a memorisation score to be ranked")
    positions = np.arange(scores.size)
    key = -scores if order == "h2l" else scores
    # lexsort sorts by the last key first: class, then score key, then position
    perm = np.lexsort((positions, key, labels))
    sorted_labels = labels[perm]
    classes, starts = np.unique(sorted_labels, return_index=True)
    bounds = list(starts[1:]) + [perm.size]
    return {int(c): perm[a:b].astype(np.int64) for c, a, b in zip(classes, starts, bounds)}


def class_window(ranked: np.ndarray, epoch: int, width: int, step: int) -> np.ndarray:
    """The window ``ranked[step·epoch : step·epoch + width]`` of one class (empty past the end)."""
    if width <= 0 or step <= 0:
        raise ValueError(f"window width w={width} and step s={step} must be positive integers")
    start = step * epoch
    return ranked[start : start + width]


def epoch_window(ranking: dict[int, np.ndarray], epoch: int, width: int, step: int) -> np.ndarray:
    """Positions an epoch trains on: each class's own window, concatenated in class order."""
    parts = [class_window(r, epoch, width, step) for _, r in sorted(ranking.items())]
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


def window_preview(
    ranking: dict[int, np.ndarray], epochs: int, width: int, step: int
) -> pd.DataFrame:
    """How many samples each epoch, and a whole pruning iteration, touches per class.

    Returns a long table with columns ``class, epoch, window_size, distinct_so_far`` plus one
    row per class with ``epoch = -1`` holding the distinct samples of the whole iteration
    (``epochs`` epochs) and the class size.
    """
    rows = []
    for c, ranked in sorted(ranking.items()):
        seen = np.zeros(ranked.size, dtype=bool)
        for e in range(epochs):
            start = step * e
            seen[start : start + width] = True
            size = int(class_window(ranked, e, width, step).size)
            rows.append({"class": c, "epoch": e, "window_size": size, "distinct_so_far": int(seen.sum()), "class_size": int(ranked.size)})
        total = int(seen.sum())
        rows.append({"class": c, "epoch": -1, "window_size": total, "distinct_so_far": total, "class_size": int(ranked.size)})
    return pd.DataFrame(rows, columns=["class", "epoch", "window_size", "distinct_so_far", "class_size"])


def rankings_table(memscores: pd.DataFrame) -> pd.DataFrame:
    """Per-class rankings of the train pool by normalised score, both orders, ties by index.

    Returns a long table: ``order, label, rank, index, score`` (``index`` = train-pool position).
    """
    table = memscores.sort_values("index").reset_index(drop=True)
    scores = table["score"].to_numpy()
    labels = table["label"].to_numpy()
    index = table["index"].to_numpy()
    parts = []
    for order in ORDERS:
        for label, pos in rank_per_class(scores, labels, order).items():
            parts.append(pd.DataFrame({
                "order": order, "label": label, "rank": np.arange(pos.size),
                "index": index[pos], "score": scores[pos],
            }))
    return pd.concat(parts, ignore_index=True)


def preview_table(rankings: pd.DataFrame, epochs: int, width: int, step: int) -> pd.DataFrame:
    """:func:`window_preview` of a :func:`rankings_table` (h2l order; sizes are the same in
    both), with the window's ``w`` and ``s`` as the first columns."""
    h2l = rankings[rankings["order"] == "h2l"].sort_values(["label", "rank"])
    ranked = {int(c): g["index"].to_numpy() for c, g in h2l.groupby("label")}
    preview = window_preview(ranked, int(epochs), int(width), int(step))
    preview.insert(0, "s", int(step))
    preview.insert(0, "w", int(width))
    return preview


TAU_MODES = ("value", "fraction")


def risky_mask(scores: np.ndarray, tau: float, tau_mode: str = "value") -> np.ndarray:
    """Which samples are risky (SPEC §4, §7).

    ``tau_mode="value"``: normalised score ≥ τ. ``tau_mode="fraction"``: the ``round(τ·n)``
    highest scores, ties broken by position (lower position first), so exactly that many are
    flagged.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if tau_mode == "value":
        return scores >= tau
    if tau_mode == "fraction":
        k = int(round(tau * scores.size))
        order = np.lexsort((np.arange(scores.size), -scores))
        mask = np.zeros(scores.size, dtype=bool)
        mask[order[:k]] = True
        return mask
    raise ValueError(f"tau_mode={tau_mode!r} is not allowed; tau_mode must be 'value' or 'fraction'")


def risk_threshold(scores: np.ndarray, tau: float, tau_mode: str = "value") -> tuple[np.ndarray, float]:
    """The risky mask and the score threshold it amounts to: τ itself for ``tau_mode="value"``,
    the lowest flagged score for ``"fraction"`` (``inf`` when nothing is flagged)."""
    mask = risky_mask(scores, tau, tau_mode)
    if tau_mode == "value":
        return mask, float(tau)
    return mask, float(np.asarray(scores, dtype=np.float64)[mask].min()) if mask.any() else float("inf")
