"""The attack a real adversary would pick (SPEC §8): judged on the shadow models only.

Leave one shadow out: shadow j plays the victim (its own members and non-members, whose
membership the adversary knows because it trained it); the other shadows are its shadows and
OUT references; every chosen attack is calibrated on them and scored on shadow j. The attack
with the best mean metric over the folds is ``chosen_attack``; its victim metrics are the
headline figures. No victim membership label is read. It needs at least two shadows and the
shadows' outputs on each other's samples (:attr:`AttackData.shadow_references`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from .base import AttackData
from .runner import run_attacks

__all__ = ["shadow_folds", "choose_attack"]


def shadow_folds(data: AttackData, folds: int | None = None) -> Iterator[AttackData]:
    """One :class:`AttackData` per shadow j (the first ``folds`` shadows; None: all), with shadow
    j as the target (see module docstring)."""
    k = len(data.shadows)
    if k < 2 or data.shadow_references is None:
        return
    for j in range(k if folds is None else min(k, int(folds))):
        others = [i for i in range(k) if i != j]
        yield AttackData(
            target=data.shadows[j],
            shadows=[data.shadows[i] for i in others],
            reference_on_target=np.asarray(data.shadow_references[j])[others],
            target_on_population=np.asarray(data.reference_on_population)[j],
            reference_on_population=np.asarray(data.reference_on_population)[others],
            population_labels=data.population_labels,
        )


def choose_attack(
    data: AttackData, attacks: Sequence[str], settings: Mapping[str, Any] | None = None, *,
    metric: str = "balanced_acc", folds: int | None = None, training: Any = None, device: str = "cpu",
    seed: int = 0,
) -> tuple[str, dict[str, float]]:
    """The attack with the highest mean ``metric`` over the leave-one-shadow-out folds (at most
    ``folds`` of them; the first in ``attacks`` on ties) and every attack's mean; ``("", {})``
    with fewer than two shadows or without shadow references. NaN fold values (e.g. a TPR not
    measurable) are skipped. Cost: each fold runs every attack once (classifier attacks train on
    the other shadows), so all k folds cost about k − 1 times the victim's attacks."""
    per_attack: dict[str, list[float]] = {a: [] for a in attacks}
    for fold in shadow_folds(data, folds):
        for name, result in run_attacks(fold, attacks, settings, training=training, device=device, seed=seed).items():
            per_attack[name].append(float(result.metrics[metric]))
    means = {a: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
             for a, v in per_attack.items() if v}
    ranked = [a for a in attacks if a in means and np.isfinite(means[a])]
    if not ranked:
        return "", means
    return max(ranked, key=lambda a: means[a]), means
