"""Edge cases of the attack metrics by hand (issue 17: gaps the mutation run of metric.py,
metrics.py and audit.py found): empty memorisation slices, 0/1 integer inputs, a class whose
best rule flags nobody, and which ROC points a record keeps."""

from __future__ import annotations

import math

import numpy as np
import pytest

from wemem.ml.attacks import AttackData, ModelOutputs, slice_metrics, thinned_roc
from wemem.ml.attacks.metric import conf_attack


def test_slice_metrics_with_integer_inputs_and_empty_slices():
    """0/1 integers mean the same as booleans; a slice without members (or a victim without
    non-members) gives NaN for exactly the figures it cannot have."""
    member = np.array([1, 1, 1, 0, 0, 0])
    high = np.array([1, 0, 0, 0, 0, 0])
    scores = np.array([3, 1, 0, 2, 0, 1])  # integers too
    pred = np.array([1, 0, 0, 1, 0, 0])
    got = slice_metrics(scores, pred, member, high)
    # high: member 3 vs non-members 2, 0, 1: AUC 1; low: 1 and 0 vs 2, 0, 1: (0 + ½ + 1) + (0 + 0 + ½) = 2 of 6
    assert got == {"fpr_decision": pytest.approx(1 / 3), "tpr_high": 1.0, "auc_high": 1.0, "tpr_low": 0.0,
                   "auc_low": pytest.approx(2 / 6)}
    none_high = slice_metrics(scores, pred, member, np.zeros(6, int))
    assert math.isnan(none_high["tpr_high"]) and math.isnan(none_high["auc_high"])
    assert none_high["tpr_low"] == pytest.approx(1 / 3) and none_high["auc_low"] == pytest.approx(5 / 9)  # 3: 3 wins; 1: 1 + ½; 0: ½
    all_members = slice_metrics(scores, pred, np.ones(6, int), high)
    assert math.isnan(all_members["fpr_decision"])
    assert math.isnan(all_members["auc_high"]) and math.isnan(all_members["auc_low"])
    assert all_members["tpr_high"] == 1.0 and all_members["tpr_low"] == pytest.approx(1 / 5)


def _outputs(true_logit, labels, member):
    logits = np.zeros((len(labels), 2), np.float32)
    logits[np.arange(len(labels)), labels] = true_logit
    return ModelOutputs(logits, np.asarray(labels, np.int64), np.asarray(member, bool))


def test_shadows_without_members_flag_nobody_and_score_by_the_value_itself():
    """Shadows without a single member: every threshold is +inf (the "nobody is a member"
    rule), so every victim sample is predicted a non-member and scored by its plain
    confidence p = e^z / (e^z + 1) (value − 0, not value − inf)."""
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    shadow = _outputs([2, 0, 0, 2], [0, 0, 1, 1], [0, 0, 0, 0])
    target = _outputs([2, 1, 0, 3], [0, 0, 1, 1], [1, 0, 1, 0])
    data = AttackData(target, [shadow], np.zeros((1, 4, 2), np.float32), np.zeros((1, 2), np.float32),
                      np.zeros((1, 1, 2), np.float32), np.zeros(1, np.int64))
    r = conf_attack(data, None)
    assert r.name == "conf"
    np.testing.assert_array_equal(r.predictions, [False] * 4)
    np.testing.assert_allclose(r.scores, [sig(2), sig(1), sig(0), sig(3)], atol=1e-7)


def _interleaved(k: int):
    """k members and k non-members, scores descending member, non-member, member, …: the ROC has
    2k + 1 points, each FPR level reached by exactly two of them."""
    scores = np.arange(2 * k, 0, -1).astype(float)
    member = np.arange(2 * k) % 2 == 0
    return scores, member


def test_thinned_roc_keeps_every_point_of_a_short_curve():
    scores, member = _interleaved(5)
    roc = thinned_roc(scores, member)
    assert set(roc) == {"fpr", "tpr"}
    # by hand: (0, 0), then for j = 0..4 a member step (j/5, (j+1)/5) and a non-member step ((j+1)/5, (j+1)/5)
    fpr = [0.0] + [v for j in range(5) for v in (j / 5, (j + 1) / 5)]
    tpr = [0.0] + [v for j in range(5) for v in ((j + 1) / 5, (j + 1) / 5)]
    assert roc["fpr"] == pytest.approx(fpr) and roc["tpr"] == pytest.approx(tpr)


