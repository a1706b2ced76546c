"""Feldman–Zhang memorisation scores by subsampling (SPEC §4).

``mem(x_i) = P[f_S(x_i) = y_i | i ∈ S] − P[f_S(x_i) = y_i | i ∉ S]`` is estimated by training
``m`` models on random subsets ``S`` holding a fraction ``r`` of the pool. Model ``j``'s subset,
initial weights, batch order and dropout masks depend only on ``(seed, j)`` (each model has its
own generator), so the ``m`` models can be split into shards, and shards into chunks, in any way:
the merged statistics equal one unsharded run.

Two estimators: ``correctness`` (0/1, Feldman & Zhang) and ``probability`` (mean true-class
probability in vs out: smoother, breaks ties). Both are read off the same trained models.

Speed. On a CPU the plain loop (:func:`baseline_loop`: ``train.fit`` per model) is bound by
arithmetic, so time is saved by doing less of it; on a GPU small models leave the device idle
unless many train at once. Each trick is named here and measured in
``benchmarks/memscore_speed.py`` (``--ablation``; figures in ``docs/benchmarks/memscore.md``):

- *stacked ensemble*: a chunk of ColumnFC models trains as stacked weight tensors with batched
  matmuls, one Python step for the whole chunk (16 models per chunk on a CPU, where bigger
  stacks only spill the caches; up to 256 on CUDA, where it keeps the device busy). Tensors stay
  on the device; there is no per-sample Python loop.
- *fused Adam*: ``torch.optim.Adam(fused=True)`` updates the stacked tensors in one pass; an
  unfused update makes ~10 passes over every parameter and costs as much as forward + backward.
- *16-bit dropout draws*: each 64-bit random number gives four 16-bit uniforms for the dropout
  masks (drop when below ``round(p·2^16)``, so p=0.1 is 0.100006): a quarter of the generator
  calls of ``torch.rand``, no float comparison pass.
- *sparse first layer*: Location's inputs are 88% zeros. On a CPU (density below
  ``sparse_threshold``) ``X @ W1`` is an ``embedding_bag`` sum of the W1 rows of each sample's
  active features, and its weight gradient, in a custom autograd function, is the same kind of
  sum over the transposed (feature → samples) structure of the block-diagonal batch: nnz·h
  additions instead of B·d·h multiply-adds, for the layer that holds 3/4 of the arithmetic.
  (``torch.sparse.mm`` with CSR was no faster than the dense matmul on this CPU; embedding-bag
  with autograd's own backward was slower than dense.) CUDA keeps the dense first layer.
- *convergence stop*: every ``converge_every`` (2) epochs each model's eval-mode accuracy is
  measured on the first ``converge_check_rows`` (512) rows of its own random subset; a model
  that reaches ``converge_acc`` (0.99) is evaluated on the pool and leaves the stack, so later
  steps do less work. On Location (m=64, 30 epochs) the accuracy of left-out samples has
  plateaued by epoch ~12 while the fit of the subset creeps towards 1, so stopping at 99% fit
  (mean 17 epochs instead of 30) kept the Spearman correlation with the plain 30-epoch loop at
  0.94, where two 30-epoch runs with different seeds agree to 0.956. Rejected: the running
  (dropout) training accuracy (≥ 0.995 was reported to hold rarely before epoch ~28) and "few
  predictions changed since the last check" (2% of the pool still flip every 2 epochs at
  epoch 30).

Models that are not MLPs (image models) are trained one at a time with :func:`train.fit` for all
epochs.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .dropout import int16_uniforms, keep_threshold
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
FIRST_LAYERS = ("auto", "sparse", "dense")
TABLE_COLUMNS = ["index", "label", "raw_score", "score", "n_in", "n_out"]


@dataclass
class MemScoreConfig:
    """Settings of the subsampling estimator (all from parameters).

    Speed settings (MLP models only; see the module docstring):
        models_per_chunk: models trained together as one stack (None: 16 on a CPU, where a
            bigger stack only spills the caches, and up to 256 on CUDA, bounded by memory).
        first_layer: ``auto`` (sparse on a CPU when the input density is below
            ``sparse_threshold``, dense otherwise and on CUDA), ``sparse`` or ``dense``.
        converge_acc: a model stops once its eval-mode accuracy on the first
            ``converge_check_rows`` samples of its own (random) subset is at least this, checked
            every ``converge_every`` epochs (None: always train ``epochs``).
    """

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
    models_per_chunk: int | None = None
    first_layer: str = "auto"
    sparse_threshold: float = 0.25
    converge_acc: float | None = 0.99
    converge_every: int = 2
    converge_check_rows: int = 512
    progress: bool = True

    def __post_init__(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"memscore estimator {self.estimator!r} unknown; use one of {ESTIMATORS}")
        if self.m < 2:
            raise ValueError(f"memscore m={self.m}: at least 2 models are needed")
        if not 0.0 < self.subset_fraction < 1.0:
            raise ValueError(f"memscore subset_fraction={self.subset_fraction} must lie in (0, 1)")
        if self.first_layer not in FIRST_LAYERS:
            raise ValueError(f"memscore first_layer {self.first_layer!r} unknown; use one of {FIRST_LAYERS}")
        if self.models_per_chunk is not None and self.models_per_chunk < 1:
            raise ValueError(f"memscore models_per_chunk={self.models_per_chunk} must be at least 1")
        if self.converge_every < 1 or self.converge_check_rows < 1:
            raise ValueError("memscore converge_every and converge_check_rows must be at least 1")


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


def _signals(probs: torch.Tensor, y: torch.Tensor) -> dict[str, np.ndarray]:
    """Both estimators' per-sample values from one model's pool probabilities."""
    return {
        "correctness": (probs.argmax(1) == y).double().cpu().numpy(),
        "probability": probs.gather(1, y[:, None]).squeeze(1).double().cpu().numpy(),
    }


# --------------------------------------------------------------------------------------------
# stacked MLP ensemble
# --------------------------------------------------------------------------------------------



class _PoolCSR:
    """The pool's features as CSR rows (on the device), for the *sparse first layer*."""

    def __init__(self, x: torch.Tensor) -> None:
        nz = x != 0
        rows, cols = torch.nonzero(nz, as_tuple=True)
        self.n, self.d = x.shape
        self.col = cols.contiguous()
        self.rowlen = nz.sum(1)
        self.row_ptr = torch.zeros(self.n + 1, dtype=torch.long, device=x.device)
        self.row_ptr[1:] = torch.cumsum(self.rowlen, 0)
        vals = x[rows, cols].float()
        # binary inputs need no per-entry weights: embedding_bag then takes its fastest path
        self.val = None if bool((vals == 1).all()) else vals.contiguous()

    def batch(self, rows: torch.Tensor, transpose: bool = True) -> _SparseBatch:
        """The block-diagonal sparse matrix of ``rows`` (M, B): model j's rows address W1[j]."""
        n_models, bsz = rows.shape
        flat = rows.reshape(-1)
        lens = self.rowlen[flat]
        offsets = torch.cumsum(lens, 0) - lens
        total = int(offsets[-1] + lens[-1])
        row_of = torch.repeat_interleave(torch.arange(flat.numel(), device=flat.device), lens, output_size=total)
        src = torch.arange(total, device=flat.device) + (self.row_ptr[flat] - offsets)[row_of]
        key = self.col[src] + self.d * torch.div(row_of, bsz, rounding_mode="floor")
        val = self.val[src] if self.val is not None else None
        if not transpose:
            return _SparseBatch(key, offsets, val, None, None, None)
        # the transpose (CSC) for the weight gradient: entries grouped by (model, feature); the
        # stable sort keeps each group's rows in ascending order, so sums never depend on the chunk
        order = torch.sort(key.int() if n_models * self.d < 2**31 else key, stable=True).indices
        counts = torch.bincount(key, minlength=n_models * self.d)
        t_offsets = torch.cumsum(counts, 0) - counts
        t_val = val[order] if val is not None else None
        return _SparseBatch(key, offsets, val, row_of[order], t_offsets, t_val)

    def model_rows(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(index, offsets, weights) of pool rows start..stop-1 for one model's W1."""
        lo, hi = int(self.row_ptr[start]), int(self.row_ptr[stop])
        return self.col[lo:hi], self.row_ptr[start:stop] - lo, (self.val[lo:hi] if self.val is not None else None)


@dataclass
class _SparseBatch:
    idx: torch.Tensor  # (nnz,) rows of the flattened (M*d, h) first-layer weight
    offsets: torch.Tensor  # (M*B,) start of each sample's entries
    val: torch.Tensor | None
    t_idx: torch.Tensor | None  # (nnz,) rows of the flattened (M*B, h) output gradient
    t_offsets: torch.Tensor | None  # (M*d,) start of each (model, feature) group
    t_val: torch.Tensor | None


class _SparseFirstLayer(torch.autograd.Function):
    """``X @ W1`` for a block-diagonal sparse X, forward and weight gradient as embedding-bag sums.

    Forward: each output row sums the W1 rows of its active features (nnz·h additions instead of
    B·d·h multiply-adds). Backward: each W1 row's gradient sums the output-gradient rows of the
    samples where the feature is active (the same count). No gradient w.r.t. X.
    """

    @staticmethod
    def forward(ctx, w_flat: torch.Tensor, sb: _SparseBatch) -> torch.Tensor:
        ctx.sb = sb
        return F.embedding_bag(sb.idx, w_flat, sb.offsets, mode="sum", per_sample_weights=sb.val)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        sb = ctx.sb
        grad_w = F.embedding_bag(sb.t_idx, grad_out.contiguous(), sb.t_offsets, mode="sum", per_sample_weights=sb.t_val)
        return grad_w, None


class _StackedMLP:
    """ColumnFC models stacked along a leading model dimension, trained by one fused Adam."""

    def __init__(self, params: list[torch.Tensor], lr: float, weight_decay: float) -> None:
        self.lr, self.weight_decay = lr, weight_decay
        self.params = [p.detach().requires_grad_(True) for p in params]
        self.opt = self._adam(self.params)

    def _adam(self, params: list[torch.Tensor]) -> torch.optim.Optimizer:
        # *fused Adam*: one pass over the stacked tensors per step (an unfused update makes
        # ~10 passes over every parameter, as much time as the forward and backward together)
        try:
            return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay, fused=True)
        except (RuntimeError, TypeError, ValueError):  # pragma: no cover - builds without fused Adam
            return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay, foreach=True)

    @staticmethod
    def init(model_seeds: Sequence[int], in_features: int, hidden: Sequence[int], num_classes: int,
             device: torch.device) -> list[torch.Tensor]:
        """nn.Linear's default initialisation, drawn from each model's own seed."""
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
        old_state = [self.opt.state[p] for p in self.params]
        self.params = [p.detach()[rows].requires_grad_(True) for p in self.params]
        self.opt = self._adam(self.params)
        for p, st in zip(self.params, old_state):
            if st:
                self.opt.state[p] = {k: (v[rows] if k != "step" else v.clone()) for k, v in st.items()}

    def first_layer(self, xb: torch.Tensor | _SparseBatch, shape: tuple[int, int]) -> torch.Tensor:
        w1, b1 = self.params[0], self.params[1]
        if isinstance(xb, _SparseBatch):
            h = _SparseFirstLayer.apply(w1.reshape(-1, w1.shape[2]), xb).view(*shape, -1)
            return h + b1[:, None, :]
        return torch.baddbmm(b1[:, None, :], xb, w1)

    def rest(self, h: torch.Tensor, drop_masks: list[torch.Tensor] | None = None) -> torch.Tensor:
        return _mlp_rest(self.params, h, drop_masks)

    def step(self) -> None:
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)


