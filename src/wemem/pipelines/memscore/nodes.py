"""Nodes of the memscore pipeline: Feldman–Zhang shards, their merge, import, summary, plot.

Each node is a typed adapter over :mod:`wemem.ml.memorization`; ``params:memscore`` arrives as a
:class:`MemScoreSettings` and ``params:dataset_settings`` as a :class:`DatasetSettings`.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from wemem.ml.memorization import (
    MemScoreSettings,
    ShardStats,
    estimate_pool_shard,
    import_reference_csv,
    merge_shards,
    scores_table,
    summarise_scores,
    train_pool,
)
from wemem.ml.reporting import plot_score_distribution
from wemem.params import DatasetSettings
from wemem.pipelines.node_callable import NodeCallable

log = logging.getLogger(__name__)


class ShardNode(NodeCallable):
    """Node function that trains shard ``shard`` of ``n_shards`` (a module-level class, so
    process-based runners can pickle it)."""

    def __init__(self, shard: int, n_shards: int) -> None:
        self.shard, self.n_shards = shard, n_shards
        super().__init__(f"estimate_memscore_shard_{shard}")

    def __call__(
        self,
        arrays: dict[str, np.ndarray],
        splits: dict[str, np.ndarray],
        info: dict[str, Any],
        dataset: DatasetSettings,
        memscore: MemScoreSettings,
        seed: int,
        device: str,
        progress: bool,
    ) -> dict[str, np.ndarray]:
        """Trains this shard's models (the dataset's ``model``) on random subsets of the train pool;
        returns their in/out sums."""
        stats = estimate_pool_shard(arrays, splits, info, memscore, self.shard, self.n_shards, arch=dataset.model,
                                    seed=seed, device=device, progress=progress)
        return stats.to_dict()


def make_shard_node(shard: int, n_shards: int) -> ShardNode:
    """The node function that trains shard ``shard`` of ``n_shards``."""
    return ShardNode(shard, n_shards)


def merge_memscore_shards(
    arrays: dict[str, np.ndarray], splits: dict[str, np.ndarray], *shards: dict[str, np.ndarray]
) -> pd.DataFrame:
    """Adds the shards' statistics into the score table (index into the train pool, label,
    raw score, normalised [0,1] score, n_in, n_out)."""
    stats = merge_shards([ShardStats.from_dict(s) for s in shards])
    log.info("memscore: %d models, %.1fs of training in all", len(stats.model_ids), stats.seconds)
    return scores_table(stats, train_pool(arrays, splits)[1])


def import_memscores(
    arrays: dict[str, np.ndarray], splits: dict[str, np.ndarray], memscore: MemScoreSettings
) -> pd.DataFrame:
    """Reads precomputed scores in the reference format instead of estimating them."""
    return import_reference_csv(memscore.import_csv, train_pool(arrays, splits)[1])


def summarise_memscores(
    table: pd.DataFrame, info: dict[str, Any], dataset: DatasetSettings, memscore: MemScoreSettings
) -> tuple[dict[str, Any], Figure]:
    """Distribution summary (quantiles, ties, what the dataset's τ flags) and its plot, τ marked."""
    defaults = dataset.defense_defaults
    summary = summarise_scores(table, info["name"], memscore, defaults.tau, defaults.tau_mode)
    return summary, plot_score_distribution(
        table, title=f"{info['name']}: memorisation scores", tau=defaults.tau, tau_mode=defaults.tau_mode
    )
