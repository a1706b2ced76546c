"""Every defense's mechanism against an independent answer (issue 17 item 1, non-DP part).

The expected values never come from the code under test: Adam is re-written from its formulas
(:class:`HandAdam`), gradients come from autograd on a functional copy of the model (or from
finite differences of a numpy formula), and batch contents from the window/threshold rules.
Each test says in a comment which planted bug it catches.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from wemem.ml.defenses import ADV, PPB, RMR, SWMR, Base, RelaxLoss, relaxloss_flatten_loss, risky_mask
from wemem.ml.ranking import epoch_window
from wemem.ml.train import TrainConfig, fit

D, C = 3, 2


pytestmark = pytest.mark.usefixtures("one_thread")


class HandAdam:
    """torch.optim.Adam (L2 weight decay added to the gradient) from its formulas, in float64."""

    def __init__(self, weight_decay: float, lr: float, betas=(0.9, 0.999), eps=1e-8) -> None:
        self.wd, self.lr, (self.b1, self.b2), self.eps = weight_decay, lr, betas, eps
        self.t, self.m, self.v = 0, None, None

    def step(self, params: list[torch.Tensor], grads: list[torch.Tensor]) -> list[torch.Tensor]:
        self.t += 1
        grads = [g + self.wd * p for p, g in zip(params, grads)]
        if self.m is None:
            self.m = [torch.zeros_like(p) for p in params]
            self.v = [torch.zeros_like(p) for p in params]
        self.m = [self.b1 * m + (1 - self.b1) * g for m, g in zip(self.m, grads)]
        self.v = [self.b2 * v + (1 - self.b2) * g * g for v, g in zip(self.v, grads)]
        bc1, bc2 = 1 - self.b1**self.t, 1 - self.b2**self.t
        return [p - self.lr * (m / bc1) / ((v / bc2).sqrt() + self.eps) for p, m, v in zip(params, self.m, self.v)]


def _linear(seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    model = nn.Linear(D, C)
    with torch.no_grad():  # weights of order 1, so a weight decay of order 1 moves Adam's steps
        model.weight.mul_(3.0)
    return model


def _params64(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().double().clone() for p in model.parameters()]


def _ce_grads(model: nn.Module, params: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """Gradient of the mean CE at ``params`` (float64), by autograd on a functional copy."""
    names = [n for n, _ in model.named_parameters()]
    leaves = [p.clone().requires_grad_(True) for p in params]
    logits = functional_call(copy.deepcopy(model).double(), dict(zip(names, leaves)), (x.double(),))
    return list(torch.autograd.grad(F.cross_entropy(logits, y), leaves))


def _close(model: nn.Module, params: list[torch.Tensor], atol=1e-6) -> bool:
    return all(torch.allclose(p.detach().double(), q, atol=atol, rtol=0) for p, q in zip(model.parameters(), params))


def _far(a: list[torch.Tensor], b: list[torch.Tensor], gap=1e-4) -> bool:
    return max(float((p - q).abs().max()) for p, q in zip(a, b)) > gap


def _cfg(**kw) -> TrainConfig:
    base = dict(epochs=3, patience=None, batch_size=1, lr=0.05, progress=False, amp=False)
    base.update(kw)
    return TrainConfig(**base)


# ------------------------------------------------------------------ RMR: two optimizers
def test_rmr_steps_risky_batch_with_lambda_r_then_the_rest_with_lambda_g_each_with_its_own_adam():
    # Two samples: sample 1 is risky (score 0.9 ≥ τ = 0.5), sample 0 is not. Each epoch the
    # reference steps the risky batch first with an Adam of weight decay λ_r, then the other batch
    # with a second Adam (own moments, own step count) with λ_g. Catches: one shared optimizer or
    # shared state, swapped decays, the risky batch not first, λ back in the loss (any of these
    # moves the weights away from the hand computation by more than 1e-4).
    x = torch.tensor([[1.0, -0.5, 0.2], [0.3, 0.8, -1.0]])
    y = torch.tensor([0, 1])
    scores = np.array([0.1, 0.9])
    lam_r, lam_g, cfg = 2.0, 1e-3, _cfg()
    model = _linear()
    start = _params64(model)
    st = RMR(RMR.Settings(tau=0.5, lambda_r=lam_r, lambda_g=lam_g), scores=scores, labels=y.numpy())
    result = fit(model, (x, y), None, cfg, st)

    def hand(first, second, risky_first=True, shared=False):
        params, opt_1, opt_2 = start, HandAdam(first, cfg.lr), HandAdam(second, cfg.lr)
        order = [(1, opt_1), (0, opt_2)] if risky_first else [(0, opt_2), (1, opt_1)]
        for _ in range(cfg.epochs):
            for i, opt in order:
                params = (opt_1 if shared else opt).step(params, _ce_grads(model, params, x[i : i + 1], y[i : i + 1]))
        return params

    expected = hand(lam_r, lam_g)
    assert _close(model, expected)
    for wrong in (hand(lam_g, lam_r), hand(lam_r, lam_g, risky_first=False), hand(lam_r, lam_g, shared=True)):
        assert _far(wrong, expected)  # the test would see each of those bugs
    assert [g["weight_decay"] for g in st.risky_optimizer.param_groups] == [lam_r]
    assert [g["weight_decay"] for g in st.optimizer.param_groups] == [lam_g]
    w = model.weight
    assert int(st.risky_optimizer.state[w]["step"]) == cfg.epochs == int(st.optimizer.state[w]["step"])
    assert st.risky_optimizer.state[w]["exp_avg"] is not st.optimizer.state[w]["exp_avg"]
    assert result.extra["risky_steps"] == result.extra["general_steps"] == cfg.epochs
    assert (result.extra["n_risky"], result.extra["risky_fraction"], result.extra["threshold"]) == (1, 0.5, 0.5)


@pytest.mark.parametrize("mode,tau", [("value", 0.7), ("fraction", 0.25)])
def test_rmr_epoch_batches_put_risky_samples_first_in_their_own_batches(mode, tau):
    # Catches: risky and other samples mixed in one batch, a sample seen twice or never in an
    # epoch, the two groups in the wrong order, the same order every epoch (no shuffling).
    rng = np.random.default_rng(4)
    n, bs = 103, 16
    scores, labels = rng.random(n), rng.integers(0, 3, n)
    risky = risky_mask(scores, tau, mode)
    st = RMR(RMR.Settings(tau=tau, tau_mode=mode), scores=scores, labels=labels)
    gen = torch.Generator().manual_seed(0)
    st.bind(_linear(), torch.randn(n, D), torch.as_tensor(labels), _cfg(batch_size=bs), gen)
    orders = []
    for epoch in range(2):
        batches = st.epoch_batches(epoch, n)
        kinds = [bool(risky[b.numpy()].all()) for b in batches]
        assert all(risky[b.numpy()].all() or not risky[b.numpy()].any() for b in batches)
        n_r = int(np.ceil(risky.sum() / bs))
        assert kinds == [True] * n_r + [False] * (len(batches) - n_r) and st._kinds == kinds
        assert all(b.numel() <= bs for b in batches)
        flat = torch.cat(batches).numpy()
        assert np.array_equal(np.sort(flat), np.arange(n))
        orders.append(flat)
    assert not np.array_equal(orders[0], orders[1])


# ------------------------------------------------------------------ SWMR: windows + two optimizers
SW_SCORES = np.array([0.9, 0.3, 0.1, 0.8, 0.4, 0.2])
SW_LABELS = np.array([0, 0, 0, 1, 1, 1])


def test_swmr_windows_and_risky_optimizer_both_act():
    # Class 0 ranks (h2l) 0, 1, 2 and class 1 ranks 3, 4, 5; w = s = 2 gives epoch 0 the windows
    # {0, 1} ∪ {3, 4}, epoch 1 {2} ∪ {5}. τ = 0.5 makes 0 and 3 risky. So epoch 0 steps batch
    # {0, 3} with the λ_r Adam, then {1, 4} with the λ_g Adam; epoch 1 steps {2, 5} with λ_g.
    # Catches: SWMR without its windows (every sample every epoch) and SWMR without its
    # risky-sample regularisation (one Adam with λ_g for the whole window).
    x = torch.tensor([[1.0, -0.5, 0.2], [0.3, 0.8, -1.0], [-0.7, 0.1, 0.5], [0.2, 0.2, 0.9], [-1.0, 0.4, 0.0],
                      [0.6, -0.9, -0.3]])
    y = torch.as_tensor(SW_LABELS)
    lam_r, lam_g, cfg = 2.0, 1e-3, _cfg(epochs=5, batch_size=2)
    model = _linear(1)
    start = _params64(model)
    st = SWMR(SWMR.Settings(w=2, s=2, tau=0.5, lambda_r=lam_r, lambda_g=lam_g, order="h2l"),
              scores=SW_SCORES, labels=SW_LABELS)
    result = fit(model, (x, y), None, cfg, st)
    assert len(result.history) == 2  # windows run dry after two epochs
    assert [h["samples"] for h in result.history] == [4.0, 2.0]

    def hand(plan):
        params, opts = start, {"r": HandAdam(lam_r, cfg.lr), "g": HandAdam(lam_g, cfg.lr)}
        for rows, kind in plan:
            params = opts[kind].step(params, _ce_grads(model, params, x[rows], y[rows]))
        return params

    expected = hand([([0, 3], "r"), ([1, 4], "g"), ([2, 5], "g")])
    assert _close(model, expected)
    assert _far(hand([([1, 4], "g"), ([0, 3], "g"), ([2, 5], "g")]), expected)  # no risky L2
    assert _far(hand([([0, 3], "r"), ([1, 2], "g"), ([4, 5], "g")] * 2), expected)  # no windows
    assert result.extra["window_samples"] == [4, 2, 0]  # the third epoch found every window empty
    assert (result.extra["risky_steps"], result.extra["general_steps"]) == (1, 2)


def test_swmr_epoch_batches_are_the_window_split_by_risk():
    # Catches: risky samples taken from outside the window, or the window's risky samples
    # stepped with the others.
    rng = np.random.default_rng(5)
    n, bs, w, s = 90, 8, 12, 4
    scores, labels = rng.random(n), rng.integers(0, 3, n)
    st = SWMR(SWMR.Settings(w=w, s=s, tau=0.7), scores=scores, labels=labels)
    gen = torch.Generator().manual_seed(0)
    st.bind(_linear(), torch.randn(n, D), torch.as_tensor(labels), _cfg(batch_size=bs), gen)
    risky = scores >= 0.7
    for epoch in range(3):
        window = set(epoch_window(st.ranking, epoch, w, s).tolist())
        batches = st.epoch_batches(epoch, n)
        got_r = set(torch.cat([b for b, k in zip(batches, st._kinds) if k]).tolist())
        got_g = set(torch.cat([b for b, k in zip(batches, st._kinds) if not k]).tolist())
        assert got_r == {i for i in window if risky[i]} and got_g == {i for i in window if not risky[i]}
        assert sum(b.numel() for b in batches) == len(window)


# ------------------------------------------------------------------ Base: weight decay
def test_base_step_is_adam_with_weight_decay_lambda_g():
    # Three full-batch steps equal Adam with L2 λ_g written out by hand. Catches: the decay not
    # applied (λ_g = 0 differs by > 1e-4), or applied as decoupled (AdamW) decay.
    x = torch.tensor([[1.0, -0.5, 0.2], [0.3, 0.8, -1.0], [-0.7, 0.1, 0.5]])
    y = torch.tensor([0, 1, 1])
    lam, cfg = 1.5, _cfg(batch_size=3)
    model = _linear(2)
    start = _params64(model)
    fit(model, (x, y), None, cfg, Base(Base.Settings(lambda_g=lam)))

    def hand(wd):
        params, opt = start, HandAdam(wd, cfg.lr)
        for _ in range(cfg.epochs):
            params = opt.step(params, _ce_grads(model, params, x, y))
        return params

    assert _close(model, hand(lam))
    assert _far(hand(0.0), hand(lam))
    adamw = [p - cfg.lr * lam * p for p in start]  # decoupled decay would shift by lr·λ·θ too
    assert _far(adamw, start)


# ------------------------------------------------------------------ ADV: the min-max game
def _adv_world(theta: float):
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(D, 8), nn.ReLU(), nn.Linear(8, C))
    x, y = torch.randn(16, D), torch.randint(0, C, (16,))
    ref = (torch.randn(10, D), torch.randint(0, C, (10,)))
    st = ADV(ADV.Settings(theta=theta, attack_steps=1, attack_lr=0.01, lambda_g=5e-4), reference=ref)
    st.bind(model, x, y, _cfg(lr=0.01), torch.Generator().manual_seed(7))
    return model, st, x, y, ref


@pytest.mark.parametrize("theta", [0.0, 2.0])
def test_adv_step_trains_the_inference_model_then_the_classifier_against_it(theta):
    # One step, redone by hand: (1) the inference model h takes one Adam step (wd 5e-4) on BCE
    # of members (label 1) vs a batch of reference non-members drawn from the same generator;
    # (2) the classifier's gradient is that of CE + θ·mean log σ(h(softmax, one-hot)) with the
    # updated h. Catches: the adversarial term set to zero (θ = 2 gradient = CE gradient),
    # h never trained, h trained on the wrong labels.
    model, st, x, y, (rx, ry) = _adv_world(theta)
    model0, attack0 = copy.deepcopy(model), copy.deepcopy(st.attack)
    draws = torch.Generator().manual_seed(0)
    draws.set_state(st.generator.get_state())
    st.train_step(model, x, y, torch.arange(16), 0)

    ridx = torch.randint(0, rx.shape[0], (16,), generator=draws)
    with torch.no_grad():
        probs_in, probs_out = torch.softmax(model0(x), 1), torch.softmax(model0(rx[ridx]), 1)
    onehot = torch.cat([F.one_hot(y, C), F.one_hot(ry[ridx], C)]).float()
    a_params = list(attack0.parameters())
    bce = F.binary_cross_entropy_with_logits(attack0(torch.cat([probs_in, probs_out]), onehot),
                                             torch.cat([torch.ones(16), torch.zeros(16)]))
    a_grads = torch.autograd.grad(bce, a_params)
    a_expected = HandAdam(5e-4, 0.01).step([p.detach().double() for p in a_params], [g.double() for g in a_grads])
    assert _close(st.attack, a_expected, atol=1e-6)
    assert _far([p.detach().double() for p in a_params], a_expected, gap=1e-3)  # h did move

    m_params = list(model0.parameters())
    logits = model0(x)
    gain = F.logsigmoid(st.attack(torch.softmax(logits, 1), F.one_hot(y, C).float())).mean()
    grads = torch.autograd.grad(F.cross_entropy(logits, y) + theta * gain, m_params)
    ce_grads = torch.autograd.grad(F.cross_entropy(model0(x), y), m_params)
    for p, g in zip(model.parameters(), grads):
        assert torch.allclose(p.grad, g, atol=1e-6)
    differs = _far([g.double() for g in grads], [g.double() for g in ce_grads], gap=1e-5)
    assert differs == (theta > 0)  # θ > 0 changes the classifier's update, θ = 0 leaves plain CE
    expected = HandAdam(5e-4, 0.01).step([p.detach().double() for p in m_params], [g.double() for g in grads])
    assert _close(model, expected, atol=1e-6)


def test_adv_theta_changes_the_classifier_update():
    # The same world and batch under θ = 0 and θ = 4: after three steps the weights differ.
    # Catches: θ ignored / the adversarial term zeroed.
    out = []
    for theta in (0.0, 4.0):
        model, st, x, y, _ = _adv_world(theta)
        for k in range(3):
            st.train_step(model, x, y, torch.arange(16), k)
        out.append(_params64(model))
    assert _far(out[0], out[1], gap=1e-4)


# ------------------------------------------------------------------ PPB: the gradient of its loss
def test_ppb_step_gradient_is_that_of_ce_plus_lambda_kl_of_sorted_halves():
    # Catches: KL dropped or λ ignored, halves paired wrongly, posteriors not sorted, KL reversed.
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(D, 8), nn.ReLU(), nn.Linear(8, 4))
    x, y = torch.randn(10, D), torch.randint(0, 4, (10,))
    st = PPB(PPB.Settings(lam=3.0))
    st.bind(model, x, y, _cfg(), torch.Generator().manual_seed(0))
    model0 = copy.deepcopy(model)
    st.train_step(model, x, y, torch.arange(10), 0)
    z = model0(x)
    p = torch.softmax(z, 1).sort(1, descending=True).values
    kl = (p[:5] * (p[:5].log() - p[5:].log())).sum(1).mean()
    grads = torch.autograd.grad(F.cross_entropy(z, y) + 3.0 * kl, list(model0.parameters()))
    ce_only = torch.autograd.grad(F.cross_entropy(model0(x), y), list(model0.parameters()))
    for q, g, c in zip(model.parameters(), grads, ce_only):
        assert torch.allclose(q.grad, g, atol=1e-6)
    assert _far([g.double() for g in grads], [c.double() for c in ce_only], gap=1e-5)


# ------------------------------------------------------------------ RelaxLoss: official flattening
def _np_flatten_loss(z: np.ndarray, y: np.ndarray, upper: float = 1.0) -> float:
    """Chen et al.'s official flattening loss in numpy: mean((1 − correct)·CE_soft − CE)."""
    zs = z - z.max(1, keepdims=True)
    logp = zs - np.log(np.exp(zs).sum(1, keepdims=True))
    p = np.exp(logp)
    rows = np.arange(len(y))
    py = np.clip(p[rows, y], 0, upper)
    soft = np.repeat(((1 - py) / (z.shape[1] - 1))[:, None], z.shape[1], axis=1)
    soft[rows, y] = py
    correct = (z.argmax(1) == y).astype(float)
    return float(np.mean((1 - correct) * -(soft * logp).sum(1) + logp[rows, y]))


