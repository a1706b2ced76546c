"""Feldman–Zhang memorisation scores by subsampling (SPEC §4).

``mem(x_i) = P[f_S(x_i) = y_i | i ∈ S] − P[f_S(x_i) = y_i | i ∉ S]`` is estimated by training
``m`` models on random subsets ``S`` holding a fraction ``r`` of the pool. Model ``j``'s subset,
initial weights, batch order and dropout masks depend only on ``(seed, j)``, so the ``m`` models
can be split into shards in any way and the merged statistics equal one unsharded run.

Two estimators: ``correctness`` (0/1, Feldman & Zhang) and ``probability`` (mean true-class
probability in vs out: smoother, breaks ties).

Speed, each trick named (see ``benchmarks/memscore_speed.py`` for the measured effect):
- *stacked ensemble*: MLP models train together as stacked weight tensors with batched matmuls,
  one Python step for all models — on a GPU this keeps the device busy where one small model
  leaves it idle.
- *sparse binary inputs*: where the features are mostly zeros (Location: 88%), the first layer is
  an ``embedding_bag`` sum over the non-zero features instead of a dense matmul, cutting the
  dominant layer's arithmetic by the density.
- *convergence stop*: a model stops once its running training accuracy on its subset has reached
  ``converge_acc`` for ``converge_patience`` epochs; stopped models leave the stack, so later
  steps do less work.
Models that are not MLPs (image models) are trained one at a time with :func:`train.fit`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .models import build_model
from .train import TrainConfig, fit, predict_proba, resolve_device, to_tensors

__all__ = [
    "ESTIMATORS",
    "MemScoreConfig",
    "ShardStats",
    "shard_model_ids",
    "subset_mask",
    "estimate_shard",
    "baseline_loop",
    "merge_shards",
    "scores_table",
    "import_reference_csv",
    "export_reference_csv",
]

log = logging.getLogger(__name__)

ESTIMATORS = ("correctness", "probability")
TABLE_COLUMNS = ["index", "label", "raw_score", "score", "n_in", "n_out"]


@dataclass
class MemScoreConfig:
    """Settings of the subsampling estimator (all from parameters)."""

    m: int = 64
    subset_fraction: float = 0.7
    epochs: int = 30
    estimator: str = "correctness"
    seed: int = 0
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 5e-4
    arch: str = "column_fc"
    device: str = "auto"
    models_per_chunk: int = 64
    sparse_threshold: float = 0.25
    converge_acc: float | None = 0.995
    converge_patience: int = 2
    progress: bool = True

    def __post_init__(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"memscore estimator {self.estimator!r} unknown; use one of {ESTIMATORS}")
        if self.m < 2:
            raise ValueError(f"memscore m={self.m}: at least 2 models are needed")
        if not 0.0 < self.subset_fraction < 1.0:
            raise ValueError(f"memscore subset_fraction={self.subset_fraction} must lie in (0, 1)")


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


def shard_model_ids(m: int, n_shards: int, shard: int) -> list[int]:
    """The model ids of one shard: ``m`` models split into ``n_shards`` contiguous blocks."""
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard} is outside 0..{n_shards - 1}")
    bounds = np.linspace(0, m, n_shards + 1).round().astype(int)
    return list(range(bounds[shard], bounds[shard + 1]))


def _model_seed(seed: int, model_id: int) -> int:
    return int(np.random.SeedSequence([seed, model_id]).generate_state(1)[0])


def subset_mask(n: int, fraction: float, seed: int, model_id: int) -> np.ndarray:
    """Boolean (n,) mask of the samples model ``model_id`` trains on."""
    k = int(math.floor(fraction * n))
    rng = np.random.default_rng([seed, model_id])
    mask = np.zeros(n, dtype=bool)
    mask[rng.choice(n, size=k, replace=False)] = True
    return mask


def _accumulate(stats: ShardStats, member: np.ndarray, value: np.ndarray) -> None:
    stats.in_sum += np.where(member, value, 0.0)
    stats.in_count += member
    stats.out_sum += np.where(member, 0.0, value)
    stats.out_count += ~member


def _empty_stats(n: int) -> ShardStats:
    return ShardStats(np.zeros(n), np.zeros(n, dtype=np.int64), np.zeros(n), np.zeros(n, dtype=np.int64))


def _signal(probs: torch.Tensor, y: torch.Tensor, estimator: str) -> np.ndarray:
    if estimator == "correctness":
        value = (probs.argmax(1) == y).double()
    else:
        value = probs.gather(1, y[:, None]).squeeze(1).double()
    return value.cpu().numpy()


# --------------------------------------------------------------------------------------------
# stacked MLP ensemble
# --------------------------------------------------------------------------------------------


class _SparseRows:
    """Padded non-zero (index, value) lists of each row of a mostly-zero feature matrix."""

    def __init__(self, x: torch.Tensor) -> None:
        nz = x != 0
        k = max(int(nz.sum(1).max().item()), 1)
        # stable sort puts the non-zero columns of every row first, in column order
        order = torch.sort(nz.to(torch.int8), dim=1, descending=True, stable=True).indices[:, :k]
        self.idx = order.contiguous()
        self.val = torch.gather(x.float(), 1, order).contiguous()  # zeros where padded
        self.width = x.shape[1]


class _StackedMLP:
    """ColumnFC models stacked along a leading model dimension, with a stacked Adam."""

    def __init__(self, params: list[torch.Tensor], dropout: float) -> None:
        self.params = [p.requires_grad_(True) for p in params]
        self.exp_avg = [torch.zeros_like(p) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]
        self.step_count = 0
        self.dropout = dropout

    @staticmethod
    def init(model_seeds: Sequence[int], in_features: int, hidden: Sequence[int], num_classes: int,
             device: torch.device) -> list[torch.Tensor]:
        sizes = [in_features, *hidden, num_classes]
        per_model = []
        for s in model_seeds:
            g = torch.Generator().manual_seed(s)
            tensors = []
            for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
                bound = 1.0 / math.sqrt(fan_in)
                tensors.append((torch.rand(fan_in, fan_out, generator=g) * 2 - 1) * bound)
                tensors.append((torch.rand(fan_out, generator=g) * 2 - 1) * bound)
            per_model.append(tensors)
        return [torch.stack(ts).to(device) for ts in zip(*per_model)]

    def keep(self, rows: torch.Tensor) -> None:
        """Keeps only the models at ``rows`` (drops converged ones), optimiser state included."""
        self.params = [p.detach()[rows].requires_grad_(True) for p in self.params]
        self.exp_avg = [t[rows] for t in self.exp_avg]
        self.exp_avg_sq = [t[rows] for t in self.exp_avg_sq]

    def forward(self, xb: torch.Tensor | tuple[torch.Tensor, torch.Tensor, int], drop_masks=None) -> torch.Tensor:
        w1, b1, w2, b2, w3, b3 = self.params
        if isinstance(xb, tuple):  # sparse rows: (idx (M,B,K), val (M,B,K), width)
            idx, val, width = xb
            n_models, batch, k = idx.shape
            offs = (torch.arange(n_models, device=idx.device) * width).view(-1, 1, 1)
            flat_w = w1.reshape(n_models * width, -1)
            h = F.embedding_bag((idx + offs).reshape(-1, k), flat_w, per_sample_weights=val.reshape(-1, k), mode="sum")
            h = h.view(n_models, batch, -1) + b1[:, None, :]
        else:
            h = torch.baddbmm(b1[:, None, :], xb, w1)
        h = F.relu(h)
        if drop_masks is not None:
            h = h * drop_masks[0]
        h = F.relu(torch.baddbmm(b2[:, None, :], h, w2))
        if drop_masks is not None:
            h = h * drop_masks[1]
        return torch.baddbmm(b3[:, None, :], h, w3)

    @torch.no_grad()
    def adam_step(self, lr: float, weight_decay: float, betas=(0.9, 0.999), eps: float = 1e-8) -> None:
        self.step_count += 1
        b1, b2 = betas
        c1 = 1 - b1**self.step_count
        c2 = 1 - b2**self.step_count
        for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq):
            g = p.grad.add(p, alpha=weight_decay) if weight_decay else p.grad
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            p.addcdiv_(m, (v / c2).sqrt_().add_(eps), value=-lr / c1)
            p.grad = None


def _dropout_masks(gen_seed: int, model_ids: torch.Tensor, m_total: int, batch: int, hidden: Sequence[int],
                   p: float, device: torch.device) -> list[torch.Tensor]:
    """Dropout masks that depend only on (seed, step, model id), never on which models share a chunk."""
    masks = []
    for layer, h in enumerate(hidden):
        g = torch.Generator(device=device).manual_seed(gen_seed + layer)
        full = torch.rand(m_total, batch, h, generator=g, device=device)
        masks.append((full[model_ids] >= p).float() / (1 - p))
    return masks


def _train_chunk(
    x: torch.Tensor,
    y: torch.Tensor,
    model_ids: list[int],
    cfg: MemScoreConfig,
    num_classes: int,
    sparse: _SparseRows | None,
    hidden: Sequence[int] = (256, 128),
    dropout: float = 0.1,
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Trains one chunk of stacked models; returns (members (M,n), signal (M,n), epochs run)."""
    device = x.device
    n = x.shape[0]
    n_models = len(model_ids)
    seeds = [_model_seed(cfg.seed, j) for j in model_ids]
    members = np.stack([subset_mask(n, cfg.subset_fraction, cfg.seed, j) for j in model_ids])
    subsets = torch.as_tensor(np.stack([np.flatnonzero(m) for m in members]), device=device)
    k = subsets.shape[1]
    net = _StackedMLP(_StackedMLP.init(seeds, x.shape[1], hidden, num_classes, device), dropout)
    gens = [torch.Generator(device=device).manual_seed(s) for s in seeds]
    active = torch.arange(n_models, device=device)  # positions in this chunk still training
    ids_t = torch.as_tensor(model_ids, device=device)
    epochs_run = [cfg.epochs] * n_models
    streak = torch.zeros(n_models, dtype=torch.long, device=device)
    finished: dict[int, list[torch.Tensor]] = {}
    steps = math.ceil(k / cfg.batch_size)
    bar = tqdm(range(cfg.epochs), desc=f"memscore models {model_ids[0]}-{model_ids[-1]}",
               disable=not cfg.progress, leave=False, dynamic_ncols=True)
    for epoch in bar:
        if active.numel() == 0:
            break
        perms = torch.stack([torch.randperm(k, generator=gens[int(i)], device=device) for i in active.tolist()])
        order = torch.gather(subsets[active], 1, perms)
        correct = torch.zeros(active.numel(), device=device)
        for b in range(steps):
            idx = order[:, b * cfg.batch_size : (b + 1) * cfg.batch_size]
            step_seed = _model_seed(cfg.seed, 1_000_003 * (epoch + 1) + b)
            masks = _dropout_masks(step_seed, ids_t[active], max(model_ids) + 1, idx.shape[1], hidden, dropout, device) if dropout else None
            if sparse is not None:
                xb = (sparse.idx[idx], sparse.val[idx], sparse.width)
            else:
                xb = x[idx]
            logits = net.forward(xb, masks)
            yb = y[idx]
            loss = F.cross_entropy(logits.reshape(-1, num_classes), yb.reshape(-1), reduction="none")
            loss.view(idx.shape).mean(1).sum().backward()
            net.adam_step(cfg.lr, cfg.weight_decay)
            correct += (logits.detach().argmax(2) == yb).float().sum(1)
        if cfg.converge_acc is None:
            continue
        acc = correct / k
        streak = torch.where(acc >= cfg.converge_acc, streak + 1, torch.zeros_like(streak))
        done = streak >= cfg.converge_patience
        if bool(done.any()):
            for pos in torch.nonzero(done).flatten().tolist():
                i = int(active[pos])
                finished[i] = [p.detach()[pos].clone() for p in net.params]
                epochs_run[i] = epoch + 1
            keep = torch.nonzero(~done).flatten()
            net.keep(keep)
            active, streak = active[keep], streak[keep]
        bar.set_postfix(active=int(active.numel()))
    bar.close()
    for pos, i in enumerate(active.tolist()):
        finished[i] = [p.detach()[pos] for p in net.params]
    # evaluation of every model on the whole pool, in eval mode (no dropout)
    params = [torch.stack([finished[i][t] for i in range(n_models)]) for t in range(len(net.params))]
    evaluator = _StackedMLP([p.detach() for p in params], dropout)
    signal = np.empty((n_models, n), dtype=np.float64)
    with torch.no_grad():
        for start in range(0, n, 4096):
            rows = torch.arange(start, min(start + 4096, n), device=device)
            if sparse is not None:
                xb = (sparse.idx[rows].expand(n_models, -1, -1), sparse.val[rows].expand(n_models, -1, -1), sparse.width)
            else:
                xb = x[rows].float().expand(n_models, -1, -1)
            probs = torch.softmax(evaluator.forward(xb).float(), dim=2)
            yb = y[rows]
            for j in range(n_models):
                signal[j, start : start + rows.numel()] = _signal(probs[j], yb, cfg.estimator)
    return members, signal, epochs_run


