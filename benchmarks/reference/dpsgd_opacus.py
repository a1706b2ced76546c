"""The DP-SGD strategy as it was before the Poisson-sampled, vectorised one (commit e3026b5).

Not part of the library: the yardstick of ``benchmarks/dp_speed.py``. Opacus's
``GradSampleModule`` in its default ("hooks") mode materialises every per-sample gradient,
``DPOptimizer`` clips, noises and steps Adam; batches are shuffled at a fixed size (``fit``'s
default ``epoch_batches``), not Poisson-sampled. Only change from the original: the class is
not registered in ``DEFENSES`` and is named ``OpacusHooksDPSGD``; ``delta`` keeps its old
default (``None`` = 1/n).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from wemem.ml.pruning import Masks
from wemem.ml.schema import Fraction, NonNeg, Pos

from wemem.ml.defenses.base import Base, DefenseState

__all__ = ["OpacusHooksDPSGD"]


class OpacusHooksDPSGD(Base):
    """DP fine-tuning with Opacus 1.6: per-sample clipping and Gaussian noise on Adam (DP-Adam).

    The model is wrapped in a ``GradSampleModule`` for one ``fit`` call (the hooks are removed
    when ``fit`` closes the strategy); privacy is tracked by an RDP accountant stepped with
    sample rate ``batch_size / n`` after every step. ``fit`` draws shuffled fixed-size batches,
    not Poisson samples, so ε uses the usual sampled-Gaussian approximation. The accountant
    lives in the :class:`DefenseState`, so ε accumulates over all pruning iterations of one
    model. Per-sample gradients of pruned weights are zeroed before clipping (they would waste
    the clipping budget) and the masks are re-applied after each step (noise refills zeros).
    Models with BatchNorm are refused: DPSGD needs GroupNorm variants.
    """

    name = "dpsgd_opacus_hooks"

    class Settings(Base.Settings):
        sigma: NonNeg = 1.0
        clip: Pos = 1.0
        delta: Fraction | None = None  # None: 1/n

    def __init__(self, settings, *, masks: Masks | None = None, state: DefenseState | None = None) -> None:
        super().__init__(settings, masks=masks)
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
