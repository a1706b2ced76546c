"""DP-SGD (SPEC §7) against independent answers: torch.func per-sample gradients clipped by hand,
Opacus's own hooks mode and clipping, Opacus's RDP analysis called directly, the noise's spread,
Poisson sampling, pruning masks and frozen BatchNorm."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from wemem.ml.defenses import DPSGD, DefenseState, finetune_config, prune_and_finetune
from wemem.ml.defenses.dp_clip import FrozenNormModule, PerSampleClipper, freeze_batchnorm
from wemem.ml.models import build_model
from wemem.ml.pruning import prune_step
from wemem.ml.train import Strategy, TrainConfig, fit

N, D, C = 180, 12, 3


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(1)
    centers = 2.0 * torch.randn(C, D, generator=g)
    y = torch.randint(0, C, (N + 60,), generator=g)
    x = centers[y] + torch.randn(N + 60, D, generator=g)
    return (x[:N], y[:N]), (x[N:], y[N:])


def _fc(seed=0, dropout=0.0):
    torch.manual_seed(seed)
    return build_model("column_fc", (D,), C, dropout=dropout)


def _cfg(**kw):
    base = dict(epochs=1, patience=None, batch_size=60, progress=False, lr=1e-2)
    base.update(kw)
    return TrainConfig(**base)


def _bound(model, train, settings, masks=None, cfg=None, state=None, cls=DPSGD):
    st = cls(cls.Settings(**settings), masks=masks, state=state or DefenseState())
    cfg = cfg or _cfg()
    gen = torch.Generator().manual_seed(cfg.seed)
    module = st.bind(model, *train, cfg, gen)
    return st, module


def _per_sample_grads(model, x, y):
    """Independent per-sample gradients: torch.func's vmap(grad) of the one-sample loss."""
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss_one(p, xi, yi):
        out = functional_call(model, {**p, **buffers}, (xi.unsqueeze(0),))
        return F.cross_entropy(out, yi.unsqueeze(0))

    return vmap(grad(loss_one), in_dims=(None, 0, 0))(params, x, y)


def _clip_by_hand(per_sample, masks_by_name, clip):
    """Masks pruned coordinates, clips each sample's whole gradient to ``clip``, sums; also the norms."""
    masked = {k: g * masks_by_name[k] if k in masks_by_name else g for k, g in per_sample.items()}
    b = next(iter(masked.values())).shape[0]
    norms = torch.cat([g.reshape(b, -1) for g in masked.values()], 1).norm(dim=1)
    factor = (clip / (norms + 1e-6)).clamp(max=1.0)
    sums = {k: torch.einsum("i,i...->...", factor, g) for k, g in masked.items()}
    return sums, norms


def _weight_masks(model, masks):
    return {f"{name}.weight": m.float() for name, m in masks.items()}


# ------------------------------------------------------------------ σ = 0: the exact step
def _check_sigma0_step(cls, data):
    """One DP step with σ = 0 must equal Adam on the mean of hand-clipped per-sample gradients.

    Catches: no clipping (clip 0.05 is far below every sample's norm), a wrong scale (sum vs
    mean), pruned coordinates counted in the norms, a skipped or misplaced optimizer step.
    """
    train, _ = data
    model = _fc()
    masks = prune_step(model, None, "l1_unstructured", 0.5)
    reference = copy.deepcopy(model).eval()
    clip, lr, wd = 0.05, 1e-2, 5e-4
    st, module = _bound(model, train, {"sigma": 0.0, "clip": clip, "lambda_g": wd}, masks=masks, cls=cls)
    idx = torch.arange(60)  # exactly the expected batch size q·n = 60
    module.train()
    st.train_step(module, train[0][idx], train[1][idx], idx, 0)

    per_sample = _per_sample_grads(reference, train[0][idx], train[1][idx])
    sums, norms = _clip_by_hand(per_sample, _weight_masks(reference, masks), clip)
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
    model = _fc()
    st, module = _bound(model, train, {"sigma": sigma, "clip": clip}, state=DefenseState(), cls=cls)
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
    res = fit(_fc(), train, None, _cfg(epochs=3, batch_size=64), st)
    assert res.extra["dp_steps"] == 6 and res.extra["sample_rate"] == pytest.approx(64 / 180)
    assert res.extra["delta"] == 1e-4
    assert res.extra["epsilon"] == pytest.approx(_rdp_epsilon(0.8, 64 / 180, 6, 1e-4), rel=1e-9)


