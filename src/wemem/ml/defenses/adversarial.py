"""Adversarial regularisation (Nasr et al. 2018, SPEC §7): a min-max game with an inference model."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from wemem.ml.pruning import Masks
from wemem.ml.schema import NonNeg, Pos, PosInt
from wemem.ml.train import autocast

from .base import DEFENSES, Base

__all__ = ["ADV"]


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


@DEFENSES.register("adv", label="ADV", family="adversarial", needs=("reference",))
class ADV(Base):
    """Nasr et al. 2018 adversarial regularisation (min-max game).

    Each step: ``attack_steps`` updates of the inference model h on the current batch (members,
    label 1) vs an equally large random batch of the reference non-members (label 0), then one
    classifier step on ``CE + θ·mean log h(member | x, y)`` = CE − θ·(h's loss on members).
    """

    name = "adv"

    class Settings(Base.Settings):
        theta: NonNeg = 2.0
        attack_steps: PosInt = 1
        attack_lr: Pos = 1e-3

    def __init__(
        self, settings, *, masks: Masks | None = None, reference: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> None:
        super().__init__(settings, masks=masks)
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
