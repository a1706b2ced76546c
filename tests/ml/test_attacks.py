"""Attacks end to end on synthetic model outputs, classifier training, sensitivity."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from wemem.ml.attacks import (
    ATTACKS,
    AttackContext,
    AttackData,
    AttackModelSettings,
    ModelOutputs,
    RmiaSettings,
    best_threshold,
    compute_sensitivity,
    run_attacks,
)
from wemem.ml.registry import UnknownName
from wemem.ml.attacks.calibrated import lira_global_sigma, lira_z, rmia_scores
from wemem.ml.attacks.classifier import ci_features, nn_features, predict_member, samia_features, top3_features

C = 10
FAST = AttackModelSettings(epochs=20, lr=0.02, milestones=[15], batch_size=128)
PAPER_ORDER = ("conf", "entr", "mentr", "hconf", "nn", "top3_nn", "ci_nn", "samia", "lira", "rmia")
LOGIT = lambda p: np.log(p / (1 - p))  # noqa: E731


def _probs(phi_true, labels, rng):
    """Softmax rows whose true-class prob is sigmoid(phi_true), the rest spread randomly."""
    n = labels.shape[0]
    p_true = 1 / (1 + np.exp(-phi_true))
    rest = rng.dirichlet(np.ones(C - 1), size=n) * (1 - p_true)[:, None]
    probs = np.empty((n, C))
    onehot = np.zeros((n, C), bool)
    onehot[np.arange(n), labels] = True
    probs[onehot] = p_true
    probs[~onehot] = rest.ravel()
    return probs.astype(np.float32)


class _World:
    """Samples with a per-sample difficulty; a model's true-class logit is
    base(in/out) + difficulty + noise."""

    def __init__(self, seed, phi_in, phi_out, noise=0.3):
        self.rng = np.random.default_rng(seed)
        self.phi_in, self.phi_out, self.noise = phi_in, phi_out, noise

    def samples(self, n):
        return self.rng.integers(0, C, n), self.rng.normal(0, 0.7, n)

    def outputs(self, labels, difficulty, member):
        phi = np.where(member, self.phi_in, self.phi_out) + difficulty
        phi = phi + self.rng.normal(0, self.noise, labels.shape[0])
        probs = _probs(phi, labels, self.rng)
        sens = probs * (1 - probs) * np.where(member, 0.3, 1.0)[:, None] * 5
        sens = sens + 0.01 * np.abs(self.rng.normal(size=sens.shape))
        return ModelOutputs(np.log(probs), labels.astype(np.int64), member.astype(bool), sens.astype(np.float32))


def make_data(seed=0, n_target=2000, n_shadow=2000, n_shadows=3, n_pop=1000,
              phi_in=LOGIT(0.99), phi_out=LOGIT(0.6)):
    w = _World(seed, phi_in, phi_out)
    tl, td = w.samples(n_target)
    t_member = np.arange(n_target) < int(0.6 * n_target)  # imbalanced, like victim train/test
    target = w.outputs(tl, td, t_member)
    shadows, shadow_samples = [], []
    for _ in range(n_shadows):
        sl, sd = w.samples(n_shadow)
        shadow_samples.append((sl, sd))
        shadows.append(w.outputs(sl, sd, np.arange(n_shadow) < int(0.6 * n_shadow)))
    # every shadow on shadow j's samples (row j: shadow j itself; the others are OUT models)
    shadow_refs = [np.stack([shadows[j].logits if i == j else w.outputs(sl, sd, np.zeros(n_shadow, bool)).logits
                             for i in range(n_shadows)]) for j, (sl, sd) in enumerate(shadow_samples)]
    out = np.zeros(n_target, bool)
    ref_t = np.stack([w.outputs(tl, td, out).logits for _ in range(n_shadows)])
    pl, pd = w.samples(n_pop)
    pout = np.zeros(n_pop, bool)
    t_pop = w.outputs(pl, pd, pout).logits
    ref_p = np.stack([w.outputs(pl, pd, pout).logits for _ in range(n_shadows)])
    return AttackData(target, shadows, ref_t, t_pop, ref_p, pl.astype(np.int64), shadow_refs)


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """The attack models are tiny: one thread avoids oversubscription on shared CPUs."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def overfit_results():
    data = make_data(seed=1, n_target=2000, n_shadow=600)
    return data, run_attacks(data, training=FAST, seed=0)


