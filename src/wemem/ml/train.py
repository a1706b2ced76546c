"""One device-agnostic training loop.

Tricks, each named:
- *device resident data*: the whole training, dev and test sets are moved to the device once;
  batches are index slices of a seeded on-device permutation, so there is no per-batch host copy.
- *few host syncs*: losses and correct counts accumulate on the device and are read once per
  epoch (early stopping needs the dev accuracy once per epoch anyway).
- *mixed precision on CUDA*: bfloat16 autocast (no loss scaler needed); full precision on CPU.
- *best-dev checkpoint*: early stopping on dev accuracy with a patience, keeping the best state
  in memory (SPEC §3).

Defenses plug in as a :class:`Strategy`: which samples an epoch sees, which loss, which optimizer,
what happens after every step (e.g. re-applying a pruning mask). The base strategy is plain
cross-entropy with Adam and L2 weight decay.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from wemem.ml.schema import NonNeg, Pos, PosInt, Section

__all__ = [
    "TrainSettings",
    "FinetuneSettings",
    "TrainConfig",
    "FitResult",
    "Strategy",
    "resolve_device",
    "seed_everything",
    "to_tensors",
    "fit",
    "predict_proba",
    "predict_logits",
    "accuracy",
    "autocast",
]

log = logging.getLogger(__name__)


class FinetuneSettings(Section):
    """``pruning_defense.finetune``: fine-tuning of every pruning iteration (SPEC §6); the weight
    decay is the defense's λ_g."""

    epochs: PosInt
    patience: PosInt
    batch_size: PosInt
    lr: Pos


class TrainSettings(FinetuneSettings):
    """``training``: how the victim and the shadows are trained (SPEC §3)."""

    weight_decay: NonNeg


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; any torch device string is accepted."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"device {device!r} is not a torch device; use 'auto', 'cpu' or 'cuda'") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use 'auto' or 'cpu'")
    return dev


def seed_everything(seed: int) -> None:
    """Seeds Python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast(device: torch.device, enabled: bool = True):
    """bfloat16 autocast on CUDA, a no-op elsewhere."""
    on = enabled and device.type == "cuda"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=on)


def to_tensors(
    x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Moves one (features, labels) pair to the device, keeping uint8 images compact."""
    xt = torch.as_tensor(x)
    if xt.dtype == torch.float64:
        xt = xt.float()
    return xt.to(device), torch.as_tensor(y, dtype=torch.long).to(device)


@dataclass
class TrainConfig:
    """Settings of one training run (SPEC §3 defaults)."""

    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 5e-4
    patience: int | None = 5
    device: str = "auto"
    amp: bool = True
    seed: int = 0
    progress: bool = True
    desc: str = "train"
    eval_batch_size: int = 4096


@dataclass
class FitResult:
    """What a training run did: per-epoch history and the kept (best-dev) epoch."""

    best_epoch: int
    best_dev_acc: float
    epochs_run: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


class Strategy:
    """Base fine-tuning strategy: all samples every epoch, cross-entropy, Adam with L2.

    Subclasses override the hooks they need; the loop in :func:`fit` calls them in this order:
    ``bind`` once, then per epoch ``epoch_batches`` (default: ``epoch_indices`` cut into
    ``batch_size`` slices) and per batch ``train_step`` (whose default calls ``loss`` then
    ``after_step``), and ``summary`` at the end.
    """

    name = "base"

    def bind(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        cfg: TrainConfig,
        generator: torch.Generator,
    ) -> nn.Module:
        """Called once before training; returns the module to train (may wrap it)."""
        self.cfg = cfg
        self.generator = generator
        self.device = x.device
        self.optimizer = self.make_optimizer(model, cfg)
        return model

    def make_optimizer(self, model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
        return torch.optim.Adam(
            (p for p in model.parameters() if p.requires_grad), lr=cfg.lr, weight_decay=cfg.weight_decay
        )

    def epoch_indices(self, epoch: int, n: int) -> torch.Tensor:
        """Indices into the training set that this epoch trains on, in order."""
        return torch.randperm(n, generator=self.generator, device=self.device)

    def epoch_batches(self, epoch: int, n: int) -> list[torch.Tensor]:
        """The index batches of one epoch, in order; an empty list ends training.

        The default cuts :meth:`epoch_indices` into ``batch_size`` slices. Defenses that group
        samples (e.g. risky samples in their own batches) or sample batches differently (Poisson
        sampling for DP-SGD) override this.
        """
        order = self.epoch_indices(epoch, n)
        return list(torch.split(order, self.cfg.batch_size)) if order.numel() else []

    def loss(
        self, model: nn.Module, logits: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, epoch: int
    ) -> torch.Tensor:
        return F.cross_entropy(logits.float(), y)

    def train_step(
        self, model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, idx: torch.Tensor, epoch: int
    ) -> torch.Tensor:
        """One optimisation step on a batch; returns the (detached) batch loss."""
        optimizer = self.batch_optimizer()
        optimizer.zero_grad(set_to_none=True)
        with autocast(self.device, self.cfg.amp):
            logits = model(xb)
        loss = self.loss(model, logits, yb, idx, epoch)
        loss.backward()
        optimizer.step()
        self.after_step(model)
        return loss.detach()

    def batch_optimizer(self) -> torch.optim.Optimizer:
        """The optimizer that steps the next batch (called once per batch, in order); defenses
        that step groups of samples with different optimizers override it."""
        return self.optimizer

    def after_step(self, model: nn.Module) -> None:
        """Called after every optimiser step (e.g. to re-apply pruning masks)."""

    def summary(self) -> dict[str, Any]:
        """Settings and measurements to record with the run (e.g. ε for DP-SGD)."""
        return {}

    def close(self) -> None:
        """Called once when training ends, also on error (e.g. to remove hooks)."""


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 4096, amp: bool = True) -> torch.Tensor:
    """Logits for all of ``x`` in evaluation mode, as float32 on x's device."""
    was_training = model.training
    model.eval()
    outs = []
    for start in range(0, x.shape[0], batch_size):
        with autocast(x.device, amp):
            outs.append(model(x[start : start + batch_size]).float())
    model.train(was_training)
    if not outs:
        return torch.empty(0, device=x.device)
    return torch.cat(outs)


