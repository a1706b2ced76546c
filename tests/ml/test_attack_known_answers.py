"""A planted-membership world pushed from model outputs through every attack to the comparison
row, each cell checked against a brute-force answer written here (issue 17), and a chance-level
control for all ten attacks.

The world: C classes; a model's logits are 0 except the true class's, which is
``2.0·member + offset[label] + noise`` with the noise on a 0.5 grid (so scores tie often and
the tie rule matters). The class offsets differ, so only per-class thresholds separate members
well. Every expected figure is computed by brute force in this file: pairwise AUC with ties
counted ½, TPR at an FPR level by sweeping every threshold, per-class thresholds by trying every
candidate with exact integer arithmetic, balanced accuracy by counting. Nothing is copied from
the code's output.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from wemem.ml.attacks import ATTACKS, AttackData, ModelOutputs, run_attacks
from wemem.ml.evaluation import MiaEvaluationSettings, attack_data, attack_record
from wemem.ml.grid import Combo
from wemem.ml.reporting import comparison_row, comparison_table

pytestmark = pytest.mark.usefixtures("one_thread")

C = 4
OFFSET = np.array([0.0, 1.5, -1.0, 0.5])
ALL = tuple(ATTACKS)
TRAINING = {"epochs": 4, "batch_size": 64, "milestones": [3], "lr": 0.01}
SAMIA = {"width": 8, "layers": 1, "heads": 2}
RMIA_A = 0.3


# ------------------------------------------------------------------ the world
def _model(rng: np.random.Generator, labels: np.ndarray, member: np.ndarray, gap: float = 2.0) -> np.ndarray:
    """float32 logits (n, C): true class 2·member + offset + noise on a 0.5 grid, others 0."""
    z = np.zeros((labels.size, C))
    z[np.arange(labels.size), labels] = gap * member + OFFSET[labels] + 0.5 * rng.integers(-2, 3, labels.size)
    return z.astype(np.float32)


def _sensitivity(rng: np.random.Generator, logits: np.ndarray, member: np.ndarray | None) -> np.ndarray:
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    scale = 1.0 if member is None else np.where(member, 0.5, 1.0)[:, None]
    return (p * (1 - p) * scale + 0.01 * rng.random(p.shape)).astype(np.float32)


def planted_outputs(seed: int = 0, n_in: int = 300, n_out: int = 1000, n_shadow: int = 300, n_pop: int = 200,
                    gap: float = 2.0, leak_sensitivity: bool = True) -> dict[str, np.ndarray]:
    """Model outputs laid out as :func:`wemem.ml.evaluation.model_outputs` stores them: a
    victim (n_in members, n_out non-members), two shadows (n_shadow in + n_shadow out each),
    the shadows as OUT references on everybody else's samples, a population."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    roles = {"victim": (n_in, n_out), "shadow_0": (n_shadow, n_shadow), "shadow_1": (n_shadow, n_shadow)}
    labels_of = {}
    for role, (a, b) in roles.items():
        labels = rng.integers(0, C, a + b)
        member = np.r_[np.ones(a, bool), np.zeros(b, bool)]
        logits = _model(rng, labels, member, gap)
        labels_of[role] = labels
        out.update({f"{role}/logits": logits, f"{role}/labels": labels.astype(np.int64), f"{role}/member": member,
                    f"{role}/sensitivity": _sensitivity(rng, logits, member if leak_sensitivity else None)})
    shadows = ["shadow_0", "shadow_1"]
    never = lambda n: np.zeros(n, bool)  # noqa: E731 - an OUT model's membership
    out["reference/on_target"] = np.stack(
        [_model(rng, labels_of["victim"], never(n_in + n_out), gap) for _ in shadows])
    for j in shadows:  # row i: shadow i on shadow j's samples (row j: shadow j itself)
        n_j = labels_of[j].size
        out[f"{j}/reference_logits"] = np.stack(
            [out[f"{j}/logits"] if i == j else _model(rng, labels_of[j], never(n_j), gap) for i in shadows])
    pop = rng.integers(0, C, n_pop)
    out["population/labels"] = pop.astype(np.int64)
    out["victim/population_logits"] = _model(rng, pop, never(n_pop), gap)
    out["reference/on_population"] = np.stack([_model(rng, pop, never(n_pop), gap) for _ in shadows])
    return out


# ------------------------------------------------------------------ brute force
def softmax64(z: np.ndarray) -> np.ndarray:
    e = np.exp(np.asarray(z, np.float64))
    return e / e.sum(-1, keepdims=True)


