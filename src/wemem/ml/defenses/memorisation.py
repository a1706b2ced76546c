"""WeMem's own defenses (SPEC §7), driven by the memorisation scores of the training set.

=====  ==============================================  ======================
name   what differs from Base                          hooks overridden
=====  ==============================================  ======================
rsw    each epoch trains on every class's own window    ``epoch_indices``
       of the mem-score ranking
rmr    ½λ_i‖θ‖² per sample, λ_r for risky samples       ``make_optimizer``, ``loss``
swmr   rsw's windows + rmr's two-level L2               both of the above
=====  ==============================================  ======================

Scores are the normalised [0, 1] memorisation scores of the model's *own* training set,
position ``i`` belonging to row ``i`` of the training tensors.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from wemem.ml.pruning import Masks
from wemem.ml.ranking import ORDERS, TAU_MODES, epoch_window, order_key, rank_per_class, risky_mask
from wemem.ml.schema import NonNeg, PosInt, Section, Unit, choice

from .base import DEFENSES, Base, scores_and_labels

__all__ = ["RSW", "RMR", "SWMR", "risky_mask", "TAU_MODES"]

Order = choice("order", ORDERS, order_key)
TauMode = choice("tau_mode", TAU_MODES)


class _ScoreBased(Base):
    """A defense built from the memorisation scores of the model's training set. Its parts
    (windows, risky-sample L2) each add to :meth:`use_scores` and :meth:`check_data`."""

    def __init__(self, settings, *, masks: Masks | None = None, scores=None, labels=None) -> None:
        super().__init__(settings, masks=masks)
        self.use_scores(*scores_and_labels(self.name, scores, labels))

    def use_scores(self, scores: np.ndarray, labels: np.ndarray) -> None:
        """Called once with the checked scores and labels of the training set."""

    def bind(self, model, x, y, cfg, generator):
        module = super().bind(model, x, y, cfg, generator)
        self.check_data(x, y)
        return module

    def check_data(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Called when training starts: the scores must belong to this training set."""


class _Windows(_ScoreBased):
    """Sliding windows over the per-class mem-score ranking (RSW, SWMR)."""

    def use_scores(self, scores, labels) -> None:
        self._win_scores, self._win_labels = scores, labels
        self.ranking = rank_per_class(self._win_scores, self._win_labels, self.order)
        super().use_scores(scores, labels)

    def check_data(self, x: torch.Tensor, y: torch.Tensor) -> None:
        super().check_data(x, y)
        if self._win_labels.size != y.shape[0]:
            raise ValueError(
                f"{self.name}: {self._win_labels.size} scores/labels for a training set of {y.shape[0]}; "
                "pass the scores of this model's own training set"
            )
        if not np.array_equal(self._win_labels, y.detach().cpu().numpy()):
            raise ValueError(f"{self.name}: the labels given with the scores differ from the training labels")
        self._window_sizes: list[int] = []

    def active_epochs(self) -> int:
        """Number of leading epochs whose windows are not all empty (training ends after them)."""
        longest = max((r.size for r in self.ranking.values()), default=0)
        return math.ceil(longest / self.s) if longest else 0

    def epochs_cap(self, epochs: int) -> int:
        return max(1, min(epochs, self.active_epochs()))

    def epoch_indices(self, epoch: int, n: int) -> torch.Tensor:
        positions = epoch_window(self.ranking, epoch, self.w, self.s)
        self._window_sizes.append(int(positions.size))
        idx = torch.as_tensor(positions, dtype=torch.long).to(self.device)
        return idx[torch.randperm(idx.numel(), generator=self.generator, device=self.device)]

    def measurements(self) -> dict[str, Any]:
        return {
            **super().measurements(),
            "active_epochs": self.active_epochs(),
            "window_samples": list(getattr(self, "_window_sizes", [])),
        }


class _RiskyL2(_ScoreBased):
    """Two-level L2 inside the loss: ½λ_r‖θ‖² for risky samples, ½λ_g‖θ‖² for the rest."""

    def use_scores(self, scores, labels) -> None:
        risk_scores = scores
        self.risky = risky_mask(risk_scores, self.tau, self.tau_mode)
        self.n_risky = int(self.risky.sum())
        if self.tau_mode == "value":
            self.threshold = self.tau
        else:
            self.threshold = float(risk_scores[self.risky].min()) if self.n_risky else float("inf")
        super().use_scores(scores, labels)

    def check_data(self, x: torch.Tensor, y: torch.Tensor) -> None:
        super().check_data(x, y)
        if self.risky.size != x.shape[0]:
            raise ValueError(
                f"{self.name}: {self.risky.size} scores for a training set of {x.shape[0]}; "
                "pass the scores of this model's own training set"
            )
        risky = torch.as_tensor(self.risky).to(self.device)
        self._lam = torch.where(
            risky,
            torch.tensor(self.lambda_r, device=self.device),
            torch.tensor(self.lambda_g, device=self.device),
        ).float()
        self._params = [p for p in self.model.parameters() if p.requires_grad]

    def make_optimizer(self, model, cfg):
        # the L2 lives in the loss, so Adam gets no weight decay
        return torch.optim.Adam((p for p in model.parameters() if p.requires_grad), lr=cfg.lr, weight_decay=0.0)

    def loss(self, model, logits, y, idx, epoch):
        ce = F.cross_entropy(logits.float(), y)
        sq_norm = torch.stack([p.float().pow(2).sum() for p in self._params]).sum()
        return ce + 0.5 * self._lam[idx].mean() * sq_norm

    def measurements(self) -> dict[str, Any]:
        return {
            **super().measurements(),
            "n_risky": self.n_risky,
            "risky_fraction": self.n_risky / max(self.risky.size, 1),
            "threshold": self.threshold,
        }


class WindowSettings(Section):
    """The sliding window: width ``w`` and step ``s`` per epoch, over the ranking in ``order``."""

    w: PosInt
    s: PosInt


class RiskSettings(Section):
    """Which samples are risky (score ≥ τ, or the top-τ share) and their L2 strength λ_r."""

    tau: Unit
    tau_mode: TauMode = "value"
    lambda_r: NonNeg = 0.1


@DEFENSES.register("rsw", label="RSW", family="wemem", needs=("scores",))
class RSW(_Windows):
    """Ranking-based sliding window: epoch ``e`` trains on ``ranked_c[s·e : s·e + w]`` of every class c.

    The epoch counter restarts with every ``fit`` call (= every pruning iteration). Once every
    class's window is empty no samples remain, so :meth:`epochs_cap` ends the iteration there.
    """

    name = "rsw"

    class Settings(WindowSettings, Base.Settings):
        order: Order = "l2h"


@DEFENSES.register("rmr", label="RMR", family="wemem", needs=("scores",))
class RMR(_RiskyL2):
    """Risky memory regularisation: samples with score ≥ τ (or the top-τ share) get λ_r, others λ_g."""

    name = "rmr"

    class Settings(RiskSettings, Base.Settings):
        pass


@DEFENSES.register("swmr", label="SWMR", family="wemem", needs=("scores",))
class SWMR(_Windows, _RiskyL2):
    """RSW's windows with RMR's two-level L2 inside each window (reference best: h2l)."""

    name = "swmr"

    class Settings(WindowSettings, RiskSettings, Base.Settings):
        order: Order = "h2l"
