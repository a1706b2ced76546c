"""The *sparse first layer* of the stacked ensemble: ``X @ W1`` as embedding-bag sums.

Location's inputs are 88% zeros. On a CPU ``X @ W1`` is an ``embedding_bag`` sum of the W1 rows
of each sample's active features, and its weight gradient, in a custom autograd function, is the
same kind of sum over the transposed (feature → samples) structure of the block-diagonal batch:
nnz·h additions instead of B·d·h multiply-adds, for the layer that holds 3/4 of the arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["PoolCSR", "SparseBatch", "SparseFirstLayer"]


class PoolCSR:
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

    def batch(self, rows: torch.Tensor, transpose: bool = True) -> SparseBatch:
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
            return SparseBatch(key, offsets, val, None, None, None)
        # the transpose (CSC) for the weight gradient: entries grouped by (model, feature); the
        # stable sort keeps each group's rows in ascending order, so sums never depend on the chunk
        order = torch.sort(key.int() if n_models * self.d < 2**31 else key, stable=True).indices
        counts = torch.bincount(key, minlength=n_models * self.d)
        t_offsets = torch.cumsum(counts, 0) - counts
        t_val = val[order] if val is not None else None
        return SparseBatch(key, offsets, val, row_of[order], t_offsets, t_val)

    def model_rows(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(index, offsets, weights) of pool rows start..stop-1 for one model's W1."""
        lo, hi = int(self.row_ptr[start]), int(self.row_ptr[stop])
        return self.col[lo:hi], self.row_ptr[start:stop] - lo, (self.val[lo:hi] if self.val is not None else None)


@dataclass
class SparseBatch:
    """A block-diagonal batch of pool rows (one block per model) and its transpose."""

    idx: torch.Tensor  # (nnz,) rows of the flattened (M*d, h) first-layer weight
    offsets: torch.Tensor  # (M*B,) start of each sample's entries
    val: torch.Tensor | None
    t_idx: torch.Tensor | None  # (nnz,) rows of the flattened (M*B, h) output gradient
    t_offsets: torch.Tensor | None  # (M*d,) start of each (model, feature) group
    t_val: torch.Tensor | None


class SparseFirstLayer(torch.autograd.Function):
    """``X @ W1`` for a block-diagonal sparse X, forward and weight gradient as embedding-bag sums.

    Forward: each output row sums the W1 rows of its active features (nnz·h additions instead of
    B·d·h multiply-adds). Backward: each W1 row's gradient sums the output-gradient rows of the
    samples where the feature is active (the same count). No gradient w.r.t. X.
    """

    @staticmethod
    def forward(ctx, w_flat: torch.Tensor, sb: SparseBatch) -> torch.Tensor:
        ctx.sb = sb
        return F.embedding_bag(sb.idx, w_flat, sb.offsets, mode="sum", per_sample_weights=sb.val)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        sb = ctx.sb
        grad_w = F.embedding_bag(sb.t_idx, grad_out.contiguous(), sb.t_offsets, mode="sum", per_sample_weights=sb.t_val)
        return grad_w, None
