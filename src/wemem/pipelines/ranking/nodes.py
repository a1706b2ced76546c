"""Nodes of the ranking pipeline: per-class rankings in both orders and a window preview."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from wemem.ml.ranking import ORDERS, rank_per_class, window_preview


def rank_memscores(memscores: pd.DataFrame) -> pd.DataFrame:
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


def preview_windows(
    rankings: pd.DataFrame, info: dict[str, Any], ranking: dict[str, Any]
) -> pd.DataFrame:
    """How many distinct samples each epoch and each whole pruning iteration touches, per class,
    for the dataset's default window (w, s), in the h2l order (sizes are the same in both)."""
    defaults = info["defense_defaults"]
    w = int(defaults["w"])
    s = int(defaults["s"])
    h2l = rankings[rankings["order"] == "h2l"].sort_values(["label", "rank"])
    ranked = {int(c): g["index"].to_numpy() for c, g in h2l.groupby("label")}
    preview = window_preview(ranked, int(ranking["preview_epochs"]), w, s)
    preview.insert(0, "s", s)
    preview.insert(0, "w", w)
    return preview