def _train_single(x: torch.Tensor, y: torch.Tensor, model_id: int, cfg: MemScoreConfig, num_classes: int,
                  arch_kwargs: dict) -> tuple[np.ndarray, np.ndarray, int]:
    """One model trained with the shared loop (used for non-MLP models and the baseline)."""
    n = x.shape[0]
    member = subset_mask(n, cfg.subset_fraction, cfg.seed, model_id)
    seed = _model_seed(cfg.seed, model_id)
    torch.manual_seed(seed)
    model = build_model(cfg.arch, tuple(x.shape[1:]), num_classes, **arch_kwargs).to(x.device)
    idx = torch.as_tensor(np.flatnonzero(member), device=x.device)
    tcfg = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
                       patience=None, seed=seed, progress=False, desc=f"memscore model {model_id}")
    res = fit(model, (x[idx], y[idx]), None, tcfg)
    probs = predict_proba(model, x)
    return member, _signal(probs, y, cfg.estimator), res.epochs_run


def _is_mlp(arch: str) -> bool:
    return arch == "column_fc"


def estimate_shard(
    features: np.ndarray,
    labels: np.ndarray,
    model_ids: Sequence[int],
    cfg: MemScoreConfig,
    num_classes: int | None = None,
    arch_kwargs: dict | None = None,
) -> ShardStats:
    """Trains the models ``model_ids`` and returns their in/out sums for every pool sample.

    Args:
        features: (n, ...) pool features (float tabular or uint8 images).
        labels: (n,) labels of the pool.
        model_ids: which of the ``cfg.m`` models this shard trains.
        cfg: estimator settings.
        num_classes: number of classes (default: max label + 1).
        arch_kwargs: extra model options (e.g. image ``mean``/``std``).
    """
    start = time.perf_counter()
    device = resolve_device(cfg.device)
    num_classes = int(num_classes or int(np.max(labels)) + 1)
    x, y = to_tensors(features, labels, device)
    stats = _empty_stats(x.shape[0])
    model_ids = list(model_ids)
    if _is_mlp(cfg.arch) and not arch_kwargs:
        xf = x.float()
        density = float((xf != 0).float().mean().item())
        sparse = _SparseRows(xf) if density < cfg.sparse_threshold else None
        log.info("memscore: %d models, stacked MLP ensemble, input density %.3f (%s first layer)",
                 len(model_ids), density, "sparse" if sparse is not None else "dense")
        for c in range(0, len(model_ids), cfg.models_per_chunk):
            chunk = model_ids[c : c + cfg.models_per_chunk]
            members, signal, epochs = _train_chunk(xf, y, chunk, cfg, num_classes, sparse)
            for member, value in zip(members, signal):
                _accumulate(stats, member, value)
            stats.epochs_run += epochs
    else:
        for j in tqdm(model_ids, desc="memscore models", disable=not cfg.progress, leave=False):
            member, value, epochs = _train_single(x, y, j, cfg, num_classes, arch_kwargs or {})
            _accumulate(stats, member, value)
            stats.epochs_run.append(epochs)
    stats.model_ids = model_ids
    stats.seconds = time.perf_counter() - start
    return stats