def test_epsilon_accumulates_across_pruning_iterations(data):
    # one accountant per model: after 3 iterations × 1 epoch × 3 steps, ε is that of 9 steps.
    # Catches a fresh accountant per iteration (ε of 3 steps) and δ defaulting to 1/n.
    train, dev = data
    _, rec = prune_and_finetune(
        _fc(), method="l1_unstructured", final_sparsity=0.5, n_iter=3, defense="dpsgd",
        settings={"sigma": 1.0}, train=train, dev=dev,
        cfg=finetune_config(epochs=1, batch_size=60, progress=False),
    )
    eps = [s["epsilon"] for s in rec["summaries"]]
    want = [_rdp_epsilon(1.0, 60 / 180, 3 * (k + 1), 1e-5) for k in range(3)]
    assert eps == pytest.approx(want, rel=1e-9) and rec["epsilon"] == eps[-1]
    assert rec["delta"] == 1e-5  # the default, well below 1/n


def test_sigma_zero_reports_infinite_epsilon(data):
    train, _ = data
    res = fit(_fc(), train, None, _cfg(), DPSGD(DPSGD.Settings(sigma=0.0)))
    assert res.extra["epsilon"] == math.inf


def test_delta_not_below_one_over_n_is_refused_naming_the_setting(data):
    train, _ = data
    with pytest.raises(ValueError, match=r"delta=0\.01 is not below 1/n = 0\.00556 \(n = 180"):
        fit(_fc(), train, None, _cfg(), DPSGD(DPSGD.Settings(delta=0.01)))


# ------------------------------------------------------------------ Poisson sampling
def test_poisson_batches_have_binomial_sizes_and_n_over_b_steps(data):
    # Catches fixed-size shuffled batches (sizes would all be 60 and every sample once per
    # epoch), a wrong rate, a wrong number of steps, duplicates inside a batch.
    train, _ = data
    st, _ = _bound(_fc(), train, {"sigma": 1.0})
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
    first = [_bound(_fc(), train, {"sigma": 1.0})[0].epoch_batches(0, N) for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(*first))
    other = _bound(_fc(), train, {"sigma": 1.0}, cfg=_cfg(seed=5))[0].epoch_batches(0, N)
    assert not all(a.numel() == b.numel() and torch.equal(a, b) for a, b in zip(first[0], other))


def test_an_empty_batch_is_still_a_noisy_accounted_step(data):
    train, _ = data
    state = DefenseState()
    model = _fc()
    before = [p.detach().clone() for p in model.parameters()]
    st, module = _bound(model, train, {"sigma": 1.0}, state=state)
    empty = torch.arange(0)
    st.train_step(module, train[0][empty], train[1][empty], empty, 0)
    assert state.dp_steps == 1 and state.accountant.history == [(1.0, 60 / 180, 1)]
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    st.close()


# ------------------------------------------------------------------ masks
def test_pruned_weights_stay_exactly_zero_under_dp_training(data):
    # noise refills every coordinate; the mask must be re-applied after every step
    train, dev = data
    model = _fc()
    masks = prune_step(model, None, "l1_unstructured", 0.6)
    before = {n: m.weight.detach().clone() for n, m in model.named_modules() if n in masks}
    fit(model, train, dev, _cfg(epochs=2), DPSGD(DPSGD.Settings(sigma=1.0), masks=masks))
    for name, module in model.named_modules():
        if name in masks:
            assert bool((module.weight[~masks[name]] == 0).all()), name
            kept = masks[name]
            assert not torch.equal(module.weight[kept], before[name][kept]), f"{name} did not train"


