"""Audit-grade attack results (issue 13): RMIA's ROC ranking, logit signals, FPR resolution,
the attack chosen on the shadows, memorisation slices and the empirical ε lower bound.
Each test has a known answer and says in a comment what it catches."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import binomtest

from wemem.ml.attacks import (
    ATTACKS,
    AttackContext,
    AttackData,
    ModelOutputs,
    RmiaSettings,
    attack_metrics,
    choose_attack,
    clopper_pearson,
    epsilon_lower_bound,
    logit_confidence,
    roc_points,
    slice_metrics,
    thinned_roc,
)
from wemem.ml.attacks.metrics import tpr_at_fpr
from wemem.ml.evaluation import model_outputs
from wemem.ml.experiment import make_model, models_payload
from wemem.ml.ranking import rankings_table
from wemem.ml.reporting import comparison_markdown, comparison_table, plot_roc_curves

C = 4


pytestmark = pytest.mark.usefixtures("one_thread")


def _logits_with_true(z_true: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Logits with z_y = z_true and every other class 0 (so φ = z_true − log(C − 1))."""
    z = np.zeros((labels.size, C), np.float32)
    z[np.arange(labels.size), labels] = z_true
    return z


def _rmia_world(seed: int = 0, n_mem: int = 500, n_non: int = 500, n_pop: int = 5, k: int = 2) -> AttackData:
    """Members get a higher true-class logit on the target model; the references see every
    sample as OUT. A population of only 5 samples makes RMIA's fraction a 6-level step function."""
    rng = np.random.default_rng(seed)
    n = n_mem + n_non
    labels = rng.integers(0, C, n)
    member = np.arange(n) < n_mem
    z_t = rng.normal(0, 1, n) + 1.5 * member
    target = ModelOutputs(_logits_with_true(z_t, labels), labels, member)
    refs = np.stack([_logits_with_true(rng.normal(0, 1, n), labels) for _ in range(k)])
    shadows = []
    for _ in range(k):
        sl = rng.integers(0, C, 200)
        sm = np.arange(200) < 100
        shadows.append(ModelOutputs(_logits_with_true(rng.normal(0, 1, 200) + 1.5 * sm, sl), sl, sm))
    pl = rng.integers(0, C, n_pop)
    t_pop = _logits_with_true(rng.normal(0, 1, n_pop), pl)
    r_pop = np.stack([_logits_with_true(rng.normal(0, 1, n_pop), pl) for _ in range(k)])
    return AttackData(target, shadows, refs, t_pop, r_pop, pl)


# ------------------------------------------------------------------ 1. RMIA ranks by LR(x)
def test_rmia_low_fpr_equals_the_likelihood_ratio_ranking():
    """Catches RMIA's low-FPR metrics read off the |population|+1-level step function (ties at
    the top swallow the 1% FPR bin: TPR 0 there) instead of LR(x)."""
    data = _rmia_world()
    a = 0.3
    r = ATTACKS["rmia"].obj(data, AttackContext(RmiaSettings(a=a, gamma=1.0)))
    t = data.target
    sm = lambda z: np.exp(z) / np.exp(z).sum(-1, keepdims=True)  # noqa: E731
    idx = np.arange(len(t))
    px = sm(t.logits.astype(float))[idx, t.labels]
    prx = 0.5 * ((1 + a) * sm(data.reference_on_target.astype(float))[:, idx, t.labels].mean(0) + 1 - a)
    fpr, tpr = roc_points(px / prx, t.member)
    want = tpr_at_fpr(fpr, tpr, 0.01)
    assert want > 0.05  # the LR ranking does find members at 1% FPR here
    assert r.metrics["tpr_at_1fpr"] == pytest.approx(want)
    # the decision keeps the γ rule: a threshold on the fraction, which has at most 6 levels
    assert r.predictions.any() and not r.predictions.all()


# ------------------------------------------------------------------ 2. logit signals
def test_lira_phi_from_logits_stays_resolved_where_softmax_saturates():
    """Catches φ computed from float32 softmax clipped at 1 − 1e-7: every margin above ~16 then
    gives the same φ. From logits, φ = z_y − logsumexp_{c≠y} z_c exactly."""
    labels = np.zeros(4, np.int64)
    logits = _logits_with_true(np.array([20.0, 30.0, 40.0, 80.0]), labels)
    probs = torch.softmax(torch.as_tensor(logits), 1).numpy()
    assert (probs[:, 0] == 1.0).all()  # the float32 softmax is saturated: p_y == 1 for all four
    phi = logit_confidence(logits, labels)
    np.testing.assert_allclose(phi, np.array([20.0, 30.0, 40.0, 80.0]) - np.log(C - 1), rtol=1e-12)
    assert np.unique(phi).size == 4
    # and with leading model axes (k, n, C)
    np.testing.assert_allclose(logit_confidence(np.stack([logits, logits]), labels), np.stack([phi, phi]))


