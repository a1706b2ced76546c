"""Iterative magnitude pruning with fixed masks (SPEC §6).

Design, and why:

- *torch's pruning methods pick the weights*: every step calls ``torch.nn.utils.prune``
  (``l1_unstructured`` or ``ln_structured(n=1|2, dim=0)``, i.e. whole output rows of a linear
  layer / output channels of a convolution) on the model's ``prunable_modules``.
- *cumulative targets, absolute counts*: torch applies a step's ``amount`` to the weights that
  are still unpruned (SPEC §6), so each step first re-installs the previous mask with
  ``prune.custom_from_mask`` and then asks for the *increment* as an absolute count,
  ``round(target · units) − already pruned`` (units = weights, or rows/channels for the
  structured methods). Every layer therefore lands on the schedule's cumulative target up to
  one unit of rounding.
- *real zeros, plain masks*: after each step the reparametrisation is removed
  (``prune.remove``), so weights hold real zeros and no forward pre-hooks remain (Opacus refuses
  modules that carry them). The masks live in a plain ``{module name: bool tensor}`` dict on
  the weights' device; a new mask is the old mask AND the step mask, so pruned weights never
  come back. Fine-tuning strategies re-apply the masks after every optimiser step (Adam
  momentum and DP-SGD noise would refill the zeros otherwise).
- *a structured unit is removed whole*: the structured methods also mask the pruned unit's
  bias (key ``"<layer>.bias"``) and the weight and bias of the BatchNorm that directly follows
  the layer (keys ``"<bn>.weight"``, ``"<bn>.bias"``; found by :mod:`wemem.ml.channels`), so a
  pruned channel is exactly zero after normalisation. A mask key is therefore a module name
  (its ``weight``) or a parameter name; sparsity is still counted over the prunable weights.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from wemem.ml.channels import following_batchnorms
from wemem.ml.models import prunable_modules
from wemem.ml.registry import Registry

__all__ = [
    "PRUNING_METHODS",
    "sparsity_schedule",
    "full_masks",
    "masks_from_zeros",
    "prune_step",
    "apply_masks",
    "masked_parameters",
    "layer_sparsity",
    "global_sparsity",
    "mask_sparsity",
    "iterative_prune",
]

Masks = dict[str, torch.Tensor]
"""``{module name: bool mask of its weight}``, plus ``{parameter name: bool mask}`` for the
biases and BatchNorm parameters that structured pruning removes with a channel."""

PRUNING_METHODS = Registry("pruning method")
"""name → a function ``(module, amount)`` that prunes ``amount`` more units of ``module.weight``
with ``torch.nn.utils.prune``; ``structured=True`` entries count output rows/channels as units."""

PRUNING_METHODS.register("l1_unstructured", label="L1 unstructured", family="unstructured", structured=False)(
    lambda module, amount: prune.l1_unstructured(module, "weight", amount=amount))
PRUNING_METHODS.register("l1_structured", label="L1 structured", family="structured", structured=True)(
    lambda module, amount: prune.ln_structured(module, "weight", amount=amount, n=1, dim=0))
PRUNING_METHODS.register("l2_structured", label="L2 structured", family="structured", structured=True)(
    lambda module, amount: prune.ln_structured(module, "weight", amount=amount, n=2, dim=0))


def _check_method(method: str) -> str:
    PRUNING_METHODS[method]  # raises UnknownName (a ValueError) naming the methods
    return method


def _check_sparsity(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name}={value} is not a sparsity; it must lie in [0, 1)")
    return value


def sparsity_schedule(final_sparsity: float, n_iter: int) -> list[float]:
    """Cumulative sparsity of each pruning iteration: ``1 − (1 − s)^(k / (n_iter − 1))``.

    Iteration 0 has sparsity 0 (plain fine-tuning) and the last one reaches ``final_sparsity``.
    ``n_iter = 1`` is a single step straight to ``final_sparsity``.

    >>> [round(v, 4) for v in sparsity_schedule(0.6, 5)]
    [0.0, 0.2047, 0.3675, 0.497, 0.6]
    """
    s = _check_sparsity("final_sparsity", final_sparsity)
    if int(n_iter) != n_iter or n_iter < 1:
        raise ValueError(f"n_iter={n_iter} must be a positive integer (SPEC: 5)")
    n_iter = int(n_iter)
    if n_iter == 1:
        return [s]
    return [1.0 - (1.0 - s) ** (k / (n_iter - 1)) for k in range(n_iter)]


def full_masks(model: nn.Module) -> Masks:
    """All-True masks (nothing pruned) for every prunable module, on the weights' device."""
    return {
        name: torch.ones_like(module.weight, dtype=torch.bool) for name, module in prunable_modules(model)
    }


