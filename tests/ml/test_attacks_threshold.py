"""Threshold search (sorting vs quadratic reference), metrics vs scikit-learn, signals."""

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score, roc_curve

from benchmarks.reference.threshold_scan import brute_force_threshold
from wemem.ml.attacks import (
    attack_metrics,
    best_threshold,
    class_thresholds,
    entropy,
    logit_confidence,
    modified_entropy,
    roc_points,
    true_class_prob,
)


def _ba_at(t, m, nm):
    """Objective at threshold t, computed directly."""
    if len(m) and len(nm):
        return 0.5 * (np.mean(m >= t) + np.mean(nm < t))
    return np.mean(m >= t) if len(m) else np.mean(nm < t)


def _song_mittal_loop(m, nm):
    """Independent reference in the style of Song & Mittal's code: scan the concatenated values
    in their given order, keep the first strict maximum (different tie order)."""
    best_t, best = None, -1.0
    for t in list(np.concatenate([m, nm])) + [np.inf]:
        ba = _ba_at(t, m, nm)
        if ba > best:
            best_t, best = t, ba
    return best_t, best


def _random_case(seed):
    rng = np.random.default_rng(seed)
    n_m, n_n = rng.integers(0, 60, size=2)
    kind = seed % 4
    if kind == 0:  # continuous, shifted
        m, nm = rng.normal(0.5, 1, n_m), rng.normal(0, 1, n_n)
    elif kind == 1:  # heavy ties
        m, nm = rng.integers(0, 5, n_m).astype(float), rng.integers(0, 5, n_n).astype(float)
    elif kind == 2:  # single-class edge cases
        m = rng.normal(0, 1, n_m)
        nm = rng.normal(0, 1, 0 if seed % 8 == 2 else n_n)
        if seed % 8 == 6:
            m, nm = m[:0], rng.normal(0, 1, max(n_n, 1))
    else:  # all values equal / tiny
        m, nm = np.full(rng.integers(0, 3), 0.3), np.full(rng.integers(1, 3), 0.3)
    return m, nm


@pytest.mark.parametrize("seed", range(80))
def test_sorting_threshold_matches_brute_force(seed):
    m, nm = _random_case(seed)
    t_sort, ba_sort = best_threshold(m, nm)
    t_brute, ba_brute = brute_force_threshold(m, nm, chunk_size=7)
    assert t_sort == t_brute
    assert ba_sort == ba_brute
    if len(m) + len(nm):
        assert ba_sort == pytest.approx(_ba_at(t_sort, m, nm), abs=1e-12)
        # an independent scan with another tie order reaches the same optimum
        t_loop, ba_loop = _song_mittal_loop(m, nm)
        assert ba_sort == pytest.approx(ba_loop, abs=1e-12)
        assert _ba_at(t_loop, m, nm) == pytest.approx(ba_sort, abs=1e-12)


def test_threshold_edge_cases():
    assert best_threshold([], [])[0] == np.inf
    # only members: everyone is called a member
    t, ba = best_threshold([0.2, 0.7], [])
    assert t == 0.2 and ba == 1.0
    # only non-members: nobody is called a member
    t, ba = best_threshold([], [0.2, 0.7])
    assert t == np.inf and ba == 1.0
    # separable
    t, ba = best_threshold([0.9, 0.8], [0.1, 0.3])
    assert ba == 1.0 and 0.3 < t <= 0.8
    with pytest.raises(ValueError):
        best_threshold([np.nan], [0.0])


def test_class_thresholds_fall_back_to_global():
    rng = np.random.default_rng(0)
    n = 600
    labels = rng.integers(0, 3, n)  # class 3 absent; class 2 made member-only below
    member = rng.random(n) < 0.5
    member[labels == 2] = True
    values = rng.normal(0, 1, n) + member
    th, global_t = class_thresholds(values, labels, member, 4)
    assert th[3] == global_t and th[2] == global_t
    for c in (0, 1):
        sel = labels == c
        assert th[c] == best_threshold(values[sel & member], values[sel & ~member])[0]


