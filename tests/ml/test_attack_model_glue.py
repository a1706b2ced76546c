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
