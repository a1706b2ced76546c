"""Per-example calibrated attacks that use the shadows as OUT reference models: offline LiRA
(Carlini et al. 2022) and offline RMIA (Zarifzadeh et al. 2024).

The victim half and the attack half are disjoint, so every shadow is an OUT model for every
target sample and every population sample.

Decision thresholds (leave-one-out on the shadows). Shadow j plays the target: its outputs on
the target's samples (which it never saw) are scored against the other shadows as references,
giving genuine OUT scores from a model trained like the victim. ``AttackData`` holds no outputs
of the other shadows on shadow j's *own* training samples, so IN scores cannot be computed the
same way; instead each OUT sample's logit confidence is mapped to a member-like one by
quantile matching shadow j's own non-member → member logit-confidence distributions (a hard
sample stays at the hard end of the member distribution), and scored against the same
references. The threshold maximising ½(TPR + TNR) on the pooled IN/OUT scores is found with the
sorting search. With a single shadow there is nobody to leave out: the victim on the population
samples provides the OUT scores and the shadow provides the member mapping.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from ..schema import Pos, Section, Unit
from .base import ATTACKS, AttackContext, AttackData, AttackResult, ModelOutputs, make_result
from .metric import best_threshold
from .signals import logit_confidence, true_class_log_prob

SIGMA_FLOOR = 1e-6


class RmiaSettings(Section):
    """``mia_evaluation.rmia``: offline RMIA's ``a`` (how an OUT reference's confidence stands in
    for an IN one's) and ``gamma`` (the likelihood-ratio margin over population samples)."""

    a: Unit = 0.3
    gamma: Pos = 1.0


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _true_probs(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """True-class probability (float64) from logits of shape (..., n, C)."""
    return np.exp(true_class_log_prob(logits, labels))


# ---------------------------------------------------------------- LiRA
def lira_global_sigma(phi_refs: np.ndarray) -> float:
    """Pooled standard deviation of the OUT logit confidences ``phi_refs`` (k, n) around their
    per-sample means (ddof 1 per sample); 1.0 when k < 2 (ranking does not depend on it)."""
    k = phi_refs.shape[0]
    if k < 2 or phi_refs.shape[1] == 0:
        return 1.0
    resid = phi_refs - phi_refs.mean(axis=0, keepdims=True)
    return max(float(np.sqrt((resid**2).sum() / (phi_refs.shape[1] * (k - 1)))), SIGMA_FLOOR)


def lira_z(phi: np.ndarray, phi_refs: np.ndarray, sigma: float) -> np.ndarray:
    """One-sided test statistic (φ − μ_out) / σ, μ_out = mean over references (k, n)."""
    return (phi - phi_refs.mean(axis=0)) / sigma


def lira_score(z: np.ndarray) -> np.ndarray:
    """Membership score −log(1 − Φ(z)) (−log p-value of the one-sided test): increasing in
    Φ(z), but it does not saturate at 1 for large z, so low-FPR ROC points stay resolved."""
    return -norm.logsf(z)


# ---------------------------------------------------------------- RMIA
def rmia_pr_x(ref_true_probs: np.ndarray, a: float) -> np.ndarray:
    """Offline Pr(x) = ½((1 + a)·mean_ref Pr(x|θ_ref) + (1 − a)) from (k, n) reference probs."""
    pr = 0.5 * ((1.0 + a) * ref_true_probs.mean(axis=0) + (1.0 - a))
    return np.maximum(pr, 1e-30)


def rmia_scores(lr_x: np.ndarray, lr_pop: np.ndarray, gamma: float) -> np.ndarray:
    """Fraction of population z with LR(x)/LR(z) ≥ γ, i.e. LR(z) ≤ LR(x)/γ, for every x, via
    one sort of the population and ``searchsorted`` (no n × m matrix)."""
    pop = np.sort(np.asarray(lr_pop, dtype=np.float64))
    if pop.size == 0:
        return np.zeros_like(lr_x, dtype=np.float64)
    return np.searchsorted(pop, np.asarray(lr_x, dtype=np.float64) / gamma, side="right") / pop.size


def rmia_log_lr(model_logits: np.ndarray, ref_logits: np.ndarray, labels: np.ndarray, a: float) -> np.ndarray:
    """log LR(x) = log Pr(x|θ) − log Pr(x) (offline Pr(x), :func:`rmia_pr_x`), from logits."""
    return true_class_log_prob(model_logits, labels) - np.log(rmia_pr_x(_true_probs(ref_logits, labels), a))


def _rmia_target(data: AttackData, settings: RmiaSettings) -> tuple[np.ndarray, np.ndarray]:
    """The victim's log LR(x) on the target samples and its RMIA scores (γ rule)."""
    t = data.target
    log_lr_x = rmia_log_lr(t.logits, data.reference_on_target, t.labels, settings.a)
    lr_z = np.exp(rmia_log_lr(data.target_on_population, data.reference_on_population,
                              data.population_labels, settings.a))
    return log_lr_x, rmia_scores(np.exp(log_lr_x), lr_z, settings.gamma)


# ---------------------------------------------------------------- calibration views
@dataclass
class _View:
    """One "shadow plays the target" setting with only OUT samples u."""

    model_on_u: np.ndarray  # (n_u, C)
    refs_on_u: np.ndarray  # (k', n_u, C)
    labels_u: np.ndarray  # (n_u,)
    model_on_pop: np.ndarray  # (n_pop, C)
    refs_on_pop: np.ndarray  # (k', n_pop, C)
    to_member: Callable[[np.ndarray], np.ndarray]  # OUT logit confidence → member-like one


def member_quantile_map(shadow: ModelOutputs) -> Callable[[np.ndarray], np.ndarray] | None:
    """Map logit confidences of OUT samples to member-like ones: mid-rank in the shadow's
    non-member distribution → same quantile of its member distribution. None if the shadow
    lacks members or non-members."""
    phi = logit_confidence(shadow.logits, shadow.labels)
    member = np.asarray(shadow.member, dtype=bool)
    if member.all() or not member.any():
        return None
    src = np.sort(phi[~member])
    dst = np.sort(phi[member])

    def to_member(x: np.ndarray) -> np.ndarray:
        lo = np.searchsorted(src, x, side="left")
        hi = np.searchsorted(src, x, side="right")
        q = (lo + hi) / (2.0 * src.size)
        return np.quantile(dst, np.clip(q, 0.0, 1.0))

    return to_member


def calibration_views(data: AttackData) -> Iterator[_View]:
    """Leave-one-out views (see module docstring); the single-shadow case uses the victim on
    the population as the OUT model."""
    k = len(data.shadows)
    if k >= 2:
        for j in range(k):
            to_member = member_quantile_map(data.shadows[j])
            if to_member is None:
                continue
            others = np.array([i for i in range(k) if i != j])
            yield _View(
                model_on_u=data.reference_on_target[j],
                refs_on_u=data.reference_on_target[others],
                labels_u=data.target.labels,
                model_on_pop=data.reference_on_population[j],
                refs_on_pop=data.reference_on_population[others],
                to_member=to_member,
            )
    else:
        to_member = member_quantile_map(data.shadows[0])
        if to_member is not None:
            yield _View(
                model_on_u=data.target_on_population,
                refs_on_u=data.reference_on_population,
                labels_u=data.population_labels,
                model_on_pop=data.target_on_population,
                refs_on_pop=data.reference_on_population,
                to_member=to_member,
            )


def _calibrated_threshold(pairs: list[tuple[np.ndarray, np.ndarray]], default: float) -> float:
    """Sorting search on pooled (IN, OUT) score pairs; ``default`` when there are none."""
    if not pairs:
        return default
    t, _ = best_threshold(np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs]))
    return t


