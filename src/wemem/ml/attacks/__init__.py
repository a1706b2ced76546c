"""Membership inference attacks (SPEC §8): metric (Conf, Entr, Mentr, Hconf), classifier
(NN, Top3-NN, CI-NN, SAMIA) and calibrated (LiRA, RMIA) attacks, and their metrics.

Importing the package registers every attack in ``ATTACK_REGISTRY``.
"""

from . import calibrated, classifier, metric  # noqa: F401  (register the attacks)
from .base import (
    ATTACK_NAMES,
    ATTACK_REGISTRY,
    AttackConfig,
    AttackData,
    AttackResult,
    ModelOutputs,
    pooled_shadows,
    register,
    validate_attack_data,
)
from .metric import best_threshold, brute_force_threshold, class_thresholds
from .metrics import attack_metrics, roc_points
from .runner import run_attacks
from .signals import (
    compute_sensitivity,
    entropy,
    logit_confidence,
    modified_entropy,
    true_class_prob,
)

__all__ = [
    "ATTACK_NAMES", "ATTACK_REGISTRY", "AttackConfig", "AttackData", "AttackResult", "ModelOutputs",
    "attack_metrics", "best_threshold", "brute_force_threshold", "class_thresholds",
    "compute_sensitivity", "entropy", "logit_confidence", "modified_entropy", "pooled_shadows",
    "register", "roc_points", "run_attacks", "true_class_prob", "validate_attack_data",
]