def _tiny_experiment(seed: int = 0, n: int = 160, d: int = 6, n_shadows: int = 2):
    """Arrays, splits over a permuted train pool, and untrained column_fc models per role."""
    rng = np.random.default_rng(seed)
    arrays = {"features": rng.normal(size=(n, d)).astype(np.float32), "labels": rng.integers(0, C, n)}
    perm = rng.permutation(n)
    pool, test_pool = perm[:120], perm[120:]
    splits = {"train_pool": pool, "test_pool": test_pool}
    roles = ["victim"] + [f"shadow_{i}" for i in range(n_shadows)]
    half = np.array_split(rng.permutation(pool), len(roles))
    for role, rows in zip(roles, half):
        splits[f"{role}/train"] = rows
        splits[f"{role}/dev"] = test_pool[:20]
        splits[f"{role}/test"] = test_pool[20:]
    info = {"kind": "tabular", "input_shape": [d], "num_classes": C, "mean": None, "std": None}
    torch.manual_seed(seed)
    models = {r: make_model("column_fc", info, torch.device("cpu")) for r in roles}
    return arrays, splits, info, models_payload(models, {"status": "ok"})


def test_model_outputs_store_float32_logits_and_member_scores_aligned_on_a_permuted_pool():
    """Catches softmax stored instead of logits, and memorisation scores attached to the wrong
    members (the score table is by train-pool position, the pool is a permutation of the rows)."""
    from wemem.ml.attacks import SamiaSettings

    arrays, splits, info, payload = _tiny_experiment()
    pool = splits["train_pool"]
    score_of_row = lambda rows: (np.asarray(rows) % 97) / 96.0  # noqa: E731 - a known score per raw row
    memscores = pd.DataFrame({"index": np.arange(pool.size), "label": arrays["labels"][pool],
                              "score": score_of_row(pool)}).sample(frac=1.0, random_state=0)
    out = model_outputs(payload, arrays, splits, info, "column_fc", SamiaSettings(n_draws=1), 0, "cpu",
                        memscores=rankings_table(memscores))
    np.testing.assert_allclose(out["victim/memscore"], score_of_row(splits["victim/train"]))
    # the whole pool's scores in train-pool order: a τ given as a share (tau_mode: fraction) is
    # turned into a score threshold over the pool, as the defenses do
    np.testing.assert_allclose(out["memscore/pool"], score_of_row(pool))
    assert out["victim/logits"].dtype == np.float32
    assert not np.allclose(out["victim/logits"].sum(1), 1.0)  # logits, not probabilities
    n_sh0 = len(splits["shadow_0/train"]) + len(splits["shadow_0/test"])
    assert out["shadow_0/reference_logits"].shape == (2, n_sh0, C)
    np.testing.assert_array_equal(out["shadow_0/reference_logits"][0], out["shadow_0/logits"])


# ------------------------------------------------------------------ 3. resolution
def test_tpr_below_one_over_n_nonmembers_is_not_a_number():
    """Catches a TPR printed at an FPR level the non-members cannot resolve (0.1% of 999)."""
    rng = np.random.default_rng(0)
    for n_non, measurable_01 in ((999, False), (1000, True)):
        member = np.r_[np.ones(500, bool), np.zeros(n_non, bool)]
        scores = rng.normal(size=member.size) + member
        m = attack_metrics(scores, scores > 0.5, member)
        assert math.isfinite(m["tpr_at_1fpr"])
        assert math.isfinite(m["tpr_at_0.1fpr"]) == measurable_01, (n_non, m)
    member = np.r_[np.ones(50, bool), np.zeros(99, bool)]
    assert math.isnan(attack_metrics(np.arange(149.0), np.ones(149, bool), member)["tpr_at_1fpr"])
    # thinned ROC points start at the resolution, not at 1e-5
    roc = thinned_roc(rng.normal(size=1499) + np.r_[np.ones(500), np.zeros(999)], np.r_[np.ones(500, bool), np.zeros(999, bool)])
    nonzero = [f for f in roc["fpr"] if f > 0]
    assert min(nonzero) >= 1 / 999 - 1e-12


