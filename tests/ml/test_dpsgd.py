"""DP-SGD's mechanism (SPEC §7) against independent answers: torch.func per-sample gradients
clipped by hand, Opacus's RDP analysis called directly, the noise's spread, Poisson sampling and
pruning masks. Layers (Opacus agreement, BatchNorm, image models): test_dpsgd_layers.py."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from wemem.ml.defenses import DPSGD, DefenseState, finetune_config, prune_and_finetune
from wemem.ml.pruning import prune_step
from wemem.ml.train import Strategy, fit

from .dp_helpers import (
    N, bound, clip_by_hand, dp_cfg, fc_model, make_data, per_sample_grads, weight_masks,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    return make_data()


# ------------------------------------------------------------------ σ = 0: the exact step
def _check_sigma0_step(cls, data):
    """One DP step with σ = 0 must equal Adam on the mean of hand-clipped per-sample gradients.

    Catches: no clipping (clip 0.05 is far below every sample's norm), a wrong scale (sum vs
    mean), pruned coordinates counted in the norms, a skipped or misplaced optimizer step.
    """
    train, _ = data
    model = fc_model()
    masks = prune_step(model, None, "l1_unstructured", 0.5)
    reference = copy.deepcopy(model).eval()
    clip, lr, wd = 0.05, 1e-2, 5e-4
    st, module = bound(model, train, {"sigma": 0.0, "clip": clip, "lambda_g": wd}, masks=masks, cls=cls)
    idx = torch.arange(60)  # exactly the expected batch size q·n = 60
    module.train()
    st.train_step(module, train[0][idx], train[1][idx], idx, 0)

    per_sample = per_sample_grads(reference, train[0][idx], train[1][idx])
    sums, norms = clip_by_hand(per_sample, weight_masks(reference, masks), clip)
    assert bool((norms > 2 * clip).all())  # every sample is clipped, so no-clipping cannot pass
    opt = torch.optim.Adam([p for p in reference.parameters()], lr=lr, weight_decay=wd)
    for name, p in reference.named_parameters():
        p.grad = sums[name] / 60
    opt.step()
    with torch.no_grad():
        for name, m in masks.items():
            dict(reference.named_modules())[name].weight.mul_(m)
    for (name, got), (_, want) in zip(model.named_parameters(), reference.named_parameters()):
        # the gradient handed to Adam: tight; the step: Adam's first step is ±lr where |g| ≫ eps
        # but amplifies rounding where |g| ~ 1e-8, hence 1e-5 (a wrong step is off by ~lr = 1e-2)
        torch.testing.assert_close(got.grad, want.grad, rtol=1e-5, atol=1e-8, msg=f"{name}.grad of the DP step")
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5, msg=f"{name} after one DP step")
    st.close()


def test_sigma0_step_is_adam_on_the_mean_of_clipped_per_sample_gradients(data):
    _check_sigma0_step(DPSGD, data)


class _PlainAdam(DPSGD):
    """The planted bug of issue 17: DP-SGD that steps plain Adam (no clipping, no noise)."""

    def train_step(self, model, xb, yb, idx, epoch):
        self.clipper.discard()
        loss = Strategy.train_step(self, model, xb, yb, idx, epoch)
        self.state.accountant.step(noise_multiplier=self.sigma, sample_rate=self.sample_rate)
        return loss


def test_planted_bug_plain_adam_fails_the_exact_step_check(data):
    # the check above must be able to fail: plain Adam on the mean unclipped gradient differs
    with pytest.raises(AssertionError):
        _check_sigma0_step(_PlainAdam, data)


# ------------------------------------------------------------------ σ > 0: the noise
def _grads_after_step(cls, data, sigma, clip, idx):
    train, _ = data
    model = fc_model()
    st, module = bound(model, train, {"sigma": sigma, "clip": clip}, state=DefenseState(), cls=cls)
    module.train()
    st.train_step(module, train[0][idx], train[1][idx], idx, 0)
    out = torch.cat([p.grad.reshape(-1) for p in st.clipper.params])
    st.close()
    return out


def _check_noise(cls, data, sigma, clip):
    """The difference of one step with and without noise is noise / B; its std must be σ·C/B
    (B = 60). Catches: no noise, noise not scaled by C, not divided by B, or missing on empty
    batches. With ~36,600 coordinates the std's relative standard error is 0.4%, so a 3%
    tolerance cannot flake (and the generators are seeded)."""
    idx = torch.arange(60)
    noise = _grads_after_step(cls, data, sigma, clip, idx) - _grads_after_step(cls, data, 0.0, clip, idx)
    want = sigma * clip / 60
    assert noise.std().item() == pytest.approx(want, rel=0.03)
    assert abs(noise.mean().item()) < 0.03 * want
    # an empty Poisson batch is a step of pure noise with the same spread
    empty = _grads_after_step(cls, data, sigma, clip, torch.arange(0))
    assert empty.std().item() == pytest.approx(want, rel=0.03)


@pytest.mark.parametrize("sigma,clip", [(2.0, 0.5), (0.7, 1.5)])
def test_noise_spread_is_sigma_clip_over_expected_batch(data, sigma, clip):
    _check_noise(DPSGD, data, sigma, clip)


def test_planted_bug_plain_adam_fails_the_noise_check(data):
    with pytest.raises(AssertionError):
        _check_noise(_PlainAdam, data, 2.0, 0.5)


# ------------------------------------------------------------------ ε from Opacus's RDP analysis
def _rdp_epsilon(sigma, q, steps, delta):
    """Opacus's RDP analysis called directly (not through the accountant object)."""
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

    orders = RDPAccountant.DEFAULT_ALPHAS
    eps, _ = get_privacy_spent(orders=orders, rdp=compute_rdp(q=q, noise_multiplier=sigma, steps=steps, orders=orders),
                               delta=delta)
    return float(eps)


