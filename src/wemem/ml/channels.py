"""Which BatchNorm directly normalises each prunable layer's output (for structured pruning).

Structured pruning removes an output channel of a convolution (or an output row of a linear
layer). Zeroing the channel's weights alone does not remove it: a bias, or a BatchNorm that
follows, still turns the all-zero channel into a constant (``β − γ·μ/σ`` after BatchNorm),
which the next layer sees like an extra bias. :mod:`wemem.ml.pruning` therefore also masks the
layer's own bias and the weight and bias (γ, β) of the BatchNorm that *directly* consumes the
layer's output, so the pruned channel is exactly zero after normalisation, in training and in
evaluation mode alike.

"Directly" is read off the model's ``torch.fx`` graph: a ``BatchNorm`` call whose input is the
layer's output and nothing else uses that output. In ResNet18 and VGG16-BN every convolution
has such a BatchNorm; in DenseNet121 the 1×1 bottleneck convolutions do, while the 3×3 growth
convolutions, the transition convolutions and the stem feed a concatenation, and their channels
reach later BatchNorms (one per later layer) at shifting offsets. Those BatchNorms are left
unmasked (SPEC §6): the pruned channel is exactly zero when it enters them and contributes at
most a constant to the layer after, carrying no information about the input.
"""

from __future__ import annotations

import torch.fx as fx
from torch import nn

__all__ = ["following_batchnorms"]

_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class _Tracer(fx.Tracer):
    """Treats modules with data-dependent control flow (e.g. the uint8 check of the image
    normalisation) as opaque leaves; only the layer → BatchNorm edges matter here."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if not any(True for _ in m.children()) and not isinstance(m, (*_LAYERS, *_NORMS)):
            return True
        return super().is_leaf_module(m, qualname)


def following_batchnorms(model: nn.Module, names: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``{layer name: BatchNorm name}`` for each layer in ``names`` whose output feeds one
    affine BatchNorm directly and only it, with matching channel counts.

    Raises:
        ValueError: the model cannot be traced by ``torch.fx`` (e.g. control flow on tensor
            values outside a leaf module); structured pruning needs the graph to find them.
    """
    modules = dict(model.named_modules())
    try:
        graph = _Tracer().trace(model)
    except Exception as err:  # fx raises several types; one message says what to do
        raise ValueError(
            f"structured pruning cannot trace {type(model).__name__} with torch.fx ({err}); "
            "use l1_unstructured for this model or make its forward traceable"
        ) from err
    wanted = set(names)
    found: dict[str, str] = {}
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), _NORMS):
            continue
        source = node.args[0] if node.args else None
        if not isinstance(source, fx.Node) or source.op != "call_module" or source.target not in wanted:
            continue
        norm, layer = modules[node.target], modules[source.target]
        if len(source.users) != 1 or not norm.affine:
            continue
        if norm.num_features != layer.weight.shape[0]:
            continue
        found[str(source.target)] = str(node.target)
    return found
