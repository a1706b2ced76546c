"""The eight fine-tuning defenses (SPEC §7) as small strategies for the one training loop.

Every defense is a subclass of :class:`wemem.ml.train.Strategy` that only overrides the hooks
it needs; :func:`wemem.ml.train.fit` stays the one loop. All of them keep the pruning masks
fixed: :class:`MaskedStrategy` re-applies them after every optimiser step (Adam momentum and
DP-SGD noise would otherwise refill pruned weights).

=========  ==============================================  =====================================
name       what differs from plain fine-tuning               hooks overridden
=========  ==============================================  =====================================
base       nothing: CE, Adam with L2 (λ_g)                  —
rsw        each epoch trains on every class's own window    ``epoch_indices``
           of the mem-score ranking
rmr        ½λ_i‖θ‖² per sample, λ_r for risky samples       ``make_optimizer``, ``loss``
swmr       rsw's windows + rmr's two-level L2               both of the above
ppb        CE + λ·KL(sorted softmax of two half-batches)    ``loss``
adv        min-max game with an inference model             ``train_step``
dpsgd      Opacus per-sample clipping + Gaussian noise      ``bind``, ``make_optimizer``,
                                                            ``train_step``
relaxloss  |CE − α| / posterior flattening                  ``loss``
=========  ==============================================  =====================================

Adding a defense = one class + one entry in :data:`DEFENSES`. :func:`build_strategy` validates
settings and builds a fresh strategy; :func:`prune_and_finetune` runs the whole pruning
schedule with one defense (a fresh strategy per iteration, one :class:`DefenseState` per model
so that DP-SGD's privacy accountant spans all iterations).

Scores are the normalised [0, 1] memorisation scores of the model's *own* training set, position
``i`` belonging to row ``i`` of the training tensors.
"""

from __future__ import annotations

import inspect
import math
import time
import warnings
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wemem.ml.pruning import (
    Masks,
    global_sparsity,
    iterative_prune,
    layer_sparsity,
)
from wemem.ml.ranking import ORDERS, epoch_window, rank_per_class
from wemem.ml.train import FitResult, Strategy, TrainConfig, autocast, fit

__all__ = [
    "LAMBDA_G",
    "DefenseState",
    "MaskedStrategy",
    "Base",
    "RSW",
    "RMR",
    "SWMR",
    "PPB",
    "ADV",
    "DPSGD",
    "RelaxLoss",
    "DEFENSES",
    "ppb_loss",
    "relaxloss_flatten_targets",
    "risky_mask",
    "build_strategy",
    "defense_settings",
    "finetune_config",
    "prune_and_finetune",
]

LAMBDA_G = 5e-4
"""General L2 strength λ_g (SPEC §7), also the weight decay of plain fine-tuning."""


# --------------------------------------------------------------------------- validation helpers
def _fail(defense: str, param: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"{defense}: setting {param}={value!r} is not allowed; {param} must be {allowed}")


def _positive_int(defense: str, param: str, value: Any) -> int:
    ok = (
        not isinstance(value, bool)
        and isinstance(value, (int, np.integer, float))
        and math.isfinite(value)
        and value == int(value)
        and value > 0
    )
    if not ok:
        raise _fail(defense, param, value, "a positive integer")
    return int(value)


