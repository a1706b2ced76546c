"""Nodes of the memscore pipeline: Feldman–Zhang shards, their merge, import, summary, plot."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from wemem.ml.memorization import (
    MemScoreConfig,
    ShardStats,
    estimate_shard,
    import_reference_csv,
    merge_shards,
    scores_table,
    shard_model_ids,
)
from wemem.ml.reporting import plot_score_distribution
from wemem.pipelines.node_callable import NodeCallable

log = logging.getLogger(__name__)

_RUN_FIELDS = {"arch", "seed", "device", "progress"}  # set from the run, not from params:memscore


def _pool(arrays: dict[str, np.ndarray], splits: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    rows = splits["train_pool"]
    return arrays["features"][rows], arrays["labels"][rows]


def _config(info: dict[str, Any], memscore: dict[str, Any], seed: int, device: str, progress: bool) -> MemScoreConfig:
    fields = {f.name for f in dataclasses.fields(MemScoreConfig)} - _RUN_FIELDS
    return MemScoreConfig(
        **{k: v for k, v in memscore.items() if k in fields},
        arch=info["model"], seed=int(seed), device=device, progress=bool(progress),
    )


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
        memscore: dict[str, Any],
        seed: int,
        device: str,
        progress: bool,
    ) -> dict[str, np.ndarray]:
        """Trains this shard's models on random subsets of the train pool; returns in/out sums."""
        cfg = _config(info, memscore, seed, device, progress)
        ids = shard_model_ids(cfg.m, self.n_shards, self.shard)
        x, y = _pool(arrays, splits)
        arch_kwargs = {"mean": info["mean"], "std": info["std"]} if info["kind"] == "image" else None
        stats = estimate_shard(x, y, ids, cfg, num_classes=info["num_classes"], arch_kwargs=arch_kwargs)
        log.info("memscore shard %d/%d: models %d-%d in %.1fs", self.shard + 1, self.n_shards, ids[0], ids[-1], stats.seconds)
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
    _, labels = _pool(arrays, splits)
    table = scores_table(stats, labels)
    log.info("memscore: %d models, %.1fs of training in all", len(stats.model_ids), stats.seconds)
    return table


def import_memscores(arrays: dict[str, np.ndarray], splits: dict[str, np.ndarray], memscore: dict[str, Any]) -> pd.DataFrame:
    """Reads precomputed scores in the reference format instead of estimating them."""
    _, labels = _pool(arrays, splits)
    return import_reference_csv(memscore["import_csv"], labels)


def summarise_memscores(
    table: pd.DataFrame, info: dict[str, Any], memscore: dict[str, Any]
) -> tuple[dict[str, Any], Figure]:
    """Distribution summary (quantiles, ties, share above the dataset's τ) and its plot."""
    score = table["score"].to_numpy()
    tau = float(info["defense_defaults"].get("tau", 0.5))
    summary = {
        "dataset": info["name"],
        "n": int(score.size),
        "m": int(memscore.get("m", 0)),
        "estimator": memscore.get("estimator"),
        "imported": bool(memscore.get("import_csv")),
        "raw": table["raw_score"].describe().to_dict(),
        "score": table["score"].describe().to_dict(),
        "share_exactly_0": float(np.mean(score == 0)),
        "share_exactly_1": float(np.mean(score == 1)),
        "tau": tau,
        "share_at_or_above_tau": float(np.mean(score >= tau)),
        "min_n_in": int(table["n_in"].min()),
        "min_n_out": int(table["n_out"].min()),
    }
    log.info("memscore %s: median %.3f, %.1f%% ≥ τ=%.2f, %.1f%% exactly 0", info["name"],
             summary["score"]["50%"], 100 * summary["share_at_or_above_tau"], tau, 100 * summary["share_exactly_0"])
    return summary, plot_score_distribution(table, title=f"{info['name']}: memorisation scores")
