"""The stacked ensemble: a chunk of ColumnFC models trained as stacked weight tensors.

One Python step trains the whole chunk with batched matmuls and one fused Adam; dropout masks
come from 16-bit draws; the first layer may be sparse (:mod:`.sparse`); a model that fits its
own subset leaves the stack early (*convergence stop*). See :mod:`wemem.ml.memorization` for
what each trick saves.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..dropout import int16_uniforms, keep_threshold
from .sampling import model_seed, subset_mask
from .settings import ESTIMATORS, MemScoreSettings
from .sparse import PoolCSR, SparseBatch, SparseFirstLayer

__all__ = ["StackedMLP", "dropout_masks", "train_chunk", "pool_csr", "chunk_size"]

log = logging.getLogger(__name__)


class StackedMLP:
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

    def first_layer(self, xb: torch.Tensor | SparseBatch, shape: tuple[int, int]) -> torch.Tensor:
        w1, b1 = self.params[0], self.params[1]
        if isinstance(xb, SparseBatch):
            h = SparseFirstLayer.apply(w1.reshape(-1, w1.shape[2]), xb).view(*shape, -1)
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


def dropout_masks(gens: Sequence[torch.Generator], batch: int, hidden: Sequence[int], p: float,
                   device: torch.device) -> list[torch.Tensor]:
    """Inverted-dropout masks (M, batch, h) for each hidden layer, model j's from its own generator,
    with *16-bit dropout draws* (``wemem.ml.dropout``)."""
    width = sum(hidden)
    u = torch.stack([int16_uniforms(batch * width, device, g) for g in gens]).view(len(gens), batch, width)
    keep = (u >= keep_threshold(p)).to(torch.float32).mul_(1.0 / (1.0 - p))
    return list(torch.split(keep, list(hidden), dim=2))


@torch.no_grad()
def _pool_signals(net_params: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor, csr: PoolCSR | None,
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
                   x: torch.Tensor, y: torch.Tensor, csr: PoolCSR | None) -> None:
    correct, ptrue = _pool_signals(params, x, y, csr)
    at = torch.as_tensor(positions, dtype=torch.long, device=x.device)
    signals["correctness"][at] = correct.double()
    signals["probability"][at] = ptrue.double()


@torch.no_grad()
def _check_accuracy(params: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor, csr: PoolCSR | None,
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


def train_chunk(
    x: torch.Tensor,
    y: torch.Tensor,
    model_ids: list[int],
    settings: MemScoreSettings,
    *,
    seed: int,
    num_classes: int,
    csr: PoolCSR | None,
    hidden: Sequence[int] = (256, 128),
    dropout: float = 0.1,
    progress: bool = True,
    on_check: Callable[[int, list[int], torch.Tensor, torch.Tensor], None] | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray], list[int]]:
    """Trains one chunk of stacked models; returns (members (M,n), {estimator: signal (M,n)}, epochs run).

    Model ``j`` draws its subset, initial weights, batch order and dropout masks from
    ``(seed, j)`` alone, so a model's result does not depend on the chunk it trains in.

    ``on_check(epoch, model_ids, correct, ptrue)`` (for studies of the stop rule) is called at
    every convergence check with the active models' eval-mode pool signals.
    """
    device = x.device
    n = x.shape[0]
    n_models = len(model_ids)
    seeds = [model_seed(seed, j) for j in model_ids]
    members = np.stack([subset_mask(n, settings.subset_fraction, seed, j) for j in model_ids])
    subsets = torch.as_tensor(np.stack([np.flatnonzero(m) for m in members]), device=device)
    k = subsets.shape[1]
    net = StackedMLP(StackedMLP.init(seeds, x.shape[1], hidden, num_classes, device), settings.lr, settings.weight_decay)
    gens = [torch.Generator(device=device).manual_seed(s) for s in seeds]
    active = list(range(n_models))  # positions in this chunk still training
    epochs_run = [settings.epochs] * n_models
    signals = {e: torch.empty(n_models, n, dtype=torch.float64, device=device) for e in ESTIMATORS}
    check_rows = subsets[:, : settings.converge_check_rows]  # subsets are random, so their first rows are too
    bar = tqdm(range(settings.epochs), desc=f"memscore models {model_ids[0]}-{model_ids[-1]}",
               disable=None if progress else True, leave=False, dynamic_ncols=True)
    for epoch in bar:
        if not active:
            break
        act_gens = [gens[i] for i in active]
        perms = torch.stack([torch.randperm(k, generator=g, device=device) for g in act_gens])
        order = torch.gather(subsets[active], 1, perms)
        epoch_loss = torch.zeros((), device=device)
        for b in range(0, k, settings.batch_size):
            idx = order[:, b : b + settings.batch_size]
            shape = (idx.shape[0], idx.shape[1])
            masks = dropout_masks(act_gens, shape[1], hidden, dropout, device) if dropout else None
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
        if epoch + 1 == settings.epochs or (epoch + 1) % settings.converge_every:
            continue
        if on_check is not None:
            correct, ptrue = _pool_signals([p.detach() for p in net.params], x, y, csr)
            on_check(epoch + 1, [model_ids[i] for i in active], correct, ptrue)
        if settings.converge_acc is None:
            continue
        # *convergence stop*: eval-mode accuracy on (the first rows of) each model's own subset
        acc = _check_accuracy(net.params, x, y, csr, check_rows[active])
        done = (acc >= settings.converge_acc).tolist()
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
            on_check(settings.epochs, [model_ids[i] for i in active], correct, ptrue)
        _store_signals(signals, active, params, x, y, csr)
    return members, {e: v.cpu().numpy() for e, v in signals.items()}, epochs_run


def pool_csr(xf: torch.Tensor, settings: MemScoreSettings, device: torch.device) -> PoolCSR | None:
    """The pool as CSR rows when the first layer is to be sparse, else None."""
    if settings.first_layer == "dense":
        return None
    density = float((xf != 0).float().mean().item())
    if settings.first_layer == "auto" and (device.type != "cpu" or density >= settings.sparse_threshold):
        return None
    log.info("memscore: input density %.3f, sparse first layer", density)
    return PoolCSR(xf)


def chunk_size(settings: MemScoreSettings, device: torch.device, in_features: int, n_models: int,
               hidden: Sequence[int]) -> int:
    """Models per stack: 16 on a CPU (bigger stacks only spill the caches), up to 256 on CUDA."""
    if settings.models_per_chunk is not None:
        return settings.models_per_chunk
    if device.type == "cpu":
        return 16
    sizes = [in_features, *hidden]
    per_model = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    return int(max(1, min(256, n_models, 2**28 // (4 * per_model))))  # weights + grad + 2 Adam moments
