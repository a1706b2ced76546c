"""WeMem's own defenses (SPEC §7), driven by the memorisation scores of the training set.

=====  ==============================================  ==============================
name   what differs from Base                          hooks overridden
=====  ==============================================  ==============================
rsw    each epoch trains on every class's own window    ``epoch_indices``
       of the mem-score ranking
rmr    risky samples (score ≥ τ) in their own batches,  ``make_optimizer``,
       stepped first by an Adam with weight decay λ_r;  ``epoch_batches``,
                                                        ``batch_optimizer``
       the rest by a second Adam (own state) with λ_g
swmr   rsw's windows, rmr's two optimizers inside       all of the above
       each window
=====  ==============================================  ==============================

RMR/SWMR follow the reference's ``train_defend_ml2`` (SPEC §7). An earlier version put
``½·mean(λ_i)·‖θ‖²`` in the loss; on shared weights that is one global decay
``λ_eff = f·λ_r + (1 − f)·λ_g`` (f = risky fraction) and cannot single out risky samples.

Scores are the normalised [0, 1] memorisation scores of the model's *own* training set,
position ``i`` belonging to row ``i`` of the training tensors.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from wemem.ml.pruning import Masks
from wemem.ml.ranking import ORDERS, TAU_MODES, epoch_window, order_key, rank_per_class, risk_threshold, risky_mask
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


class _RiskyGroups(_ScoreBased):
    """Two-level L2 as the reference trains it (``train_defend_ml2``): every epoch the risky
    samples of the epoch's sample set are stepped first, in their own batches, by an Adam whose
    weight decay is λ_r; then the other samples, in their own batches, by a second Adam (its own
    moments and step count) with weight decay λ_g. Both groups are shuffled each epoch."""

    def use_scores(self, scores, labels) -> None:
        self.risky, self.threshold = risk_threshold(scores, self.tau, self.tau_mode)
        self.n_risky = int(self.risky.sum())
        super().use_scores(scores, labels)

    def check_data(self, x: torch.Tensor, y: torch.Tensor) -> None:
        super().check_data(x, y)
        if self.risky.size != x.shape[0]:
            raise ValueError(
                f"{self.name}: {self.risky.size} scores for a training set of {x.shape[0]}; "
                "pass the scores of this model's own training set"
            )
        self._risky_t = torch.as_tensor(self.risky).to(self.device)
        self._kinds: list[bool] = []
        self._cursor = 0
        self.risky_steps = self.general_steps = 0

    def make_optimizer(self, model, cfg):
        params = [p for p in model.parameters() if p.requires_grad]
        self.risky_optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=self.lambda_r)
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=self.lambda_g)

    def epoch_batches(self, epoch: int, n: int) -> list[torch.Tensor]:
        order = self.epoch_indices(epoch, n)  # all samples (RMR) or the epoch's windows (SWMR), shuffled
        is_risky = self._risky_t[order]
        size = self.cfg.batch_size
        # boolean indexing: one host sync per epoch; split() of an empty group would yield one
        # empty batch (NaN loss), so an empty group gives no batches
        risky, general = (
            [b for b in torch.split(order[keep], size) if b.numel()] for keep in (is_risky, ~is_risky)
        )
        # which optimizer steps each batch, read in batch_optimizer without a device->host sync
        self._kinds, self._cursor = [True] * len(risky) + [False] * len(general), 0
        return risky + general

    def batch_optimizer(self) -> torch.optim.Optimizer:
        if self._cursor >= len(self._kinds):
            raise RuntimeError(f"{self.name}: a batch was trained that epoch_batches did not hand out")
        risky = self._kinds[self._cursor]
        self._cursor += 1
        if risky:
            self.risky_steps += 1
            return self.risky_optimizer
        self.general_steps += 1
        return self.optimizer

    def measurements(self) -> dict[str, Any]:
        return {
            **super().measurements(),
            "n_risky": self.n_risky,
            "risky_fraction": self.n_risky / max(self.risky.size, 1),
            "threshold": self.threshold,
            "risky_steps": getattr(self, "risky_steps", 0),
            "general_steps": getattr(self, "general_steps", 0),
        }


class WindowSettings(Section):
    """The sliding window: width ``w`` and step ``s`` per epoch, over the ranking in ``order``."""

    w: PosInt
    s: PosInt


class RiskSettings(Section):
    """Which samples are risky (score ≥ τ, or the top-τ share) and the weight decay λ_r of the
    optimizer that steps them."""

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
class RMR(_RiskyGroups):
    """Risky memory regularisation: every epoch, the samples with score ≥ τ (or the top-τ share)
    are stepped in their own batches by an Adam with weight decay λ_r, then the others by a
    second Adam with λ_g."""

    name = "rmr"

    class Settings(RiskSettings, Base.Settings):
        pass


@DEFENSES.register("swmr", label="SWMR", family="wemem", needs=("scores",))
class SWMR(_Windows, _RiskyGroups):
    """RSW's windows with RMR's two optimizers inside each window: the window's risky samples
    (λ_r), then the window's others (λ_g). Reference best order: h2l."""

    name = "swmr"

    class Settings(WindowSettings, RiskSettings, Base.Settings):
        order: Order = "h2l"