def test_run_attacks_returns_all_ten_with_finite_metrics(overfit_results):
    data, res = overfit_results
    assert tuple(res) == tuple(ATTACKS) == PAPER_ORDER
    n = len(data.target)
    for name, r in res.items():
        assert r.name == name
        assert r.scores.shape == (n,) and np.isfinite(r.scores).all()
        assert r.predictions.shape == (n,) and r.predictions.dtype == bool
        assert set(r.metrics) == {"balanced_acc", "auc", "tpr_at_1fpr", "tpr_at_0.1fpr"}
        # 800 non-members: 0.1% FPR is below the 1/800 resolution, so it is not a number
        assert np.isnan(r.metrics["tpr_at_0.1fpr"]), (name, r.metrics)
        assert all(np.isfinite(v) for k, v in r.metrics.items() if k != "tpr_at_0.1fpr"), (name, r.metrics)


@pytest.mark.parametrize("name", PAPER_ORDER)
def test_overfit_is_detected(overfit_results, name):
    _, res = overfit_results
    assert res[name].metrics["balanced_acc"] > 0.6, res[name].metrics
    assert res[name].metrics["auc"] > 0.6, res[name].metrics


def test_calibrated_attacks_use_per_example_references():
    """Difficulty dominates the raw confidence; only the reference-calibrated attacks see
    through it (members: +0.5 logit)."""
    data = make_data(seed=3, n_target=4000, phi_in=0.5, phi_out=0.0)
    res = run_attacks(data, ("hconf", "lira", "rmia"))
    assert res["lira"].metrics["auc"] > res["hconf"].metrics["auc"] + 0.1
    assert res["rmia"].metrics["auc"] > res["hconf"].metrics["auc"] + 0.1
    assert res["lira"].metrics["balanced_acc"] > 0.6
    # the leave-one-out thresholds land close to the best threshold in hindsight on the target
    m = data.target.member
    for name in ("hconf", "lira", "rmia"):
        _, oracle = best_threshold(res[name].scores[m], res[name].scores[~m])
        assert res[name].metrics["balanced_acc"] > oracle - 0.02, (name, oracle)


def test_identical_distributions_give_chance():
    phi = LOGIT(0.8)
    data = make_data(seed=2, n_target=20000, n_shadow=20000, n_shadows=2, phi_in=phi, phi_out=phi)
    res = run_attacks(data, ("conf", "entr", "mentr", "hconf", "lira", "rmia"))
    for name, r in res.items():
        assert abs(r.metrics["balanced_acc"] - 0.5) < 0.05, (name, r.metrics)
        assert abs(r.metrics["auc"] - 0.5) < 0.05, (name, r.metrics)


def test_single_shadow_calibration_runs():
    data = make_data(seed=4, n_shadows=1)
    res = run_attacks(data, ("hconf", "lira", "rmia"))
    assert res["lira"].metrics["balanced_acc"] > 0.6
    # victim-on-population calibration still lands close to the best threshold in hindsight
    m = data.target.member
    for name in ("hconf", "lira", "rmia"):
        _, oracle = best_threshold(res[name].scores[m], res[name].scores[~m])
        assert res[name].metrics["balanced_acc"] > oracle - 0.02, (name, oracle)
    assert res["rmia"].metrics["balanced_acc"] > 0.6


def test_lira_and_rmia_formulas():
    rng = np.random.default_rng(0)
    k, n, m = 4, 50, 30
    phi_refs = rng.normal(size=(k, n))
    mu = phi_refs.mean(0)
    sigma = np.sqrt(((phi_refs - mu) ** 2).sum() / (n * (k - 1)))
    assert lira_global_sigma(phi_refs) == pytest.approx(sigma)
    phi = rng.normal(size=n)
    np.testing.assert_allclose(lira_z(phi, phi_refs, sigma), (phi - mu) / sigma)
    lr_x, lr_z = rng.random(n) * 2, rng.random(m) * 2
    for gamma in (1.0, 1.5):
        brute = (lr_x[:, None] / lr_z[None, :] >= gamma).mean(1)
        np.testing.assert_allclose(rmia_scores(lr_x, lr_z, gamma), brute)