def test_markdown_marks_unmeasurable_tpr_and_roc_axis_starts_at_resolution():
    """Catches a 0.1% FPR figure printed for a victim with fewer than 1,000 non-members, and a
    ROC axis drawn below 1/n_nonmembers."""
    m = {"balanced_acc": 0.6, "auc": 0.65, "tpr_at_1fpr": 0.04, "tpr_at_0.1fpr": float("nan"), "eps_lb": 0.3,
         "tpr_high": 0.5, "tpr_low": 0.3, "auc_high": 0.7, "auc_low": 0.6, "fpr_decision": 0.2}
    result = {"dataset": "mnist1d", "model": "column_fc", "variant": "rsw", "method": "l1_unstructured",
              "sparsity": 0.6, "status": "ok", "test_acc": 0.8, "train_acc": 0.9, "n_members": 1200,
              "n_nonmembers": 634, "tau": 0.6, "attacks": {"lira": m, "conf": {**m, "balanced_acc": 0.62}},
              "chosen_attack": "lira", "strongest_attack": "conf", "epsilon": None}
    md = comparison_markdown(comparison_table([result]), ["conf", "lira"])
    row = md.splitlines()[2]
    assert "n/m¹" in row and "4.00" in row and "62.00 (Conf)" in row
    assert "634 non-members" in md and "1/634" in md
    fig = plot_roc_curves({"rsw": {"lira": {"fpr": [0, 0.01, 1], "tpr": [0.01, 0.05, 1]}}}, {"rsw": 1 / 634})
    assert fig.axes[0].get_xlim()[0] == pytest.approx(1 / 634)


# ------------------------------------------------------------------ 4. chosen attack
def test_chosen_attack_is_judged_on_the_shadows_only():
    """Catches a choice that reads the victim's membership labels: flipping them changes
    nothing; and on data where per-example calibration matters, LiRA beats Hconf on the shadows."""
    from tests.ml.test_attacks import make_data

    data = make_data(seed=3, n_target=600, n_shadow=800, n_shadows=3, phi_in=0.8, phi_out=0.0)
    chosen, means = choose_attack(data, ["hconf", "lira"])
    assert chosen == "lira" and means["lira"] > means["hconf"]
    data.target.member = ~data.target.member
    assert choose_attack(data, ["hconf", "lira"]) == (chosen, means)
    data.shadow_references = None
    assert choose_attack(data, ["hconf", "lira"]) == ("", {})


# ------------------------------------------------------------------ 5. memorisation slices
def test_slice_metrics_by_hand():
    """Catches slices that mix the two member groups or drop the non-members."""
    member = np.array([1, 1, 1, 1, 0, 0, 0, 0], bool)
    high = np.array([1, 1, 0, 0, 0, 0, 0, 0], bool)
    scores = np.array([0.9, 0.8, 0.3, 0.1, 0.5, 0.2, 0.4, 0.0])
    pred = scores >= 0.45
    got = slice_metrics(scores, pred, member, high)
    # high members (0.9, 0.8) beat every non-member: AUC 1; low members (0.3, 0.1) vs
    # non-members (0.5, 0.2, 0.4, 0.0): pairs won 0.3>{0.2,0.0}, 0.1>{0.0} = 3 of 8
    assert got == {"fpr_decision": 0.25, "tpr_high": 1.0, "auc_high": 1.0, "tpr_low": 0.0, "auc_low": 3 / 8}


# ------------------------------------------------------------------ 6. empirical ε
def test_clopper_pearson_matches_scipy_exact_interval():
    """Catches a wrong Beta quantile (one-sided α, swapped parameters) or bad edge cases."""
    for k, n in ((0, 50), (3, 50), (25, 50), (50, 50), (7, 1000)):
        lo, hi = clopper_pearson(np.array([k]), n)
        ci = binomtest(k, n).proportion_ci(0.95, method="exact")
        assert lo[0] == pytest.approx(ci.low, abs=1e-10) and hi[0] == pytest.approx(ci.high, abs=1e-10)