def test_epsilon_is_the_rdp_epsilon_of_sigma_q_and_the_steps_taken(data):
    # 3 epochs of n // B = 180 // 64 = 2 Poisson steps at q = 64/180. Catches: a wrong q
    # (e.g. 1/n), a wrong step count (e.g. ceil(n/B) or steps not counted), the wrong delta.
    train, _ = data
    st = DPSGD(DPSGD.Settings(sigma=0.8, delta=1e-4), state=DefenseState())
    res = fit(fc_model(), train, None, dp_cfg(epochs=3, batch_size=64), st)
    assert res.extra["dp_steps"] == 6 and res.extra["sample_rate"] == pytest.approx(64 / 180)
    assert res.extra["delta"] == 1e-4
    assert res.extra["epsilon"] == pytest.approx(_rdp_epsilon(0.8, 64 / 180, 6, 1e-4), rel=1e-9)


def test_epsilon_accumulates_across_pruning_iterations(data):
    # one accountant per model: after 3 iterations × 1 epoch × 3 steps, ε is that of 9 steps.
    # Catches a fresh accountant per iteration (ε of 3 steps) and δ defaulting to 1/n.
    train, dev = data
    _, rec = prune_and_finetune(
        fc_model(), method="l1_unstructured", final_sparsity=0.5, n_iter=3, defense="dpsgd",
        settings={"sigma": 1.0}, train=train, dev=dev,
        cfg=finetune_config(epochs=1, batch_size=60, progress=False),
    )
    eps = [s["epsilon"] for s in rec["summaries"]]
    want = [_rdp_epsilon(1.0, 60 / 180, 3 * (k + 1), 1e-5) for k in range(3)]
    assert eps == pytest.approx(want, rel=1e-9) and rec["epsilon"] == eps[-1]
    assert rec["delta"] == 1e-5  # the default, well below 1/n


