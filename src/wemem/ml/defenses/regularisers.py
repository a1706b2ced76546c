"""Existing defenses that change the loss (SPEC §7): PPB and RelaxLoss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from wemem.ml.schema import NonNeg

from .base import DEFENSES, Base

__all__ = ["PPB", "RelaxLoss", "ppb_loss", "relaxloss_flatten_targets"]


def ppb_loss(logits: torch.Tensor, y: torch.Tensor, lam: float) -> torch.Tensor:
    """CE + λ·KL(P‖Q), P/Q = descending-sorted softmax of the first/second half of the batch.

    Row ``i`` of the first half is paired with row ``i`` of the second half; with an odd batch
    the last row only enters the CE; KL is averaged over the pairs (``batchmean``). (The
    reference code computes ``F.kl_div(log P, Q)`` = KL(Q‖P); SPEC §7 states KL(first‖second),
    which is what this computes.)
    """
    logits = logits.float()
    ce = F.cross_entropy(logits, y)
    half = logits.shape[0] // 2
    if half == 0:
        return ce
    log_p = torch.log_softmax(logits, dim=1).sort(dim=1, descending=True).values
    kl = F.kl_div(log_p[half : 2 * half], log_p[:half], reduction="batchmean", log_target=True)
    return ce + lam * kl


@DEFENSES.register("ppb", label="PPB", family="regulariser")
class PPB(Base):
    """Yuan & Zhang 2022: penalise differences between sorted posteriors of batch halves."""

    name = "ppb"

    class Settings(Base.Settings):
        lam: NonNeg = 4.0

    def loss(self, model, logits, y, idx, epoch):
        return ppb_loss(logits, y, self.lam)


def relaxloss_flatten_targets(probs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Soft targets of posterior flattening: the true class keeps its confidence ``p_y``, every
    other class gets ``(1 − p_y) / (C − 1)``."""
    c = probs.shape[1]
    p_true = probs.gather(1, y.view(-1, 1))
    onehot = F.one_hot(y, c).to(probs.dtype)
    return onehot * p_true + (1 - onehot) * (1 - p_true) / (c - 1)


@DEFENSES.register("relaxloss", label="RelaxLoss", family="regulariser")
class RelaxLoss(Base):
    """Chen et al. 2022. Even epochs: minimise |CE − α| (gradient ascent once CE < α). Odd
    epochs: a normal CE step when the batch CE > α, else posterior flattening, i.e. the
    soft-target cross-entropy against :func:`relaxloss_flatten_targets` of the (detached)
    posteriors. The choice is made on the device (``torch.where``), without a host sync.
    (The reference code's flattening loss is ``mean((1 − correct)·CE_soft − CE)``; SPEC §7 and
    the paper's description, implemented here, use the soft-target cross-entropy.)
    """

    name = "relaxloss"

    class Settings(Base.Settings):
        alpha: NonNeg = 1.0

    def loss(self, model, logits, y, idx, epoch):
        logits = logits.float()
        ce = F.cross_entropy(logits, y)
        if epoch % 2 == 0:
            return (ce - self.alpha).abs()
        log_p = torch.log_softmax(logits, dim=1)
        soft = relaxloss_flatten_targets(log_p.exp().detach(), y)
        flatten = -(soft * log_p).sum(dim=1).mean()
        return torch.where(ce > self.alpha, ce, flatten)
