"""Metric-based attacks (Song & Mittal): Conf, Entr, Mentr (per-class thresholds), Hconf
(one global threshold). A sample is a member if its value ≥ the threshold; thresholds are
chosen on the pooled shadow outputs to maximise ½(TPR + TNR).

Threshold search. The candidates are the sorted unique pooled values followed by +inf (the
"nobody is a member" rule). ``best_threshold`` sorts once and reads, for every candidate, the
members at or above it and the non-members below it from cumulative counts: O(n log n). The
quadratic reference scan the tests and the benchmark compare it with lives outside the library
(``benchmarks/reference/threshold_scan.py``); it evaluates the same candidates in the same order
with the same float formula (:func:`balanced_objective`) and keeps the first (lowest)
maximiser, so both return the same threshold and balanced accuracy. When one group is empty the
objective is the rate of the group that is present.
"""

from __future__ import annotations

import numpy as np

from .base import ATTACKS, AttackContext, AttackData, AttackResult, make_result, n_classes, pooled_shadows
from .signals import entropy, modified_entropy, true_class_prob


def as_values(x: np.ndarray) -> np.ndarray:
    """The values of one group as a flat float64 array (NaN is an error)."""
    v = np.asarray(x, dtype=np.float64).ravel()
    if np.isnan(v).any():
        raise ValueError("threshold search: values contain NaN")
    return v


def balanced_objective(tp: np.ndarray, tn: np.ndarray, n_m: int, n_n: int) -> np.ndarray:
    """Objective for given member hits ``tp`` and non-member hits ``tn`` (the reference scan uses
    the same formula, so their floats are identical)."""
    if n_m > 0 and n_n > 0:
        return 0.5 * (tp / n_m + tn / n_n)
    if n_m > 0:
        return tp / n_m
    return tn / n_n


def best_threshold(member_values: np.ndarray, nonmember_values: np.ndarray) -> tuple[float, float]:
    """Threshold maximising ½(TPR + TNR) of the rule ``value ≥ threshold``, by sorting.

    Returns ``(threshold, balanced_accuracy)``; ``(inf, nan)`` when both inputs are empty.
    """
    m = as_values(member_values)
    nm = as_values(nonmember_values)
    n_m, n_n = m.size, nm.size
    if n_m + n_n == 0:
        return float("inf"), float("nan")
    values = np.concatenate([m, nm])
    is_member = np.concatenate([np.ones(n_m, dtype=np.int64), np.zeros(n_n, dtype=np.int64)])
    order = np.argsort(values, kind="stable")
    v = values[order]
    members_before = np.concatenate([[0], np.cumsum(is_member[order])])  # [i] = members in v[:i]
    # one pass over the sorted unique values: start[k] = first position of the k-th unique value
    first = np.concatenate([[True], v[1:] != v[:-1]])
    start = np.flatnonzero(first)
    candidates = np.append(v[start], np.inf)
    start = np.append(start, v.size)
    below_m = members_before[start]
    tp = n_m - below_m  # members with value ≥ candidate
    tn = start - below_m  # non-members with value < candidate
    ba = balanced_objective(tp, tn, n_m, n_n)
    k = int(np.argmax(ba))
    return float(candidates[k]), float(ba[k])


def class_thresholds(
    values: np.ndarray, labels: np.ndarray, member: np.ndarray, num_classes: int
) -> tuple[np.ndarray, float]:
    """Per-class thresholds (C,) and the global threshold, all chosen by ``best_threshold``.

    A class without both members and non-members in ``values`` gets the global threshold.
    """
    values = np.asarray(values, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    member = np.asarray(member, dtype=bool)
    global_t, _ = best_threshold(values[member], values[~member])
    thresholds = np.full(num_classes, global_t)
    # group by class once (stable sort by label), then search each class's slice
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(num_classes + 1))
    v_sorted, m_sorted = values[order], member[order]
    for c in range(num_classes):
        sl = slice(bounds[c], bounds[c + 1])
        vc, mc = v_sorted[sl], m_sorted[sl]
        if mc.any() and not mc.all():
            thresholds[c] = best_threshold(vc[mc], vc[~mc])[0]
    return thresholds, global_t


def per_class_attack(
    name: str, data: AttackData, signal
) -> AttackResult:
    """Per-class threshold attack on ``signal(probs, labels)``; score = value − class threshold
    (so score ≥ 0 is exactly the member decision)."""
    sh = pooled_shadows(data)
    c = n_classes(data)
    thresholds, _ = class_thresholds(signal(sh.probs, sh.labels), sh.labels, sh.member, c)
    t = data.target
    value = np.asarray(signal(t.probs, t.labels), dtype=np.float64)
    th = thresholds[t.labels]
    predictions = value >= th
    scores = value - np.where(np.isfinite(th), th, 0.0)
    return make_result(name, scores, predictions, data)


def _conf(probs, labels):
    return true_class_prob(probs, labels)


def _neg_entropy(probs, labels):
    return -entropy(probs)


def _neg_mentr(probs, labels):
    return -modified_entropy(probs, labels)


@ATTACKS.register("conf", label="Conf", family="metric")
def conf_attack(data: AttackData, ctx: AttackContext) -> AttackResult:
    return per_class_attack("conf", data, _conf)


@ATTACKS.register("entr", label="Entr", family="metric")
def entr_attack(data: AttackData, ctx: AttackContext) -> AttackResult:
    return per_class_attack("entr", data, _neg_entropy)


@ATTACKS.register("mentr", label="Mentr", family="metric")
def mentr_attack(data: AttackData, ctx: AttackContext) -> AttackResult:
    return per_class_attack("mentr", data, _neg_mentr)


@ATTACKS.register("hconf", label="Hconf", family="metric")
def hconf_attack(data: AttackData, ctx: AttackContext) -> AttackResult:
    sh = pooled_shadows(data)
    v_sh = true_class_prob(sh.probs, sh.labels).astype(np.float64)
    threshold, _ = best_threshold(v_sh[sh.member], v_sh[~sh.member])
    value = true_class_prob(data.target.probs, data.target.labels).astype(np.float64)
    return make_result("hconf", value, value >= threshold, data)
