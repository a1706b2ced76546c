"""DP-SGD fine-tuning: Poisson sampling, vectorised per-sample clipping, Gaussian noise,
Opacus's RDP accountant (SPEC §7)."""

from __future__ import annotations

from typing import Any

import torch

from wemem.ml.pruning import Masks
from wemem.ml.schema import Fraction, NonNeg, Pos

from .base import DEFENSES, Base, DefenseState
from .dp_clip import FrozenNormModule, PerSampleClipper, freeze_batchnorm, unfreeze_batchnorm

__all__ = ["DPSGD"]


@DEFENSES.register("dpsgd", label="DP-SGD", family="dp", needs=("state",))
class DPSGD(Base):
    """DP fine-tuning (DP-Adam, Abadi et al. 2016, as Opacus does it), vectorised.

    - *Poisson sampling*: an epoch is ``n // batch_size`` steps (at least one); every sample
      enters a step's batch independently with probability ``q = batch_size / n`` (drawn on the
      device from the strategy's seeded generator). An empty batch is still a step: it adds
      noise and is accounted for.
    - *per-sample clipping* to norm ``clip`` by :class:`~wemem.ml.defenses.dp_clip.PerSampleClipper`
      (ghost norms for Linear layers; per-sample gradients of pruned weights zeroed first);
      noise ``N(0, (sigma·clip)²)`` per coordinate from a generator kept in the
      :class:`DefenseState`; the noisy sum is divided by the expected batch size ``q·n`` and
      stepped by Adam (weight decay λ_g); the pruning masks are re-applied after every step.
    - *accounting*: Opacus's RDP accountant, stepped with ``(sigma, q)`` once per step, lives in
      the :class:`DefenseState`, so ε covers every pruning iteration of one model; ``delta``
      (default 1e-5) must be below 1/n. **What ε covers**: only this private fine-tuning. The
      model it starts from was pretrained *non-privately* on the same members, so ε does not
      bound the membership leakage of the released model.
    - *BatchNorm*: BatchNorm layers are frozen in evaluation mode (running statistics fixed)
      with their affine parameters frozen, for the fine-tuning only, so each sample's gradient
      is independent of its batch; ``requires_grad`` and the modes are restored at the end.
    """

    name = "dpsgd"

    class Settings(Base.Settings):
        sigma: NonNeg = 1.0
        clip: Pos = 1.0
        delta: Fraction = 1e-5

    def __init__(self, settings, *, masks: Masks | None = None, state: DefenseState | None = None) -> None:
        super().__init__(settings, masks=masks)
        self.state = state if state is not None else DefenseState()
        self.clipper: PerSampleClipper | None = None
        self._frozen: list = []

    def bind(self, model, x, y, cfg, generator):
        from opacus.accountants import RDPAccountant

        self.n = int(x.shape[0])
        if self.delta >= 1.0 / self.n:
            raise ValueError(
                f"dpsgd: delta={self.delta:g} is not below 1/n = {1.0 / self.n:.3g} (n = {self.n} training samples); "
                f"a delta of 1/n or more allows releasing a whole sample. Set the dpsgd variant's delta "
                f"well below {1.0 / self.n:.3g}, e.g. 1e-5"
            )
        self.sample_rate = min(1.0, cfg.batch_size / self.n)
        self.expected_batch = float(min(cfg.batch_size, self.n))  # q·n
        self.steps_per_epoch = max(1, self.n // cfg.batch_size)
        if self.state.accountant is None:
            self.state.accountant = RDPAccountant()
        if self.state.noise_generator is None:
            self.state.noise_generator = torch.Generator(device=x.device)
            self.state.noise_generator.manual_seed(cfg.seed + 7919)
        self._frozen = freeze_batchnorm(model)
        try:
            super().bind(model, x, y, cfg, generator)  # masks validated and applied, Adam on trainable params
            self.clipper = PerSampleClipper(model, self.clip, {id(w): m for w, m in self._masked})
        except Exception:
            unfreeze_batchnorm(self._frozen, model.training)
            self._frozen = []
            raise
        self._sizes = [p.numel() for p in self.clipper.params]
        if self._frozen:
            return FrozenNormModule(model, [m for m, _ in self._frozen])
        return model

    def epoch_batches(self, epoch: int, n: int) -> list[torch.Tensor]:
        """``steps_per_epoch`` Poisson-sampled batches (one host sync per epoch, for their sizes)."""
        take = torch.rand(self.steps_per_epoch, n, generator=self.generator, device=self.device) < self.sample_rate
        sizes = take.sum(1).tolist()
        return list(torch.split(take.nonzero()[:, 1], sizes))

    def train_step(self, model, xb, yb, idx, epoch):
        batch = int(xb.shape[0])
        if batch:
            self.clipper.recording = True
            try:
                logits = model(xb)  # full precision: per-sample gradients in float32
            finally:
                self.clipper.recording = False
            loss = self.loss(model, logits, yb, idx, epoch)  # the batch mean
            sums, _ = self.clipper.clipped_sums(loss * batch, batch)
            loss = loss.detach()
        else:  # an empty Poisson batch: the step is pure noise
            self.clipper.discard()
            sums = [torch.zeros_like(p) for p in self.clipper.params]
            loss = torch.zeros((), device=self.device)
        scale = 1.0 / self.expected_batch
        if self.sigma > 0:
            noise = torch.randn(sum(self._sizes), generator=self.state.noise_generator, device=self.device)
            noise = noise.mul_(self.sigma * self.clip).split(self._sizes)
            for p, s, z in zip(self.clipper.params, sums, noise):
                p.grad = (s + z.view_as(p)).mul_(scale)
        else:
            for p, s in zip(self.clipper.params, sums):
                p.grad = s.mul_(scale)
        self.optimizer.step()
        self.state.accountant.step(noise_multiplier=self.sigma, sample_rate=self.sample_rate)
        self.state.dp_steps += 1
        self.after_step(model)
        return loss

    def close(self) -> None:
        """Removes the hooks and unfreezes BatchNorm (idempotent)."""
        if self.clipper is not None:
            self.clipper.remove()
            self.clipper = None
        if self._frozen:
            unfreeze_batchnorm(self._frozen, self.model.training)
            self._frozen = []

    def epsilon(self) -> float:
        acc = self.state.accountant
        if acc is None or not acc.history:
            return 0.0
        if self.sigma == 0:
            return float("inf")
        return float(acc.get_epsilon(delta=self.delta))

    def measurements(self) -> dict[str, Any]:
        self.close()  # fit asks for the summary once training is over
        if not hasattr(self, "sample_rate"):
            return {}
        return {
            "epsilon": self.epsilon(),
            "delta": self.delta,
            "sample_rate": self.sample_rate,
            "dp_steps": self.state.dp_steps,
        }
