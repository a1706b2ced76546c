"""Data types shared by every attack, the attack registry and ``run_attacks``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .metrics import attack_metrics

ATTACK_NAMES: tuple[str, ...] = (
    "conf", "entr", "mentr", "hconf", "nn", "top3_nn", "ci_nn", "samia", "lira", "rmia",
)


@dataclass
class ModelOutputs:
    """One model's outputs on a set of samples."""

    probs: np.ndarray  # (n, C) float32 softmax
    labels: np.ndarray  # (n,) int64
    member: np.ndarray  # (n,) bool: was the sample in this model's training set
    sensitivity: np.ndarray | None = None  # (n, C) SAMIA sensitivity signal

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class AttackData:
    """Everything the attacks see (see SPEC §8)."""

    target: ModelOutputs  # victim on victim-train (members) ∪ victim-test (non-members)
    shadows: list[ModelOutputs]  # shadow i on its own train (members) ∪ test (non-members)
    reference_on_target: np.ndarray  # (n_shadows, n_target, C): shadows on the target's samples
    target_on_population: np.ndarray  # (n_pop, C): victim on population (non-member) samples
    reference_on_population: np.ndarray  # (n_shadows, n_pop, C)
    population_labels: np.ndarray  # (n_pop,)


@dataclass
class AttackConfig:
    """Attack settings; the defaults are the SPEC's values."""

    epochs: int = 100
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    milestones: tuple[int, ...] = (50, 75)
    dropout: float = 0.2
    samia_width: int = 64
    samia_layers: int = 3
    samia_heads: int = 4
    rmia_a: float = 0.3
    rmia_gamma: float = 1.0
    device: str = "cpu"
    seed: int = 0
    attacks: tuple[str, ...] = ATTACK_NAMES


@dataclass
class AttackResult:
    name: str
    scores: np.ndarray  # (n_target,) higher = more likely member
    predictions: np.ndarray  # (n_target,) bool decision at the attack's own rule
    metrics: dict[str, float]  # balanced_acc, auc, tpr_at_1fpr, tpr_at_0.1fpr


AttackFn = Callable[[AttackData, AttackConfig], AttackResult]
ATTACK_REGISTRY: dict[str, AttackFn] = {}


def register(name: str) -> Callable[[AttackFn], AttackFn]:
    """Decorator adding an attack function to ``ATTACK_REGISTRY`` under ``name``."""

    def deco(fn: AttackFn) -> AttackFn:
        ATTACK_REGISTRY[name] = fn
        return fn

    return deco


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
        probs=np.concatenate([s.probs for s in sh]),
        labels=np.concatenate([s.labels for s in sh]).astype(np.int64),
        member=np.concatenate([s.member for s in sh]).astype(bool),
        sensitivity=sens,
    )


def n_classes(data: AttackData) -> int:
    return int(data.target.probs.shape[1])


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
    check(t.probs.shape == (n, c) and t.member.shape == (n,), "target probs/member shapes disagree")
    for i, s in enumerate(data.shadows):
        check(s.probs.ndim == 2 and s.probs.shape[1] == c, f"shadow {i} probs must be (n_i, {c})")
        check(s.labels.shape == s.member.shape == (s.probs.shape[0],), f"shadow {i} labels/member shapes")
    check(np.shape(data.reference_on_target) == (k, n, c),
          f"reference_on_target must be ({k}, {n}, {c}), got {np.shape(data.reference_on_target)}")
    check(np.shape(data.target_on_population) == (m, c),
          f"target_on_population must be ({m}, {c}), got {np.shape(data.target_on_population)}")
    check(np.shape(data.reference_on_population) == (k, m, c),
          f"reference_on_population must be ({k}, {m}, {c}), got {np.shape(data.reference_on_population)}")
