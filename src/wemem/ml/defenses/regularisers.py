"""Existing defenses that change the loss (SPEC §7): PPB and RelaxLoss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from wemem.ml.schema import NonNeg, Unit

from .base import DEFENSES, Base

__all__ = ["PPB", "RelaxLoss", "ppb_loss", "relaxloss_flatten_loss", "relaxloss_flatten_targets"]


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


def relaxloss_flatten_targets(probs: torch.Tensor, y: torch.Tensor, upper: float = 1.0) -> torch.Tensor:
    """Soft targets of posterior flattening: the true class keeps its confidence ``p_y`` (clamped
    to ``upper``), every other class gets ``(1 − p_y) / (C − 1)``. Differentiable in ``probs``."""
    c = probs.shape[1]
    p_true = probs.gather(1, y.view(-1, 1)).clamp(0.0, upper)
    onehot = F.one_hot(y, c).to(probs.dtype)
    return onehot * p_true + (1 - onehot) * (1 - p_true) / (c - 1)


def relaxloss_flatten_loss(logits: torch.Tensor, y: torch.Tensor, upper: float = 1.0) -> torch.Tensor:
    """The posterior-flattening loss of Chen et al.'s official code (CIFAR trainer, which the
    WeMem reference copies): ``mean((1 − correct)·CE_soft − CE)``.

    Every sample's own cross-entropy is *subtracted* (gradient ascent: the true-class confidence
    falls); misclassified samples also get the soft-target cross-entropy against
    :func:`relaxloss_flatten_targets` of their posteriors. As in the official code the soft
    targets are not detached, and ``correct`` is the argmax prediction (no gradient).
    """
    logits = logits.float()
    log_p = torch.log_softmax(logits, dim=1)
    ce = F.nll_loss(log_p, y, reduction="none")
    soft = relaxloss_flatten_targets(log_p.exp(), y, upper)
    ce_soft = -(soft * log_p).sum(dim=1)
    correct = (logits.argmax(dim=1) == y).to(logits.dtype)
    return ((1 - correct) * ce_soft - ce).mean()


@DEFENSES.register("relaxloss", label="RelaxLoss", family="regulariser")
class RelaxLoss(Base):
    """Chen et al. 2022, as their official code (and the WeMem reference) trains it. Even epochs:
    minimise |CE − α| (gradient ascent once CE < α). Odd epochs: a normal CE step when the batch
    CE > α, else posterior flattening, :func:`relaxloss_flatten_loss`. The choice is made on the
    device (``torch.where``), without a host sync. (An earlier version flattened with the
    soft-target CE alone against detached targets; its gradient on the true-class logit is zero,
    so it never lowered member confidence. SPEC §7.)
    """

    name = "relaxloss"

    class Settings(Base.Settings):
        alpha: NonNeg = 1.0
        upper: Unit = 1.0

    def loss(self, model, logits, y, idx, epoch):
        logits = logits.float()
        ce = F.cross_entropy(logits, y)
        if epoch % 2 == 0:
            return (ce - self.alpha).abs()
        return torch.where(ce > self.alpha, ce, relaxloss_flatten_loss(logits, y, self.upper))