@pytest.mark.parametrize("upper", [1.0, 0.5])
def test_relaxloss_flatten_loss_value_and_gradient_match_the_official_formula(upper):
    # Row 2 is misclassified, so CE_soft enters; the gradient is checked against central finite
    # differences of the numpy formula (soft targets not detached, as in the official code).
    # Catches: CE added instead of subtracted, CE_soft on correct rows, detached soft targets,
    # the upper clamp ignored.
    z = np.array([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0], [1.0, 0.2, -0.3]])
    y = np.array([0, 1, 2])
    logits = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    loss = relaxloss_flatten_loss(logits, torch.as_tensor(y), upper)
    assert loss.item() == pytest.approx(_np_flatten_loss(z, y, upper), rel=1e-6)
    loss.backward()
    h, numeric = 1e-6, np.zeros_like(z)
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            e = np.zeros_like(z)
            e[i, j] = h
            numeric[i, j] = (_np_flatten_loss(z + e, y, upper) - _np_flatten_loss(z - e, y, upper)) / (2 * h)
    assert np.allclose(logits.grad.numpy(), numeric, atol=1e-6)


def _old_flatten(logits, y):
    """The earlier form: soft-target CE against detached targets whose true class is p_y."""
    log_p = torch.log_softmax(logits.float(), 1)
    p = log_p.exp().detach()
    py = p.gather(1, y.view(-1, 1))
    onehot = F.one_hot(y, p.shape[1]).float()
    soft = onehot * py + (1 - onehot) * (1 - py) / (p.shape[1] - 1)
    return -(soft * log_p).sum(1).mean()


