"""Feldman–Zhang memorisation scores by subsampling (SPEC §4).

``mem(x_i) = P[f_S(x_i) = y_i | i ∈ S] − P[f_S(x_i) = y_i | i ∉ S]`` is estimated by training
``m`` models on random subsets ``S`` holding a fraction ``r`` of the pool. Model ``j``'s subset,
initial weights, batch order and dropout masks depend only on ``(seed, j)`` (each model has its
own generator), so the ``m`` models can be split into shards, and shards into chunks, in any way:
the merged statistics equal one unsharded run.

Two estimators: ``correctness`` (0/1, Feldman & Zhang) and ``probability`` (mean true-class
probability in vs out: smoother, breaks ties). Both are read off the same trained models.

Speed. On a CPU the plain loop (``train.fit`` per model; ``baseline_loop`` in
``benchmarks/reference/memscore_loop.py``) is bound by
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

Modules
-------
``settings``       :class:`MemScoreSettings`, the one schema of ``params:memscore``
``sampling``       model ids per shard, each model's seed and subset mask
``estimator``      in/out statistics (:class:`ShardStats`), :func:`estimate_shard`,
                   :func:`merge_shards`, :func:`scores_table`
``ensemble``       the stacked ColumnFC ensemble (fused Adam, 16-bit dropout, convergence stop)
``sparse``         its sparse first layer
``reference_csv``  import/export of the reference implementation's score CSV
``pool``           the estimator on a run's data (train pool, one shard, the summary): the nodes' calls
"""

from __future__ import annotations

from .estimator import (
    TABLE_COLUMNS,
    ShardStats,
    estimate_all,
    estimate_shard,
    merge_shards,
    scores_table,
)
from .pool import estimate_pool_shard, summarise_scores, train_pool
from .reference_csv import export_reference_csv, import_reference_csv
from .sampling import shard_model_ids, subset_mask
from .settings import ESTIMATORS, FIRST_LAYERS, MemScoreSettings

__all__ = [
    "ESTIMATORS",
    "FIRST_LAYERS",
    "TABLE_COLUMNS",
    "MemScoreSettings",
    "ShardStats",
    "shard_model_ids",
    "subset_mask",
    "estimate_shard",
    "estimate_all",
    "merge_shards",
    "scores_table",
    "import_reference_csv",
    "export_reference_csv",
    "train_pool",
    "estimate_pool_shard",
    "summarise_scores",
]
