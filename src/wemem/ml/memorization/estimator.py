"""The estimator: per-sample in/out statistics of a shard's models, their merge, the score table.

``mem(x_i) = P[f_S(x_i) = y_i | i ∈ S] − P[f_S(x_i) = y_i | i ∉ S]``. Two estimators are read
off the same trained models: ``correctness`` (0/1, Feldman & Zhang) and ``probability`` (mean
true-class probability in vs out: smoother, breaks ties).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..models import build_model
from ..train import TrainConfig, fit, predict_proba, resolve_device, to_tensors
from .ensemble import chunk_size, pool_csr, train_chunk
from .sampling import model_seed, subset_mask
from .settings import ESTIMATORS, MemScoreSettings

__all__ = [
    "TABLE_COLUMNS",
    "ShardStats",
    "estimate_shard",
    "estimate_all",
    "train_single",
    "accumulate",
    "empty_stats",
    "merge_shards",
    "scores_table",
]

log = logging.getLogger(__name__)

TABLE_COLUMNS = ["index", "label", "raw_score", "score", "n_in", "n_out"]


@dataclass
class ShardStats:
    """Per-sample sums of one shard (or a merge of shards)."""

    in_sum: np.ndarray
    in_count: np.ndarray
    out_sum: np.ndarray
    out_count: np.ndarray
    model_ids: list[int] = field(default_factory=list)
    epochs_run: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, np.ndarray]:
        return {
            "in_sum": self.in_sum,
            "in_count": self.in_count,
            "out_sum": self.out_sum,
            "out_count": self.out_count,
            "model_ids": np.asarray(self.model_ids, dtype=np.int64),
            "epochs_run": np.asarray(self.epochs_run, dtype=np.int64),
            "seconds": np.asarray([self.seconds]),
        }

    @classmethod
    def from_dict(cls, d: dict[str, np.ndarray]) -> ShardStats:
        return cls(
            in_sum=np.asarray(d["in_sum"], dtype=np.float64),
            in_count=np.asarray(d["in_count"], dtype=np.int64),
            out_sum=np.asarray(d["out_sum"], dtype=np.float64),
            out_count=np.asarray(d["out_count"], dtype=np.int64),
            model_ids=[int(i) for i in np.asarray(d["model_ids"]).ravel()],
            epochs_run=[int(i) for i in np.asarray(d["epochs_run"]).ravel()],
            seconds=float(np.asarray(d.get("seconds", [0.0])).ravel()[0]),
        )


def accumulate(stats: ShardStats, member: np.ndarray, value: np.ndarray) -> None:
    """Adds one model's per-sample values to the in sums (its members) or the out sums (the rest)."""
    stats.in_sum += np.where(member, value, 0.0)
    stats.in_count += member
    stats.out_sum += np.where(member, 0.0, value)
    stats.out_count += ~member


def empty_stats(n: int) -> ShardStats:
    """Zero sums for a pool of ``n`` samples."""
    return ShardStats(np.zeros(n), np.zeros(n, dtype=np.int64), np.zeros(n), np.zeros(n, dtype=np.int64))


def _signals(probs: torch.Tensor, y: torch.Tensor) -> dict[str, np.ndarray]:
    """Both estimators' per-sample values from one model's pool probabilities."""
    return {
        "correctness": (probs.argmax(1) == y).double().cpu().numpy(),
        "probability": probs.gather(1, y[:, None]).squeeze(1).double().cpu().numpy(),
    }


def train_single(x: torch.Tensor, y: torch.Tensor, model_id: int, settings: MemScoreSettings, *, arch: str,
                 seed: int, num_classes: int, arch_kwargs: dict) -> tuple[np.ndarray, dict[str, np.ndarray], int]:
    """Model ``model_id`` trained alone with :func:`train.fit` for all epochs (the path of models
    that are not MLPs); returns (its subset mask, {estimator: per-sample value}, epochs run)."""
    n = x.shape[0]
    member = subset_mask(n, settings.subset_fraction, seed, model_id)
    own_seed = model_seed(seed, model_id)
    torch.manual_seed(own_seed)
    model = build_model(arch, tuple(x.shape[1:]), num_classes, **arch_kwargs).to(x.device)
    idx = torch.as_tensor(np.flatnonzero(member), device=x.device)
    tcfg = TrainConfig(epochs=settings.epochs, batch_size=settings.batch_size, lr=settings.lr,
                       weight_decay=settings.weight_decay, patience=None, seed=own_seed, progress=False,
                       desc=f"memscore model {model_id}")
    res = fit(model, (x[idx], y[idx]), None, tcfg)
    probs = predict_proba(model, x)
    return member, _signals(probs, y), res.epochs_run


def _is_mlp(arch: str) -> bool:
    return arch == "column_fc"


