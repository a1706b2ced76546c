"""Which models train on what: the model ids of a shard, each model's seed and its random subset.

Model ``j``'s subset and seed depend only on ``(seed, j)``, so the ``m`` models can be split into
shards, and shards into chunks, in any way: the merged statistics equal one unsharded run.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["shard_model_ids", "model_seed", "subset_mask"]


def shard_model_ids(m: int, n_shards: int, shard: int) -> list[int]:
    """The model ids of one shard: ``m`` models split into ``n_shards`` contiguous blocks."""
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard} is outside 0..{n_shards - 1}")
    bounds = np.linspace(0, m, n_shards + 1).round().astype(int)
    return list(range(bounds[shard], bounds[shard + 1]))


def model_seed(seed: int, model_id: int) -> int:
    """Model ``model_id``'s own seed (initial weights, batch order, dropout masks)."""
    return int(np.random.SeedSequence([seed, model_id]).generate_state(1)[0])


def subset_mask(n: int, fraction: float, seed: int, model_id: int) -> np.ndarray:
    """Boolean (n,) mask of the samples model ``model_id`` trains on."""
    k = int(math.floor(fraction * n))
    rng = np.random.default_rng([seed, model_id])
    mask = np.zeros(n, dtype=bool)
    mask[rng.choice(n, size=k, replace=False)] = True
    return mask