def test_relaxloss_flattening_lowers_members_true_class_confidence_on_an_overfit_model():
    # An MLP overfit to 64 members (CE ≈ 0.01 ≪ α = 1, every member correct, mean p_y ≈ 0.99).
    # (a) Logits: one gradient step of the official flattening lowers the members' mean p_y; the
    # earlier form's true-class logit gradient is zero, so p_y does not fall (it rises a little).
    # (b) The defense: ten odd-epoch (flattening) steps of RelaxLoss.train_step, Adam lr 1e-2,
    # lower mean p_y by > 0.1 (measured 0.23) and by more than twice the earlier form (which
    # moves p_y by ~0.07 only through the shared weights under Adam).
    # Catches: a flattening that never lowers member confidence (the bug this issue fixed).
    torch.manual_seed(0)
    x, y = torch.randn(64, 12), torch.randint(0, 4, (64,))
    model = nn.Sequential(nn.Linear(12, 64), nn.ReLU(), nn.Linear(64, 4))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(80):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    assert F.cross_entropy(model(x), y).item() < 0.05 and bool((model(x).argmax(1) == y).all())

    def confidence(logits):
        return torch.softmax(logits, 1).gather(1, y.view(-1, 1)).mean().item()

    z = model(x).detach()
    stepped = {}
    for form, fn in (("official", relaxloss_flatten_loss), ("old", _old_flatten)):
        zz = z.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(fn(zz, y), zz)
        stepped[form] = confidence(z - 32.0 * g)
    assert stepped["official"] < confidence(z) - 5e-5
    assert stepped["old"] >= confidence(z) - 1e-7

    before, after = confidence(model(x).detach()), {}
    for form in ("official", "old"):
        m = copy.deepcopy(model)
        st = RelaxLoss(RelaxLoss.Settings(alpha=1.0))
        if form == "old":
            st.loss = lambda model, logits, y, idx, epoch: _old_flatten(logits, y)
        st.bind(m, x, y, _cfg(lr=1e-2), torch.Generator().manual_seed(0))
        for _ in range(10):
            st.train_step(m, x, y, torch.arange(64), 1)
        after[form] = confidence(m(x).detach())
    assert before - after["official"] > 0.1
    assert before - after["official"] > 2 * (before - after["old"])