def test_sigma_zero_reports_infinite_epsilon(data):
    train, _ = data
    res = fit(fc_model(), train, None, dp_cfg(), DPSGD(DPSGD.Settings(sigma=0.0)))
    assert res.extra["epsilon"] == math.inf


def test_delta_not_below_one_over_n_is_refused_naming_the_setting(data):
    train, _ = data
    with pytest.raises(ValueError, match=r"delta=0\.01 is not below 1/n = 0\.00556 \(n = 180"):
        fit(fc_model(), train, None, dp_cfg(), DPSGD(DPSGD.Settings(delta=0.01)))


# ------------------------------------------------------------------ Poisson sampling
def test_poisson_batches_have_binomial_sizes_and_n_over_b_steps(data):
    # Catches fixed-size shuffled batches (sizes would all be 60 and every sample once per
    # epoch), a wrong rate, a wrong number of steps, duplicates inside a batch.
    train, _ = data
    st, _ = bound(fc_model(), train, {"sigma": 1.0})
    sizes, counts = [], torch.zeros(N)
    for epoch in range(300):
        batches = st.epoch_batches(epoch, N)
        assert len(batches) == N // 60
        for b in batches:
            assert b.unique().numel() == b.numel() and (b >= 0).all() and (b < N).all()
            sizes.append(b.numel())
            counts[b] += 1
    sizes = torch.tensor(sizes, dtype=torch.float64)
    # Binomial(180, 1/3): mean 60, std 6.32; 900 draws: the mean's std is 0.21
    assert sizes.mean().item() == pytest.approx(60, abs=1.5)
    assert sizes.std().item() == pytest.approx(math.sqrt(180 * (1 / 3) * (2 / 3)), rel=0.1)
    # every sample is drawn with probability 1/3 in each of the 900 steps: 300 ± 14 times
    assert counts.min().item() > 230 and counts.max().item() < 370
    st.close()


def test_poisson_batches_are_reproducible_from_the_seed(data):
    train, _ = data
    first = [bound(fc_model(), train, {"sigma": 1.0})[0].epoch_batches(0, N) for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(*first))
    other = bound(fc_model(), train, {"sigma": 1.0}, cfg=dp_cfg(seed=5))[0].epoch_batches(0, N)
    assert not all(a.numel() == b.numel() and torch.equal(a, b) for a, b in zip(first[0], other))


def test_an_empty_batch_is_still_a_noisy_accounted_step(data):
    train, _ = data
    state = DefenseState()
    model = fc_model()
    before = [p.detach().clone() for p in model.parameters()]
    st, module = bound(model, train, {"sigma": 1.0}, state=state)
    empty = torch.arange(0)
    st.train_step(module, train[0][empty], train[1][empty], empty, 0)
    assert state.dp_steps == 1 and state.accountant.history == [(1.0, 60 / 180, 1)]
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    st.close()


# ------------------------------------------------------------------ masks
def test_pruned_weights_stay_exactly_zero_under_dp_training(data):
    # noise refills every coordinate; the mask must be re-applied after every step
    train, dev = data
    model = fc_model()
    masks = prune_step(model, None, "l1_unstructured", 0.6)
    before = {n: m.weight.detach().clone() for n, m in model.named_modules() if n in masks}
    fit(model, train, dev, dp_cfg(epochs=2), DPSGD(DPSGD.Settings(sigma=1.0), masks=masks))
    for name, module in model.named_modules():
        if name in masks:
            assert bool((module.weight[~masks[name]] == 0).all()), name
            kept = masks[name]
            assert not torch.equal(module.weight[kept], before[name][kept]), f"{name} did not train"