def test_rmia_matches_definition_on_data():
    data = make_data(seed=5, n_target=300, n_pop=200)
    a, g = 0.3, 1.0
    r = ATTACKS["rmia"].obj(data, AttackContext(RmiaSettings(a=a, gamma=g)))
    t, lab, plab = data.target, data.target.labels, data.population_labels
    sm = lambda z: np.exp(z) / np.exp(z).sum(-1, keepdims=True)  # noqa: E731
    px = sm(t.logits.astype(float))[np.arange(len(lab)), lab]
    prx = 0.5 * ((1 + a) * sm(data.reference_on_target.astype(float))[:, np.arange(len(lab)), lab].mean(0) + 1 - a)
    pz = sm(data.target_on_population.astype(float))[np.arange(len(plab)), plab]
    prz = 0.5 * ((1 + a) * sm(data.reference_on_population.astype(float))[:, np.arange(len(plab)), plab].mean(0) + 1 - a)
    fraction = ((px / prx)[:, None] / (pz / prz)[None, :] >= g).mean(1)
    # ranking score: log LR(x); decision: the gamma rule, i.e. a threshold on the fraction
    np.testing.assert_allclose(r.scores, np.log(px / prx), rtol=1e-9, atol=1e-9)
    cut = fraction[r.predictions].min()
    np.testing.assert_array_equal(r.predictions, fraction >= cut)


def test_unknown_attack_and_bad_shapes_raise():
    data = make_data(seed=6, n_target=100, n_shadow=100, n_pop=50)
    with pytest.raises(UnknownName, match="did you mean 'conf'"):
        run_attacks(data, ("conf", "cnf"))
    data.reference_on_target = data.reference_on_target[:, :10]
    with pytest.raises(ValueError, match="reference_on_target"):
        run_attacks(data, ("conf",))


def test_feature_layouts():
    data = make_data(seed=7, n_target=200, n_shadow=100, n_pop=50)
    t = data.target
    top = top3_features(t)
    assert top.shape == (200, 3)
    assert np.all(np.diff(top, axis=1) <= 0)
    np.testing.assert_array_equal(top[:, 0], t.probs.max(1))
    s = samia_features(t).reshape(200, C, 3)
    np.testing.assert_array_equal(s[..., 0], t.probs)
    np.testing.assert_array_equal(s[..., 1], t.sensitivity)
    np.testing.assert_array_equal(s[..., 2].argmax(1), t.labels)


def test_nn_and_ci_nn_features_by_hand():
    # two samples, three classes, logits chosen so softmax is known: [0, 0, 0] → ⅓ each,
    # [ln 2, 0, 0] → [½, ¼, ¼]. CI-NN = softmax ⊕ one-hot label; catches a missing or shifted
    # one-hot (the planted "CI-NN without the one-hot label" bug) and NN fed anything but softmax
    out = ModelOutputs(np.array([[0.0, 0.0, 0.0], [np.log(2.0), 0.0, 0.0]], np.float32), np.array([2, 0]),
                       np.array([True, False]))
    soft = np.array([[1 / 3, 1 / 3, 1 / 3], [0.5, 0.25, 0.25]], np.float32)
    np.testing.assert_allclose(nn_features(out), soft, rtol=1e-6)
    np.testing.assert_allclose(ci_features(out), np.c_[soft, [[0, 0, 1], [1, 0, 0]]], rtol=1e-6)


@pytest.mark.parametrize("name", ["nn", "samia"])
def test_classifier_training_is_deterministic(name):
    data = make_data(seed=8, n_target=200, n_shadow=200, n_shadows=2, n_pop=50)
    training = AttackModelSettings(epochs=2, lr=0.01, milestones=[1])
    cfg = AttackContext(training=training, seed=3)
    state = torch.random.get_rng_state()
    a = ATTACKS[name].obj(data, cfg)
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG left untouched
    b = ATTACKS[name].obj(data, cfg)
    np.testing.assert_array_equal(a.scores, b.scores)
    c = ATTACKS[name].obj(data, AttackContext(training=training, seed=4))
    assert not np.array_equal(a.scores, c.scores)