# ------------------------------------------------------------------ agreement with Opacus's hooks mode
class _ConvNet(nn.Module):
    """Conv → GroupNorm → ReLU → Linear (the sampled path) plus a Linear head (the ghost path)."""

    def __init__(self, norm: str = "group"):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.norm = nn.GroupNorm(2, 4) if norm == "group" else nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 4 * 4, 8)
        self.out = nn.Linear(8, C)

    def forward(self, x):
        x = torch.relu(self.norm(self.conv(x.reshape(-1, 1, 6, 6))))
        return self.out(torch.relu(self.fc(x.flatten(1))))


def _opacus_clipped_sums(model, x, y, clip, masks_by_param):
    """Opacus's default mode: GradSampleModule(hooks) per-sample grads, masked, then DPOptimizer's
    own clipping (noise 0, sum reduction)."""
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    gsm = GradSampleModule(model, batch_first=True, loss_reduction="sum", strict=True)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = DPOptimizer(torch.optim.SGD(params, lr=0.0), noise_multiplier=0.0, max_grad_norm=clip,
                      expected_batch_size=x.shape[0], loss_reduction="sum")
    with warnings.catch_warnings():  # Opacus's full backward hooks on the first layer
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        F.cross_entropy(gsm(x), y, reduction="sum").backward()
    for p in params:
        if id(p) in masks_by_param:
            p.grad_sample = p.grad_sample * masks_by_param[id(p)]
    opt.clip_and_accumulate()
    sums = [p.summed_grad.detach().clone() for p in params]
    gsm._close()
    return sums


@pytest.mark.parametrize("arch", ["column_fc", "convnet"])
def test_per_sample_clipped_sums_equal_opacus_hooks_mode(data, arch):
    # Catches: a wrong ghost norm (e.g. the unmasked ‖g‖·‖a‖ with a mask), a wrong conv/GroupNorm
    # path, norms of one layer only, clipping per layer instead of per sample.
    train, _ = data
    x, y = train[0][:40], train[1][:40]
    if arch == "convnet":
        torch.manual_seed(0)
        model = _ConvNet()
        x = torch.cat([x, x, x], 1)  # 36 = 6 × 6 pixels
        masks = {"conv": torch.rand(4, 1, 3, 3) > 0.4, "fc": torch.rand(8, 64) > 0.5}
    else:
        model = _fc()
        masks = prune_step(model, None, "l1_unstructured", 0.5)
    named = dict(model.named_modules())
    with torch.no_grad():
        for name, m in masks.items():
            named[name].weight.mul_(m)
    by_param = {id(named[name].weight): m.float() for name, m in masks.items()}
    model.train()  # Opacus's hooks record in training mode only (no dropout in these models)
    ref = copy.deepcopy(model)
    ref_named = dict(ref.named_modules())
    want = _opacus_clipped_sums(ref, x, y, 0.3, {id(ref_named[name].weight): m.float() for name, m in masks.items()})
    clipper = PerSampleClipper(model, 0.3, by_param)
    clipper.recording = True
    loss = F.cross_entropy(model(x), y, reduction="sum")
    clipper.recording = False
    got, norms = clipper.clipped_sums(loss, x.shape[0])
    clipper.remove()
    assert bool((norms > 0.3).any())  # clipping is active, so the clip factors are compared too
    for g, w, (name, _) in zip(got, want, model.named_parameters()):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-7, msg=name)


# ------------------------------------------------------------------ BatchNorm frozen in eval mode
def _image_data(n=48):
    g = torch.Generator().manual_seed(3)
    y = torch.randint(0, C, (n,), generator=g)
    x = torch.randn(n, 36, generator=g) + y[:, None].float()
    return x, y


def _clipped_sums(module, clipper, x, y):
    clipper.recording = True
    loss = F.cross_entropy(module(x), y, reduction="sum")
    clipper.recording = False
    return clipper.clipped_sums(loss, x.shape[0])[0]


