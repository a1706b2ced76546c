"""Nodes of the ranking pipeline: per-class rankings in both orders and a window preview."""

from __future__ import annotations

import pandas as pd

from wemem.ml.ranking import preview_table, rankings_table
from wemem.params import DatasetSettings, Ranking


def rank_memscores(memscores: pd.DataFrame) -> pd.DataFrame:
    """Per-class rankings of the train pool by normalised score, both orders, ties by index
    (``order, label, rank, index, score``)."""
    return rankings_table(memscores)


def preview_windows(rankings: pd.DataFrame, dataset: DatasetSettings, ranking: Ranking) -> pd.DataFrame:
    """How many distinct samples each epoch and each whole pruning iteration touches, per class,
    for the dataset's default window (w, s)."""
    defaults = dataset.defense_defaults
    return preview_table(rankings, ranking.preview_epochs, defaults.w, defaults.s)