def _mlp_rest(params: list[torch.Tensor], h: torch.Tensor, drop_masks: list[torch.Tensor] | None) -> torch.Tensor:
    """Layers after the first layer's pre-activation: ReLU, dropout, fc2, ReLU, dropout, fc3."""
    _, _, w2, b2, w3, b3 = params
    h = F.relu(h)
    if drop_masks is not None:
        h = h * drop_masks[0]
    h = F.relu(torch.baddbmm(b2[:, None, :], h, w2))
    if drop_masks is not None:
        h = h * drop_masks[1]
    return torch.baddbmm(b3[:, None, :], h, w3)


def _dropout_masks(gens: Sequence[torch.Generator], batch: int, hidden: Sequence[int], p: float,
                   device: torch.device) -> list[torch.Tensor]:
    """Inverted-dropout masks (M, batch, h) for each hidden layer, model j's from its own generator,
    with *16-bit dropout draws* (``wemem.ml.dropout``)."""
    width = sum(hidden)
    u = torch.stack([int16_uniforms(batch * width, device, g) for g in gens]).view(len(gens), batch, width)
    keep = (u >= keep_threshold(p)).to(torch.float32).mul_(1.0 / (1.0 - p))
    return list(torch.split(keep, list(hidden), dim=2))


@torch.no_grad()
def _pool_signals(net_params: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor, csr: _PoolCSR | None,
                  rows_per_pass: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode (no dropout) correctness (M, n) and true-class probability (M, n) on the pool."""
    w1, b1 = net_params[0], net_params[1]
    n_models = w1.shape[0]
    n = x.shape[0]
    correct = torch.empty(n_models, n, dtype=torch.bool, device=x.device)
    ptrue = torch.empty(n_models, n, dtype=torch.float32, device=x.device)
    for start in range(0, n, rows_per_pass):
        stop = min(start + rows_per_pass, n)
        if csr is not None:
            idx, offs, val = csr.model_rows(start, stop)
            h = torch.stack([F.embedding_bag(idx, w1[j], offs, mode="sum", per_sample_weights=val)
                             for j in range(n_models)])
        else:  # one GEMM for all models: (rows, d) @ (d, M*h)
            h = (x[start:stop] @ w1.permute(1, 0, 2).reshape(w1.shape[1], -1)).view(stop - start, n_models, -1)
            h = h.transpose(0, 1)
        logits = _mlp_rest(net_params, h + b1[:, None, :], None)
        yb = y[start:stop]
        correct[:, start:stop] = logits.argmax(2) == yb
        ptrue[:, start:stop] = torch.softmax(logits.float(), dim=2).gather(2, yb.expand(n_models, -1)[..., None])[..., 0]
    return correct, ptrue


def _store_signals(signals: dict[str, torch.Tensor], positions: list[int], params: list[torch.Tensor],
                   x: torch.Tensor, y: torch.Tensor, csr: _PoolCSR | None) -> None:
    correct, ptrue = _pool_signals(params, x, y, csr)
    at = torch.as_tensor(positions, dtype=torch.long, device=x.device)
    signals["correctness"][at] = correct.double()
    signals["probability"][at] = ptrue.double()


@torch.no_grad()
def _check_accuracy(params: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor, csr: _PoolCSR | None,
                    rows: torch.Tensor) -> torch.Tensor:
    """Eval-mode accuracy (M,) of the stacked models, model j on pool rows ``rows[j]``."""
    shape = (rows.shape[0], rows.shape[1])
    xb = csr.batch(rows, transpose=False) if csr is not None else x[rows]
    w1, b1 = params[0], params[1]
    if csr is not None:
        h = F.embedding_bag(xb.idx, w1.reshape(-1, w1.shape[2]), xb.offsets, mode="sum",
                            per_sample_weights=xb.val).view(*shape, -1) + b1[:, None, :]
    else:
        h = torch.baddbmm(b1[:, None, :], xb, w1)
    logits = _mlp_rest(params, h, None)
    return (logits.argmax(2) == y[rows]).float().mean(1)


def _train_chunk(
    x: torch.Tensor,
    y: torch.Tensor,
    model_ids: list[int],
    cfg: MemScoreConfig,
    num_classes: int,
    csr: _PoolCSR | None,
    hidden: Sequence[int] = (256, 128),
    dropout: float = 0.1,
    on_check: Callable[[int, list[int], torch.Tensor, torch.Tensor], None] | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray], list[int]]:
    """Trains one chunk of stacked models; returns (members (M,n), {estimator: signal (M,n)}, epochs run).

    ``on_check(epoch, model_ids, correct, ptrue)`` (for studies of the stop rule) is called at
    every convergence check with the active models' eval-mode pool signals.
    """
    device = x.device
    n = x.shape[0]
    n_models = len(model_ids)
    seeds = [_model_seed(cfg.seed, j) for j in model_ids]
    members = np.stack([subset_mask(n, cfg.subset_fraction, cfg.seed, j) for j in model_ids])
    subsets = torch.as_tensor(np.stack([np.flatnonzero(m) for m in members]), device=device)
    k = subsets.shape[1]
    net = _StackedMLP(_StackedMLP.init(seeds, x.shape[1], hidden, num_classes, device), cfg.lr, cfg.weight_decay)
    gens = [torch.Generator(device=device).manual_seed(s) for s in seeds]
    active = list(range(n_models))  # positions in this chunk still training
    epochs_run = [cfg.epochs] * n_models
    signals = {e: torch.empty(n_models, n, dtype=torch.float64, device=device) for e in ESTIMATORS}
    check_rows = subsets[:, : cfg.converge_check_rows]  # subsets are random, so their first rows are too
    bar = tqdm(range(cfg.epochs), desc=f"memscore models {model_ids[0]}-{model_ids[-1]}",
               disable=None if cfg.progress else True, leave=False, dynamic_ncols=True)
    for epoch in bar:
        if not active:
            break
        act_gens = [gens[i] for i in active]
        perms = torch.stack([torch.randperm(k, generator=g, device=device) for g in act_gens])
        order = torch.gather(subsets[active], 1, perms)
        epoch_loss = torch.zeros((), device=device)
        for b in range(0, k, cfg.batch_size):
            idx = order[:, b : b + cfg.batch_size]
            shape = (idx.shape[0], idx.shape[1])
            masks = _dropout_masks(act_gens, shape[1], hidden, dropout, device) if dropout else None
            xb = csr.batch(idx) if csr is not None else x[idx]
            logits = net.rest(net.first_layer(xb, shape), masks)
            loss = F.cross_entropy(logits.reshape(-1, num_classes), y[idx].reshape(-1), reduction="sum")
            (loss / shape[1]).backward()  # = the sum over models of each model's mean batch loss
            net.step()
            epoch_loss += loss.detach()
        if not bool(torch.isfinite(epoch_loss)):  # one host sync per epoch
            raise FloatingPointError(
                f"memscore models {[model_ids[i] for i in active]}: the training loss became {float(epoch_loss)} "
                f"in epoch {epoch}; lower the learning rate"
            )
        if epoch + 1 == cfg.epochs or (epoch + 1) % cfg.converge_every:
            continue
        if on_check is not None:
            correct, ptrue = _pool_signals([p.detach() for p in net.params], x, y, csr)
            on_check(epoch + 1, [model_ids[i] for i in active], correct, ptrue)
        if cfg.converge_acc is None:
            continue
        # *convergence stop*: eval-mode accuracy on (the first rows of) each model's own subset
        acc = _check_accuracy(net.params, x, y, csr, check_rows[active])
        done = (acc >= cfg.converge_acc).tolist()
        if any(done):
            stopped = [pos for pos, d in enumerate(done) if d]
            _store_signals(signals, [active[pos] for pos in stopped], [p.detach()[stopped] for p in net.params],
                           x, y, csr)
            for pos in stopped:
                epochs_run[active[pos]] = epoch + 1
            keep = [pos for pos, d in enumerate(done) if not d]
            if keep:
                net.keep(torch.as_tensor(keep, dtype=torch.long, device=device))
            active = [active[pos] for pos in keep]
        bar.set_postfix(active=len(active))
    bar.close()
    if active:
        params = [p.detach() for p in net.params]
        if on_check is not None:
            correct, ptrue = _pool_signals(params, x, y, csr)
            on_check(cfg.epochs, [model_ids[i] for i in active], correct, ptrue)
        _store_signals(signals, active, params, x, y, csr)
    return members, {e: v.cpu().numpy() for e, v in signals.items()}, epochs_run


def _train_single(x: torch.Tensor, y: torch.Tensor, model_id: int, cfg: MemScoreConfig, num_classes: int,
                  arch_kwargs: dict) -> tuple[np.ndarray, dict[str, np.ndarray], int]:
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
    return member, _signals(probs, y), res.epochs_run


def _is_mlp(arch: str) -> bool:
    return arch == "column_fc"


def _pool_csr(xf: torch.Tensor, cfg: MemScoreConfig, device: torch.device) -> _PoolCSR | None:
    """The pool as CSR rows when the first layer is to be sparse, else None."""
    if cfg.first_layer == "dense":
        return None
    density = float((xf != 0).float().mean().item())
    if cfg.first_layer == "auto" and (device.type != "cpu" or density >= cfg.sparse_threshold):
        return None
    log.info("memscore: input density %.3f, sparse first layer", density)
    return _PoolCSR(xf)


def _chunk_size(cfg: MemScoreConfig, device: torch.device, in_features: int, n_models: int,
                hidden: Sequence[int]) -> int:
    """Models per stack: 16 on a CPU (bigger stacks only spill the caches), up to 256 on CUDA."""
    if cfg.models_per_chunk is not None:
        return cfg.models_per_chunk
    if device.type == "cpu":
        return 16
    sizes = [in_features, *hidden]
    per_model = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    return int(max(1, min(256, n_models, 2**28 // (4 * per_model))))  # weights + grad + 2 Adam moments


def _estimate(features: np.ndarray, labels: np.ndarray, model_ids: Sequence[int], cfg: MemScoreConfig,
              num_classes: int | None, arch_kwargs: dict | None) -> dict[str, ShardStats]:
    """:func:`estimate_shard` for both estimators at once (the models are the same)."""
    start = time.perf_counter()
    device = resolve_device(cfg.device)
    num_classes = int(num_classes or int(np.max(labels)) + 1)
    x, y = to_tensors(features, labels, device)
    stats = {e: _empty_stats(x.shape[0]) for e in ESTIMATORS}
    model_ids = list(model_ids)
    epochs_run: list[int] = []
    mlp_kwargs = dict(arch_kwargs or {})
    if _is_mlp(cfg.arch) and set(mlp_kwargs) <= {"hidden", "dropout"}:
        xf = x.float().reshape(x.shape[0], -1)
        csr = _pool_csr(xf, cfg, device)
        hidden = tuple(mlp_kwargs.get("hidden", (256, 128)))
        chunk_size = _chunk_size(cfg, device, xf.shape[1], len(model_ids), hidden)
        log.info("memscore: %d models, stacked MLP ensemble in chunks of %d on %s, %s first layer",
                 len(model_ids), chunk_size, device, "sparse" if csr is not None else "dense")
        for c in range(0, len(model_ids), chunk_size):
            chunk = model_ids[c : c + chunk_size]
            members, signals, epochs = _train_chunk(xf, y, chunk, cfg, num_classes, csr, **mlp_kwargs)
            for e in ESTIMATORS:
                for member, value in zip(members, signals[e]):
                    _accumulate(stats[e], member, value)
            epochs_run += epochs
    else:
        for j in tqdm(model_ids, desc="memscore models", disable=None if cfg.progress else True, leave=False):
            member, signals, epochs = _train_single(x, y, j, cfg, num_classes, arch_kwargs or {})
            for e in ESTIMATORS:
                _accumulate(stats[e], member, signals[e])
            epochs_run.append(epochs)
    seconds = time.perf_counter() - start
    for s in stats.values():
        s.model_ids, s.epochs_run, s.seconds = list(model_ids), list(epochs_run), seconds
    return stats


def estimate_shard(
    features: np.ndarray,
    labels: np.ndarray,
    model_ids: Sequence[int],
    cfg: MemScoreConfig,
    num_classes: int | None = None,
    arch_kwargs: dict | None = None,
) -> ShardStats:
    """Trains the models ``model_ids`` and returns their in/out sums for every pool sample.

    ColumnFC models train as stacked ensembles (see the module docstring); other architectures
    one at a time with :func:`train.fit` for all ``cfg.epochs``.

    Args:
        features: (n, ...) pool features (float tabular or uint8 images).
        labels: (n,) labels of the pool.
        model_ids: which of the ``cfg.m`` models this shard trains.
        cfg: estimator settings.
        num_classes: number of classes (default: max label + 1).
        arch_kwargs: extra model options (image ``mean``/``std``; ColumnFC ``hidden``/``dropout``).
    """
    return _estimate(features, labels, model_ids, cfg, num_classes, arch_kwargs)[cfg.estimator]


def _baseline(features: np.ndarray, labels: np.ndarray, cfg: MemScoreConfig,
              num_classes: int | None = None) -> dict[str, ShardStats]:
    """:func:`baseline_loop` for both estimators at once (the models are the same)."""
    start = time.perf_counter()
    device = resolve_device(cfg.device)
    num_classes = int(num_classes or int(np.max(labels)) + 1)
    x, y = to_tensors(features, labels, device)
    xf = x.float()
    stats = {e: _empty_stats(x.shape[0]) for e in ESTIMATORS}
    epochs_run = []
    for j in tqdm(range(cfg.m), desc="baseline models", disable=None if cfg.progress else True, leave=False):
        member, signals, epochs = _train_single(xf, y, j, cfg, num_classes, {})
        for e in ESTIMATORS:
            _accumulate(stats[e], member, signals[e])
        epochs_run.append(epochs)
    seconds = time.perf_counter() - start
    for s in stats.values():
        s.model_ids, s.epochs_run, s.seconds = list(range(cfg.m)), list(epochs_run), seconds
    return stats


def baseline_loop(features: np.ndarray, labels: np.ndarray, cfg: MemScoreConfig,
                  num_classes: int | None = None) -> ShardStats:
    """The plain reference: ``m`` models one after another with :func:`train.fit`, dense inputs,
    all ``cfg.epochs`` epochs (the yardstick of ``benchmarks/memscore_speed.py``)."""
    return _baseline(features, labels, cfg, num_classes)[cfg.estimator]


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