def test_thinned_roc_keeps_the_resolution_end_and_both_ends():
    """2,000 non-members, 100 members: the kept points start at (0, 0), reach FPR 1/2000 (the
    resolution: the first non-member), end at (1, 1), number at most 2·n_points + 2, and the
    default is 200 points."""
    rng = np.random.default_rng(0)
    member = np.r_[np.ones(100, bool), np.zeros(2000, bool)]
    scores = rng.permutation(member.size).astype(float) + 3000 * member * (rng.random(member.size) < 0.3)
    roc = thinned_roc(scores, member, n_points=30)
    fpr, tpr = np.array(roc["fpr"]), np.array(roc["tpr"])
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert fpr[fpr > 0].min() == pytest.approx(1 / 2000)
    assert len(fpr) <= 62 and np.all(np.diff(fpr) >= 0)
    # every log-spaced FPR level from 1/2000 to 1 has a kept point at or just after it
    for level in np.logspace(np.log10(1 / 2000), 0, 30):
        assert (fpr >= level - 1e-12).any() and fpr[fpr >= level - 1e-12].min() <= max(2 * level, level + 2 / 2000)
    assert thinned_roc(scores, member) == thinned_roc(scores, member, n_points=200)
    assert len(thinned_roc(scores, member)["fpr"]) > len(roc["fpr"])


def test_integer_labels_mean_the_same_as_booleans():
    """Members and predictions given as 0/1 integers give the booleans' answers (a 0/1 array
    used as an index would pick rows 0 and 1 instead)."""
    from wemem.ml.attacks.metric import class_thresholds
    from wemem.ml.attacks.metrics import attack_metrics, balanced_accuracy

    member = np.array([1, 1, 1, 0, 0])
    pred = np.array([1, 0, 1, 0, 1])
    assert balanced_accuracy(pred, member) == pytest.approx(0.5 * (2 / 3 + 1 / 2))
    scores = np.array([5, 4, 1, 2, 3])  # integer scores: members 5, 4, 1 vs 2, 3: 2 + 2 + 0 of 6 pairs
    m = attack_metrics(scores, pred, member)
    assert m["balanced_acc"] == pytest.approx(7 / 12) and m["auc"] == pytest.approx(4 / 6)
    values = np.array([0.9, 0.2, 0.8, 0.3, 0.6, 0.4])
    labels = np.array([0, 0, 0, 1, 1, 1])
    th, g = class_thresholds(values, labels, np.array([1, 0, 1, 1, 0, 0]), 2)
    # class 0: members 0.9, 0.8 vs 0.2: t = 0.8; class 1: member 0.3 vs 0.6, 0.4: lowest best is 0.3
    assert th.tolist() == [0.8, 0.3]


def test_missing_groups_give_nan_and_a_one_group_class_gets_the_global_threshold():
    from wemem.ml.attacks.metric import as_values, class_thresholds
    from wemem.ml.attacks.metrics import attack_metrics, balanced_accuracy, measurable

    everyone = attack_metrics(np.array([0.1, 0.2]), np.array([True, False]), np.array([True, True]))
    assert all(math.isnan(v) for v in everyone.values()) and set(everyone) == {
        "balanced_acc", "auc", "tpr_at_1fpr", "tpr_at_0.1fpr"}
    assert math.isnan(balanced_accuracy(np.array([True]), np.array([False])))
    # class 1 has members only: it takes the global threshold of all values (members 0.9, 0.7,
    # 0.5 vs non-members 0.6, 0.1: t = 0.7, ½(2/3 + 1) beats t = 0.5's ½(1 + ½))
    values = np.array([0.9, 0.6, 0.1, 0.7, 0.5])
    labels = np.array([0, 0, 0, 1, 1])
    member = np.array([True, False, False, True, True])
    th, g = class_thresholds(values, labels, member, 2)
    assert g == 0.7 and th.tolist() == [0.9, 0.7]
    with pytest.raises(ValueError, match="^threshold search: values contain NaN$"):
        as_values([0.1, float("nan")])
    assert measurable(1.0, 1) and not measurable(0.5, 1) and measurable(0.01, 100) and not measurable(0.01, 99)
    assert not measurable(0.01, 0)


def test_thinned_roc_ends_at_one_one_when_the_lowest_score_is_a_member():
    """The lowest-scored sample is a member: the curve reaches FPR 1 before TPR 1, and the last
    point (1, 1) is still kept; 0/1 integer labels give the same curve as booleans."""
    member = np.array([True, False, True, False, False, True])
    scores = np.array([6.0, 5.0, 4.0, 3.0, 2.0, 1.0])
    roc = thinned_roc(scores, member, n_points=3)
    assert (roc["fpr"][-1], roc["tpr"][-1]) == (1.0, 1.0)
    assert (1.0, pytest.approx(2 / 3)) in list(zip(roc["fpr"], roc["tpr"]))
    assert thinned_roc(scores, member.astype(int), n_points=3) == roc


def _eps_brute(scores, member, delta, alpha=0.05):
    """ε lower bound by a loop over every threshold, with scipy's exact binomial intervals
    (binomtest), both inequalities of (ε, δ)-DP, floored at 0."""
    from scipy.stats import binomtest

    n_mem, n_non = int(member.sum()), int((~member).sum())
    best = 0.0
    for t in np.append(np.unique(scores), np.inf):
        tp, fp = int((scores[member] >= t).sum()), int((scores[~member] >= t).sum())
        fpr_hi = binomtest(fp, n_non).proportion_ci(1 - alpha, method="exact").high
        tpr_lo = binomtest(tp, n_mem).proportion_ci(1 - alpha, method="exact").low
        if tpr_lo - delta > 0:
            best = max(best, math.log((tpr_lo - delta) / fpr_hi))
        if 1 - fpr_hi - delta > 0 and tpr_lo < 1:
            best = max(best, math.log((1 - fpr_hi - delta) / (1 - tpr_lo)))
    return best


