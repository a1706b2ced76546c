"""Data types shared by every attack and the attack registry :data:`ATTACKS`.

An attack is a function ``attack(data: AttackData, ctx: AttackContext) -> AttackResult`` that
registers itself where it is written, with its label (tables, plots), its family (``metric``,
``classifier`` or ``calibrated``) and the schema of its own settings (a
:class:`wemem.ml.schema.Section`, or none)::

    class RmiaSettings(Section):
        a: Unit = 0.3
        gamma: Pos = 1.0

    @ATTACKS.register("rmia", label="RMIA", family="calibrated", settings=RmiaSettings)
    def rmia_attack(data, ctx): ...   # ctx.settings is an RmiaSettings

The attack's conf entry is ``mia_evaluation.<name>`` (validated by that schema); the classifier
family shares ``mia_evaluation.attack_model`` (:class:`AttackModelSettings`), handed over as
``ctx.training``. Importing :mod:`wemem.ml.attacks` imports every module of the package, so a
new attack is one module plus its conf entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from ..registry import Registry
from .metrics import attack_metrics
from .signals import softmax

ATTACKS = Registry("attack")
"""name → attack function, with its label, family and settings schema."""


@dataclass
class ModelOutputs:
    """One model's outputs on a set of samples: float32 logits (computed without autocast);
    every softmax-based signal reads :attr:`probs`, derived from them."""

    logits: np.ndarray  # (n, C) float32 logits
    labels: np.ndarray  # (n,) int64
    member: np.ndarray  # (n,) bool: was the sample in this model's training set
    sensitivity: np.ndarray | None = None  # (n, C) SAMIA sensitivity signal

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @cached_property
    def probs(self) -> np.ndarray:
        """(n, C) float32 softmax of the logits (computed in float64)."""
        return softmax(self.logits).astype(np.float32)


@dataclass
class AttackData:
    """Everything the attacks see (see SPEC §8)."""

    target: ModelOutputs  # victim on victim-train (members) ∪ victim-test (non-members)
    shadows: list[ModelOutputs]  # shadow i on its own train (members) ∪ test (non-members)
    reference_on_target: np.ndarray  # (n_shadows, n_target, C) logits: shadows on the target's samples
    target_on_population: np.ndarray  # (n_pop, C) logits: victim on population (non-member) samples
    reference_on_population: np.ndarray  # (n_shadows, n_pop, C) logits
    population_labels: np.ndarray  # (n_pop,)
    # shadow j's samples seen by every shadow: [j] is (n_shadows, n_j, C) logits (row j: shadow j
    # itself); needed only to choose an attack on the shadows (wemem.ml.attacks.selection)
    shadow_references: list[np.ndarray] | None = None


@dataclass(frozen=True)
class AttackContext:
    """What an attack gets besides the data."""

    settings: Any = None  # the attack's own settings: an instance of its registered schema (None: it has none)
    training: Any = None  # classifier family: the shared AttackModelSettings (None: their defaults)
    device: str = "cpu"
    seed: int = 0


@dataclass
class AttackResult:
    name: str
    scores: np.ndarray  # (n_target,) higher = more likely member
    predictions: np.ndarray  # (n_target,) bool decision at the attack's own rule
    metrics: dict[str, float]  # balanced_acc, auc, tpr_at_1fpr, tpr_at_0.1fpr (NaN: below 1/n_non), eps_lb


def make_result(name: str, scores: np.ndarray, predictions: np.ndarray, data: AttackData) -> AttackResult:
    """Wrap an attack's scores and predictions on the target with their metrics."""
    scores = np.asarray(scores, dtype=np.float64)
    predictions = np.asarray(predictions, dtype=bool)
    return AttackResult(
        name=name,
        scores=scores,
        predictions=predictions,
        metrics=attack_metrics(scores, predictions, data.target.member),
    )


def pooled_shadows(data: AttackData) -> ModelOutputs:
    """All shadows' outputs concatenated (members = their train sets, non-members = test sets)."""
    sh = data.shadows
    sens = None
    if all(s.sensitivity is not None for s in sh):
        sens = np.concatenate([s.sensitivity for s in sh])
    return ModelOutputs(
        logits=np.concatenate([s.logits for s in sh]),
        labels=np.concatenate([s.labels for s in sh]).astype(np.int64),
        member=np.concatenate([s.member for s in sh]).astype(bool),
        sensitivity=sens,
    )


def n_classes(data: AttackData) -> int:
    return int(data.target.logits.shape[1])


def validate_attack_data(data: AttackData) -> None:
    """Raise ``ValueError`` naming the first inconsistent shape in ``data``."""
    c = n_classes(data)
    t = data.target
    n = len(t)
    k = len(data.shadows)
    m = int(np.asarray(data.population_labels).shape[0])

    def check(cond: bool, what: str) -> None:
        if not cond:
            raise ValueError(f"AttackData: {what}")

    check(k >= 1, "at least one shadow model is needed")
    check(t.logits.shape == (n, c) and t.member.shape == (n,), "target logits/member shapes disagree")
    for i, s in enumerate(data.shadows):
        check(s.logits.ndim == 2 and s.logits.shape[1] == c, f"shadow {i} logits must be (n_i, {c})")
        check(s.labels.shape == s.member.shape == (s.logits.shape[0],), f"shadow {i} labels/member shapes")
    check(np.shape(data.reference_on_target) == (k, n, c),
          f"reference_on_target must be ({k}, {n}, {c}), got {np.shape(data.reference_on_target)}")
    check(np.shape(data.target_on_population) == (m, c),
          f"target_on_population must be ({m}, {c}), got {np.shape(data.target_on_population)}")
    check(np.shape(data.reference_on_population) == (k, m, c),
          f"reference_on_population must be ({k}, {m}, {c}), got {np.shape(data.reference_on_population)}")
    if data.shadow_references is not None:
        check(len(data.shadow_references) == k, f"shadow_references must hold {k} arrays")
        for j, (s, r) in enumerate(zip(data.shadows, data.shadow_references)):
            check(np.shape(r) == (k, len(s), c), f"shadow_references[{j}] must be ({k}, {len(s)}, {c}), got {np.shape(r)}")