def predict_proba(model: nn.Module, x: torch.Tensor, batch_size: int = 4096, amp: bool = True) -> torch.Tensor:
    """Softmax outputs for all of ``x`` in evaluation mode."""
    return torch.softmax(predict_logits(model, x, batch_size, amp), dim=1)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 4096) -> float:
    """Top-1 accuracy of ``model`` on (x, y)."""
    if x.shape[0] == 0:
        return float("nan")
    pred = predict_logits(model, x, batch_size).argmax(1)
    return float((pred == y).float().mean().item())


def _state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def fit(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    dev: tuple[torch.Tensor, torch.Tensor] | None,
    cfg: TrainConfig,
    strategy: Strategy | None = None,
    test: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> FitResult:
    """Trains ``model`` in place on device-resident tensors.

    Args:
        model: the network, already on the device of the tensors.
        train: (x, y) training tensors.
        dev: (x, y) tensors for early stopping; ``None`` trains all epochs and keeps the last.
        cfg: the training settings.
        strategy: the defense strategy (default: :class:`Strategy`, i.e. Base).
        test: optional (x, y) whose accuracy is recorded each epoch (never used for selection).

    Returns:
        A :class:`FitResult`; the model holds the best-dev weights on return.

    Raises:
        FloatingPointError: when the training loss becomes NaN or infinite.
    """
    strategy = strategy or Strategy()
    x, y = train
    if x.shape[0] == 0:
        raise ValueError(f"{cfg.desc}: the training set is empty")
    device = x.device
    generator = torch.Generator(device=device)
    generator.manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    module = strategy.bind(model, x, y, cfg, generator)

    start = time.perf_counter()
    try:
        history, best_epoch, best_acc, epoch = _epochs(module, model, x, y, dev, test, cfg, strategy, device)
    finally:
        strategy.close()
    seconds = time.perf_counter() - start
    log.debug("%s: %d epochs, best dev acc %.4f at epoch %d, %.1fs", cfg.desc, len(history), best_acc, best_epoch, seconds)
    return FitResult(
        best_epoch=best_epoch,
        best_dev_acc=float(best_acc),
        epochs_run=len(history),
        seconds=seconds,
        history=history,
        extra=strategy.summary(),
    )


def _epochs(module, model, x, y, dev, test, cfg, strategy, device):
    """The epoch loop of :func:`fit`; returns (history, best epoch, best dev acc, last epoch)."""
    best_state, best_acc, best_epoch, bad = None, -1.0, -1, 0
    history: list[dict[str, float]] = []
    # disable=None: bars only on a terminal, so logs and CI output stay readable
    bar = tqdm(range(cfg.epochs), desc=cfg.desc, disable=None if cfg.progress else True, leave=False, dynamic_ncols=True)
    epoch = -1
    for epoch in bar:
        module.train()
        batches = strategy.epoch_batches(epoch, x.shape[0])
        if not batches:  # e.g. sliding windows past the end of every class
            break
        total = torch.zeros((), device=device)
        steps = samples = 0
        for idx in batches:
            total += strategy.train_step(module, x[idx], y[idx], idx, epoch)
            steps += 1
            samples += int(idx.numel())
        train_loss = float(total.item()) / max(steps, 1)
        if not np.isfinite(train_loss):
            raise FloatingPointError(
                f"{cfg.desc}: training loss became {train_loss} in epoch {epoch} "
                f"(strategy {strategy.name}); lower the learning rate or the regularisation strength"
            )
        record = {"epoch": float(epoch), "loss": train_loss, "samples": float(samples)}
        if dev is not None:
            record["dev_acc"] = accuracy(model, *dev, batch_size=cfg.eval_batch_size)
        if test is not None:
            record["test_acc"] = accuracy(model, *test, batch_size=cfg.eval_batch_size)
        history.append(record)
        bar.set_postfix({k: round(v, 4) for k, v in record.items() if k != "epoch"})
        if dev is None:
            continue
        if record["dev_acc"] > best_acc:
            best_acc, best_epoch, bad = record["dev_acc"], epoch, 0
            best_state = _state_copy(model)
        else:
            bad += 1
            if cfg.patience is not None and bad >= cfg.patience:
                break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        best_epoch = epoch
        best_acc = history[-1].get("dev_acc", float("nan")) if history else float("nan")
    return history, best_epoch, best_acc, epoch


def clone_model(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` (weights, buffers and pruning hooks)."""
    return copy.deepcopy(model)
