"""Structured pruning of convolutions (SPEC §6): which channels go, their bias and BatchNorm,
and the three image models pruned to 50/60/70% in five iterations.

"Exact" for structured pruning: a layer's units are its output channels, so after step k every
prunable layer has exactly ``round(target_k · C_out)`` all-zero output channels and no
partially zeroed one; its weight sparsity is that count / C_out (the schedule's target up to
half a channel), and the model's global sparsity is the weight-averaged layer sparsities.
"""

from __future__ import annotations


import pytest
import torch
from torch import nn

from wemem.ml.channels import following_batchnorms
from wemem.ml.defenses import Base
from wemem.ml.models import build_model, prunable_modules
from wemem.ml.pruning import apply_masks, layer_sparsity, masked_parameters, prune_step, sparsity_schedule
from wemem.ml.train import TrainConfig, fit


pytestmark = pytest.mark.usefixtures("one_thread")


class TinyConv(nn.Module):
    """conv (2→4, 2×2, bias) → BN → ReLU → 1×1 conv → pooled logits; only ``conv`` is pruned."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 2, bias=True)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Conv2d(4, 3, 1)
        self.prunable = ("conv",)
        with torch.no_grad():
            w = torch.zeros(4, 2, 2, 2)
            w[0] = 0.5  # L1 = 4.0, L2 = 1.414
            w[1] = 0.01
            w[1, 0, 0, 0] = 3.0  # L1 = 3.07, L2 = 3.0001
            w[2] = 1.0  # L1 = 8.0, L2 = 2.828
            w[3] = 0.1  # L1 = 0.8, L2 = 0.283
            self.conv.weight.copy_(w)
            self.conv.bias.fill_(0.7)
            self.bn.weight.fill_(1.5)
            self.bn.bias.fill_(0.3)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).mean(dim=(2, 3))


@pytest.mark.parametrize(
    "method, pruned",
    [
        ("l1_structured", [1, 3]),  # two smallest L1 norms: 0.8 (ch 3), 3.07 (ch 1)
        ("l2_structured", [0, 3]),  # two smallest L2 norms: 0.283 (ch 3), 1.414 (ch 0)
    ],
)
def test_hand_computed_channels_bias_and_batchnorm(method, pruned):
    # catches: the wrong norm or dim, the bias or BN left alive (channel would emit a constant)
    model = TinyConv()
    masks = prune_step(model, None, method, 0.5)
    kept = [c for c in range(4) if c not in pruned]
    w = model.conv.weight.detach()
    assert (w[pruned] == 0).all() and (w[kept] != 0).any(dim=(1, 2, 3)).all()
    for key in ("conv.bias", "bn.weight", "bn.bias"):
        assert masks[key].tolist() == [c in kept for c in range(4)], key
    assert (model.conv.bias[pruned] == 0).all() and (model.conv.bias[kept] == 0.7).all()
    assert (model.bn.weight[pruned] == 0).all() and (model.bn.bias[pruned] == 0).all()
    assert layer_sparsity(model) == {"conv": 0.5}
    x = torch.randn(5, 2, 6, 6, generator=torch.Generator().manual_seed(0))
    for train in (True, False):
        model.train(train)
        out = model.features(x)
        assert (out[:, pruned] == 0).all() and (out[:, kept] != 0).any()


def test_unit_masks_survive_training_and_later_steps():
    # catches: bias/BN masks dropped by the next step or refilled by Adam during fine-tuning
    torch.manual_seed(0)
    model = TinyConv()
    masks = prune_step(model, None, "l1_structured", 0.25)  # channel 3 only
    x = torch.randn(32, 2, 6, 6, generator=torch.Generator().manual_seed(1))
    y = torch.arange(32) % 3
    fit(model, (x, y), (x, y), TrainConfig(epochs=2, batch_size=8, progress=False), Base(masks=masks))
    assert model.bn.bias[3] == 0 and model.bn.weight[3] == 0 and model.conv.bias[3] == 0
    assert model.bn.bias[:3].ne(0.3).any()  # the kept channels did train
    masks = prune_step(model, masks, "l1_structured", 0.5)
    assert masks["bn.bias"][3].item() is False and int((~masks["bn.bias"]).sum()) == 2


def test_masked_parameters_names_the_bad_key():
    # catches: a mask for another architecture silently ignored
    model = TinyConv()
    with pytest.raises(ValueError, match="'nope.bias' matches no module or parameter of TinyConv"):
        masked_parameters(model, {"nope.bias": torch.ones(4, dtype=torch.bool)})
    with pytest.raises(ValueError, match="mask of bn.bias has shape"):
        apply_masks(model, {"bn.bias": torch.ones(3, dtype=torch.bool)})


def _image_model(arch: str) -> nn.Module:
    torch.manual_seed(0)
    kwargs = {"growth": 8, "blocks": (2, 2, 2, 2)} if arch == "densenet121" else {}
    return build_model(arch, (3, 8, 8), 10, **kwargs)


@pytest.mark.parametrize("arch, direct", [("resnet18", 20), ("vgg16_bn", 13), ("densenet121", 8)])
def test_every_direct_batchnorm_is_found(arch, direct):
    # catches: the fx walk missing a conv→BN edge (ResNet/VGG: every conv has one; the small
    # DenseNet: its 8 bottleneck convs, not the growth/transition/stem convs that feed a concat)
    model = _image_model(arch)
    names = [n for n, _ in prunable_modules(model)]
    found = following_batchnorms(model, names)
    assert len(found) == direct
    modules = dict(model.named_modules())
    for conv, bn in found.items():
        assert modules[bn].num_features == modules[conv].out_channels


@pytest.mark.parametrize("arch", ["resnet18", "vgg16_bn", "densenet121"])
@pytest.mark.parametrize("final", [0.5, 0.6, 0.7])
@pytest.mark.parametrize("method", ["l1_structured", "l2_structured"])
def test_image_models_pruned_exactly_in_five_iterations(arch, final, method):
    # catches: cumulative vs incremental amounts (over-pruning), partial channels, pruned
    # channels coming back, BN of a pruned channel left alive
    model = _image_model(arch)
    gen = torch.Generator().manual_seed(1)
    masks = None
    for target in sparsity_schedule(final, 5):
        masks = prune_step(model, masks, method, target)
        achieved = layer_sparsity(model)
        for name, module in prunable_modules(model):
            mask = masks[name].reshape(module.weight.shape[0], -1)
            gone = ~mask.any(dim=1)
            assert (mask.all(dim=1) | gone).all(), name  # whole channels only
            assert int(gone.sum()) == round(target * mask.shape[0]), (name, target)
            assert (module.weight.detach().reshape(mask.shape)[gone] == 0).all(), name
            # 1e-5: the random "fine-tuning" below can land a kept weight on an exact 0.0
            assert achieved[name] == pytest.approx(int(gone.sum()) / mask.shape[0], abs=1e-5)
        with torch.no_grad():  # stand-in for fine-tuning: move every parameter, then re-mask
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * 0.01)
        apply_masks(model, masks)
    modules = dict(model.named_modules())
    for conv, bn in following_batchnorms(model, [n for n, _ in prunable_modules(model)]).items():
        gone = ~masks[conv].reshape(masks[conv].shape[0], -1).any(dim=1)
        assert gone.any() and (modules[bn].weight[gone] == 0).all() and (modules[bn].bias[gone] == 0).all()
    # the classifier is never pruned
    assert all(n not in masks for n in ("linear", "classifier"))
