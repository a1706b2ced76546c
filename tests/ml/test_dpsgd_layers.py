"""DP-SGD's per-sample clipping layer by layer: agreement with Opacus's hooks mode, BatchNorm
frozen in evaluation mode, the paper's image models, layers without a per-sample rule."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from wemem.ml.defenses import DPSGD
from wemem.ml.defenses.dp_clip import FrozenNormModule, PerSampleClipper, freeze_batchnorm
from wemem.ml.models import build_model
from wemem.ml.pruning import prune_step
from wemem.ml.train import fit

from .dp_helpers import C, D, dp_cfg, fc_model, make_data, per_sample_grads

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    return make_data()


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
        model = fc_model()
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
    res = fit(model, (x, y), None, dp_cfg(epochs=3, batch_size=16), DPSGD(DPSGD.Settings(sigma=0.5)))
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
    res = fit(model, (x, y), None, dp_cfg(epochs=1, batch_size=2), DPSGD(DPSGD.Settings(sigma=1.0)))
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
        fit(WithPReLU(), train, None, dp_cfg(), DPSGD(DPSGD.Settings()))


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
        fit(Twice(), train, None, dp_cfg(), DPSGD(DPSGD.Settings()))


# ------------------------------------------------------------------ clipping against torch.func, edge layers
class _EdgeNet(nn.Module):
    """A layer whose output the loss never uses (recorded first), a bias-free Linear, a Linear on
    3-D inputs (Opacus's sampler path), and a head."""

    def __init__(self):
        super().__init__()
        self.unused = nn.Linear(12, 5)
        self.a = nn.Linear(4, 6, bias=False)
        self.seq = nn.Linear(3, 2)
        self.head = nn.Linear(6 + 8, C)

    def forward(self, x):
        self.unused(x)  # computed, recorded, not in the loss
        h = torch.relu(self.a(x[:, :4]))
        s = torch.relu(self.seq(x.view(-1, 4, 3))).flatten(1)
        return self.head(torch.cat([h, s], 1))


def _weighted_per_sample(model, x, y, w):
    """Independent per-sample gradients of w_i · CE_i in float64: torch.func's (the shared
    helper's) on a float64 copy, each sample's scaled by its weight."""
    per = per_sample_grads(copy.deepcopy(model).double(), x.double(), y)
    w = w.double()
    return {k: v * w.view(-1, *([1] * (v.dim() - 1))) for k, v in per.items()}


def test_clipped_sums_equal_torch_func_for_unused_bias_free_and_3d_layers_with_unclipped_samples(monkeypatch):
    # Catches: a clip factor above 1 for small gradients, ε added with the wrong sign, an unused
    # layer's gradient missing (or stopping the loop), a bias-free Linear, the 3-D Linear path,
    # and the ghost norm replaced by Opacus's sampler for 2-D Linear layers.
    from opacus.grad_sample import GradSampleModule

    real = GradSampleModule.GRAD_SAMPLERS[nn.Linear]
    calls = []

    def counting(layer, activations, backprops):
        calls.append(activations[0].dim())
        return real(layer, activations, backprops)

    monkeypatch.setitem(GradSampleModule.GRAD_SAMPLERS, nn.Linear, counting)
    torch.manual_seed(0)
    model = _EdgeNet()
    g = torch.Generator().manual_seed(5)
    b = 24
    x, y = torch.randn(b, 12, generator=g), torch.randint(0, C, (b,), generator=g)
    # three tiers of per-sample gradient size: ×1 and ×1e-2 are clipped, ×1e-4 is not (below C / 2)
    w = torch.tensor([1.0, 1e-2, 1e-4] * (b // 3))
    mask_a = (torch.rand(6, 4, generator=g) > 0.4).float()
    mask_head = (torch.rand(C, 14, generator=g) > 0.3).float()
    with torch.no_grad():
        model.a.weight.mul_(mask_a)
        model.head.weight.mul_(mask_head)
    clip = 2e-3
    per = _weighted_per_sample(model, x, y, w)
    masks_by_name = {"a.weight": mask_a.double(), "head.weight": mask_head.double()}
    per = {k: v * masks_by_name[k] if k in masks_by_name else v for k, v in per.items()}
    norms = torch.cat([v.reshape(b, -1) for v in per.values()], 1).norm(dim=1)
    assert bool((norms[0::3] > clip).all() and (norms[1::3] > clip).all() and (norms[2::3] < clip / 2).all())
    factor = (clip / (norms + 1e-6)).clamp(max=1.0)
    want = {k: torch.einsum("i,i...->...", factor, v) for k, v in per.items()}

    clipper = PerSampleClipper(model, clip, {id(model.a.weight): mask_a, id(model.head.weight): mask_head})
    clipper.recording = True
    logits = model(x)
    clipper.recording = False
    loss_sum = (w * F.cross_entropy(logits, y, reduction="none")).sum()
    got, got_norms = clipper.clipped_sums(loss_sum, b)
    clipper.remove()
    assert calls == [3]  # only the Linear on 3-D inputs goes through Opacus's sampler
    torch.testing.assert_close(got_norms.double(), norms, rtol=1e-5, atol=1e-9)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert len(got) == len(names)
    for name, grad_sum in zip(names, got):
        if name.startswith("unused."):
            assert torch.equal(grad_sum, torch.zeros_like(grad_sum)), name
        else:
            torch.testing.assert_close(grad_sum.double(), want[name], rtol=2e-5, atol=1e-10, msg=name)


def test_clipper_records_only_while_recording_and_survives_discard_and_remove():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(D, 4), nn.ReLU(), nn.Linear(4, C))
    x, y = torch.randn(6, D), torch.randint(0, C, (6,))
    clipper = PerSampleClipper(model, 1.0)
    model(x)  # e.g. an evaluation between steps: nothing recorded
    assert clipper._records == []
    clipper.recording = True
    model(x)
    clipper.discard()  # an empty Poisson batch forgets the forward; the next step records afresh
    logits = model(x)
    clipper.recording = False
    sums, norms = clipper.clipped_sums(F.cross_entropy(logits, y, reduction="sum"), 6)
    assert len(sums) == 4 and norms.shape == (6,) and bool((norms > 0).all())
    clipper.remove()
    clipper.remove()  # idempotent
    clipper.recording = True
    model(x)
    assert clipper._records == []


def test_a_clipper_with_nothing_trainable_returns_no_sums():
    model = nn.Linear(D, C)
    model.requires_grad_(False)
    clipper = PerSampleClipper(model, 1.0)
    assert clipper.params == []
    x = torch.randn(5, D, requires_grad=True)
    clipper.recording = True
    loss = model(x).sum()
    clipper.recording = False
    sums, norms = clipper.clipped_sums(loss, 5)
    assert sums == [] and torch.equal(norms, torch.zeros(5))


def test_layers_called_twice_or_modified_in_place_are_refused_by_type_name():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(C, C)

        def forward(self, x):
            return self.fc(self.fc(x))

    class InPlace(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(C, C)

        def forward(self, x):
            return self.fc(x).mul_(2.0)

    for model, message in (
        (Twice(), "dpsgd: Linear layer is called more than once in one forward; per-sample clipping needs every "
                  "trainable layer called once (use separate layers)"),
        (InPlace(), "dpsgd: the input or output of a Linear layer is modified in place during the forward; "
                    "per-sample gradients need it intact (use inplace=False)"),
    ):
        clipper = PerSampleClipper(model, 1.0)
        clipper.recording = True
        loss = model(torch.randn(4, C)).sum()
        with pytest.raises(ValueError) as info:
            clipper.clipped_sums(loss, 4)
        assert str(info.value) == message


def test_frozen_norm_module_passes_keywords_and_keeps_norms_in_eval():
    class Kw(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm1d(3)

        def forward(self, x, *, scale=1.0):
            return self.bn(x) * scale

    inner = Kw()
    wrapped = FrozenNormModule(inner, [inner.bn])
    assert wrapped.train() is wrapped
    assert wrapped.training is True and inner.training is True and inner.bn.training is False
    wrapped.train(False)
    assert wrapped.training is False and inner.training is False
    x = torch.randn(4, 3)
    torch.testing.assert_close(wrapped(x, scale=3.0), 3.0 * inner(x))
    # freeze_batchnorm freezes exactly the BatchNorm's own parameters
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    frozen = freeze_batchnorm(model)
    assert [len(params) for _, params in frozen] == [2]
    assert [p.requires_grad for p in model.parameters()] == [True, True, False, False]