def test_epsilon_lower_bound_known_answer_perfect_separation():
    """A perfect test on n members and n non-members: at the threshold with FP = 0 and TP = n,
    FPR_hi = 1 − 0.025^(1/n) and TPR_lo = 0.025^(1/n) (closed forms of the exact bounds), so
    ε_lb = log((TPR_lo − δ)/FPR_hi). Catches a bound without confidence intervals (infinite
    here) or a wrong formula."""
    n, delta = 100, 1e-5
    member = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    scores = member.astype(float)
    t_lo, f_hi = 0.025 ** (1 / n), 1 - 0.025 ** (1 / n)
    want = max(math.log((t_lo - delta) / f_hi), math.log((1 - f_hi - delta) / (1 - t_lo)))
    assert epsilon_lower_bound(scores, member, delta) == pytest.approx(want, rel=1e-9)
    assert want == pytest.approx(3.2812, abs=1e-3)
    # a useless test gives 0, never a negative number
    assert epsilon_lower_bound(np.zeros(2 * n), member, delta) == 0.0


def test_epsilon_lower_bound_never_exceeds_dpsgd_accountant():
    """On a DP-SGD-trained toy model the empirical bound of a loss attack must stay below the
    accountant's ε (a bound without Clopper–Pearson intervals is infinite at FP = 0)."""
    from wemem.ml.defenses import build_strategy
    from wemem.ml.models import build_model
    from wemem.ml.train import TrainConfig, fit, predict_logits, to_tensors

    rng = np.random.default_rng(0)
    n, d = 300, 8
    centers = rng.normal(scale=2.0, size=(C, d))
    y = rng.integers(0, C, n)
    x = (centers[y] + rng.normal(size=(n, d))).astype(np.float32)
    xt, yt = to_tensors(x, y, torch.device("cpu"))
    train, dev, test = (xt[:150], yt[:150]), (xt[150:200], yt[150:200]), (xt[200:], yt[200:])
    torch.manual_seed(0)
    model = build_model("column_fc", (d,), C)
    st = build_strategy("dpsgd", {"sigma": 0.6, "clip": 1.0}, masks=None, scores=None,
                        labels=train[1].numpy(), reference=dev)
    res = fit(model, train, dev, TrainConfig(epochs=3, patience=None, batch_size=32, progress=False), st)
    eps = res.extra["epsilon"]
    logits = predict_logits(model, torch.cat([train[0], test[0]]), amp=False).numpy()
    labels = torch.cat([train[1], test[1]]).numpy()
    member = np.r_[np.ones(150, bool), np.zeros(100, bool)]
    scores = logit_confidence(logits, labels)
    lb = epsilon_lower_bound(scores, member, res.extra["delta"])
    assert math.isfinite(eps) and 0.0 <= lb <= eps, (lb, eps)


def test_child_metrics_carry_chosen_attack_counts_and_skip_unmeasurable():
    """Catches a NaN (not measurable) TPR logged to MLflow as a number, and a missing chosen_*
    / n_nonmembers metric."""
    from wemem.ml.results import child_metrics

    m = {"balanced_acc": 0.6, "auc": 0.7, "tpr_at_1fpr": 0.05, "tpr_at_0.1fpr": float("nan"), "eps_lb": 0.4}
    got = child_metrics({"test_acc": 0.8, "n_members": 1200, "n_nonmembers": 634, "epsilon": 3.0,
                         "attacks": {"lira": m, "conf": {**m, "balanced_acc": 0.7}}, "chosen_attack": "lira"})
    assert got["chosen_balanced_acc"] == 0.6 and got["max_attack_acc"] == 0.7
    assert got["n_nonmembers"] == 634 and got["lira_eps_lb"] == 0.4 and got["epsilon"] == 3.0
    assert "lira_tpr_at_0.1fpr" not in got and "chosen_tpr_at_0.1fpr" not in got


def test_choose_folds_caps_the_held_out_shadows():
    """Catches choose_folds being ignored (every shadow held out regardless)."""
    from tests.ml.test_attacks import make_data
    from wemem.ml.attacks import shadow_folds

    data = make_data(seed=4, n_target=100, n_shadow=100, n_shadows=3, n_pop=40)
    folds = list(shadow_folds(data, 2))
    assert len(folds) == 2 and len(list(shadow_folds(data))) == 3
    assert folds[1].target is data.shadows[1] and folds[1].shadows == [data.shadows[0], data.shadows[2]]
    np.testing.assert_array_equal(folds[1].reference_on_target, data.shadow_references[1][[0, 2]])
