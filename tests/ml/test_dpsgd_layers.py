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

from .dp_helpers import C, D, dp_cfg, fc_model, make_data

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
