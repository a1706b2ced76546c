"""Vectorised per-sample gradient clipping for DP-SGD (SPEC §7), and frozen BatchNorm.

One DP step with :class:`PerSampleClipper`:

1. forward with hooks that keep, for every module owning trainable parameters, its input
   activations ``a`` and its output tensor (only while ``recording``);
2. ``torch.autograd.grad`` of the *summed* loss with respect to those outputs only: row ``i`` of
   each backprop ``g`` is sample ``i``'s gradient, because no layer mixes samples (BatchNorm is
   frozen in evaluation mode, :func:`freeze_batchnorm`); no weight gradient is formed;
3. per-sample squared gradient norms, layer by layer:

   - ``nn.Linear`` on ``(B, in)`` inputs, *ghost norm*: sample ``i``'s weight gradient is the
     outer product ``g_i a_iᵀ``, so with a 0/1 pruning mask ``M`` its masked norm is
     ``‖g_i a_iᵀ ⊙ M‖² = Σ_jk g_ij² M_jk a_ik² = ((g ⊙ g) ⊙ ((a ⊙ a) Mᵀ)).sum(1)``
     (``‖g_i‖²·‖a_i‖²`` without a mask), plus ``‖g_i‖²`` for the bias; the ``B × out × in``
     tensor of per-sample gradients is never formed;
   - any other layer (Conv1d/2d/3d, GroupNorm, LayerNorm, InstanceNorm, Embedding, a Linear
     on inputs with more than two dimensions): Opacus's own per-layer grad samplers
     (``GradSampleModule.GRAD_SAMPLERS``) materialise that layer's per-sample gradients,
     which are masked, then normed;

4. clip factors ``c_i = min(1, C / (‖∇_i‖ + 1e-6))`` (Opacus's formula);
5. the clipped sums: ``((c ⊙ g)ᵀ a) ⊙ M`` and ``Σ_i c_i g_i`` for a Linear's weight and bias,
   ``Σ_i c_i ∇_i`` for sampled layers.

Per-sample gradients of pruned weights are thus zeroed before clipping, as Opacus's hooks mode
with the masks applied to ``grad_sample`` did; the results agree with it (tests/ml/test_dpsgd.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["FrozenNormModule", "PerSampleClipper", "freeze_batchnorm"]


def _grad_samplers() -> dict[type, object]:
    from opacus.grad_sample import GradSampleModule  # importing the package registers the samplers

    return GradSampleModule.GRAD_SAMPLERS


def freeze_batchnorm(model: nn.Module) -> list[tuple[nn.Module, list[tuple[nn.Parameter, bool]]]]:
    """Puts every BatchNorm layer of ``model`` in evaluation mode and freezes its affine parameters.

    Returns what :func:`unfreeze_batchnorm` needs to restore ``requires_grad``. In evaluation mode
    a BatchNorm layer is a fixed per-channel affine map (running statistics, which no longer
    change), so a sample's gradient no longer depends on the other samples of its batch.
    """
    frozen = []
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            params = [(p, p.requires_grad) for p in module.parameters(recurse=False)]
            for p, _ in params:
                p.requires_grad_(False)
            module.eval()
            frozen.append((module, params))
    return frozen


def unfreeze_batchnorm(frozen: list[tuple[nn.Module, list[tuple[nn.Parameter, bool]]]], training: bool) -> None:
    """Undoes :func:`freeze_batchnorm`: the parameters' ``requires_grad`` and the layers' mode."""
    for module, params in frozen:
        for p, requires in params:
            p.requires_grad_(requires)
        module.train(training)


class FrozenNormModule(nn.Module):
    """``model`` seen through a wrapper whose ``train()`` keeps the given norm layers in eval mode
    (``fit`` calls ``train()`` at the start of every epoch)."""

    def __init__(self, model: nn.Module, norms: list[nn.Module]) -> None:
        super().__init__()
        self.inner = model
        self._norms = tuple(norms)

    def forward(self, *args, **kwargs):
        return self.inner(*args, **kwargs)

    def train(self, mode: bool = True) -> FrozenNormModule:
        self.training = mode
        self.inner.train(mode)
        for module in self._norms:
            module.eval()
        return self


@dataclass
class _Record:
    module: nn.Module
    sampler: object  # None: ghost-norm Linear
    a: torch.Tensor
    out: torch.Tensor
    versions: tuple[int, int]


class PerSampleClipper:
    """Per-sample clipped gradient sums of ``model``'s trainable parameters (see the module doc).

    Args:
        model: the network; every module owning a trainable parameter must be called once per
            forward and be a Linear or a type with an Opacus grad sampler.
        clip: the clipping norm C.
        masks: ``{id(parameter): 0/1 float mask}`` of pruned weights.

    Raises:
        ValueError: a trainable module has no per-sample gradient rule (names it).
    """

    def __init__(self, model: nn.Module, clip: float, masks: Mapping[int, torch.Tensor] | None = None) -> None:
        self.clip = float(clip)
        self.masks = dict(masks or {})
        samplers = _grad_samplers()
        self._kind: dict[nn.Module, object] = {}
        self.params: list[nn.Parameter] = []
        for name, module in model.named_modules():
            own = [p for p in module.parameters(recurse=False) if p.requires_grad]
            if not own:
                continue
            if type(module) not in samplers:
                raise ValueError(
                    f"dpsgd: module {name!r} ({type(module).__name__}) has trainable parameters but no per-sample "
                    f"gradient rule; DP-SGD supports Linear, Conv1d/2d/3d, GroupNorm, LayerNorm, InstanceNorm and "
                    f"Embedding layers (BatchNorm is frozen); replace or freeze that layer"
                )
            self._kind[module] = None if type(module) is nn.Linear else samplers[type(module)]
            self.params.extend(own)
        self._linear_sampler = samplers[nn.Linear]
        self._records: list[_Record] = []
        self.recording = False
        self._handles = [m.register_forward_hook(self._hook) for m in self._kind]

    def _hook(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if not self.recording:
            return
        a = inputs[0].detach()
        self._records.append(_Record(module, self._kind[module], a, output, (a._version, output._version)))

    def remove(self) -> None:
        """Removes the forward hooks (idempotent)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._records = []

    def discard(self) -> None:
        """Forgets what the last forward recorded."""
        self._records = []

    def _checked_records(self) -> list[_Record]:
        records, self._records = self._records, []
        seen = set()
        for r in records:
            if r.module in seen:
                raise ValueError(
                    f"dpsgd: {type(r.module).__name__} layer is called more than once in one forward; "
                    f"per-sample clipping needs every trainable layer called once (use separate layers)"
                )
            seen.add(r.module)
            if (r.a._version, r.out._version) != r.versions:
                raise ValueError(
                    f"dpsgd: the input or output of a {type(r.module).__name__} layer is modified in place "
                    f"during the forward; per-sample gradients need it intact (use inplace=False)"
                )
        return records

    def clipped_sums(self, loss_sum: torch.Tensor, batch: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``(Σ_i clip(∇_i) per parameter of self.params, per-sample norms ‖∇_i‖)``.

        ``loss_sum`` is the *sum* over the batch of the per-sample losses of the recorded forward.
        """
        records = self._checked_records()
        outs = [r.out for r in records]
        backprops = torch.autograd.grad(loss_sum, outs, allow_unused=True) if outs else []
        sq = torch.zeros(batch, device=loss_sum.device, dtype=torch.float32)
        work = []  # (record, backprop, per-sample grads or None)
        for r, g in zip(records, backprops):
            if g is None:
                continue
            g = g.detach().float()
            module = r.module
            if r.sampler is None and r.a.dim() == 2:
                a = r.a.float()
                g2 = g * g
                if module.weight.requires_grad:
                    mask = self.masks.get(id(module.weight))
                    if mask is None:
                        sq += g2.sum(1) * (a * a).sum(1)
                    else:
                        sq += (g2 * ((a * a) @ mask.t())).sum(1)
                if module.bias is not None and module.bias.requires_grad:
                    sq += g2.sum(1)
                work.append((r, g, None))
                continue
            sampler = r.sampler or self._linear_sampler
            per_sample = {}
            for p, s in sampler(module, [r.a], g).items():
                if not p.requires_grad:
                    continue
                mask = self.masks.get(id(p))
                s = s.float() if mask is None else s.float() * mask
                sq += s.reshape(batch, -1).pow(2).sum(1)
                per_sample[p] = s
            work.append((r, g, per_sample))
        norms = sq.sqrt()
        factor = (self.clip / (norms + 1e-6)).clamp(max=1.0)
        sums: dict[int, torch.Tensor] = {}
        for r, g, per_sample in work:
            if per_sample is None:
                module = r.module
                cg = g * factor[:, None]
                if module.weight.requires_grad:
                    w = cg.t() @ r.a.float()
                    mask = self.masks.get(id(module.weight))
                    sums[id(module.weight)] = w if mask is None else w * mask
                if module.bias is not None and module.bias.requires_grad:
                    sums[id(module.bias)] = cg.sum(0)
            else:
                for p, s in per_sample.items():
                    sums[id(p)] = torch.einsum("i,i...->...", factor, s)
        grads = [sums[id(p)] if id(p) in sums else torch.zeros_like(p) for p in self.params]
        return grads, norms