def test_epsilon_lower_bound_equals_a_threshold_loop_with_exact_intervals():
    """Unequal groups and overlapping scores, so the two inequalities give different bounds
    (the perfect-separation case is symmetric); the default δ is 1e-5, α is passed on, one
    member is enough, and the NaN of a missing group comes without warnings."""
    import warnings

    from wemem.ml.attacks import epsilon_lower_bound

    rng = np.random.default_rng(3)
    member = np.r_[np.ones(30, bool), np.zeros(50, bool)]
    scores = np.round(rng.normal(size=80) + 1.5 * member, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = epsilon_lower_bound(scores, member)
        assert got == pytest.approx(_eps_brute(scores, member, 1e-5), rel=1e-9) and got > 0.5
        assert epsilon_lower_bound(scores, member, 0.01, alpha=0.3) == pytest.approx(
            _eps_brute(scores, member, 0.01, alpha=0.3), rel=1e-9)
        # skewed: members far above, so FP = 0 with many TP (the first inequality) decides
        skew = np.r_[np.arange(30) + 100.0, np.arange(50) * 1.0]
        assert epsilon_lower_bound(skew, member) == pytest.approx(_eps_brute(skew, member, 1e-5), rel=1e-9)
        # more members than non-members, perfectly separated: the second inequality decides
        # (by hand: log((1 − FPR_hi)/(1 − TPR_lo)) with TPR_lo = 0.025^(1/50), FPR_hi = 1 − 0.025^(1/30))
        many = np.r_[np.ones(50, bool), np.zeros(30, bool)]
        sep = many.astype(float)
        t_lo, f_hi = 0.025 ** (1 / 50), 1 - 0.025 ** (1 / 30)
        by_hand = math.log((1 - f_hi - 1e-5) / (1 - t_lo))
        assert by_hand > math.log((t_lo - 1e-5) / f_hi) + 0.3
        assert epsilon_lower_bound(sep, many) == pytest.approx(by_hand, rel=1e-9)
        assert epsilon_lower_bound(sep, many) == pytest.approx(_eps_brute(sep, many, 1e-5), rel=1e-9)
        one = np.r_[True, np.zeros(20, bool)]
        assert epsilon_lower_bound(np.arange(21.0)[::-1], one) == pytest.approx(
            _eps_brute(np.arange(21.0)[::-1], one, 1e-5), abs=1e-12)
        assert math.isnan(epsilon_lower_bound(np.arange(3.0), np.ones(3, bool)))
        assert math.isnan(epsilon_lower_bound(np.arange(3.0), np.zeros(3, bool)))


def test_clopper_pearson_at_one_success_one_failure_and_tiny_n():
    from scipy.stats import binomtest

    from wemem.ml.attacks import clopper_pearson

    for k, n in ((1, 20), (19, 20), (0, 1), (1, 1), (1, 2)):
        lo, hi = clopper_pearson(np.array([k]), n)
        ci = binomtest(k, n).proportion_ci(0.95, method="exact")
        assert (lo[0], hi[0]) == (pytest.approx(ci.low, abs=1e-10), pytest.approx(ci.high, abs=1e-10)), (k, n)
    with pytest.raises(ValueError, match="^clopper_pearson: n must be positive, got 0$"):
        clopper_pearson(np.array([0]), 0)


def test_attack_metrics_with_integer_labels_and_missing_groups_warn_nothing():
    import warnings

    from wemem.ml.attacks.metrics import attack_metrics

    rng = np.random.default_rng(0)
    member = np.r_[np.ones(50, bool), np.zeros(1000, bool)]
    scores = rng.normal(size=member.size) + member
    as_bool = attack_metrics(scores, scores > 0.5, member)
    as_int = attack_metrics(scores, (scores > 0.5).astype(int), member.astype(int))
    assert as_int == as_bool and math.isfinite(as_bool["tpr_at_0.1fpr"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for m in (np.ones(4, bool), np.zeros(4, bool)):
            got = attack_metrics(np.arange(4.0), np.array([1, 0, 1, 0], bool), m)
            assert all(math.isnan(v) for v in got.values())
        got = slice_metrics(np.arange(4.0), np.array([1, 0, 1, 0], bool), np.ones(4, bool), np.zeros(4, bool))
        assert got["tpr_low"] == 0.5 and all(math.isnan(got[k]) for k in ("fpr_decision", "tpr_high", "auc_high",
                                                                            "auc_low"))
        got = slice_metrics(np.arange(4.0), np.array([1, 0, 1, 0], bool), np.zeros(4, bool), np.zeros(4, bool))
        assert got["fpr_decision"] == 0.5 and all(math.isnan(got[k]) for k in ("tpr_high", "auc_high", "tpr_low",
                                                                                "auc_low"))