# ---------------------------------------------------------------- attacks
@ATTACKS.register("lira", label="LiRA", family="calibrated")
def lira_attack(data: AttackData, ctx: AttackContext) -> AttackResult:
    """Offline LiRA with a global variance: z = (φ_target − μ_out)/σ, score = −log(1 − Φ(z))."""
    t = data.target
    phi_refs = logit_confidence(data.reference_on_target, t.labels)  # (k, n)
    sigma = lira_global_sigma(phi_refs)
    z = lira_z(logit_confidence(t.logits, t.labels), phi_refs, sigma)

    pairs = []
    for v in calibration_views(data):
        refs = logit_confidence(v.refs_on_u, v.labels_u)
        phi_out = logit_confidence(v.model_on_u, v.labels_u)
        pairs.append((lira_z(v.to_member(phi_out), refs, sigma), lira_z(phi_out, refs, sigma)))
    threshold = _calibrated_threshold(pairs, default=0.0)
    return make_result("lira", lira_score(z), z >= threshold, data)


@ATTACKS.register("rmia", label="RMIA", family="calibrated", settings=RmiaSettings)
def rmia_attack(data: AttackData, ctx: AttackContext) -> AttackResult:
    """Offline RMIA. Decision (balanced accuracy): the paper's rule, the fraction of population z
    with LR(x)/LR(z) ≥ γ at or above the calibrated threshold. Ranking (AUC, TPR at low FPR, ROC):
    log LR(x) itself. The fraction is a non-decreasing step function of LR(x) with only
    |population| + 1 levels, whose ties swallow the low-FPR end of the ROC; LR(x) gives the same
    order without those ties."""
    settings = ctx.settings if ctx.settings is not None else RmiaSettings()
    a, gamma = settings.a, settings.gamma
    log_lr_x, fraction = _rmia_target(data, settings)

    pairs = []
    for v in calibration_views(data):
        pr_u = rmia_pr_x(_true_probs(v.refs_on_u, v.labels_u), a)
        pr_z = rmia_pr_x(_true_probs(v.refs_on_pop, data.population_labels), a)
        lr_z = _true_probs(v.model_on_pop, data.population_labels) / pr_z
        p_out = _true_probs(v.model_on_u, v.labels_u)
        p_in = _sigmoid(v.to_member(logit_confidence(v.model_on_u, v.labels_u)))
        pairs.append((rmia_scores(p_in / pr_u, lr_z, gamma), rmia_scores(p_out / pr_u, lr_z, gamma)))
    threshold = _calibrated_threshold(pairs, default=0.5)
    return make_result("rmia", log_lr_x, fraction >= threshold, data)
