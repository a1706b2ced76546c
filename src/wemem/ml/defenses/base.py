"""The defense registry, the strategy every defense builds on, and Base fine-tuning.

Every defense is a subclass of :class:`wemem.ml.train.Strategy` that only overrides the hooks
it needs, so :func:`wemem.ml.train.fit` stays the one loop. All of them keep the pruning masks
fixed: :class:`MaskedStrategy` re-applies them after every optimiser step (Adam momentum and
DP-SGD noise would otherwise refill pruned weights).

A defense declares its settings once, as a nested ``Settings`` schema (a pydantic
:class:`wemem.ml.schema.Section`), and registers itself in :data:`DEFENSES` with what it needs
from the run (``needs``: ``scores`` = the memorisation scores of the model's training set,
``reference`` = non-member tensors, ``state`` = a :class:`DefenseState` shared across the
pruning iterations). Validation, construction, the MLflow params and the table's settings
column all derive from that schema.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from wemem.ml.pruning import Masks, masked_parameters
from wemem.ml.registry import Registry
from wemem.ml.schema import NonNeg, Section
from wemem.ml.train import Strategy

__all__ = ["DEFENSES", "LAMBDA_G", "DefenseState", "MaskedStrategy", "Base", "scores_and_labels"]

DEFENSES = Registry("defense")
"""name → defense class; ``needs`` says what it takes from the run besides its settings."""

LAMBDA_G = 5e-4
"""General L2 strength λ_g (SPEC §7), also the weight decay of plain fine-tuning."""


@dataclass
class DefenseState:
    """What must outlive one ``fit`` call: DP-SGD's privacy accountant and noise generator.

    One state per model (victim or shadow), shared by the fresh strategies of all its pruning
    iterations, so ε accumulates over the whole schedule and noise is never re-drawn from a
    re-seeded generator.
    """

    accountant: Any = None
    noise_generator: torch.Generator | None = None
    dp_steps: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def scores_and_labels(defense: str, scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """The memorisation scores and labels of a model's training set, checked to align."""
    if scores is None or labels is None:
        raise ValueError(
            f"{defense} needs the memorisation scores and labels of the model's training set "
            f"(got scores={'None' if scores is None else 'given'}, labels={'None' if labels is None else 'given'})"
        )
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    lab = np.asarray(labels).reshape(-1)
    if s.shape != lab.shape:
        raise ValueError(f"{defense}: {s.size} scores for {lab.size} labels; both must align with the training set")
    if np.isnan(s).any():
        raise ValueError(f"{defense}: scores contain NaN; every training sample needs a memorisation score")
    return s, lab


class MaskedStrategy(Strategy):
    """A strategy that keeps pruned weights at exactly zero after every optimiser step.

    ``settings`` is an instance of the class's ``Settings`` schema; its fields become attributes
    (``self.lambda_g`` …).
    """

    name = "masked"

    class Settings(Section):
        pass

    def __init__(self, settings: Section | None = None, *, masks: Masks | None = None) -> None:
        self.config = settings if settings is not None else self.Settings()
        for key, value in self.config:
            setattr(self, key, value)
        self.masks = masks
        self._masked: list[tuple[torch.Tensor, torch.Tensor]] = []

    def bind(self, model, x, y, cfg, generator):
        module = super().bind(model, x, y, cfg, generator)
        self.model = model
        self._masked = []
        for _, param, mask in masked_parameters(model, self.masks):  # weights, biases, BatchNorms
            if not bool(mask.all()):
                self._masked.append((param, mask.to(param.dtype)))
        self.after_step(model)
        return module

    @torch.no_grad()
    def after_step(self, model: nn.Module) -> None:
        for weight, mask in self._masked:
            weight.mul_(mask)

    def epochs_cap(self, epochs: int) -> int:
        """The most epochs worth running in one pruning iteration (windows can run dry)."""
        return epochs

    def settings(self) -> dict[str, Any]:
        return self.config.as_dict()

    def measurements(self) -> dict[str, Any]:
        return {}

    def summary(self) -> dict[str, Any]:
        return {"defense": self.name, **self.settings(), **self.measurements()}


@DEFENSES.register("base", label="Base", family="baseline")
class Base(MaskedStrategy):
    """Plain fine-tuning: cross-entropy, Adam with weight decay λ_g, early stopping in ``fit``."""

    name = "base"

    class Settings(Section):
        lambda_g: NonNeg = LAMBDA_G

    def make_optimizer(self, model, cfg):
        return torch.optim.Adam(
            (p for p in model.parameters() if p.requires_grad), lr=cfg.lr, weight_decay=self.lambda_g
        )