# ------------------------------------------------------------------ glue the mutation run found unchecked (issue 17)


def test_scores_and_labels_flattens_converts_and_says_what_is_missing():
    from wemem.ml.defenses.base import scores_and_labels

    s, lab = scores_and_labels("rmr", np.array([[1, 2, 3], [4, 5, 6]]), [[0, 1, 0], [1, 1, 0]])
    assert s.dtype == np.float64 and s.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert lab.tolist() == [0, 1, 0, 1, 1, 0]
    head = "rmr needs the memorisation scores and labels of the model's training set "
    for scores, labels, got in ((None, [0], "scores=None, labels=given"), ([0.5], None, "scores=given, labels=None"),
                                (None, None, "scores=None, labels=None")):
        with pytest.raises(ValueError) as info:
            scores_and_labels("rmr", scores, labels)
        assert str(info.value) == head + f"(got {got})"
    with pytest.raises(ValueError) as info:
        scores_and_labels("swmr", [0.1, 0.2, 0.3], [0, 1])
    assert str(info.value) == "swmr: 3 scores for 2 labels; both must align with the training set"
    with pytest.raises(ValueError) as info:
        scores_and_labels("swmr", [0.1, float("nan")], [0, 1])
    assert str(info.value) == "swmr: scores contain NaN; every training sample needs a memorisation score"