def baseline_loop(features: np.ndarray, labels: np.ndarray, cfg: MemScoreConfig,
                  num_classes: int | None = None) -> ShardStats:
    """The plain reference: ``m`` models one after another, dense inputs, all epochs."""
    start = time.perf_counter()
    device = resolve_device(cfg.device)
    num_classes = int(num_classes or int(np.max(labels)) + 1)
    x, y = to_tensors(features, labels, device)
    stats = _empty_stats(x.shape[0])
    for j in tqdm(range(cfg.m), desc="baseline models", disable=not cfg.progress, leave=False):
        member, value, epochs = _train_single(x.float(), y, j, cfg, num_classes, {})
        _accumulate(stats, member, value)
        stats.epochs_run.append(epochs)
    stats.model_ids = list(range(cfg.m))
    stats.seconds = time.perf_counter() - start
    return stats


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


def import_reference_csv(path: str | Path, labels: np.ndarray) -> pd.DataFrame:
    """Reads the reference implementation's score CSV (header ``,0`` then ``index,score``).

    The file's scores are already min-max normalised; they become both ``raw_score`` and
    ``score``, with ``n_in``/``n_out`` unknown (-1).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"memscore import file {path} does not exist; set memscore.import_csv to a CSV in the reference format "
            "(header ',0', then 'index,score') or to null to estimate scores"
        )
    try:
        df = pd.read_csv(path, index_col=0)
    except Exception as exc:  # noqa: BLE001 - re-raised with the path
        raise ValueError(f"memscore import file {path} is not a readable CSV: {exc}") from exc
    if df.shape[1] != 1:
        raise ValueError(f"memscore import file {path}: expected one score column after the index, found {df.shape[1]}")
    n = len(labels)
    index = df.index.to_numpy()
    if not np.issubdtype(index.dtype, np.integer) or len(index) != n or set(index.tolist()) != set(range(n)):
        raise ValueError(
            f"memscore import file {path}: its index must cover the train pool 0..{n - 1} exactly once "
            f"(found {len(index)} rows); was it computed for another dataset or split seed?"
        )
    score = pd.to_numeric(df.iloc[:, 0], errors="coerce").to_numpy(dtype=np.float64)
    order = np.argsort(index)
    score = score[order]
    if np.isnan(score).any() or score.min() < 0 or score.max() > 1:
        raise ValueError(f"memscore import file {path}: scores must be numbers in [0, 1]")
    return pd.DataFrame({
        "index": np.arange(n, dtype=np.int64),
        "label": np.asarray(labels, dtype=np.int64),
        "raw_score": score,
        "score": score,
        "n_in": np.full(n, -1, dtype=np.int64),
        "n_out": np.full(n, -1, dtype=np.int64),
    })[TABLE_COLUMNS]


def export_reference_csv(table: pd.DataFrame, path: str | Path) -> None:
    """Writes a score table in the reference format (header ``,0``)."""
    pd.DataFrame({"0": table["score"].to_numpy()}, index=table["index"].to_numpy()).to_csv(path)
