"""Model zoo: ColumnFC for tabular data, CIFAR variants of ResNet18, VGG16-BN and DenseNet121.

Every model takes the raw stored features: tabular models take float features, image models
take ``uint8`` NCHW images (or floats already scaled to [0, 1]) and normalise them inside
``forward`` with buffers holding the dataset's per-channel mean and std. Data can therefore
stay compact (uint8) and resident on the device, and every consumer (training, memorisation,
attacks) feeds the same arrays.

Each model lists the names of its prunable modules in ``prunable`` (SPEC §6: for ColumnFC the
two hidden layers, never the output layer; for image models every convolution and every linear
layer except the classifier).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from wemem.ml.registry import Registry

__all__ = [
    "ColumnFC",
    "ResNet18",
    "VGG16BN",
    "DenseNet121",
    "MODELS",
    "build_model",
    "prunable_modules",
]


class ColumnFC(nn.Module):
    """in → 256 → ReLU → Dropout → 128 → ReLU → Dropout → classes (SPEC §3)."""

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        hidden: Sequence[int] = (256, 128),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        h1, h2 = hidden
        self.fc1 = nn.Linear(in_features, h1)
        self.fc2 = nn.Linear(h1, h2)
        self.fc3 = nn.Linear(h2, num_classes)
        self.dropout = nn.Dropout(dropout)
        self.prunable = ("fc1", "fc2")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        x = self.dropout(F.relu(self.fc1(x)))
        x = self.dropout(F.relu(self.fc2(x)))
        return self.fc3(x)


class _ImageNorm(nn.Module):
    """Converts uint8 images to floats and normalises them per channel."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        return (x - self.mean) / self.std


def _conv_prunables(model: nn.Module, classifier: str) -> tuple[str, ...]:
    return tuple(
        name
        for name, module in model.named_modules()
        if isinstance(module, (nn.Conv2d, nn.Linear)) and name != classifier
    )


class _BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """CIFAR ResNet18: 3×3 stride-1 stem, no max-pool."""

    def __init__(
        self, num_classes: int, mean: Sequence[float], std: Sequence[float], in_channels: int = 3
    ) -> None:
        super().__init__()
        self.norm = _ImageNorm(mean, std)
        self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        layers, in_planes = [], 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers.append(
                nn.Sequential(_BasicBlock(in_planes, planes, stride), _BasicBlock(planes, planes, 1))
            )
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.linear = nn.Linear(512, num_classes)
        self.prunable = _conv_prunables(self, "linear")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(self.norm(x))))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG16BN(nn.Module):
    """CIFAR VGG16 with batch norm and a single linear classifier."""

    def __init__(
        self, num_classes: int, mean: Sequence[float], std: Sequence[float], in_channels: int = 3
    ) -> None:
        super().__init__()
        self.norm = _ImageNorm(mean, std)
        layers: list[nn.Module] = []
        channels = in_channels
        for v in _VGG16:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                channels = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(512, num_classes)
        self.prunable = _conv_prunables(self, "classifier")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.norm(x)).flatten(1))


class _DenseLayer(nn.Module):
    def __init__(self, in_planes: int, growth: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, 4 * growth, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([out, x], 1)


class _Transition(nn.Module):
    def __init__(self, in_planes: int, out_planes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_planes)
        self.conv = nn.Conv2d(in_planes, out_planes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


class DenseNet121(nn.Module):
    """CIFAR DenseNet121 (growth 32, blocks 6-12-24-16, compression 0.5, 3×3 stem)."""

    def __init__(
        self,
        num_classes: int,
        mean: Sequence[float],
        std: Sequence[float],
        in_channels: int = 3,
        growth: int = 32,
        blocks: Sequence[int] = (6, 12, 24, 16),
    ) -> None:
        super().__init__()
        self.norm = _ImageNorm(mean, std)
        planes = 2 * growth
        self.conv1 = nn.Conv2d(in_channels, planes, 3, padding=1, bias=False)
        stages: list[nn.Module] = []
        for i, n in enumerate(blocks):
            stage = [ _DenseLayer(planes + j * growth, growth) for j in range(n) ]
            planes += n * growth
            if i < len(blocks) - 1:
                out = planes // 2
                stage.append(_Transition(planes, out))
                planes = out
            stages.append(nn.Sequential(*stage))
        self.dense = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(planes)
        self.linear = nn.Linear(planes, num_classes)
        self.prunable = _conv_prunables(self, "linear")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.dense(self.conv1(self.norm(x)))
        out = F.adaptive_avg_pool2d(F.relu(self.bn(out)), 1).flatten(1)
        return self.linear(out)


def _tabular(cls: type[nn.Module]) -> Callable[..., nn.Module]:
    def make(input_shape: Sequence[int], num_classes: int, **kwargs) -> nn.Module:
        if len(input_shape) != 1:
            raise ValueError(
                f"{cls.__name__} takes flat feature vectors, got input shape {tuple(input_shape)}; "
                "choose an image model (resnet18, vgg16_bn, densenet121) for image data"
            )
        return cls(int(input_shape[0]), num_classes, **kwargs)

    return make


def _image(cls: type[nn.Module]) -> Callable[..., nn.Module]:
    def make(
        input_shape: Sequence[int],
        num_classes: int,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        **kwargs,
    ) -> nn.Module:
        if len(input_shape) != 3:
            raise ValueError(
                f"{cls.__name__} takes C×H×W images, got input shape {tuple(input_shape)}; "
                "choose column_fc for tabular data"
            )
        channels = int(input_shape[0])
        mean = tuple(mean) if mean is not None else (0.5,) * channels
        std = tuple(std) if std is not None else (0.5,) * channels
        return cls(num_classes, mean, std, in_channels=channels, **kwargs)

    return make


MODELS = Registry("model")
"""name → factory ``(input_shape, num_classes, **kwargs) -> nn.Module``."""
MODELS.register("column_fc", label="ColumnFC", family="tabular")(_tabular(ColumnFC))
MODELS.register("resnet18", label="ResNet18", family="image")(_image(ResNet18))
MODELS.register("vgg16_bn", label="VGG16-BN", family="image")(_image(VGG16BN))
MODELS.register("densenet121", label="DenseNet121", family="image")(_image(DenseNet121))


def build_model(arch: str, input_shape: Sequence[int], num_classes: int, **kwargs) -> nn.Module:
    """Builds a model by registry name.

    Args:
        arch: one of :data:`MODELS` (``column_fc``, ``resnet18``, ``vgg16_bn``, ``densenet121``).
        input_shape: shape of one sample (``(d,)`` or ``(C, H, W)``).
        num_classes: number of output classes.
        **kwargs: architecture options (``mean``/``std`` for image models, ``hidden``/``dropout``
            for ColumnFC).
    """
    return MODELS[arch].obj(input_shape, num_classes, **kwargs)


def prunable_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The (name, module) pairs that pruning acts on, as declared by the model."""
    names = getattr(model, "prunable", None)
    if names is None:
        raise ValueError(f"{type(model).__name__} declares no prunable layers")
    modules = dict(model.named_modules())
    return [(name, modules[name]) for name in names]