def test_resolve_settings_fills_only_the_defaults_the_defense_takes():
    from wemem.ml.defenses.schedule import resolve_settings

    defaults = {"w": 5, "s": 2, "tau": 0.1, "theta": 9.0}
    swmr = resolve_settings("swmr", {"defense": "swmr", "w": 3}, defaults)
    assert (swmr.w, swmr.s, swmr.tau) == (3, 2, 0.1)  # the variant's own w wins; s and τ from the defaults
    rmr = resolve_settings("rmr", {"defense": "rmr", "lambda_r": 0.25}, defaults)
    assert (rmr.tau, rmr.lambda_r) == (0.1, 0.25) and not hasattr(rmr, "w")  # w, s are not rmr's
    adv = resolve_settings("adv", {"defense": "adv", "attack_steps": 2}, defaults)
    assert (adv.theta, adv.attack_steps) == (9.0, 2)  # any setting the defense takes comes from the defaults


def test_adv_measurements_are_per_step_means():
    model, st, x, y, _ = _adv_world(2.0)
    fresh = ADV(ADV.Settings(), reference=(x[:2], y[:2]))
    assert fresh.measurements() == {}  # never bound: nothing measured
    assert st.measurements() == {"attack_loss_mean": 0.0, "member_log_h_mean": 0.0}  # bound, no step yet
    st.train_step(model, x, y, torch.arange(16), 0)
    one = st.measurements()
    assert one == {"attack_loss_mean": float(st._attack_loss), "member_log_h_mean": float(st._gain)}
    assert one["attack_loss_mean"] > 0 and one["member_log_h_mean"] < 0  # a BCE and a mean log-sigmoid
    st._attack_loss.fill_(3.0)
    st._gain.fill_(-1.0)
    st._steps = 2
    assert st.measurements() == {"attack_loss_mean": 1.5, "member_log_h_mean": -0.5}


def test_adv_reference_needs_samples_and_inference_model_is_nasrs_mlp():
    ref_x, ref_y = torch.randn(1, D), torch.zeros(1, dtype=torch.long)
    ADV(ADV.Settings(), reference=(ref_x, ref_y))  # one reference sample is enough
    msg = r"^adv needs reference non-members \(the dev set tensors\) to train its inference model$"
    for ref in (None, (torch.zeros(0, D), torch.zeros(3, dtype=torch.long))):
        with pytest.raises(ValueError, match=msg):
            ADV(ADV.Settings(), reference=ref)
    model, st, *_ = _adv_world(1.0)
    layers = list(st.attack.net)
    assert [type(m) for m in layers] == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    assert [(m.in_features, m.out_features) for m in layers[::2]] == [(2 * C, 128), (128, 64), (64, 1)]


