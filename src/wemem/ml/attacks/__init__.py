"""Membership inference attacks (SPEC §8): metric (Conf, Entr, Mentr, Hconf), classifier
(NN, Top3-NN, CI-NN, SAMIA) and calibrated (LiRA, RMIA) attacks, and their metrics.

Importing the package imports every module in it, so every attack registers itself in
:data:`ATTACKS` (the three families first, in the paper's order; then any other module: a new
attack is one module plus its ``mia_evaluation`` conf entry).
"""

import importlib
import pkgutil

from . import metric, classifier, calibrated  # noqa: I001  (the paper's order)
from .base import (
    ATTACKS,
    AttackContext,
    AttackData,
    AttackResult,
    ModelOutputs,
    pooled_shadows,
    validate_attack_data,
)
from .calibrated import RmiaSettings
from .classifier import AttackModelSettings, SamiaSettings
from .metric import best_threshold, class_thresholds
from .audit import clopper_pearson, epsilon_lower_bound, slice_metrics
from .metrics import FPR_LEVELS, attack_metrics, measurable, roc_points, strongest_attack, thinned_roc
from .runner import run_attacks
from .selection import choose_attack, shadow_folds
from .signals import (
    compute_sensitivity,
    entropy,
    logit_confidence,
    modified_entropy,
    softmax,
    true_class_log_prob,
    true_class_prob,
)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
del _module

__all__ = [
    "ATTACKS", "AttackContext", "AttackData", "AttackModelSettings", "AttackResult", "ModelOutputs",
    "FPR_LEVELS", "RmiaSettings", "SamiaSettings", "attack_metrics", "best_threshold", "choose_attack",
    "class_thresholds", "clopper_pearson", "compute_sensitivity", "entropy", "epsilon_lower_bound",
    "logit_confidence", "measurable", "modified_entropy", "pooled_shadows", "roc_points", "run_attacks",
    "shadow_folds", "slice_metrics", "softmax", "strongest_attack", "thinned_roc", "true_class_log_prob",
    "true_class_prob", "validate_attack_data",
]
