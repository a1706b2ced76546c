"""Building a defense from its settings, and the pruning schedule fine-tuned under it (SPEC §6–7).

:func:`build_strategy` validates settings against the defense's schema and builds a fresh
strategy; :func:`prune_and_finetune` runs the whole pruning schedule with one defense (a fresh
strategy per iteration, one :class:`DefenseState` per model so that DP-SGD's privacy accountant
spans all iterations).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError
from torch import nn

from wemem.ml.pruning import Masks, global_sparsity, iterative_prune, layer_sparsity
from wemem.ml.schema import Section, first_error
from wemem.ml.train import FitResult, TrainConfig, fit

from .base import DEFENSES, LAMBDA_G, DefenseState, MaskedStrategy

__all__ = [
    "RISK_KEYS", "build_strategy", "defense_settings", "finetune_config", "parse_settings", "prune_and_finetune",
    "resolve_settings", "setting_names",
]


RISK_KEYS = ("risky_fraction", "n_risky", "threshold")
"""What τ selected, copied from the summary of a score-based defense (rmr, swmr) into the record:
the risky fraction f, the number of risky samples and the score threshold actually used."""


def setting_names(name: str) -> tuple[list[str], list[str]]:
    """(all settings, required settings) of the defense called ``name``, from its schema."""
    fields = DEFENSES[str(name).lower()].settings.model_fields
    return list(fields), [k for k, f in fields.items() if f.is_required()]


def parse_settings(name: str, settings: Mapping[str, Any] | Section | None) -> Section:
    """``settings`` validated by defense ``name``'s schema; a ValueError names the setting."""
    entry = DEFENSES[str(name).lower()]
    try:
        return entry.parse(settings)
    except ValidationError as exc:
        allowed, _ = setting_names(entry.name)
        raise ValueError(f"{entry.name}: {first_error(exc)}; {entry.name} takes {allowed}") from None


def resolve_settings(name: str, variant: Mapping[str, Any], defaults: Mapping[str, Any]) -> Section:
    """A variant's settings, with the dataset's defaults (w, s, tau) for the ones it leaves out
    and the defense takes."""
    allowed, _ = setting_names(name)
    merged = {k: v for k, v in variant.items() if k != "defense"}
    merged.update({k: v for k, v in defaults.items() if k in allowed and k not in merged})
    return parse_settings(name, merged)


def build_strategy(
    name: str,
    settings: Mapping[str, Any] | Section | None = None,
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
        settings: the defense's settings (its ``Settings`` schema, or a mapping validated by it).
        masks: pruning masks kept fixed during training.
        scores: normalised mem-scores of the model's training set (defenses that need ``scores``).
        labels: labels of the model's training set, aligned with ``scores``.
        reference: (x, y) non-member tensors (adv: the dev set).
        state: per-model state that outlives one ``fit`` (dpsgd's accountant).

    Raises:
        ValueError: unknown defense, unknown/missing setting or a setting outside its range;
            the message names the setting, the value and what is allowed.
    """
    entry = DEFENSES[str(name).lower()]
    parsed = parse_settings(entry.name, settings)
    data = {"scores": {"scores": scores, "labels": labels}, "reference": {"reference": reference},
            "state": {"state": state}}
    needs = {k: v for need in entry.needs for k, v in data[need].items()}
    return entry.obj(parsed, masks=masks, **needs)


def defense_settings(strategy: MaskedStrategy) -> dict[str, Any]:
    """The defense name and its settings, for recording with a run."""
    return {"defense": strategy.name, **strategy.settings()}


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
    settings: Mapping[str, Any] | Section | None = None,
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
    A strategy may cap an iteration's epochs (:meth:`MaskedStrategy.epochs_cap`: RSW/SWMR stop
    where every class's window is empty).

    Args:
        model: trained network on the device of ``train``; pruned in place.
        method, final_sparsity, n_iter, one_shot: the pruning schedule (SPEC §6).
        defense, settings: the defense and its settings (see :func:`build_strategy`).
        train, dev, test: device tensors; ``dev`` drives early stopping, ``test`` is only recorded.
        scores: normalised mem-scores aligned with ``train`` (defenses that need ``scores``).
        cfg: fine-tuning settings (see :func:`finetune_config`).
        reference: non-members for adv (default: ``dev``).
        masks: masks to start from (default: nothing pruned).

    Returns:
        ``(model, record)``; ``record`` holds ``defense``, ``settings``, ``method``,
        ``final_sparsity``, ``n_iter``, ``one_shot``, ``iterations`` (one dict per iteration, see
        :func:`wemem.ml.pruning.iterative_prune`), ``summaries`` (each iteration's strategy
        summary), ``finetune_seconds`` (total wall time), ``final_layer_sparsity``,
        ``final_global_sparsity``, for rmr/swmr :data:`RISK_KEYS` and, for dpsgd, the final
        ``epsilon``.
    """
    x, y = train
    model.to(x.device)
    labels = y.detach().cpu().numpy()
    reference = reference if reference is not None else dev
    state = DefenseState()
    parsed = parse_settings(defense, settings)  # fail fast on bad settings, before any pruning

    def make(masks_now: Masks | None) -> MaskedStrategy:
        return build_strategy(
            defense, parsed, masks=masks_now, scores=scores, labels=labels, reference=reference, state=state
        )

    settings_record = defense_settings(make(None))

    def finetune(m: nn.Module, k: int, masks_now: Masks) -> FitResult:
        strategy = make(masks_now)
        run_cfg = replace(cfg, seed=cfg.seed + k, desc=f"{cfg.desc} {defense} it{k}")
        run_cfg = replace(run_cfg, epochs=strategy.epochs_cap(run_cfg.epochs))
        try:
            return fit(m, train, dev, run_cfg, strategy, test)
        finally:
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
    last = records[-1]["summary"] if records else {}
    # what τ selected (rmr, swmr): the same every iteration, the scores being fixed
    out.update({key: last[key] for key in RISK_KEYS if key in last})
    if records and "epsilon" in records[-1]["summary"]:
        out["epsilon"] = records[-1]["summary"]["epsilon"]
        out["delta"] = records[-1]["summary"]["delta"]
    return model, out