def pairwise_auc(scores: np.ndarray, member: np.ndarray) -> float:
    """P(member score > non-member score) + ½ P(equal), over every pair."""
    s_in, s_out = scores[member][:, None], scores[~member][None, :]
    return float(((s_in > s_out) + 0.5 * (s_in == s_out)).mean())


def tpr_at_fpr_sweep(scores: np.ndarray, member: np.ndarray, level: float) -> float:
    """Best TPR of the rule score ≥ t over every t with FPR ≤ level; NaN when one non-member is
    more than ``level`` of them (the level cannot be resolved)."""
    n_non = int((~member).sum())
    if level * n_non < 1 - 1e-9:
        return math.nan
    best = 0.0
    for t in np.append(np.unique(scores), np.inf):
        flagged = scores >= t
        if flagged[~member].sum() <= level * n_non + 1e-9:
            best = max(best, flagged[member].mean())
    return float(best)


def balanced_acc(pred: np.ndarray, member: np.ndarray) -> float:
    return 0.5 * (pred[member].sum() / member.sum() + (~pred[~member]).sum() / (~member).sum())


def best_threshold_exact(values: np.ndarray, member: np.ndarray) -> float:
    """Lowest t among sorted unique values ∪ {inf} maximising ½(TPR + TNR) of value ≥ t, compared
    exactly as the integer tp·n_non + tn·n_in."""
    n_in, n_non = int(member.sum()), int((~member).sum())
    best, best_t = -1, math.inf
    for t in np.append(np.unique(values), np.inf):
        tp = int((values[member] >= t).sum())
        tn = int((values[~member] < t).sum())
        obj = tp * n_non + tn * n_in
        if obj > best:
            best, best_t = obj, float(t)
    return best_t


