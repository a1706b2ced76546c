"""The estimator on a run's data: the train pool of the dataset arrays and splits, one shard of
its models, and the summary of its score table (what the memscore nodes call)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from ..ranking import risk_threshold
from .estimator import ShardStats, estimate_shard
from .sampling import shard_model_ids
from .settings import MemScoreSettings

__all__ = ["train_pool", "estimate_pool_shard", "summarise_scores"]

log = logging.getLogger(__name__)


def train_pool(arrays: dict[str, np.ndarray], splits: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of the train pool: the samples the scores are for, in pool order."""
    rows = splits["train_pool"]
    return arrays["features"][rows], arrays["labels"][rows]


def estimate_pool_shard(
    arrays: dict[str, np.ndarray],
    splits: dict[str, np.ndarray],
    info: dict[str, Any],
    settings: MemScoreSettings,
    shard: int,
    n_shards: int,
    *,
    arch: str,
    seed: int,
    device: str = "auto",
    progress: bool = True,
) -> ShardStats:
    """Shard ``shard`` of ``n_shards`` of the ``settings.m`` models, trained on random subsets of
    the train pool (``info`` describes the data: classes, kind, image normalisation)."""
    ids = shard_model_ids(settings.m, n_shards, shard)
    x, y = train_pool(arrays, splits)
    arch_kwargs = {"mean": info["mean"], "std": info["std"]} if info["kind"] == "image" else None
    stats = estimate_shard(x, y, ids, settings, arch=arch, seed=int(seed), device=device, progress=bool(progress),
                           num_classes=info["num_classes"], arch_kwargs=arch_kwargs)
    log.info("memscore shard %d/%d: models %d-%d in %.1fs", shard + 1, n_shards, ids[0], ids[-1], stats.seconds)
    return stats


def summarise_scores(
    table: pd.DataFrame, dataset: str, settings: MemScoreSettings, tau: float, tau_mode: str = "value"
) -> dict[str, Any]:
    """Distribution summary of a score table: quantiles, ties, the share at or above ``tau``,
    and what the dataset's default τ flags as risky (``flagged_share``, and the score
    ``threshold`` it amounts to: τ itself, or with ``tau_mode="fraction"`` the lowest flagged
    score)."""
    score = table["score"].to_numpy()
    tau = float(tau)
    flagged, threshold = risk_threshold(score, tau, tau_mode)
    summary = {
        "dataset": dataset,
        "n": int(score.size),
        "m": int(settings.m),
        "estimator": settings.estimator,
        "imported": bool(settings.import_csv),
        "raw": table["raw_score"].describe().to_dict(),
        "score": table["score"].describe().to_dict(),
        "share_exactly_0": float(np.mean(score == 0)),
        "share_exactly_1": float(np.mean(score == 1)),
        "tau": tau,
        "share_at_or_above_tau": float(np.mean(score >= tau)),
        "tau_mode": tau_mode,
        "threshold": threshold,
        "flagged_share": float(flagged.mean()) if flagged.size else 0.0,
        "n_flagged": int(flagged.sum()),
        "min_n_in": int(table["n_in"].min()),
        "min_n_out": int(table["n_out"].min()),
    }
    log.info("memscore %s: median %.3f; τ=%.3g (%s) flags %.1f%% (%d samples, score ≥ %.3f); %.1f%% exactly 0",
             dataset, summary["score"]["50%"], tau, tau_mode, 100 * summary["flagged_share"], summary["n_flagged"],
             threshold, 100 * summary["share_exactly_0"])
    return summary