def test_batchnorm_model_trains_under_dp_with_bn_frozen():
    # Catches: BN refused, running statistics updated, BN affine parameters trained,
    # requires_grad or the training mode not restored afterwards.
    torch.manual_seed(0)
    model = _ConvNet(norm="batch")
    bn = model.norm
    with torch.no_grad():  # running statistics of a "pretrained" network
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    frozen = {k: v.detach().clone() for k, v in bn.state_dict().items()}
    conv_before = model.conv.weight.detach().clone()
    x, y = _image_data()
    res = fit(model, (x, y), None, _cfg(epochs=3, batch_size=16), DPSGD(DPSGD.Settings(sigma=0.5)))
    assert math.isfinite(res.extra["epsilon"]) and res.extra["dp_steps"] == 9
    for k, v in bn.state_dict().items():
        assert torch.equal(v, frozen[k]), f"BatchNorm {k} changed"
    assert not torch.equal(model.conv.weight, conv_before)
    assert bn.weight.requires_grad and bn.bias.requires_grad and bn.training


def test_batchnorm_frozen_makes_per_sample_gradients_independent_of_the_batch():
    # a batch's clipped sum must equal the sum of the samples' clipped gradients taken one at a
    # time; with BatchNorm in training mode (batch statistics) it does not, so this can fail.
    torch.manual_seed(0)
    model = _ConvNet(norm="batch")
    x, y = _image_data(12)
    model.train()
    frozen = freeze_batchnorm(model)
    assert not model.norm.training and not model.norm.weight.requires_grad
    module = FrozenNormModule(model, [m for m, _ in frozen]).train()
    assert not model.norm.training and model.conv.training
    clipper = PerSampleClipper(model, 0.5)
    batch = _clipped_sums(module, clipper, x, y)
    alone = [_clipped_sums(module, clipper, x[i : i + 1], y[i : i + 1]) for i in range(12)]
    for k, g in enumerate(batch):
        torch.testing.assert_close(g, sum(a[k] for a in alone), rtol=1e-4, atol=1e-6)
    model.norm.train()  # the control: batch statistics couple the samples
    coupled = _clipped_sums(model, clipper, x, y)
    alone = [_clipped_sums(model, clipper, x[i : i + 2], y[i : i + 2]) for i in range(0, 12, 2)]
    assert not torch.allclose(coupled[0], sum(a[0] for a in alone), rtol=1e-3, atol=1e-5)
    clipper.remove()


@pytest.mark.parametrize("arch", ["resnet18", "vgg16_bn", "densenet121"])
def test_image_models_take_a_dp_step_with_batchnorm_frozen(arch):
    # the paper's image models (all BatchNorm): every trainable layer has a per-sample rule,
    # none is called twice or modified in place, and the running statistics stay fixed
    torch.manual_seed(0)
    model = build_model(arch, (3, 32, 32), 10)
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    y = torch.tensor([0, 1, 2, 3])
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    res = fit(model, (x, y), None, _cfg(epochs=1, batch_size=2), DPSGD(DPSGD.Settings(sigma=1.0)))
    assert res.extra["dp_steps"] == 2
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in stats.items())


def test_a_layer_without_a_per_sample_rule_is_refused_by_name(data):
    class WithPReLU(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(D, C)
            self.act = nn.PReLU()

        def forward(self, x):
            return self.act(self.fc(x))

    train, _ = data
    with pytest.raises(ValueError, match=r"module 'act' \(PReLU\) has trainable parameters"):
        fit(WithPReLU(), train, None, _cfg(), DPSGD(DPSGD.Settings()))


def test_a_layer_called_twice_is_refused(data):
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(D, D)
            self.out = nn.Linear(D, C)

        def forward(self, x):
            return self.out(self.fc(torch.relu(self.fc(x))))

    train, _ = data
    with pytest.raises(ValueError, match="called more than once"):
        fit(Twice(), train, None, _cfg(), DPSGD(DPSGD.Settings()))