def estimate_all(
    features: np.ndarray,
    labels: np.ndarray,
    model_ids: Sequence[int],
    settings: MemScoreSettings,
    *,
    arch: str,
    seed: int,
    device: str = "auto",
    progress: bool = True,
    num_classes: int | None = None,
    arch_kwargs: dict | None = None,
) -> dict[str, ShardStats]:
    """:func:`estimate_shard` for both estimators at once (the models are the same)."""
    start = time.perf_counter()
    dev = resolve_device(device)
    num_classes = int(num_classes or int(np.max(labels)) + 1)
    x, y = to_tensors(features, labels, dev)
    stats = {e: empty_stats(x.shape[0]) for e in ESTIMATORS}
    model_ids = list(model_ids)
    epochs_run: list[int] = []
    mlp_kwargs = dict(arch_kwargs or {})
    if _is_mlp(arch) and set(mlp_kwargs) <= {"hidden", "dropout"}:
        xf = x.float().reshape(x.shape[0], -1)
        csr = pool_csr(xf, settings, dev)
        hidden = tuple(mlp_kwargs.get("hidden", (256, 128)))
        size = chunk_size(settings, dev, xf.shape[1], len(model_ids), hidden)
        log.info("memscore: %d models, stacked MLP ensemble in chunks of %d on %s, %s first layer",
                 len(model_ids), size, dev, "sparse" if csr is not None else "dense")
        for c in range(0, len(model_ids), size):
            chunk = model_ids[c : c + size]
            members, signals, epochs = train_chunk(xf, y, chunk, settings, seed=seed, num_classes=num_classes,
                                                   csr=csr, progress=progress, **mlp_kwargs)
            for e in ESTIMATORS:
                for member, value in zip(members, signals[e]):
                    accumulate(stats[e], member, value)
            epochs_run += epochs
    else:
        for j in tqdm(model_ids, desc="memscore models", disable=None if progress else True, leave=False):
            member, signals, epochs = train_single(x, y, j, settings, arch=arch, seed=seed, num_classes=num_classes,
                                                   arch_kwargs=arch_kwargs or {})
            for e in ESTIMATORS:
                accumulate(stats[e], member, signals[e])
            epochs_run.append(epochs)
    seconds = time.perf_counter() - start
    for s in stats.values():
        s.model_ids, s.epochs_run, s.seconds = list(model_ids), list(epochs_run), seconds
    return stats


def estimate_shard(
    features: np.ndarray,
    labels: np.ndarray,
    model_ids: Sequence[int],
    settings: MemScoreSettings,
    *,
    arch: str,
    seed: int,
    device: str = "auto",
    progress: bool = True,
    num_classes: int | None = None,
    arch_kwargs: dict | None = None,
) -> ShardStats:
    """Trains the models ``model_ids`` and returns their in/out sums for every pool sample.

    ColumnFC models train as stacked ensembles (:mod:`.ensemble`); other architectures one at a
    time with :func:`train.fit` for all ``settings.epochs``.

    Args:
        features: (n, ...) pool features (float tabular or uint8 images).
        labels: (n,) labels of the pool.
        model_ids: which of the ``settings.m`` models this shard trains.
        settings: the estimator's settings (``params:memscore``); ``settings.estimator`` picks the
            statistics returned.
        arch: the model architecture (the dataset's ``model``).
        seed: the run's seed; model ``j``'s subset, weights and batches derive from ``(seed, j)``.
        device: torch device (``auto``: CUDA when present).
        progress: show progress bars.
        num_classes: number of classes (default: max label + 1).
        arch_kwargs: extra model options (image ``mean``/``std``; ColumnFC ``hidden``/``dropout``).
    """
    return estimate_all(features, labels, model_ids, settings, arch=arch, seed=seed, device=device,
                        progress=progress, num_classes=num_classes, arch_kwargs=arch_kwargs)[settings.estimator]


def merge_shards(shards: Sequence[ShardStats]) -> ShardStats:
    """Adds the statistics of several shards; refuses overlapping model ids."""
    if not shards:
        raise ValueError("no memscore shards to merge")
    ids = [i for s in shards for i in s.model_ids]
    if len(ids) != len(set(ids)):
        raise ValueError("memscore shards overlap: a model id appears in two shards")
    n = {s.in_sum.shape[0] for s in shards}
    if len(n) != 1:
        raise ValueError(f"memscore shards disagree on the pool size: {sorted(n)}")
    return ShardStats(
        in_sum=sum(s.in_sum for s in shards),
        in_count=sum(s.in_count for s in shards),
        out_sum=sum(s.out_sum for s in shards),
        out_count=sum(s.out_count for s in shards),
        model_ids=sorted(ids),
        epochs_run=[e for s in shards for e in s.epochs_run],
        seconds=sum(s.seconds for s in shards),
    )


def _minmax(values: np.ndarray) -> np.ndarray:
    lo, hi = np.nanmin(values), np.nanmax(values)
    if not np.isfinite(lo) or hi - lo <= 0:
        return np.zeros_like(values)
    return (values - lo) / (hi - lo)


def scores_table(stats: ShardStats, labels: np.ndarray) -> pd.DataFrame:
    """The score table: index into the pool, label, raw score, [0,1] score, n_in, n_out.

    A sample that no model left out (or every model left out) has no estimate: its raw score is
    NaN and its normalised score 0 (it is never flagged as risky); ``n_in``/``n_out`` show it.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        raw = stats.in_sum / stats.in_count - stats.out_sum / stats.out_count
    missing = ~np.isfinite(raw)
    if missing.any():
        log.warning("memscore: %d samples lack in- or out-models (raise m); their score is set to 0", missing.sum())
    norm = _minmax(np.where(missing, np.nan, raw))
    norm = np.where(missing, 0.0, norm)
    return pd.DataFrame({
        "index": np.arange(raw.size, dtype=np.int64),
        "label": np.asarray(labels, dtype=np.int64),
        "raw_score": raw,
        "score": norm,
        "n_in": stats.in_count.astype(np.int64),
        "n_out": stats.out_count.astype(np.int64),
    })[TABLE_COLUMNS]