def _nonnegative(defense: str, param: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise _fail(defense, param, value, "a non-negative number") from None
    if not math.isfinite(v) or v < 0:
        raise _fail(defense, param, value, "a non-negative number")
    return v


def _positive(defense: str, param: str, value: Any) -> float:
    v = _nonnegative(defense, param, value)
    if v == 0:
        raise _fail(defense, param, value, "a positive number")
    return v


def _unit_interval(defense: str, param: str, value: Any) -> float:
    v = _nonnegative(defense, param, value)
    if v > 1:
        raise _fail(defense, param, value, "in [0, 1]")
    return v


def _order(defense: str, value: Any) -> str:
    key = str(value).lower().replace("→", "2").replace("->", "2").replace("_", "")
    if key not in ORDERS:
        raise _fail(defense, "order", value, f"one of {list(ORDERS)} (h2l: highest score first)")
    return key


def _scores_labels(defense: str, scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
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


def risky_mask(scores: np.ndarray, tau: float, tau_mode: str = "value") -> np.ndarray:
    """Which samples are risky (SPEC §4, §7).

    ``tau_mode="value"``: normalised score ≥ τ. ``tau_mode="fraction"``: the ``round(τ·n)``
    highest scores, ties broken by position (lower position first), so exactly that many are
    flagged.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if tau_mode == "value":
        return scores >= tau
    if tau_mode == "fraction":
        k = int(round(tau * scores.size))
        order = np.lexsort((np.arange(scores.size), -scores))
        mask = np.zeros(scores.size, dtype=bool)
        mask[order[:k]] = True
        return mask
    raise ValueError(f"tau_mode={tau_mode!r} is not allowed; tau_mode must be 'value' or 'fraction'")


# --------------------------------------------------------------------------- shared state
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


# --------------------------------------------------------------------------- base strategies
class MaskedStrategy(Strategy):
    """A strategy that keeps pruned weights at exactly zero after every optimiser step."""

    name = "masked"
    PARAMS: tuple[str, ...] = ()
    NEEDS: tuple[str, ...] = ()

    def __init__(self, *, masks: Masks | None = None) -> None:
        self.masks = masks
        self._masked: list[tuple[torch.Tensor, torch.Tensor]] = []

    def bind(self, model, x, y, cfg, generator):
        module = super().bind(model, x, y, cfg, generator)
        self.model = model
        self._masked = []
        if self.masks:
            named = dict(model.named_modules())
            for name, mask in self.masks.items():
                if name not in named:
                    raise ValueError(f"mask for {name!r} does not match any module of {type(model).__name__}")
                weight = named[name].weight
                if mask.shape != weight.shape:
                    raise ValueError(f"mask of {name} has shape {tuple(mask.shape)}, the weight {tuple(weight.shape)}")
                mask = mask.to(device=weight.device)
                if not bool(mask.all()):
                    self._masked.append((weight, mask.to(weight.dtype)))
        self.after_step(model)
        return module

    @torch.no_grad()
    def after_step(self, model: nn.Module) -> None:
        for weight, mask in self._masked:
            weight.mul_(mask)

    def settings(self) -> dict[str, Any]:
        return {p: getattr(self, p) for p in self.PARAMS}

    def measurements(self) -> dict[str, Any]:
        return {}

    def summary(self) -> dict[str, Any]:
        return {"defense": self.name, **self.settings(), **self.measurements()}


class Base(MaskedStrategy):
    """Plain fine-tuning: cross-entropy, Adam with weight decay λ_g, early stopping in ``fit``."""

    name = "base"
    PARAMS = ("lambda_g",)

    def __init__(self, lambda_g: float = LAMBDA_G, *, masks: Masks | None = None) -> None:
        super().__init__(masks=masks)
        self.lambda_g = _nonnegative(self.name, "lambda_g", lambda_g)

    def make_optimizer(self, model, cfg):
        return torch.optim.Adam(
            (p for p in model.parameters() if p.requires_grad), lr=cfg.lr, weight_decay=self.lambda_g
        )


class _Windows:
    """Sliding windows over the per-class mem-score ranking (RSW, SWMR)."""

    def _init_windows(self, w, s, order, scores, labels) -> None:
        self.w = _positive_int(self.name, "w", w)
        self.s = _positive_int(self.name, "s", s)
        self.order = _order(self.name, order)
        self._win_scores, self._win_labels = _scores_labels(self.name, scores, labels)
        self.ranking = rank_per_class(self._win_scores, self._win_labels, self.order)

    def _bind_windows(self, y: torch.Tensor) -> None:
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


class _RiskyL2:
    """Two-level L2 inside the loss: ½λ_r‖θ‖² for risky samples, ½λ_g‖θ‖² for the rest."""

    def _init_risky(self, tau, tau_mode, lambda_r, scores, labels) -> None:
        self.tau = _unit_interval(self.name, "tau", tau)
        if tau_mode not in ("value", "fraction"):
            raise _fail(self.name, "tau_mode", tau_mode, "'value' (score ≥ τ) or 'fraction' (top-τ share)")
        self.tau_mode = tau_mode
        self.lambda_r = _nonnegative(self.name, "lambda_r", lambda_r)
        risk_scores, _ = _scores_labels(self.name, scores, labels)
        self.risky = risky_mask(risk_scores, self.tau, self.tau_mode)
        self.n_risky = int(self.risky.sum())
        if self.tau_mode == "value":
            self.threshold = self.tau
        else:
            self.threshold = float(risk_scores[self.risky].min()) if self.n_risky else float("inf")

    def _bind_risky(self, x: torch.Tensor) -> None:
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


class RSW(_Windows, Base):
    """Ranking-based sliding window: epoch ``e`` trains on ``ranked_c[s·e : s·e + w]`` of every class c.

    The epoch counter restarts with every ``fit`` call (= every pruning iteration). Once every
    class's window is empty no samples remain: :func:`prune_and_finetune` caps the epochs at
    :meth:`active_epochs` (a plain ``fit`` would run empty epochs until patience stops it).
    """

    name = "rsw"
    PARAMS = ("order", "w", "s", "lambda_g")
    NEEDS = ("scores", "labels")

    def __init__(
        self,
        w: int,
        s: int,
        order: str = "l2h",
        lambda_g: float = LAMBDA_G,
        *,
        masks: Masks | None = None,
        scores: np.ndarray | None = None,
        labels: np.ndarray | None = None,
    ) -> None:
        Base.__init__(self, lambda_g, masks=masks)
        self._init_windows(w, s, order, scores, labels)

    def bind(self, model, x, y, cfg, generator):
        module = super().bind(model, x, y, cfg, generator)
        self._bind_windows(y)
        return module


class RMR(_RiskyL2, Base):
    """Risky memory regularisation: samples with score ≥ τ (or the top-τ share) get λ_r, others λ_g."""

    name = "rmr"
    PARAMS = ("tau", "tau_mode", "lambda_r", "lambda_g")
    NEEDS = ("scores", "labels")

    def __init__(
        self,
        tau: float,
        tau_mode: str = "value",
        lambda_r: float = 0.1,
        lambda_g: float = LAMBDA_G,
        *,
        masks: Masks | None = None,
        scores: np.ndarray | None = None,
        labels: np.ndarray | None = None,
    ) -> None:
        Base.__init__(self, lambda_g, masks=masks)
        self._init_risky(tau, tau_mode, lambda_r, scores, labels)

    def bind(self, model, x, y, cfg, generator):
        module = super().bind(model, x, y, cfg, generator)
        self._bind_risky(x)
        return module


class SWMR(_Windows, _RiskyL2, Base):
    """RSW's windows with RMR's two-level L2 inside each window (reference best: h2l)."""

    name = "swmr"
    PARAMS = ("order", "w", "s", "tau", "tau_mode", "lambda_r", "lambda_g")
    NEEDS = ("scores", "labels")

    def __init__(
        self,
        w: int,
        s: int,
        tau: float,
        order: str = "h2l",
        tau_mode: str = "value",
        lambda_r: float = 0.1,
        lambda_g: float = LAMBDA_G,
        *,
        masks: Masks | None = None,
        scores: np.ndarray | None = None,
        labels: np.ndarray | None = None,
    ) -> None:
        Base.__init__(self, lambda_g, masks=masks)
        self._init_windows(w, s, order, scores, labels)
        self._init_risky(tau, tau_mode, lambda_r, scores, labels)

    def bind(self, model, x, y, cfg, generator):
        module = super().bind(model, x, y, cfg, generator)
        self._bind_windows(y)
        self._bind_risky(x)
        return module


# --------------------------------------------------------------------------- PPB
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


class PPB(Base):
    """Yuan & Zhang 2022: penalise differences between sorted posteriors of batch halves."""

    name = "ppb"
    PARAMS = ("lam", "lambda_g")

    def __init__(self, lam: float = 4.0, lambda_g: float = LAMBDA_G, *, masks: Masks | None = None) -> None:
        super().__init__(lambda_g, masks=masks)
        self.lam = _nonnegative(self.name, "lam", lam)

    def loss(self, model, logits, y, idx, epoch):
        return ppb_loss(logits, y, self.lam)


# --------------------------------------------------------------------------- ADV
class _InferenceModel(nn.Module):
    """Nasr et al.'s attack model h(softmax, one-hot label) → member logit (a small MLP)."""

    def __init__(self, num_classes: int, hidden: tuple[int, int] = (128, 64)) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(2 * num_classes, hidden[0]),
            nn.ReLU(),
            nn.Linear(hidden[0], hidden[1]),
            nn.ReLU(),
            nn.Linear(hidden[1], 1),
        )

    def forward(self, probs: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([probs, onehot], dim=1)).squeeze(1)


class ADV(Base):
    """Nasr et al. 2018 adversarial regularisation (min-max game).

    Each step: ``attack_steps`` updates of the inference model h on the current batch (members,
    label 1) vs an equally large random batch of the reference non-members (label 0), then one
    classifier step on ``CE + θ·mean log h(member | x, y)`` = CE − θ·(h's loss on members).
    """

    name = "adv"
    PARAMS = ("theta", "attack_steps", "attack_lr", "lambda_g")
    NEEDS = ("reference",)

    def __init__(
        self,
        theta: float = 2.0,
        attack_steps: int = 1,
        attack_lr: float = 1e-3,
        lambda_g: float = LAMBDA_G,
        *,
        masks: Masks | None = None,
        reference: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        super().__init__(lambda_g, masks=masks)
        self.theta = _nonnegative(self.name, "theta", theta)
        self.attack_steps = _positive_int(self.name, "attack_steps", attack_steps)
        self.attack_lr = _positive(self.name, "attack_lr", attack_lr)
        if reference is None or reference[0].shape[0] == 0:
            raise ValueError("adv needs reference non-members (the dev set tensors) to train its inference model")
        self.reference = reference

    def bind(self, model, x, y, cfg, generator):
        module = super().bind(model, x, y, cfg, generator)
        rx, ry = self.reference
        self._rx, self._ry = rx.to(self.device), ry.to(self.device)
        was_training = model.training
        model.eval()
        with torch.no_grad(), autocast(self.device, cfg.amp):
            self.num_classes = int(model(x[:1]).shape[1])
        model.train(was_training)
        self.attack = _InferenceModel(self.num_classes).to(self.device)
        self.attack_optimizer = torch.optim.Adam(self.attack.parameters(), lr=self.attack_lr, weight_decay=5e-4)
        self._attack_loss = torch.zeros((), device=self.device)
        self._gain = torch.zeros((), device=self.device)
        self._steps = 0
        return module

    def train_step(self, model, xb, yb, idx, epoch):
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device, self.cfg.amp):
            logits = model(xb)
        logits = logits.float()
        onehot_in = F.one_hot(yb, self.num_classes).float()
        probs_in = torch.softmax(logits.detach(), dim=1)
        b = xb.shape[0]
        for _ in range(self.attack_steps):
            ridx = torch.randint(0, self._rx.shape[0], (b,), generator=self.generator, device=self.device)
            with torch.no_grad(), autocast(self.device, self.cfg.amp):
                ref_logits = model(self._rx[ridx])
            probs_out = torch.softmax(ref_logits.float(), dim=1)
            onehot_out = F.one_hot(self._ry[ridx], self.num_classes).float()
            self.attack_optimizer.zero_grad(set_to_none=True)
            h = self.attack(torch.cat([probs_in, probs_out]), torch.cat([onehot_in, onehot_out]))
            target = torch.cat([torch.ones(b, device=self.device), torch.zeros(b, device=self.device)])
            attack_loss = F.binary_cross_entropy_with_logits(h, target)
            attack_loss.backward()
            self.attack_optimizer.step()
        for p in self.attack.parameters():
            p.requires_grad_(False)
        gain = F.logsigmoid(self.attack(torch.softmax(logits, dim=1), onehot_in)).mean()
        for p in self.attack.parameters():
            p.requires_grad_(True)
        loss = F.cross_entropy(logits, yb) + self.theta * gain
        loss.backward()
        self.optimizer.step()
        self.after_step(model)
        self._attack_loss += attack_loss.detach()
        self._gain += gain.detach()
        self._steps += 1
        return loss.detach()

    def measurements(self) -> dict[str, Any]:
        steps = max(getattr(self, "_steps", 0), 1)
        if not hasattr(self, "_attack_loss"):
            return {}
        return {
            "attack_loss_mean": float(self._attack_loss.item()) / steps,
            "member_log_h_mean": float(self._gain.item()) / steps,
        }


# --------------------------------------------------------------------------- DPSGD
class DPSGD(Base):
    """DP fine-tuning with Opacus 1.6: per-sample clipping and Gaussian noise on Adam (DP-Adam).

    The model is wrapped in a ``GradSampleModule`` for one ``fit`` call (the hooks are removed
    when ``fit`` asks for the summary); privacy is tracked by an RDP accountant stepped with
    sample rate ``batch_size / n`` after every step. ``fit`` draws shuffled fixed-size batches,
    not Poisson samples, so ε uses the usual sampled-Gaussian approximation. The accountant
    lives in the :class:`DefenseState`, so ε accumulates over all pruning iterations of one
    model. Per-sample gradients of pruned weights are zeroed before clipping (they would waste
    the clipping budget) and the masks are re-applied after each step (noise refills zeros).
    Models with BatchNorm are refused: DPSGD needs GroupNorm variants.
    """

    name = "dpsgd"
    PARAMS = ("sigma", "clip", "delta", "lambda_g")
    NEEDS = ("state",)

    def __init__(
        self,
        sigma: float = 1.0,
        clip: float = 1.0,
        delta: float | None = None,
        lambda_g: float = LAMBDA_G,
        *,
        masks: Masks | None = None,
        state: DefenseState | None = None,
    ) -> None:
        super().__init__(lambda_g, masks=masks)
        self.sigma = _nonnegative(self.name, "sigma", sigma)
        self.clip = _positive(self.name, "clip", clip)
        if delta is not None:
            d = _nonnegative(self.name, "delta", delta)
            if not 0 < d < 1:
                raise _fail(self.name, "delta", delta, "in (0, 1) or None (= 1/n)")
            delta = d
        self.delta = delta
        self.state = state if state is not None else DefenseState()
        self._gsm = None

    def bind(self, model, x, y, cfg, generator):
        from opacus import GradSampleModule
        from opacus.accountants import RDPAccountant
        from opacus.validators import ModuleValidator

        errors = ModuleValidator.validate(model, strict=False)
        if errors:
            raise ValueError(
                f"dpsgd cannot train {type(model).__name__} privately: {errors[0]} "
                f"({len(errors)} problem(s)); DPSGD needs a model without BatchNorm, e.g. a GroupNorm variant"
            )
        self.n = int(x.shape[0])
        self.sample_rate = min(1.0, cfg.batch_size / self.n)
        self.delta_used = self.delta if self.delta is not None else 1.0 / self.n
        if self.state.accountant is None:
            self.state.accountant = RDPAccountant()
        if self.state.noise_generator is None:
            self.state.noise_generator = torch.Generator(device=x.device)
            self.state.noise_generator.manual_seed(cfg.seed + 7919)
        self._gsm = GradSampleModule(model, batch_first=True, loss_reduction="mean", strict=True)
        super().bind(model, x, y, cfg, generator)
        self._grad_masks = [(w, m) for w, m in self._masked]
        return self._gsm

    def make_optimizer(self, model, cfg):
        from opacus.optimizers import DPOptimizer

        adam = torch.optim.Adam(
            (p for p in model.parameters() if p.requires_grad), lr=cfg.lr, weight_decay=self.lambda_g
        )
        return DPOptimizer(
            adam,
            noise_multiplier=self.sigma,
            max_grad_norm=self.clip,
            expected_batch_size=cfg.batch_size,
            loss_reduction="mean",
            generator=self.state.noise_generator,
        )

    def train_step(self, model, xb, yb, idx, epoch):
        self.optimizer.zero_grad(set_to_none=True)
        logits = model(xb)  # full precision: per-sample gradients are computed in float32
        loss = self.loss(model, logits, yb, idx, epoch)
        with warnings.catch_warnings():
            # Opacus's full backward hooks on the first layer see inputs without gradients
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            loss.backward()
        for weight, mask in self._grad_masks:
            gs = getattr(weight, "grad_sample", None)
            if isinstance(gs, torch.Tensor):
                gs.mul_(mask)
        self.optimizer.step()
        self.state.accountant.step(noise_multiplier=self.sigma, sample_rate=self.sample_rate)
        self.state.dp_steps += 1
        self.after_step(model)
        return loss.detach()

    def close(self) -> None:
        """Removes Opacus's hooks and per-sample attributes from the model (idempotent)."""
        if self._gsm is not None:
            self._gsm._close()
            self._gsm = None

    def epsilon(self) -> float:
        acc = self.state.accountant
        if acc is None or not acc.history:
            return 0.0
        if self.sigma == 0:
            return float("inf")
        return float(acc.get_epsilon(delta=self.delta_used))

    def measurements(self) -> dict[str, Any]:
        self.close()  # fit asks for the summary once training is over
        if not hasattr(self, "delta_used"):
            return {}
        return {
            "epsilon": self.epsilon(),
            "delta": self.delta_used,
            "sample_rate": self.sample_rate,
            "dp_steps": self.state.dp_steps,
        }


# --------------------------------------------------------------------------- RelaxLoss
def relaxloss_flatten_targets(probs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Soft targets of posterior flattening: the true class keeps its confidence ``p_y``, every
    other class gets ``(1 − p_y) / (C − 1)``."""
    c = probs.shape[1]
    p_true = probs.gather(1, y.view(-1, 1))
    onehot = F.one_hot(y, c).to(probs.dtype)
    return onehot * p_true + (1 - onehot) * (1 - p_true) / (c - 1)


class RelaxLoss(Base):
    """Chen et al. 2022. Even epochs: minimise |CE − α| (gradient ascent once CE < α). Odd
    epochs: a normal CE step when the batch CE > α, else posterior flattening, i.e. the
    soft-target cross-entropy against :func:`relaxloss_flatten_targets` of the (detached)
    posteriors. The choice is made on the device (``torch.where``), without a host sync.
    (The reference code's flattening loss is ``mean((1 − correct)·CE_soft − CE)``; SPEC §7 and
    the paper's description, implemented here, use the soft-target cross-entropy.)
    """

    name = "relaxloss"
    PARAMS = ("alpha", "lambda_g")

    def __init__(self, alpha: float = 1.0, lambda_g: float = LAMBDA_G, *, masks: Masks | None = None) -> None:
        super().__init__(lambda_g, masks=masks)
        self.alpha = _nonnegative(self.name, "alpha", alpha)

    def loss(self, model, logits, y, idx, epoch):
        logits = logits.float()
        ce = F.cross_entropy(logits, y)
        if epoch % 2 == 0:
            return (ce - self.alpha).abs()
        log_p = torch.log_softmax(logits, dim=1)
        soft = relaxloss_flatten_targets(log_p.exp().detach(), y)
        flatten = -(soft * log_p).sum(dim=1).mean()
        return torch.where(ce > self.alpha, ce, flatten)


# --------------------------------------------------------------------------- registry
DEFENSES: dict[str, type[MaskedStrategy]] = {
    "base": Base,
    "rsw": RSW,
    "rmr": RMR,
    "swmr": SWMR,
    "ppb": PPB,
    "adv": ADV,
    "dpsgd": DPSGD,
    "relaxloss": RelaxLoss,
}


def _setting_names(cls: type) -> tuple[list[str], list[str]]:
    """(all settings, required settings) of a defense class, from its constructor."""
    params = [
        p
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.name != "self" and p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    ]
    return [p.name for p in params], [p.name for p in params if p.default is inspect.Parameter.empty]


def setting_names(name: str) -> tuple[list[str], list[str]]:
    """(all settings, required settings) of the defense called ``name``."""
    key = str(name).lower()
    if key not in DEFENSES:
        raise ValueError(f"unknown defense {name!r}; choose one of {sorted(DEFENSES)}")
    return _setting_names(DEFENSES[key])


def build_strategy(
    name: str,
    settings: dict[str, Any] | None = None,
    *,
    masks: Masks | None = None,
    scores: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    reference: tuple[torch.Tensor, torch.Tensor] | None = None,
    state: DefenseState | None = None,
) -> MaskedStrategy:
    """A fresh strategy for defense ``name`` with ``settings``.

    Args:
        name: one of :data:`DEFENSES`.
        settings: the defense's hyper-parameters (constructor arguments, e.g. ``{"w": 15, "s": 1}``).
        masks: pruning masks kept fixed during training.
        scores: normalised mem-scores of the model's training set (rsw, rmr, swmr).
        labels: labels of the model's training set, aligned with ``scores``.
        reference: (x, y) non-member tensors (adv: the dev set).
        state: per-model state that outlives one ``fit`` (dpsgd's accountant).

    Raises:
        ValueError: unknown defense, unknown/missing setting or a setting outside its range;
            the message names the parameter, the value and what is allowed.
    """
    key = str(name).lower()
    if key not in DEFENSES:
        raise ValueError(f"unknown defense {name!r}; choose one of {sorted(DEFENSES)}")
    cls = DEFENSES[key]
    settings = dict(settings or {})
    allowed, required = _setting_names(cls)
    unknown = sorted(set(settings) - set(allowed))
    if unknown:
        raise ValueError(f"{key}: unknown setting(s) {unknown}; {key} takes {allowed}")
    missing = [p for p in required if p not in settings]
    if missing:
        raise ValueError(f"{key}: missing required setting(s) {missing}; {key} takes {allowed}")
    data = {"scores": scores, "labels": labels, "reference": reference, "state": state}
    return cls(**settings, masks=masks, **{k: data[k] for k in cls.NEEDS})


def defense_settings(strategy: MaskedStrategy) -> dict[str, Any]:
    """The defense name and its settings, for recording with a run."""
    return {"defense": strategy.name, **strategy.settings()}


# --------------------------------------------------------------------------- prune + fine-tune
def finetune_config(**overrides: Any) -> TrainConfig:
    """SPEC §6 fine-tuning settings: up to 21 epochs, patience 6, Adam lr 1e-3 (wd via the defense)."""
    base = {"epochs": 21, "patience": 6, "lr": 1e-3, "weight_decay": LAMBDA_G, "desc": "finetune"}
    base.update(overrides)
    return TrainConfig(**base)


def prune_and_finetune(
    model: nn.Module,
    *,
    method: str,
    final_sparsity: float,
    n_iter: int,
    one_shot: bool = False,
    defense: str = "base",
    settings: dict[str, Any] | None = None,
    train: tuple[torch.Tensor, torch.Tensor],
    dev: tuple[torch.Tensor, torch.Tensor] | None,
    test: tuple[torch.Tensor, torch.Tensor] | None = None,
    scores: np.ndarray | None = None,
    cfg: TrainConfig,
    reference: tuple[torch.Tensor, torch.Tensor] | None = None,
    masks: Masks | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Iteratively prunes ``model`` and fine-tunes every iteration under one defense.

    Each iteration calls :func:`wemem.ml.train.fit` with ``cfg`` (seed ``cfg.seed + k``) and a
    fresh strategy from :func:`build_strategy`; one :class:`DefenseState` spans the iterations.
    RSW/SWMR epochs are capped where every class's window is empty.

    Args:
        model: trained network on the device of ``train``; pruned in place.
        method, final_sparsity, n_iter, one_shot: the pruning schedule (SPEC §6).
        defense, settings: the defense and its settings (see :func:`build_strategy`).
        train, dev, test: device tensors; ``dev`` drives early stopping, ``test`` is only recorded.
        scores: normalised mem-scores aligned with ``train`` (rsw, rmr, swmr).
        cfg: fine-tuning settings (see :func:`finetune_config`).
        reference: non-members for adv (default: ``dev``).
        masks: masks to start from (default: nothing pruned).

    Returns:
        ``(model, record)``; ``record`` holds ``defense``, ``settings``, ``method``,
        ``final_sparsity``, ``n_iter``, ``one_shot``, ``iterations`` (one dict per iteration, see
        :func:`wemem.ml.pruning.iterative_prune`), ``summaries`` (each iteration's strategy
        summary), ``finetune_seconds`` (total wall time), ``final_layer_sparsity``,
        ``final_global_sparsity`` and, for dpsgd, the final ``epsilon``.
    """
    x, y = train
    model.to(x.device)
    labels = y.detach().cpu().numpy()
    reference = reference if reference is not None else dev
    state = DefenseState()

    def make(masks_now: Masks | None) -> MaskedStrategy:
        return build_strategy(
            defense, settings, masks=masks_now, scores=scores, labels=labels, reference=reference, state=state
        )

    probe = make(None)  # fail fast on bad settings, before any pruning
    settings_record = defense_settings(probe)

    def finetune(m: nn.Module, k: int, masks_now: Masks) -> FitResult:
        strategy = make(masks_now)
        run_cfg = replace(cfg, seed=cfg.seed + k, desc=f"{cfg.desc} {defense} it{k}")
        if isinstance(strategy, _Windows):
            run_cfg = replace(run_cfg, epochs=max(1, min(run_cfg.epochs, strategy.active_epochs())))
        try:
            return fit(m, train, dev, run_cfg, strategy, test)
        finally:
            if isinstance(strategy, DPSGD):
                strategy.close()

    start = time.perf_counter()
    records = iterative_prune(
        model,
        method=method,
        final_sparsity=final_sparsity,
        n_iter=n_iter,
        one_shot=one_shot,
        finetune=finetune,
        masks=masks,
    )
    seconds = time.perf_counter() - start
    out: dict[str, Any] = {
        "defense": settings_record["defense"],
        "settings": {k: v for k, v in settings_record.items() if k != "defense"},
        "method": method,
        "final_sparsity": float(final_sparsity),
        "n_iter": int(n_iter),
        "one_shot": bool(one_shot),
        "iterations": records,
        "summaries": [r["summary"] for r in records],
        "finetune_seconds": seconds,
        "final_layer_sparsity": layer_sparsity(model),
        "final_global_sparsity": global_sparsity(model),
    }
    if records and "epsilon" in records[-1]["summary"]:
        out["epsilon"] = records[-1]["summary"]["epsilon"]
        out["delta"] = records[-1]["summary"]["delta"]
    return model, out
