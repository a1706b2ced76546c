"""The classifier and calibrated attacks' plumbing against hand answers: training settings and
their scaled milestones, the seeded subsample, the attack MLP's shape, features of any float
dtype, the leave-one-shadow-out views, the mid-rank quantile map and RMIA's population count."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from wemem.ml.attacks.base import AttackContext, AttackData, ModelOutputs
from wemem.ml.attacks.calibrated import calibration_views, member_quantile_map, rmia_scores
from wemem.ml.attacks.classifier import (
    AttackMLP,
    AttackModelSettings,
    fit_attack_model,
    samia_features,
    subsample,
    training_of,
)


# ------------------------------------------------------------------ classifier family
def test_training_of_scales_milestones_with_the_epochs_and_keeps_each_at_least_one():
    base = AttackModelSettings(epochs=100, milestones=[50, 75])
    ctx = AttackContext(training=base)
    assert training_of(ctx) is base and training_of(ctx, 100) is base
    assert training_of(AttackContext()) == AttackModelSettings()  # no settings: the defaults
    ten = training_of(ctx, 10)
    assert (ten.epochs, ten.milestones) == (10, [5, 8])  # 50·0.1 = 5, 75·0.1 = 7.5 → 8
    one = training_of(ctx, 1)
    assert (one.epochs, one.milestones) == (1, [1])  # 0.5 and 0.75 round to 0 and 1: at least 1, once
    assert base.milestones == [50, 75]  # the shared settings are not changed


def _outputs(n, c=3, sensitivity=True, seed=0):
    rng = np.random.default_rng(seed)
    return ModelOutputs(logits=rng.normal(size=(n, c)).astype(np.float32), labels=rng.integers(0, c, n),
                        member=rng.random(n) < 0.5, sensitivity=rng.random((n, c)) if sensitivity else None)


def test_subsample_is_a_seeded_ordered_draw_and_keeps_or_drops_sensitivity_with_it():
    out = _outputs(10)
    sub = subsample(out, 4, seed=3)
    keep = np.sort(np.random.default_rng(3).permutation(10)[:4])
    np.testing.assert_array_equal(sub.logits, out.logits[keep])
    np.testing.assert_array_equal(sub.labels, out.labels[keep])
    np.testing.assert_array_equal(sub.member, out.member[keep])
    np.testing.assert_array_equal(sub.sensitivity, out.sensitivity[keep])
    assert subsample(out, None, 3) is out and subsample(out, 10, 3) is out and subsample(out, 11, 3) is out
    bare = _outputs(10, sensitivity=False)
    assert subsample(bare, 4, seed=3).sensitivity is None


def test_samia_features_refuse_outputs_without_sensitivity_word_for_word():
    with pytest.raises(ValueError) as info:
        samia_features(_outputs(3, sensitivity=False))
    assert str(info.value) == "SAMIA needs the sensitivity signal (ModelOutputs.sensitivity is None)"


def test_attack_mlp_is_d_512_256_128_2_with_dropout_0_2_by_default():
    model = AttackMLP(7)
    linears = [m for m in model.net if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(7, 512), (512, 256), (256, 128), (128, 2)]
    assert [m.p for m in model.net if isinstance(m, nn.Dropout)] == [0.2, 0.2, 0.2]


def test_fit_attack_model_takes_float64_features_and_seed_zero_by_default():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3))
    y = (x[:, 0] > 0).astype(np.int64)
    training = AttackModelSettings(epochs=2, batch_size=16, milestones=[1])

    def weights(model):
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    a = fit_attack_model(lambda: AttackMLP(3), x, y, training)  # float64 features
    b = fit_attack_model(lambda: AttackMLP(3), x.astype(np.float32), y, training, seed=0)
    assert torch.equal(weights(a), weights(b))
    c = fit_attack_model(lambda: AttackMLP(3), x.astype(np.float32), y, training, seed=1)
    assert not torch.equal(weights(a), weights(c))


# ------------------------------------------------------------------ calibrated family
def _shadow(phi_member, phi_non):
    """A two-class shadow whose logit confidences are exactly the given values (label 0, logits
    (φ, 0))."""
    phi = np.array([*phi_member, *phi_non], dtype=np.float64)
    logits = np.stack([phi, np.zeros_like(phi)], axis=1)
    member = np.array([True] * len(phi_member) + [False] * len(phi_non))
    return ModelOutputs(logits=logits, labels=np.zeros(phi.size, dtype=np.int64), member=member)


def test_member_quantile_map_uses_the_mid_rank_of_ties():
    to_member = member_quantile_map(_shadow([10.0, 20.0, 30.0, 40.0, 50.0], [1.0, 2.0, 2.0, 3.0]))
    # x = 2 ties two of four non-members: ranks 1..3 → mid-rank quantile (1 + 3) / 8 = 0.5
    assert to_member(np.array([2.0]))[0] == pytest.approx(np.quantile([10, 20, 30, 40, 50], 0.5))
    assert to_member(np.array([0.0]))[0] == pytest.approx(10.0)  # below every non-member: q = 0
    assert to_member(np.array([9.0]))[0] == pytest.approx(50.0)  # above every one: q = 1
    assert member_quantile_map(_shadow([1.0, 2.0], [])) is None


def _calib_data(k):
    shadows = [_shadow([5.0 + j, 6.0 + j], [0.0 + j, 1.0 + j]) for j in range(k)]
    n, m, c = 3, 2, 2
    rng = np.random.default_rng(1)
    return AttackData(
        target=ModelOutputs(rng.normal(size=(n, c)), np.zeros(n, dtype=np.int64), np.array([True, False, True])),
        shadows=shadows, reference_on_target=rng.normal(size=(k, n, c)), target_on_population=rng.normal(size=(m, c)),
        reference_on_population=rng.normal(size=(k, m, c)), population_labels=np.zeros(m, dtype=np.int64))


def test_calibration_views_leave_each_shadow_out_from_two_shadows_on():
    data = _calib_data(2)
    views = list(calibration_views(data))
    assert len(views) == 2
    for j, v in enumerate(views):
        other = 1 - j
        np.testing.assert_array_equal(v.model_on_u, data.reference_on_target[j])
        np.testing.assert_array_equal(v.refs_on_u, data.reference_on_target[[other]])
        np.testing.assert_array_equal(v.model_on_pop, data.reference_on_population[j])
        np.testing.assert_array_equal(v.refs_on_pop, data.reference_on_population[[other]])
        np.testing.assert_array_equal(v.labels_u, data.target.labels)
    single = list(calibration_views(_calib_data(1)))
    assert len(single) == 1
    np.testing.assert_array_equal(single[0].model_on_u, _calib_data(1).target_on_population)


def test_rmia_scores_count_population_ratios_in_float64():
    pop = np.array([0.100000003, 0.5, 2.0])
    # float32 0.3 / γ = 3 is 0.10000000397 in float64 (above pop[0]) but 0.1 in float32 (below)
    got = rmia_scores(np.array([0.3], dtype=np.float32), pop, 3.0)
    assert got.tolist() == [1 / 3]
    assert rmia_scores(np.array([1.5, 0.5, 10.0]), pop, 1.0).tolist() == [2 / 3, 2 / 3, 1.0]  # ties count (≤)
    empty = rmia_scores(np.array([0.2, 0.7], dtype=np.float32), np.array([]), 1.0)
    assert empty.dtype == np.float64 and empty.tolist() == [0.0, 0.0]


# ------------------------------------------------------------------ fit_attack_model against a hand-written loop
def _reference_fit(init: nn.Module, x, y, training: AttackModelSettings, seed: int) -> list[torch.Tensor]:
    """SGD with momentum and L2 weight decay (PyTorch's formulas: buf = μ·buf + (g + λw),
    w −= lr·buf), lr × 0.1 after each milestone epoch, class-weighted mean CE with weights
    n / (2·n_class) (0 for an absent class), batches cut from one permutation per epoch drawn
    from a generator seeded with ``seed`` — written out in float64."""
    w = [p.detach().double().clone() for p in init.parameters()]
    bufs = [None] * len(w)
    xt = torch.as_tensor(x, dtype=torch.float64)
    yt = torch.as_tensor(y, dtype=torch.int64)
    n = yt.numel()
    counts = [int((yt == c).sum()) for c in (0, 1)]
    cw = torch.tensor([n / (2.0 * k) if k > 0 else 0.0 for k in counts], dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    lr = training.lr
    for epoch in range(training.epochs):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, training.batch_size):
            idx = perm[i : i + training.batch_size]
            leaves = [t.clone().requires_grad_(True) for t in w]
            logits = xt[idx] @ leaves[0].t() + leaves[1]
            per = torch.nn.functional.cross_entropy(logits, yt[idx], reduction="none")
            loss = (cw[yt[idx]] * per).sum() / cw[yt[idx]].sum()
            grads = torch.autograd.grad(loss, leaves)
            for j, (p, g) in enumerate(zip(w, grads)):
                d = g + training.weight_decay * p
                bufs[j] = d.clone() if bufs[j] is None else training.momentum * bufs[j] + d
                w[j] = p - lr * bufs[j]
        if epoch + 1 in training.milestones:
            lr *= 0.1
    return w


@pytest.mark.parametrize("n_non", [4, 1])  # imbalanced classes; a class of one sample
def test_fit_attack_model_is_weighted_sgd_with_momentum_decay_and_milestones_by_hand(n_non):
    rng = np.random.default_rng(n_non)
    n = 13  # not a multiple of the batch size: the last batch is partial
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = np.array([0] * n_non + [1] * (n - n_non))
    training = AttackModelSettings(epochs=3, lr=0.05, momentum=0.8, weight_decay=0.01, batch_size=4,
                                   milestones=[1, 2], dropout=0.0)
    torch.manual_seed(0)
    init = nn.Linear(3, 2)

    def make():
        import copy

        return copy.deepcopy(init)

    got = fit_attack_model(make, x, y, training, seed=5)
    want = _reference_fit(init, x, y, training, seed=5)
    for p, q in zip(got.parameters(), want):
        torch.testing.assert_close(p.detach().double(), q, rtol=1e-5, atol=1e-6)
    assert not got.training  # returned in evaluation mode


def test_fit_attack_model_takes_labels_of_one_class():
    x = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
    model = fit_attack_model(lambda: nn.Linear(3, 2), x, np.zeros(6, dtype=np.int64),
                             AttackModelSettings(epochs=1, batch_size=4, milestones=[1]))
    assert isinstance(model, nn.Linear)


# ------------------------------------------------------------------ classifier_attack's plumbing
def test_classifier_attack_passes_subsample_device_epochs_and_name(monkeypatch):
    from wemem.ml.attacks import classifier
    from wemem.ml.attacks.classifier import _mlp, classifier_attack

    seen = {}

    def spy_fit(make_model, x, y, training, *, device="cpu", seed=0):
        seen.update(rows=x.shape[0], device=device, seed=seed, epochs=training.epochs, milestones=training.milestones)
        seen["x"] = x
        return make_model()

    monkeypatch.setattr(classifier, "fit_attack_model", spy_fit)
    rng = np.random.default_rng(0)
    shadows = [_outputs(20, seed=1), _outputs(20, seed=2)]
    data = AttackData(target=_outputs(8, seed=3), shadows=shadows, reference_on_target=np.zeros((2, 8, 3)),
                      target_on_population=np.zeros((0, 3)), reference_on_population=np.zeros((2, 0, 3)),
                      population_labels=np.zeros(0, dtype=np.int64))
    ctx = AttackContext(training=AttackModelSettings(epochs=20, milestones=[10, 15]), device="cpu", seed=4)
    res = classifier_attack("probe", data, ctx, lambda o: np.asarray(o.probs), lambda d: nn.Linear(d, 2),
                            max_train=15, epochs=4)
    assert res.name == "probe" and res.scores.shape == (8,)
    x = seen.pop("x")
    assert seen == {"rows": 15, "device": "cpu", "seed": 4, "epochs": 4, "milestones": [2, 3]}
    from wemem.ml.attacks.base import pooled_shadows

    np.testing.assert_array_equal(x, subsample(pooled_shadows(data), 15, 4).probs)  # the draw seeded by ctx.seed
    # the draw is the seeded subsample of the pooled shadows
    res = classifier_attack("probe", data, ctx, lambda o: o.logits, lambda d: nn.Linear(d, 2), max_train=15)
    assert seen["rows"] == 15 and seen["epochs"] == 20
    # the MLP factory takes the family's dropout
    mlp = _mlp(AttackContext(training=AttackModelSettings(dropout=0.5)))(4)
    assert [m.p for m in mlp.net if isinstance(m, nn.Dropout)] == [0.5, 0.5, 0.5]


def test_features_take_labels_of_any_numeric_dtype():
    from wemem.ml.attacks.classifier import ci_features

    out = _outputs(4)
    out.labels = out.labels.astype(np.float64)  # whole numbers stored as floats
    ci = ci_features(out)
    np.testing.assert_array_equal(ci[:, 3:], np.eye(3, dtype=np.float32)[out.labels.astype(int)])
    sam = samia_features(out).reshape(4, 3, 3)
    np.testing.assert_array_equal(sam[:, :, 2], np.eye(3, dtype=np.float32)[out.labels.astype(int)])


# ------------------------------------------------------------------ SAMIA's Transformer
def test_samia_transformer_defaults_position_embedding_and_forward_by_parts():
    from wemem.ml.attacks.classifier import SamiaTransformer

    torch.manual_seed(0)
    model = SamiaTransformer(5)
    assert model.embed.out_features == 64 and len(model.blocks) == 3
    assert all(b.heads == 4 and b.p == 0.2 for b in model.blocks)
    assert model.position.shape == (5, 64) and 0.015 < float(model.position.detach().std()) < 0.025
    model.eval()
    x = torch.randn(6, 15)
    h = model.embed(x.view(6, 5, 3)) + model.position
    for block in model.blocks:
        h = block(h)
    torch.testing.assert_close(model(x), model.head(h.mean(dim=1)))


def test_every_dropout_of_a_block_follows_the_training_mode(monkeypatch):
    from wemem.ml.attacks import classifier

    modes = []
    real = classifier.fast_dropout

    def spy(x, p, training):
        modes.append(training)
        return real(x, p, training)

    monkeypatch.setattr(classifier, "fast_dropout", spy)
    block = classifier.PreLNBlock(8, 2, 0.3)
    x = torch.randn(2, 3, 8)
    block.train()
    block(x)
    block.eval()
    block(x)
    assert modes == [True] * 4 + [False] * 4


# ------------------------------------------------------------------ LiRA's σ, views, quantile map
def test_lira_global_sigma_by_hand():
    from wemem.ml.attacks.calibrated import lira_global_sigma

    phi = np.array([[1.0, 4.0, 0.0], [3.0, 2.0, 2.0]])  # k = 2: residuals ±1 in every column
    assert lira_global_sigma(phi) == pytest.approx(np.sqrt(6 / (3 * 1)))
    one = np.array([[1.0], [2.0], [6.0]])  # n = 1, k = 3: residuals −2, −1, 3 → 14 / 2
    assert lira_global_sigma(one) == pytest.approx(np.sqrt(7.0))
    assert lira_global_sigma(np.array([[1.0, 2.0]])) == 1.0 and lira_global_sigma(np.zeros((3, 0))) == 1.0


def test_views_skip_a_shadow_without_non_members_and_keep_the_rest():
    data = _calib_data(3)
    data.shadows[0] = _shadow([1.0, 2.0, 3.0], [])  # members only: no quantile map
    views = list(calibration_views(data))
    assert len(views) == 2
    np.testing.assert_array_equal(views[0].model_on_u, data.reference_on_target[1])
    np.testing.assert_array_equal(views[1].model_on_u, data.reference_on_target[2])


def test_quantile_map_takes_a_0_1_integer_member_column():
    shadow = _shadow([10.0, 20.0, 30.0], [1.0, 2.0, 3.0])
    as_int = ModelOutputs(shadow.logits, shadow.labels, shadow.member.astype(np.int64))
    x = np.array([0.5, 2.0, 9.0])
    np.testing.assert_allclose(member_quantile_map(as_int)(x), member_quantile_map(shadow)(x))
    np.testing.assert_allclose(member_quantile_map(shadow)(x), [10.0, 20.0, 30.0])