def metric_signals(logits: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """The four metric attacks' values, by their textbook formulas (higher = member)."""
    p = softmax64(logits)
    py = p[np.arange(labels.size), labels]
    ent = -(p * np.log(p)).sum(1)
    is_y = np.zeros_like(p, bool)
    is_y[np.arange(labels.size), labels] = True
    mentr = (-(1 - py) * np.log(py)) + np.where(is_y, 0.0, -p * np.log(1 - p)).sum(1)
    return {"conf": py, "entr": -ent, "mentr": -mentr, "hconf": py}


def expected_metric_attack(name: str, out: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(scores, predictions) of a metric attack by brute force: thresholds on the pooled shadows
    (per class for Conf/Entr/Mentr, one global for Hconf), applied to the victim."""
    sh_logits = np.concatenate([out["shadow_0/logits"], out["shadow_1/logits"]])
    sh_labels = np.concatenate([out["shadow_0/labels"], out["shadow_1/labels"]])
    sh_member = np.concatenate([out["shadow_0/member"], out["shadow_1/member"]])
    v_sh = metric_signals(sh_logits, sh_labels)[name]
    v = metric_signals(out["victim/logits"], out["victim/labels"])[name]
    if name == "hconf":
        t = best_threshold_exact(v_sh, sh_member)
        return v, v >= t
    th = np.array([best_threshold_exact(v_sh[sh_labels == c], sh_member[sh_labels == c]) for c in range(C)])
    t = th[out["victim/labels"]]
    return v - t, v >= t


def lira_ranking(out: dict[str, np.ndarray]) -> np.ndarray:
    """LiRA's test statistic by hand: φ = log(p_y / (1 − p_y)) of the victim minus its mean over
    the reference models (a global σ does not change the ranking)."""
    y = out["victim/labels"]

    def phi(z):
        p = softmax64(z)[..., np.arange(y.size), y] if z.ndim == 3 else softmax64(z)[np.arange(y.size), y]
        return np.log(p) - np.log1p(-p)

    return phi(out["victim/logits"]) - phi(out["reference/on_target"]).mean(0)


def rmia_ranking(out: dict[str, np.ndarray]) -> np.ndarray:
    """Offline RMIA's likelihood ratio by hand: Pr(x|θ) / ½((1 + a)·mean_ref Pr(x|θ_ref) + 1 − a)."""
    y = out["victim/labels"]
    p_t = softmax64(out["victim/logits"])[np.arange(y.size), y]
    p_ref = softmax64(out["reference/on_target"])[:, np.arange(y.size), y].mean(0)
    return p_t / (0.5 * ((1 + RMIA_A) * p_ref + 1 - RMIA_A))


# ------------------------------------------------------------------ the tests
def _settings(attacks=ALL) -> MiaEvaluationSettings:
    return MiaEvaluationSettings.model_validate(
        {"attacks": list(attacks), "attack_model": TRAINING, "samia": SAMIA, "rmia": {"a": RMIA_A},
         "roc_points": 20, "choose_folds": 1})


CHEAP = tuple(a for a in ALL if ATTACKS[a].family != "classifier")


@pytest.fixture(scope="module", params=[CHEAP, ALL], ids=["six_cheap_attacks", "ten_attacks"])
def planted(request):
    """The planted world's outputs, its attack record (the six attacks without an attack model,
    in a second or so, and all ten), its comparison row and each attack's own results."""
    attacks = request.param
    out = planted_outputs()
    settings = _settings(attacks)
    combo = Combo("l1_unstructured", 0.6, "base")
    log = {"meta": {"status": "ok", "defense": "base", "settings": {"weight_decay": 5e-4}},
           "models": {"victim": {"finetune_seconds": 2.5, "final_global_sparsity": 0.6}}}
    record = attack_record(combo, out, log, dataset="mnist1d", model="column_fc", settings=settings,
                           seed=0, device="cpu")
    # the same attacks again, for their scores and decisions (the record keeps only metrics)
    results = run_attacks(attack_data(out), settings.attacks, settings.attack_settings(),
                          training=settings.attack_model, device="cpu", seed=0)
    return out, record, comparison_row(record), results


def test_metric_attacks_decide_by_brute_force_thresholds(planted):
    """Conf/Entr/Mentr: each class's own best threshold on the pooled shadows; Hconf: one global
    threshold. Catches a global threshold for a per-class attack (the class offsets make it
    differ), a wrong tie rule (value ≥ t), a wrong signal formula and a threshold fitted on the
    victim."""
    out, _, _, results = planted
    for name in ("conf", "entr", "mentr", "hconf"):
        scores, pred = expected_metric_attack(name, out)
        np.testing.assert_array_equal(results[name].predictions, pred, err_msg=name)
        np.testing.assert_allclose(results[name].scores, scores, atol=1e-6, err_msg=name)
    # the per-class and the global rule really disagree in this world
    assert (expected_metric_attack("conf", out)[1] != expected_metric_attack("hconf", out)[1]).sum() > 20


def increasing_function_of(ours: np.ndarray, theirs: np.ndarray) -> bool:
    """Whether ``theirs`` is a strictly increasing function of ``ours``: it rises wherever ours
    rises (by more than rounding) and stays put (to rounding) where ours ties."""
    o = np.argsort(ours, kind="stable")
    rise, step = np.diff(ours[o]) > 1e-9, np.diff(theirs[o])
    return bool((step[rise] > 0).all() and (np.abs(step[~rise]) < 1e-6).all())


def test_calibrated_attacks_rank_by_the_reference_statistic(planted):
    """LiRA's scores are an increasing function of φ − mean_ref φ and RMIA's of
    Pr(x|θ)/Pr(x), both computed here; so their AUCs are the pairwise AUCs of these statistics
    up to exact ties (the grid world makes many; the code's floats split some of them)."""
    out, _, row, results = planted
    member = out["victim/member"]
    assert increasing_function_of(lira_ranking(out), results["lira"].scores)
    assert increasing_function_of(rmia_ranking(out), results["rmia"].scores)
    assert row["lira_auc"] == pytest.approx(pairwise_auc(lira_ranking(out), member), abs=0.005)
    assert row["rmia_auc"] == pytest.approx(pairwise_auc(rmia_ranking(out), member), abs=0.005)


@pytest.mark.parametrize("name", ALL)
def test_each_attack_s_row_cells_equal_the_brute_force_metrics(planted, name):
    """Every cell of every attack in the comparison row, from that attack's scores and decisions:
    balanced accuracy by counting, AUC over all pairs (ties ½), TPR at 1% and 0.1% FPR by a
    threshold sweep (1,000 non-members: 0.1% is exactly one non-member, so it is measurable)."""
    out, _, row, results = planted
    if name not in results:
        pytest.skip(f"{name} runs in the ten-attack world")
    member = out["victim/member"]
    r = results[name]
    assert row[f"{name}_acc"] == pytest.approx(balanced_acc(r.predictions, member), abs=1e-12)
    assert row[f"{name}_auc"] == pytest.approx(pairwise_auc(r.scores, member), abs=1e-12)
    assert row[f"{name}_tpr_at_1fpr"] == pytest.approx(tpr_at_fpr_sweep(r.scores, member, 0.01), abs=1e-12)
    assert row[f"{name}_tpr_at_0.1fpr"] == pytest.approx(tpr_at_fpr_sweep(r.scores, member, 0.001), abs=1e-12)
    assert 0 <= row[f"{name}_eps_lb"] < 10


def test_planted_membership_is_found_by_every_attack(planted):
    """Members sit 2 logits higher: every attack is well above chance (the classifier attacks
    train for only 4 epochs here, so their bar is lower)."""
    _, _, row, results = planted
    for name in results:
        bar = 0.65 if ATTACKS[name].family == "classifier" else 0.85
        assert row[f"{name}_auc"] > bar, (name, row[f"{name}_auc"])
        assert row[f"{name}_acc"] > bar - 0.1, (name, row[f"{name}_acc"])


def test_row_identity_accuracy_counts_and_maxima(planted):
    """The row's own columns: who it is, the victim's accuracies by counting argmax hits, the
    sample counts, the chosen attack's cells equal to that attack's, the max over all attacks and
    over the metric family, the cost and sparsity from the fine-tuning log."""
    out, record, row, results = planted
    member, labels, logits = out["victim/member"], out["victim/labels"], out["victim/logits"]
    hits = np.array([int(np.argmax(logits[i])) == labels[i] for i in range(labels.size)])
    assert row["test_acc"] == pytest.approx(hits[~member].mean())
    assert row["train_acc"] == pytest.approx(hits[member].mean())
    assert (row["n_members"], row["n_nonmembers"]) == (300, 1000)
    assert (row["dataset"], row["model"], row["pruning_method"], row["sparsity"], row["defense"], row["status"]) == (
        "mnist1d", "column_fc", "l1_unstructured", 0.6, "base", "ok")
    accs = {a: balanced_acc(results[a].predictions, member) for a in results}
    assert row["max_attack_acc"] == pytest.approx(max(accs.values()))
    assert row["strongest_attack"] == max(accs, key=accs.get)
    assert row["max_metric_attack_acc"] == pytest.approx(max(accs[a] for a in ("conf", "entr", "mentr", "hconf")))
    chosen = row["chosen_attack"]
    assert chosen in results and chosen == record["chosen_attack"]
    for k in ("acc", "auc", "tpr_at_1fpr", "tpr_at_0.1fpr", "eps_lb"):
        assert row[f"chosen_{k}"] == row[f"{chosen}_{k}"]
    assert (row["finetune_seconds"], row["final_sparsity"], row["settings"]) == (2.5, 0.6, "weight_decay=0.0005")
    table = comparison_table([record])
    assert table.iloc[0]["conf_acc"] == row["conf_acc"]


def test_every_attack_is_at_chance_when_membership_is_not_in_the_outputs():
    """The control: members and non-members drawn from one distribution (the sensitivity signal
    too): all ten attacks, the four classifier attacks included, give AUC and balanced accuracy
    within 0.05 of ½ (4,000 victim samples: the AUC's standard error is about 0.01)."""
    out = planted_outputs(seed=5, n_in=2000, n_out=2000, n_shadow=1500, n_pop=300, gap=0.0,
                          leak_sensitivity=False)
    data = attack_data(out)
    settings = _settings()
    res = run_attacks(data, settings.attacks, settings.attack_settings(), training=settings.attack_model, seed=0)
    assert tuple(res) == ALL
    for name, r in res.items():
        assert abs(r.metrics["auc"] - 0.5) < 0.05, (name, r.metrics)
        assert abs(r.metrics["balanced_acc"] - 0.5) < 0.05, (name, r.metrics)


def test_planted_world_is_what_it_says():
    """The world itself: members' true-class logit is 2 above a non-member's of the same class
    and noise, OUT references never see the gap, and the layout is what attack_data reads."""
    out = planted_outputs(n_in=50, n_out=60, n_shadow=40, n_pop=30)
    data = attack_data(out)
    assert isinstance(data, AttackData) and isinstance(data.target, ModelOutputs)
    assert len(data.shadows) == 2 and data.shadow_references is not None
    y, m = out["victim/labels"], out["victim/member"]
    z = out["victim/logits"][np.arange(y.size), y] - OFFSET[y]
    assert set(np.unique(z[m])) <= {1.0, 1.5, 2.0, 2.5, 3.0}
    assert set(np.unique(z[~m])) <= {-1.0, -0.5, 0.0, 0.5, 1.0}
    ref = out["reference/on_target"][:, np.arange(y.size), y] - OFFSET[y]
    assert ref.max() <= 1.0