def test_adv_measurements_average_over_steps_and_one_class_batches_work():
    # the same world twice: two steps in a row, and the same two steps measured one at a time
    model, st, x, y, _ = _adv_world(2.0)
    st.train_step(model, x, y, torch.arange(16), 0)
    st.train_step(model, x, y, torch.arange(16), 0)
    both = st.measurements()
    model, st, x, y, _ = _adv_world(2.0)
    singles = []
    for _ in range(2):
        st.train_step(model, x, y, torch.arange(16), 0)
        singles.append(st.measurements())
        st._attack_loss.zero_(), st._gain.zero_()
        st._steps = 0
    for key in ("attack_loss_mean", "member_log_h_mean"):
        assert both[key] == pytest.approx((singles[0][key] + singles[1][key]) / 2, rel=1e-5)
    # a batch and a reference of one class only: the one-hot vectors still have C entries
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(D, 8), nn.ReLU(), nn.Linear(8, C))
    x0, y0 = torch.randn(6, D), torch.zeros(6, dtype=torch.long)
    st = ADV(ADV.Settings(), reference=(torch.randn(4, D), torch.zeros(4, dtype=torch.long)))
    st.bind(model, x0, y0, _cfg(), torch.Generator().manual_seed(1))
    assert torch.isfinite(st.train_step(model, x0, y0, torch.arange(6), 0))


def test_relaxloss_targets_and_flattening_with_an_upper_clamp_by_hand():
    from wemem.ml.defenses import relaxloss_flatten_targets

    probs = torch.tensor([[0.8, 0.1, 0.1], [0.2, 0.3, 0.5]])
    got = relaxloss_flatten_targets(probs, torch.tensor([0, 2]), 0.6)
    # row 0: p_y = 0.8 clamped to 0.6, the others (1 − 0.6)/2; row 1: p_y = 0.5 stays
    assert torch.allclose(got, torch.tensor([[0.6, 0.2, 0.2], [0.25, 0.25, 0.5]]))
    # flattening with upper 0.3: sample 0 is misclassified with p_y = 0.4 > 0.3, so the clamp acts:
    # soft targets (0.3, 0.35, 0.35); loss = mean((1 − correct)·CE_soft − CE) over the two samples
    p = np.array([[0.4, 0.45, 0.15], [0.7, 0.2, 0.1]])
    logits = torch.tensor(np.log(p), dtype=torch.float32)
    y = torch.tensor([0, 0])
    soft0 = np.array([0.3, 0.35, 0.35])
    want = ((-(soft0 * np.log(p[0])).sum() + np.log(0.4)) + np.log(0.7)) / 2
    assert float(relaxloss_flatten_loss(logits, y, 0.3)) == pytest.approx(want, rel=1e-5)
    st = RelaxLoss(RelaxLoss.Settings(alpha=2.0, upper=0.3))  # odd epoch, batch CE ≈ 0.64 < α: flattening
    assert float(st.loss(None, logits, y, None, 1)) == pytest.approx(want, rel=1e-5)


def test_relaxloss_epoch_parity_and_the_alpha_boundary():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.3, 0.2], [1.0, -1.0, 0.0]])
    y = torch.tensor([0, 2, 1])
    ce = F.cross_entropy(logits, y)
    flat = relaxloss_flatten_loss(logits, y, 1.0)
    for epoch, want in ((0, (ce - 0.5).abs()), (2, (ce - 0.5).abs()), (4, (ce - 0.5).abs()), (1, ce), (3, ce)):
        got = RelaxLoss(RelaxLoss.Settings(alpha=0.5)).loss(None, logits, y, None, epoch)
        assert float(got) == pytest.approx(float(want)), epoch
    at = RelaxLoss(RelaxLoss.Settings(alpha=float(ce))).loss(None, logits, y, None, 1)  # CE = α: flattening
    assert float(at) == pytest.approx(float(flat))
    assert abs(float(flat) - float(ce)) > 0.1


def _bound(cls, settings, scores, labels, seed=1):
    torch.manual_seed(0)
    model = nn.Linear(D, C)
    st = cls(settings, scores=np.asarray(scores, dtype=float), labels=np.asarray(labels))
    x = torch.randn(len(labels), D)
    st.bind(model, x, torch.as_tensor(labels), _cfg(batch_size=2), torch.Generator().manual_seed(seed))
    return st


def test_score_based_defenses_reject_another_training_set_by_name():
    from wemem.ml.defenses import RSW

    rmr = RMR(RMR.Settings(tau=0.5), scores=np.array([0.1, 0.9, 0.2]), labels=np.array([0, 1, 0]))
    with pytest.raises(ValueError) as info:
        rmr.bind(nn.Linear(D, C), torch.randn(4, D), torch.zeros(4, dtype=torch.long), _cfg(),
                 torch.Generator().manual_seed(0))
    assert str(info.value) == "rmr: 3 scores for a training set of 4; pass the scores of this model's own training set"
    rsw = RSW(RSW.Settings(w=2, s=1), scores=np.array([0.1, 0.9, 0.2]), labels=np.array([0, 1, 0]))
    with pytest.raises(ValueError) as info:
        rsw.bind(nn.Linear(D, C), torch.randn(4, D), torch.zeros(4, dtype=torch.long), _cfg(),
                 torch.Generator().manual_seed(0))
    assert str(info.value) == ("rsw: 3 scores/labels for a training set of 4; "
                               "pass the scores of this model's own training set")
    with pytest.raises(ValueError) as info:
        rsw.bind(nn.Linear(D, C), torch.randn(3, D), torch.tensor([0, 0, 0]), _cfg(), torch.Generator().manual_seed(0))
    assert str(info.value) == "rsw: the labels given with the scores differ from the training labels"


