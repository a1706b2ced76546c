"""The eight defenses (SPEC §7): masks hold, windows, risky split, hand-computed losses, DP ε."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wemem.ml.defenses import (
    DEFENSES,
    RMR,
    RSW,
    DefenseState,
    build_strategy,
    defense_settings,
    finetune_config,
    ppb_loss,
    prune_and_finetune,
    relaxloss_flatten_targets,
    risky_mask,
)
from wemem.ml.models import build_model, prunable_modules
from wemem.ml.pruning import prune_step
from wemem.ml.train import TrainConfig, fit, to_tensors

TOL = 0.005
N_TRAIN, D, C = 180, 12, 3

SETTINGS = {
    "base": {},
    "rsw": {"w": 20, "s": 10, "order": "l2h"},
    "rmr": {"tau": 0.6, "lambda_r": 0.1},
    "swmr": {"w": 20, "s": 10, "tau": 0.3, "tau_mode": "fraction"},
    "ppb": {"lam": 4.0},
    "adv": {"theta": 2.0},
    "dpsgd": {"sigma": 1.0, "clip": 1.0},
    "relaxloss": {"alpha": 1.0},
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(1)
    n = N_TRAIN + 120
    centers = rng.normal(scale=2.0, size=(C, D))
    y = rng.integers(0, C, n)
    x = (centers[y] + rng.normal(size=(n, D))).astype(np.float32)
    xt, yt = to_tensors(x, y, torch.device("cpu"))
    train = (xt[:N_TRAIN], yt[:N_TRAIN])
    dev = (xt[N_TRAIN : N_TRAIN + 60], yt[N_TRAIN : N_TRAIN + 60])
    test = (xt[N_TRAIN + 60 :], yt[N_TRAIN + 60 :])
    scores = rng.random(N_TRAIN)
    return train, dev, test, scores


def _model(seed=0):
    torch.manual_seed(seed)
    return build_model("column_fc", (D,), C)


def _cfg(**kw):
    base = dict(epochs=2, patience=None, batch_size=64, progress=False)
    base.update(kw)
    return TrainConfig(**base)


def _strategy(name, data, masks=None, settings=None, state=None):
    train, dev, _, scores = data
    return build_strategy(
        name,
        SETTINGS[name] if settings is None else settings,
        masks=masks,
        scores=scores,
        labels=train[1].numpy(),
        reference=dev,
        state=state,
    )


# ------------------------------------------------------------------ masks hold under every defense
def test_registry_names():
    assert set(DEFENSES) == {"base", "rsw", "rmr", "swmr", "ppb", "adv", "dpsgd", "relaxloss"}


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_pruned_weights_stay_zero_during_finetuning(name, data):
    train, dev, test, _ = data
    model = _model()
    masks = prune_step(model, None, "l1_unstructured", 0.5)
    strategy = _strategy(name, data, masks=masks)
    result = fit(model, train, dev, _cfg(), strategy, test)
    assert result.history and all(math.isfinite(r["loss"]) for r in result.history)
    for layer, module in prunable_modules(model):
        w = module.weight.detach()
        assert (w[~masks[layer]] == 0).all(), layer
        assert (w[masks[layer]] != 0).all(), layer  # and nothing else was zeroed
    summary = result.extra
    assert summary["defense"] == name
    assert defense_settings(strategy)["defense"] == name
    # DP-SGD's per-sample hooks (and any other strategy's) are gone once fit has finished
    assert not any(m._forward_hooks or m._backward_hooks for m in model.modules())
    assert not hasattr(model, "autograd_grad_sample_hooks")


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_prune_and_finetune_reaches_final_sparsity(name, data):
    train, dev, test, scores = data
    model, rec = prune_and_finetune(
        _model(),
        method="l1_unstructured",
        final_sparsity=0.6,
        n_iter=3,
        defense=name,
        settings=SETTINGS[name],
        train=train,
        dev=dev,
        test=test,
        scores=scores,
        cfg=finetune_config(epochs=2, batch_size=64, progress=False),
    )
    its = rec["iterations"]
    assert [r["iteration"] for r in its] == [0, 1, 2]
    for r in its:
        assert all(abs(v - r["target_sparsity"]) <= TOL for v in r["layer_sparsity"].values())
        assert all("dev_acc" in h and "test_acc" in h for h in r["history"])
    assert all(abs(v - 0.6) <= TOL for v in rec["final_layer_sparsity"].values())
    assert rec["finetune_seconds"] > 0 and len(rec["summaries"]) == 3
    assert rec["defense"] == name


def test_prune_and_finetune_structured_with_swmr(data):
    train, dev, test, scores = data
    model, rec = prune_and_finetune(
        _model(),
        method="l2_structured",
        final_sparsity=0.5,
        n_iter=2,
        defense="swmr",
        settings=SETTINGS["swmr"],
        train=train,
        dev=dev,
        test=test,
        scores=scores,
        cfg=finetune_config(epochs=2, batch_size=64, progress=False),
    )
    for _, module in prunable_modules(model):
        w = module.weight.detach()
        zero_rows = (w == 0).all(dim=1)
        assert not ((w == 0).any(dim=1) & ~zero_rows).any()
        assert zero_rows.float().mean().item() == pytest.approx(0.5, abs=TOL)


# ------------------------------------------------------------------ RSW
def _bound(strategy, data, model=None):
    train = data[0]
    model = model or _model()
    gen = torch.Generator().manual_seed(0)
    strategy.bind(model, train[0], train[1], _cfg(), gen)
    return strategy


@pytest.mark.parametrize("order", ["h2l", "l2h"])
def test_rsw_each_class_gets_its_own_window(order):
    # class 0 has 3 samples, classes 1 and 2 have 10: a small class must not shorten the others
    labels = np.array([0] * 3 + [1] * 10 + [2] * 10)
    rng = np.random.default_rng(3)
    scores = rng.permutation(labels.size) / labels.size
    x = torch.randn(labels.size, D)
    y = torch.as_tensor(labels)
    w, s = 4, 2
    strategy = RSW(RSW.Settings(w=w, s=s, order=order), scores=scores, labels=labels)
    strategy.bind(_model(), x, y, _cfg(), torch.Generator().manual_seed(0))
    for epoch in range(6):
        got = set(strategy.epoch_indices(epoch, labels.size).tolist())
        expected = set()
        for c in (0, 1, 2):
            pos = np.flatnonzero(labels == c)
            ranked = pos[np.argsort(-scores[pos] if order == "h2l" else scores[pos], kind="stable")]
            expected |= set(ranked[s * epoch : s * epoch + w].tolist())
        assert got == expected, epoch
        if epoch == 1:  # class 0 only has 1 sample left, the others a full window
            per_class = np.bincount(labels[list(got)], minlength=3)
            assert per_class.tolist() == [1, 4, 4]
    assert strategy.active_epochs() == 5  # ceil(10 / 2)
    assert strategy.epoch_indices(5, labels.size).numel() == 0


def test_rsw_h2l_starts_with_highest_scores(data):
    train, _, _, scores = data
    st = _bound(RSW(RSW.Settings(w=3, s=3, order="h2l"), scores=scores, labels=train[1].numpy()), data)
    first = st.epoch_indices(0, N_TRAIN).numpy()
    labels = train[1].numpy()
    for c in range(C):
        in_class = np.flatnonzero(labels == c)
        top = in_class[np.argsort(-scores[in_class])[:3]]
        assert set(first[labels[first] == c]) == set(top)


def test_rsw_training_stops_when_windows_run_out(data):
    train, dev, test, scores = data
    _, rec = prune_and_finetune(
        _model(),
        method="l1_unstructured",
        final_sparsity=0.3,
        n_iter=2,
        defense="rsw",
        settings={"w": 40, "s": 40},
        train=train,
        dev=dev,
        test=test,
        scores=scores,
        cfg=finetune_config(epochs=21, patience=None, batch_size=64, progress=False),
    )
    largest = np.bincount(train[1].numpy()).max()
    for r in rec["iterations"]:
        assert len(r["history"]) == math.ceil(largest / 40)
        assert all(h["samples"] > 0 for h in r["history"])


def test_rsw_rejects_misaligned_scores(data):
    train, _, _, scores = data
    with pytest.raises(ValueError, match="training set"):
        _bound(RSW(RSW.Settings(w=3, s=1), scores=scores[:-1], labels=train[1].numpy()[:-1]), data)


# ------------------------------------------------------------------ RMR
def test_risky_mask_value_and_fraction():
    scores = np.array([0.1, 0.6, 0.59, 0.9, 0.6, 0.2])
    assert risky_mask(scores, 0.6, "value").tolist() == [False, True, False, True, True, False]
    # top half = 3 samples: 0.9 then the tied 0.6s, the earlier position first
    assert risky_mask(scores, 0.5, "fraction").tolist() == [False, True, False, True, True, False]
    # top third = 2 samples: 0.9 and the first 0.6 (tie broken by position)
    assert risky_mask(scores, 1 / 3, "fraction").tolist() == [False, True, False, True, False, False]
    assert not risky_mask(scores, 0.0, "fraction").any()
    assert risky_mask(scores, 0.0, "value").all()


@pytest.mark.parametrize("mode,tau", [("value", 0.7), ("fraction", 0.25)])
def test_rmr_splits_at_tau_and_records_n_risky(mode, tau, data):
    train, dev, _, scores = data
    model = _model()
    st = RMR(RMR.Settings(tau=tau, tau_mode=mode, lambda_r=0.1, lambda_g=5e-4), scores=scores, labels=train[1].numpy())
    expected = scores >= tau if mode == "value" else scores >= np.sort(scores)[::-1][round(tau * N_TRAIN) - 1]
    assert np.array_equal(st.risky, expected)
    result = fit(model, train, dev, _cfg(epochs=1), st)
    assert result.extra["n_risky"] == int(expected.sum())
    assert result.extra["tau_mode"] == mode
    if mode == "fraction":
        assert result.extra["n_risky"] == round(tau * N_TRAIN)
        assert result.extra["threshold"] == pytest.approx(scores[expected].min())
    else:
        assert result.extra["threshold"] == tau
    # two optimizers (the reference's train_defend_ml2): risky batches with λ_r, the rest with λ_g;
    # the loss is the plain CE (catches a decay swapped or moved back into the loss)
    assert all(g["weight_decay"] == 0.1 for g in st.risky_optimizer.param_groups)
    assert all(g["weight_decay"] == 5e-4 for g in st.optimizer.param_groups)
    n_batches = math.ceil(int(expected.sum()) / 64) + math.ceil(int((~expected).sum()) / 64)
    assert result.extra["risky_steps"] + result.extra["general_steps"] == n_batches
    assert result.extra["risky_fraction"] == pytest.approx(expected.mean())


# ------------------------------------------------------------------ PPB, RelaxLoss: hand-computed
def _np_softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_ppb_loss_matches_hand_computation():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0], [0.0, 0.0, 3.0], [1.0, 1.0, 1.0], [4.0, 0.0, 0.0]])
    y = torch.tensor([0, 1, 2, 0, 0])
    z = logits.numpy().astype(np.float64)
    p = -np.sort(-_np_softmax(z), axis=1)
    p1, p2 = p[:2], p[2:4]  # odd batch: the last row only enters the CE
    kl = np.mean(np.sum(p1 * np.log(p1 / p2), axis=1))
    ce = np.mean(-np.log(_np_softmax(z)[np.arange(5), y.numpy()]))
    assert ppb_loss(logits, y, 4.0).item() == pytest.approx(ce + 4.0 * kl, rel=1e-5)
    assert ppb_loss(logits, y, 0.0).item() == pytest.approx(ce, rel=1e-6)
    one = ppb_loss(logits[:1], y[:1], 4.0)
    assert one.item() == pytest.approx(F.cross_entropy(logits[:1], y[:1]).item())


def test_relaxloss_flatten_targets_by_hand():
    probs = torch.tensor([[0.7, 0.2, 0.1, 0.0], [0.1, 0.1, 0.4, 0.4]])
    y = torch.tensor([0, 3])
    expected = torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.2, 0.2, 0.2, 0.4]])
    got = relaxloss_flatten_targets(probs, y)
    assert torch.allclose(got, expected, atol=1e-6)
    assert torch.allclose(got.sum(1), torch.ones(2))


def test_relaxloss_loss_by_epoch_parity(data):
    st = _bound(_strategy("relaxloss", data, settings={"alpha": 1.0}), data)
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]], requires_grad=True)
    y = torch.tensor([0, 1])
    z = logits.detach().numpy().astype(np.float64)
    p = _np_softmax(z)
    ce = np.mean(-np.log(p[[0, 1], [0, 1]]))  # ≈ 0.35 < α = 1
    idx = torch.arange(2)
    assert st.loss(None, logits, y, idx, 0).item() == pytest.approx(abs(ce - 1.0), rel=1e-5)
    # odd epoch, CE ≤ α, both rows correctly classified: official flattening = mean(−CE_i)
    loss = st.loss(None, logits, y, idx, 1)
    assert loss.item() == pytest.approx(-ce, rel=1e-5)
    loss.backward()  # gradient ascent on CE: the true-class logit's gradient is +(1 − p_y)/B
    assert logits.grad[0, 0].item() == pytest.approx((1 - p[0, 0]) / 2, rel=1e-5)
    assert logits.grad[1, 1].item() == pytest.approx((1 - p[1, 1]) / 2, rel=1e-5)
    # odd epoch, CE > α: the normal CE
    bad = torch.tensor([[-2.0, 3.0, 0.0]])
    assert st.loss(None, bad, torch.tensor([0]), idx[:1], 1).item() == pytest.approx(
        F.cross_entropy(bad, torch.tensor([0])).item(), rel=1e-6
    )


# DP-SGD's mechanism tests live in tests/ml/test_dpsgd.py


# ------------------------------------------------------------------ settings validation
@pytest.mark.parametrize(
    "name,settings,param",
    [
        ("rsw", {"w": 0, "s": 1}, "w"),
        ("rsw", {"w": 5, "s": 0}, "s"),
        ("rsw", {"w": 5, "s": -2}, "s"),
        ("rsw", {"w": 5, "s": 1, "order": "up"}, "order"),
        ("swmr", {"w": 5, "s": 1, "tau": 0.5, "order": "sideways"}, "order"),
        ("rmr", {"tau": 1.5}, "tau"),
        ("rmr", {"tau": -0.1}, "tau"),
        ("rmr", {"tau": 0.5, "tau_mode": "quantile"}, "tau_mode"),
        ("rmr", {"tau": 0.5, "lambda_r": -1.0}, "lambda_r"),
        ("rmr", {"tau": 0.5, "lambda_g": -1.0}, "lambda_g"),
        ("base", {"lambda_g": -5e-4}, "lambda_g"),
        ("ppb", {"lam": -1}, "lam"),
        ("adv", {"theta": -2}, "theta"),
        ("dpsgd", {"sigma": -1.0}, "sigma"),
        ("dpsgd", {"clip": 0.0}, "clip"),
        ("dpsgd", {"delta": 2.0}, "delta"),
        ("relaxloss", {"alpha": -1.0}, "alpha"),
        ("rsw", {"w": 5, "s": 1, "window": 3}, "window"),  # unknown setting
        ("rsw", {"s": 1}, "w"),  # missing required setting
    ],
)
def test_bad_settings_raise_naming_the_parameter(name, settings, param, data):
    with pytest.raises(ValueError, match=param):
        _strategy(name, data, settings=settings)


def test_unknown_defense_raises(data):
    with pytest.raises(ValueError, match="unknown defense 'mixup'"):
        _strategy("mixup", data, settings={})
    with pytest.raises(ValueError, match="mixup"):
        prune_and_finetune(
            _model(), method="l1_unstructured", final_sparsity=0.5, n_iter=2, defense="mixup",
            train=data[0], dev=data[1], cfg=finetune_config(progress=False),
        )


def test_score_based_defenses_need_scores(data):
    with pytest.raises(ValueError, match="scores"):
        build_strategy("rmr", {"tau": 0.5}, masks=None, scores=None, labels=data[0][1].numpy(), reference=None)
    with pytest.raises(ValueError, match="reference"):
        build_strategy("adv", {}, masks=None, scores=None, labels=data[0][1].numpy(), reference=None)


def test_defense_settings_record(data):
    st = _strategy("swmr", data)
    rec = defense_settings(st)
    assert rec == {
        "defense": "swmr", "order": "h2l", "w": 20, "s": 10, "tau": 0.3,
        "tau_mode": "fraction", "lambda_r": 0.1, "lambda_g": 5e-4,
    }
