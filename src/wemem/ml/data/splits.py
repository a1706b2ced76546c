"""The reference split protocol (SPEC §2): train/test pools, victim and attack halves, and each
model's train/dev/test indices."""

from __future__ import annotations

import math

import numpy as np

from .raw import DataError

__all__ = ["make_splits", "split_sizes"]


def _floor(n: int, frac: float) -> int:
    # small epsilon so that e.g. 0.8 * 5010 = 4008.0000000000005 or 4007.9999999 floors to 4008
    return int(math.floor(n * frac + 1e-9))


def _check_fraction(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) \
            or not 0.0 < float(value) < 1.0:
        raise DataError(f"{name} must be a number strictly between 0 and 1, got {value!r}.")
    return float(value)


def _model_split(half: np.ndarray, test_pool: np.ndarray, seed: int, member_fraction: float,
                 dev_fraction: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    perm = rng.permutation(half)
    m = _floor(len(perm), member_fraction)
    train, held_out = perm[:m], perm[m:]
    union = rng.permutation(np.concatenate([held_out, test_pool]))
    d = _floor(len(union), dev_fraction)
    return train, union[:d], union[d:]


def make_splits(labels: np.ndarray, *, test_mask: np.ndarray | None, seed: int, n_shadows: int,
                train_pool_fraction: float = 0.8, victim_fraction: float = 0.5,
                member_fraction: float = 0.9, dev_fraction: float = 0.34) -> dict[str, np.ndarray]:
    """Reference split protocol (SPEC §2) as int64 index arrays into the dataset rows.

    Keys: ``train_pool``, ``test_pool``, ``victim_half``, ``attack_half``, ``victim/train``,
    ``victim/dev``, ``victim/test`` and ``shadow_<i>/train|dev|test`` for i < n_shadows.
    The victim's own split uses ``default_rng(seed)``, shadow ``i`` uses ``default_rng(seed+1+i)``.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise DataError(f"labels must be 1-D, got shape {labels.shape}.")
    n = int(labels.shape[0])
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise DataError(f"seed must be an integer, got {seed!r}.")
    if isinstance(n_shadows, bool) or not isinstance(n_shadows, (int, np.integer)) or n_shadows < 1:
        raise DataError(f"n_shadows must be an integer >= 1, got {n_shadows!r}.")
    train_pool_fraction = _check_fraction("train_pool_fraction", train_pool_fraction)
    victim_fraction = _check_fraction("victim_fraction", victim_fraction)
    member_fraction = _check_fraction("member_fraction", member_fraction)
    dev_fraction = _check_fraction("dev_fraction", dev_fraction)
    seed = int(seed)

    rng = np.random.default_rng(seed)
    if test_mask is None:
        perm = rng.permutation(n).astype(np.int64)
        k = _floor(n, train_pool_fraction)
        train_pool, test_pool = perm[:k], perm[k:]
    else:
        test_mask = np.asarray(test_mask)
        if test_mask.dtype != bool or test_mask.shape != (n,):
            raise DataError(f"test_mask must be a bool array of shape ({n},), got "
                            f"{test_mask.dtype} {test_mask.shape}.")
        train_pool = rng.permutation(np.flatnonzero(~test_mask).astype(np.int64))
        test_pool = rng.permutation(np.flatnonzero(test_mask).astype(np.int64))
    shuffled = rng.permutation(train_pool)
    h = _floor(len(shuffled), victim_fraction)
    victim_half, attack_half = shuffled[:h], shuffled[h:]

    splits: dict[str, np.ndarray] = {
        "train_pool": train_pool,
        "test_pool": test_pool,
        "victim_half": victim_half,
        "attack_half": attack_half,
    }
    models = [("victim", victim_half, seed)]
    models += [(f"shadow_{i}", attack_half, seed + 1 + i) for i in range(int(n_shadows))]
    for prefix, half, model_seed in models:
        tr, dev, te = _model_split(half, test_pool, model_seed, member_fraction, dev_fraction)
        splits[f"{prefix}/train"], splits[f"{prefix}/dev"], splits[f"{prefix}/test"] = tr, dev, te
    splits = {k: np.ascontiguousarray(v, dtype=np.int64) for k, v in splits.items()}

    n_classes = int(np.unique(labels).size)
    empty = [k for k, v in splits.items() if v.size == 0]
    if empty:
        raise DataError(f"too few samples ({n}) for the requested splits: {', '.join(empty)} "
                        f"would be empty (sizes: {split_sizes(splits)}). Use more data or other "
                        f"fractions.")
    for prefix, _, _ in models:
        size = splits[f"{prefix}/train"].size
        if size < n_classes:
            raise DataError(f"too few samples for the requested splits: {prefix}/train would "
                            f"hold {size} samples but the data has {n_classes} classes (n={n}, "
                            f"sizes: {split_sizes(splits)}).")
    return splits


def split_sizes(splits: dict[str, np.ndarray]) -> dict[str, int]:
    """``{key: number of indices}`` for a dict returned by :func:`make_splits`."""
    return {k: int(len(v)) for k, v in splits.items()}