def test_risky_groups_hand_out_each_batch_optimizer_once_and_count_steps():
    st = _bound(RMR, RMR.Settings(tau=0.5), [0.9, 0.1, 0.8, 0.2, 0.3], [0, 1, 0, 1, 1])
    with pytest.raises(RuntimeError, match=r"^rmr: a batch was trained that epoch_batches did not hand out$"):
        st.batch_optimizer()  # before the first epoch's batches
    batches = st.epoch_batches(0, 5)  # 2 risky samples: one batch of 2; 3 others: batches of 2 and 1
    assert [b.numel() for b in batches] == [2, 2, 1]
    got = [st.batch_optimizer() for _ in batches]
    assert got == [st.risky_optimizer, st.optimizer, st.optimizer]
    with pytest.raises(RuntimeError, match="did not hand out"):
        st.batch_optimizer()
    m = st.measurements()
    assert (m["n_risky"], m["risky_fraction"], m["threshold"], m["risky_steps"], m["general_steps"]) == (2, 0.4, 0.5, 1, 2)
    unbound = RMR(RMR.Settings(tau=0.5), scores=np.array([0.7]), labels=np.array([1])).measurements()
    assert (unbound["risky_steps"], unbound["general_steps"], unbound["risky_fraction"]) == (0, 0, 1.0)


def test_windows_count_active_epochs_cap_and_shuffle_with_the_run_generator():
    from wemem.ml.defenses import RSW

    st = _bound(RSW, RSW.Settings(w=2, s=3), [0.1, 0.2, 0.3, 0.4, 0.5], [0, 0, 0, 0, 1])
    assert st.active_epochs() == 2 and st.epochs_cap(10) == 2 and st.epochs_cap(1) == 1  # class 0: 4 samples, s = 3
    one = _bound(RSW, RSW.Settings(w=2, s=5), [0.1, 0.2], [0, 1])
    assert one.active_epochs() == 1 and one.epochs_cap(10) == 1
    empty = RSW(RSW.Settings(w=2, s=1), scores=np.array([]), labels=np.array([], dtype=int))
    assert empty.active_epochs() == 0 and empty.epochs_cap(5) == 1
    assert empty.measurements()["active_epochs"] == 0 and empty.measurements()["window_samples"] == []
    # the shuffle comes from the run's generator, not torch's global one
    draws = []
    for global_seed in (123, 456):
        st = _bound(RSW, RSW.Settings(w=3, s=1), [0.1, 0.2, 0.3, 0.4, 0.5], [0, 0, 0, 1, 1], seed=9)
        torch.manual_seed(global_seed)
        draws.append(st.epoch_indices(0, 5))
    assert torch.equal(draws[0], draws[1])
    assert sorted(draws[0].tolist()) == [0, 1, 2, 3, 4]
    assert st.measurements()["window_samples"] == [5]


# ------------------------------------------------------------------ prune_and_finetune's record
def _fc():
    from wemem.ml.models import build_model

    torch.manual_seed(0)
    return build_model("column_fc", (D,), C)


def _schedule_world(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D, generator=g)
    y = (x[:, 0] > 0).long()
    return (x, y), (x[:10] + 0.1, y[:10])