# ------------------------------------------------------------------ the noise itself, bind's arithmetic, lifecycle
def test_noise_is_drawn_from_the_state_generator_seeded_seed_plus_7919(data):
    # an empty batch's gradient is exactly σ·C·z / (q·n) with z ~ N(0, I) from a generator seeded
    # cfg.seed + 7919, whatever torch's global generator holds. Catches: the global generator,
    # another seed, the noise subtracted, a fresh generator per strategy.
    train, _ = data
    sigma, clip, seed = 1.5, 0.7, 3
    grads = []
    for global_seed in (0, 99):
        torch.manual_seed(global_seed)
        state = DefenseState()
        st, module = bound(fc_model(), train, {"sigma": sigma, "clip": clip}, cfg=dp_cfg(seed=seed), state=state)
        empty = torch.arange(0)
        loss = st.train_step(module, train[0][empty], train[1][empty], empty, 0)
        assert torch.is_tensor(loss) and float(loss) == 0.0  # the step's loss on no samples
        grads.append(torch.cat([p.grad.reshape(-1) for p in st.clipper.params]))
        st.close()
    z = torch.randn(grads[0].numel(), generator=torch.Generator().manual_seed(seed + 7919))
    torch.testing.assert_close(grads[0], z * sigma * clip / 60, rtol=1e-6, atol=0)
    assert torch.equal(grads[0], grads[1])
    # one generator per model: the second strategy on the same state continues its stream
    st2, module2 = bound(fc_model(), train, {"sigma": sigma, "clip": clip}, cfg=dp_cfg(seed=seed), state=state)
    st2.train_step(module2, train[0][empty], train[1][empty], empty, 0)
    second = torch.cat([p.grad.reshape(-1) for p in st2.clipper.params])
    st2.close()
    gen = torch.Generator().manual_seed(seed + 7919)
    torch.randn(z.numel(), generator=gen)
    torch.testing.assert_close(second, torch.randn(z.numel(), generator=gen) * sigma * clip / 60, rtol=1e-6, atol=0)


def test_bind_arithmetic_for_batches_at_and_above_n(data):
    train, _ = data
    x, y = train[0][:50], train[1][:50]
    st, _ = bound(fc_model(), (x, y), {"sigma": 1.0}, cfg=dp_cfg(batch_size=50))
    assert (st.sample_rate, st.expected_batch, st.steps_per_epoch) == (1.0, 50.0, 1)
    st.close()
    st, _ = bound(fc_model(), (x, y), {"sigma": 1.0}, cfg=dp_cfg(batch_size=80))
    assert (st.sample_rate, st.expected_batch, st.steps_per_epoch) == (1.0, 50.0, 1)
    st.close()


def test_delta_of_exactly_one_over_n_is_refused_word_for_word(data):
    train, _ = data
    x, y = train[0][:100], train[1][:100]
    with pytest.raises(ValueError) as info:
        bound(fc_model(), (x, y), {"delta": 0.01})
    assert str(info.value) == (
        "dpsgd: delta=0.01 is not below 1/n = 0.01 (n = 100 training samples); a delta of 1/n or more allows "
        "releasing a whole sample. Set the dpsgd variant's delta well below 0.01, e.g. 1e-5")


def test_an_unbound_dpsgd_measures_nothing_and_closes_cleanly():
    st = DPSGD(DPSGD.Settings())
    st.close()
    assert st.measurements() == {} and st.epsilon() == 0.0
    assert DPSGD(DPSGD.Settings(sigma=0.0)).epsilon() == 0.0  # nothing accounted yet: 0, not ∞


def test_a_failed_bind_restores_batchnorm(data):
    # the clipper refuses a PReLU; BatchNorm must be trainable and in training mode again
    from torch import nn

    model = nn.Sequential(nn.Linear(12, 6), nn.BatchNorm1d(6), nn.PReLU(), nn.Linear(6, 3))
    model.prunable = ("0", "3")
    model.train()
    with pytest.raises(ValueError, match="PReLU"):
        bound(model, data[0], {"sigma": 1.0})
    assert model[1].training is True
    assert model[1].weight.requires_grad and model[1].bias.requires_grad