@pytest.mark.parametrize("seed", range(10))
def test_metrics_agree_with_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = 3000
    member = rng.random(n) < 0.3
    scores = rng.normal(0, 1, n) + 0.8 * member
    if seed % 2:
        scores = np.round(scores, 1)  # ties
    preds = scores > 0.4
    got = attack_metrics(scores, preds, member)
    assert got["balanced_acc"] == pytest.approx(balanced_accuracy_score(member, preds), abs=1e-12)
    assert got["auc"] == pytest.approx(roc_auc_score(member, scores), abs=1e-12)
    fpr, tpr, _ = roc_curve(member, scores)
    assert got["tpr_at_1fpr"] == pytest.approx(tpr[fpr <= 0.01].max(), abs=1e-12)
    assert got["tpr_at_0.1fpr"] == pytest.approx(tpr[fpr <= 0.001].max(), abs=1e-12)
    f2, t2 = roc_points(scores, member)
    assert f2[0] == 0 and f2[-1] == 1 and t2[-1] == 1 and np.all(np.diff(f2) >= 0)


def test_metrics_single_group_is_nan():
    out = attack_metrics(np.arange(4.0), np.ones(4, bool), np.ones(4, bool))
    assert all(np.isnan(v) for v in out.values())


def test_entropy_and_modified_entropy_by_hand():
    p = np.array([[0.5, 0.25, 0.25], [1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    ln = np.log
    np.testing.assert_allclose(entropy(p), [1.5 * ln(2), 0.0, ln(3)], atol=1e-9)
    y = np.array([0, 0, 2])
    want = [
        -(0.5) * ln(0.5) - 2 * 0.25 * ln(0.75),
        0.0,
        -(2 / 3) * ln(1 / 3) - 2 * (1 / 3) * ln(2 / 3),
    ]
    np.testing.assert_allclose(modified_entropy(p, y), want, atol=1e-9)
    y1 = np.array([1, 1, 0])
    want1 = -(0.75) * ln(0.25) - 0.5 * ln(0.5) - 0.25 * ln(0.75)
    assert modified_entropy(p, y1)[0] == pytest.approx(want1)
    assert modified_entropy(p, y1)[1] > 15  # confident and wrong
    np.testing.assert_allclose(true_class_prob(p, y), [0.5, 1.0, 1 / 3])
    # logit confidence takes logits: log p gives back log(p_y / (1 - p_y)) exactly
    np.testing.assert_allclose(logit_confidence(ln(p[[0, 2]]), y[[0, 2]]), [0.0, ln(0.5)], atol=1e-12)
    assert np.isfinite(logit_confidence(np.array([[200.0, -200.0, 0.0]]), np.array([0]))).all()


def test_conf_uses_each_class_s_own_threshold_on_the_victim():
    # Two classes whose members and non-members sit at different confidence levels:
    # class 0: members p_y = 0.95, non-members 0.85; class 1: members 0.80, non-members 0.60.
    # Per-class thresholds (0.95 and 0.80) separate both classes perfectly (balanced acc 1.0);
    # one global threshold cannot (best 0.75). Catches Conf/Entr/Mentr deciding with the global
    # threshold (the planted bug that once survived every attack test).
    from wemem.ml.attacks import ATTACKS, AttackContext, AttackData, ModelOutputs

    def outputs(n_per: int) -> ModelOutputs:
        labels = np.repeat([0, 0, 1, 1], n_per)
        member = np.tile(np.repeat([True, False], n_per), 2)
        p_true = np.repeat([0.95, 0.85, 0.80, 0.60], n_per)
        z = np.log(p_true / (1 - p_true))  # two classes: p_y = sigmoid(z_y − z_other)
        logits = np.zeros((labels.size, 2), np.float32)
        logits[np.arange(labels.size), labels] = z
        return ModelOutputs(logits, labels, member)

    target, shadows = outputs(5), [outputs(7), outputs(7)]
    refs = np.stack([target.logits, target.logits])
    pop = target.logits[:4]
    data = AttackData(target, shadows, refs, pop, np.stack([pop, pop]), target.labels[:4])
    for name in ("conf", "entr", "mentr"):
        result = ATTACKS[name].obj(data, AttackContext())
        assert result.metrics["balanced_acc"] == pytest.approx(1.0), name
    # the global-threshold attack on the same data cannot separate them
    assert ATTACKS["hconf"].obj(data, AttackContext()).metrics["balanced_acc"] == pytest.approx(0.75)