def test_prune_and_finetune_hands_each_iteration_its_seed_masks_cap_and_reference(monkeypatch):
    # a spy around fit: iteration k trains with seed cfg.seed + k, the description names the
    # defense and k, the epochs are the strategy's cap, the strategy keeps the masks of that
    # iteration, and adv trains against the given reference (not the dev set)
    from wemem.ml.defenses import schedule

    train, dev = _schedule_world()
    seen = []

    def spy(m, tr, dv, cfg, strategy, test=None):
        seen.append({"seed": cfg.seed, "desc": cfg.desc, "epochs": cfg.epochs, "masks": strategy.masks,
                     "strategy": strategy, "zeros": {k: int((v == 0).sum()) for k, v in strategy.masks.items()}})
        return fit(m, tr, dv, cfg, strategy, test)

    monkeypatch.setattr(schedule, "fit", spy)
    scores = np.linspace(0.0, 1.0, train[0].shape[0])
    cfg = _cfg(epochs=7, batch_size=8, seed=11, desc="ft")
    torch.manual_seed(0)
    model, rec = schedule.prune_and_finetune(
        _fc(), method="l1_unstructured", final_sparsity=0.5,
        n_iter=3, defense="rsw", settings={"w": 4, "s": 4}, train=train, dev=dev, scores=scores, cfg=cfg)
    assert [s["seed"] for s in seen] == [11, 12, 13]
    assert [s["desc"] for s in seen] == ["ft rsw it0", "ft rsw it1", "ft rsw it2"]
    largest = int(np.bincount(train[1].numpy()).max())
    assert [s["epochs"] for s in seen] == [-(-largest // 4)] * 3 and -(-largest // 4) < 7
    # the masks each strategy kept: iteration 0 prunes nothing, then the schedule's zeros
    total = [sum(s["zeros"].values()) for s in seen]
    assert total[0] == 0 and 0 < total[1] < total[2]
    assert [r["iteration"] for r in rec["iterations"]] == [0, 1, 2]

    # adv's reference: the one passed, dev only when none is
    ref = (torch.randn(6, D), torch.tensor([0, 1, 0, 1, 0, 1]))
    for given, want in ((ref, ref), (None, dev)):
        seen.clear()
        schedule.prune_and_finetune(
            _fc(), method="l1_unstructured",
            final_sparsity=0.3, n_iter=1, defense="adv", settings={"theta": 1.0}, train=train, dev=dev,
            reference=given, cfg=_cfg(epochs=1, batch_size=8))
        got = seen[0]["strategy"].reference
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_prune_and_finetune_record_has_exactly_its_keys_and_values():
    import time

    from wemem.ml.defenses import prune_and_finetune
    from wemem.ml.pruning import global_sparsity, layer_sparsity

    train, dev = _schedule_world()
    torch.manual_seed(0)
    model = _fc()
    start = time.perf_counter()
    model, rec = prune_and_finetune(model, method="l1_unstructured", final_sparsity=0.5, n_iter=2, one_shot=True,
                                    train=train, dev=dev, cfg=_cfg(epochs=1, batch_size=8))
    wall = time.perf_counter() - start
    assert set(rec) == {"defense", "settings", "method", "final_sparsity", "n_iter", "one_shot", "iterations",
                        "summaries", "finetune_seconds", "final_layer_sparsity", "final_global_sparsity"}
    assert rec["defense"] == "base"  # the default defense, recorded without its name among the settings
    assert rec["settings"] == {"lambda_g": 5e-4} and rec["method"] == "l1_unstructured"
    assert (rec["final_sparsity"], rec["n_iter"], rec["one_shot"]) == (0.5, 2, True)
    assert type(rec["final_sparsity"]) is float and type(rec["n_iter"]) is int and type(rec["one_shot"]) is bool
    assert len(rec["iterations"]) == 1  # one shot: a single step straight to 50%
    assert rec["summaries"] == [rec["iterations"][0]["summary"]]
    assert 0 < rec["finetune_seconds"] <= wall
    assert rec["final_layer_sparsity"] == layer_sparsity(model)
    assert rec["final_global_sparsity"] == global_sparsity(model) == pytest.approx(0.5, abs=0.02)

    # settings are recorded without the defense's name; rmr's τ selection comes from the summary,
    # and a one-iteration schedule has just one summary to read it from
    scores = np.linspace(0.0, 1.0, train[0].shape[0])
    _, rmr = prune_and_finetune(_fc(), method="l1_unstructured",
                                final_sparsity=0.3, n_iter=1, defense="rmr", settings={"tau": 0.75, "lambda_r": 0.1},
                                train=train, dev=dev, scores=scores, cfg=_cfg(epochs=1, batch_size=8))
    assert rmr["defense"] == "rmr" and "defense" not in rmr["settings"]
    assert rmr["settings"]["tau"] == 0.75 and rmr["settings"]["lambda_r"] == 0.1
    last = rmr["iterations"][-1]["summary"]
    assert {k: rmr[k] for k in ("risky_fraction", "n_risky", "threshold")} == {
        k: last[k] for k in ("risky_fraction", "n_risky", "threshold")}
    assert rmr["n_risky"] == int((scores >= 0.75).sum())

    # starting masks are kept: positions a mask prunes stay zero although their weights are the
    # largest (l1 from scratch would keep them)
    from wemem.ml.pruning import prunable_modules

    pre = _fc()
    masks = {}
    for name, module in prunable_modules(pre):
        w = module.weight.detach()
        masks[name] = w.abs() < w.abs().flatten().quantile(0.7)  # prune the largest 30%
    _, started = prune_and_finetune(pre, method="l1_unstructured", final_sparsity=0.5, n_iter=1, one_shot=True,
                                    train=train, dev=dev, masks=masks, cfg=_cfg(epochs=1, batch_size=8))
    for name, module in prunable_modules(pre):
        assert (module.weight.detach()[~masks[name]] == 0).all(), name


def test_prune_and_finetune_reads_epsilon_from_a_single_iteration():
    from wemem.ml.defenses import prune_and_finetune

    train, dev = _schedule_world(n=60)
    _, rec = prune_and_finetune(_fc(), method="l1_unstructured",
                                final_sparsity=0.3, n_iter=1, defense="dpsgd", settings={"sigma": 1.0},
                                train=train, dev=dev, cfg=_cfg(epochs=1, batch_size=20))
    summary = rec["iterations"][0]["summary"]
    assert rec["epsilon"] == summary["epsilon"] > 0 and rec["delta"] == summary["delta"]


def test_defaults_of_base_and_of_the_fine_tuning_config():
    from wemem.ml.defenses import LAMBDA_G, finetune_config

    assert Base().lambda_g == LAMBDA_G == 5e-4 and Base().settings() == {"lambda_g": 5e-4}
    cfg = finetune_config()
    assert (cfg.epochs, cfg.patience, cfg.lr, cfg.weight_decay, cfg.desc) == (21, 6, 1e-3, LAMBDA_G, "finetune")
    assert finetune_config(lr=0.5, epochs=2).lr == 0.5


def test_score_based_defenses_name_themselves_when_scores_are_missing():
    for cls, settings in ((RMR, RMR.Settings(tau=0.5)), (SWMR, SWMR.Settings(w=2, s=1, tau=0.5))):
        with pytest.raises(ValueError) as info:
            cls(settings, scores=None, labels=np.array([0, 1]))
        assert str(info.value) == (f"{cls.name} needs the memorisation scores and labels of the model's training "
                                   f"set (got scores=None, labels=given)")