def test_diverged_attack_model_is_reported_not_crashing():
    class NaNModel(torch.nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], 2), float("nan"))

    with pytest.warns(RuntimeWarning, match="diverged"):
        scores, preds = predict_member(NaNModel(), np.zeros((5, 3), np.float32), "cpu")
    np.testing.assert_array_equal(scores, 0.5)
    assert not preds.any()


def test_compute_sensitivity_linear_model_matches_hand_computation():
    torch.manual_seed(0)
    d, n, draws, eps, seed = 5, 40, 6, 1e-3, 11
    lin = torch.nn.Linear(d, C).double()
    x = torch.randn(n, d, dtype=torch.float64)
    got = compute_sensitivity(lin, x, n_draws=draws, eps=eps, seed=seed, batch_size=7)
    # hand computation: the same noise, first-order change J·W·u of softmax(Wx + b)
    gen = torch.Generator().manual_seed(seed)
    W = lin.weight.detach()
    p = torch.softmax(lin(x), 1).detach()
    jac = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]  # (n, C, C)
    want = torch.zeros(n, C, dtype=torch.float64)
    for _ in range(draws):
        u = torch.randn(x.shape, generator=gen, dtype=x.dtype)
        want += (jac @ (u @ W.T)[:, :, None])[..., 0].abs()
    want /= draws
    torch.testing.assert_close(got, want, rtol=2e-3, atol=1e-4)
    # independent of the batch size; model mode restored
    lin.train()
    again = compute_sensitivity(lin, x, n_draws=draws, eps=eps, seed=seed, batch_size=1000)
    torch.testing.assert_close(got, again)
    assert lin.training


def test_library_does_not_import_kedro():
    code = "import sys, wemem.ml.attacks; assert 'kedro' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_fast_dropout_rate_scale_and_eval_identity():
    from wemem.ml.attacks.classifier import fast_dropout

    torch.manual_seed(0)
    x = torch.ones(200, 500)
    y = fast_dropout(x, 0.2, training=True)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 0.2) < 0.005  # 100k draws: sd of the rate is 0.0013
    np.testing.assert_allclose(y[y != 0].numpy(), 1.0 / 0.8, rtol=1e-6)
    assert abs(y.mean().item() - 1.0) < 0.01  # inverted dropout keeps the expectation
    assert fast_dropout(x, 0.2, training=False) is x
    assert fast_dropout(x, 0.0, training=True) is x
    torch.manual_seed(5)
    a = fast_dropout(x, 0.5, training=True)
    torch.manual_seed(5)
    assert torch.equal(a, fast_dropout(x, 0.5, training=True))  # seeded by torch's generator


def test_samia_block_equals_torch_pre_ln_encoder_layer():
    """The written-out block computes what nn.TransformerEncoderLayer(norm_first=True) does."""
    from wemem.ml.attacks.classifier import PreLNBlock

    torch.manual_seed(1)
    w, heads = 16, 4
    ours = PreLNBlock(w, heads, dropout=0.2).eval()
    ref = torch.nn.TransformerEncoderLayer(w, heads, dim_feedforward=2 * w, dropout=0.2,
                                           batch_first=True, norm_first=True).eval()
    with torch.no_grad():
        ref.self_attn.in_proj_weight.copy_(ours.qkv.weight)
        ref.self_attn.in_proj_bias.copy_(ours.qkv.bias)
        ref.self_attn.out_proj.weight.copy_(ours.proj.weight)
        ref.self_attn.out_proj.bias.copy_(ours.proj.bias)
        for a, b in ((ref.linear1, ours.ff1), (ref.linear2, ours.ff2), (ref.norm1, ours.norm1),
                     (ref.norm2, ours.norm2)):
            a.weight.copy_(b.weight)
            a.bias.copy_(b.bias)
        # perturb the norms so the test does not pass with identity LayerNorms
        for n in (ours.norm1, ours.norm2):
            n.weight.mul_(1.5).add_(0.1)
            n.bias.add_(0.2)
        ref.norm1.load_state_dict(ours.norm1.state_dict())
        ref.norm2.load_state_dict(ours.norm2.state_dict())
        x = torch.randn(7, 10, w)
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="divisible"):
        PreLNBlock(10, 4, 0.0)