def masks_from_zeros(model: nn.Module) -> Masks:
    """Masks that keep exactly the non-zero weights (e.g. to resume from a pruned checkpoint)."""
    return {name: module.weight.detach() != 0 for name, module in prunable_modules(model)}


def _units(weight: torch.Tensor, structured: bool) -> int:
    return int(weight.shape[0]) if structured else int(weight.numel())


def _pruned_units(mask: torch.Tensor, structured: bool) -> int:
    if structured:
        return int((~mask.reshape(mask.shape[0], -1).any(dim=1)).sum().item())
    return int((~mask).sum().item())


def prune_step(model: nn.Module, masks: Masks | None, method: str, target: float) -> Masks:
    """Prunes every prunable layer to the cumulative sparsity ``target``.

    Args:
        model: the network; its prunable weights are zeroed in place where pruned.
        masks: the current masks (``None``: nothing pruned yet). Pruned weights stay pruned.
        method: one of :data:`PRUNING_METHODS`.
        target: cumulative fraction of each layer's weights (unstructured) or output
            rows/channels (structured) that is pruned after this step.

    Returns:
        The new masks ``{module name: bool tensor}`` (old mask AND this step's mask); the
        structured methods add the masks of the pruned units' biases and BatchNorms.
    """
    entry = PRUNING_METHODS[method]
    target = _check_sparsity("target", target)
    masks = dict(masks) if masks is not None else full_masks(model)
    structured = bool(entry.extra["structured"])
    layers = prunable_modules(model)
    layer_names = {name for name, _ in layers}
    # bias / BatchNorm masks of units pruned earlier stay in force (pruned units never return)
    new_masks: Masks = {k: v for k, v in masks.items() if k not in layer_names}
    for name, module in layers:
        weight = module.weight
        old = masks.get(name)
        if old is None:
            old = torch.ones_like(weight, dtype=torch.bool)
        old = old.to(device=weight.device, dtype=torch.bool)
        if old.shape != weight.shape:
            raise ValueError(f"mask of {name} has shape {tuple(old.shape)}, its weight {tuple(weight.shape)}")
        units = _units(weight, structured)
        increment = int(round(target * units)) - _pruned_units(old, structured)
        if increment <= 0:
            new_masks[name] = old
            continue
        # re-install the old mask so torch computes the new one on the still-unpruned part
        prune.custom_from_mask(module, "weight", old)
        entry.obj(module, increment)
        step_mask = module.weight_mask.detach().to(torch.bool)
        prune.remove(module, "weight")  # weights now hold real zeros, no hooks left
        new_masks[name] = old & step_mask
    if structured:
        for key, keep in _unit_masks(model, new_masks).items():
            new_masks[key] = new_masks[key].to(keep.device) & keep if key in new_masks else keep
    apply_masks(model, new_masks)
    return new_masks


def _unit_masks(model: nn.Module, masks: Masks) -> Masks:
    """Masks of the biases and following BatchNorm parameters of the structurally pruned units."""
    modules = dict(model.named_modules())
    names = [name for name, _ in prunable_modules(model)]
    norms = following_batchnorms(model, names)
    out: Masks = {}
    for name in names:
        mask = masks[name]
        keep = mask.reshape(mask.shape[0], -1).any(dim=1)
        if bool(keep.all()):
            continue
        if getattr(modules[name], "bias", None) is not None:
            out[f"{name}.bias"] = keep
        if name in norms:
            out[f"{norms[name]}.weight"] = keep
            out[f"{norms[name]}.bias"] = keep
    return out


