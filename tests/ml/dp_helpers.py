"""Shared helpers of the DP-SGD tests (tests/ml/test_dpsgd*.py): a small Gaussian-blob task, a
dropout-free ColumnFC, a bound DPSGD strategy, and independent per-sample gradients (torch.func)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from wemem.ml.defenses import DPSGD, DefenseState
from wemem.ml.models import build_model
from wemem.ml.train import TrainConfig

N, D, C = 180, 12, 3




def make_data():
    """Three Gaussian blobs in D dimensions: (train of N, dev of 60)."""
    g = torch.Generator().manual_seed(1)
    centers = 2.0 * torch.randn(C, D, generator=g)
    y = torch.randint(0, C, (N + 60,), generator=g)
    x = centers[y] + torch.randn(N + 60, D, generator=g)
    return (x[:N], y[:N]), (x[N:], y[N:])


def fc_model(seed=0, dropout=0.0):
    torch.manual_seed(seed)
    return build_model("column_fc", (D,), C, dropout=dropout)


def dp_cfg(**kw):
    base = dict(epochs=1, patience=None, batch_size=60, progress=False, lr=1e-2)
    base.update(kw)
    return TrainConfig(**base)


def bound(model, train, settings, masks=None, cfg=None, state=None, cls=DPSGD):
    st = cls(cls.Settings(**settings), masks=masks, state=state or DefenseState())
    cfg = cfg or dp_cfg()
    gen = torch.Generator().manual_seed(cfg.seed)
    module = st.bind(model, *train, cfg, gen)
    return st, module


def per_sample_grads(model, x, y):
    """Independent per-sample gradients: torch.func's vmap(grad) of the one-sample loss."""
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss_one(p, xi, yi):
        out = functional_call(model, {**p, **buffers}, (xi.unsqueeze(0),))
        return F.cross_entropy(out, yi.unsqueeze(0))

    return vmap(grad(loss_one), in_dims=(None, 0, 0))(params, x, y)


def clip_by_hand(per_sample, masks_by_name, clip):
    """Masks pruned coordinates, clips each sample's whole gradient to ``clip``, sums; also the norms."""
    masked = {k: g * masks_by_name[k] if k in masks_by_name else g for k, g in per_sample.items()}
    b = next(iter(masked.values())).shape[0]
    norms = torch.cat([g.reshape(b, -1) for g in masked.values()], 1).norm(dim=1)
    factor = (clip / (norms + 1e-6)).clamp(max=1.0)
    sums = {k: torch.einsum("i,i...->...", factor, g) for k, g in masked.items()}
    return sums, norms


def weight_masks(model, masks):
    return {f"{name}.weight": m.float() for name, m in masks.items()}