def masked_parameters(model: nn.Module, masks: Masks | None) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """``(key, parameter, bool mask on the parameter's device)`` for every mask entry.

    A key names a module (its ``weight`` is masked) or a parameter (``"bn1.bias"``).

    Raises:
        ValueError: a key matches neither, or a mask's shape differs from its parameter's.
    """
    if not masks:
        return []
    modules = dict(model.named_modules())
    params = dict(model.named_parameters())
    out = []
    for key, mask in masks.items():
        if key in modules and isinstance(getattr(modules[key], "weight", None), torch.Tensor):
            param = modules[key].weight
        elif key in params:
            param = params[key]
        else:
            raise ValueError(
                f"mask for {key!r} matches no module or parameter of {type(model).__name__}; "
                "masks must come from pruning this architecture"
            )
        if mask.shape != param.shape:
            raise ValueError(f"mask of {key} has shape {tuple(mask.shape)}, the parameter {tuple(param.shape)}")
        out.append((key, param, mask.to(device=param.device, dtype=torch.bool)))
    return out


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Masks | None) -> None:
    """Zeroes the masked-out weights of ``model`` in place (no autograd)."""
    for _, param, mask in masked_parameters(model, masks):
        param.mul_(mask)


@torch.no_grad()
def layer_sparsity(model: nn.Module) -> dict[str, float]:
    """Fraction of exact zeros in each prunable weight."""
    return {
        name: float((module.weight == 0).float().mean().item()) for name, module in prunable_modules(model)
    }


@torch.no_grad()
def global_sparsity(model: nn.Module) -> float:
    """Fraction of exact zeros over all prunable weights together."""
    zeros, total = 0, 0
    for _, module in prunable_modules(model):
        zeros += int((module.weight == 0).sum().item())
        total += module.weight.numel()
    return zeros / total if total else 0.0


def mask_sparsity(masks: Masks) -> dict[str, float]:
    """Fraction of masked-out entries in each mask."""
    return {name: float((~m).float().mean().item()) for name, m in masks.items()}


def iterative_prune(
    model: nn.Module,
    *,
    method: str,
    final_sparsity: float,
    n_iter: int,
    one_shot: bool = False,
    finetune: Callable[[nn.Module, int, Masks], Any],
    masks: Masks | None = None,
) -> list[dict[str, Any]]:
    """Prune-then-fine-tune for every iteration of the schedule (SPEC §6).

    Args:
        model: the trained network, pruned in place.
        method: one of :data:`PRUNING_METHODS`.
        final_sparsity: sparsity of the last iteration.
        n_iter: number of iterations (iteration 0 is plain fine-tuning).
        one_shot: a single step straight to ``final_sparsity`` followed by one fine-tuning.
        finetune: ``finetune(model, iteration, masks)`` trains the model while keeping the
            masks fixed and returns a :class:`~wemem.ml.train.FitResult` (or ``None``).
        masks: masks to start from (default: nothing pruned).

    Returns:
        One record per iteration: ``iteration``, ``target_sparsity``, ``layer_sparsity``
        (achieved, per layer, after fine-tuning), ``global_sparsity``, ``history``,
        ``best_epoch``, ``best_dev_acc``, ``epochs_run``, ``summary`` (the strategy's) and
        ``seconds`` (pruning plus fine-tuning wall time).
    """
    _check_method(method)
    schedule = [_check_sparsity("final_sparsity", final_sparsity)] if one_shot else sparsity_schedule(final_sparsity, n_iter)
    masks = dict(masks) if masks is not None else full_masks(model)
    records: list[dict[str, Any]] = []
    for k, target in enumerate(schedule):
        start = time.perf_counter()
        masks = prune_step(model, masks, method, target)
        result = finetune(model, k, masks)
        apply_masks(model, masks)  # the kept checkpoint was masked already; this makes it certain
        records.append(
            {
                "iteration": k,
                "target_sparsity": float(target),
                "layer_sparsity": layer_sparsity(model),
                "global_sparsity": global_sparsity(model),
                "history": list(getattr(result, "history", []) or []),
                "best_epoch": getattr(result, "best_epoch", None),
                "best_dev_acc": getattr(result, "best_dev_acc", None),
                "epochs_run": getattr(result, "epochs_run", None),
                "summary": dict(getattr(result, "extra", {}) or {}),
                "seconds": time.perf_counter() - start,
            }
        )
    return records
