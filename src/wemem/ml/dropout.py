"""*16-bit dropout draws*: dropout masks from four 16-bit uniforms per 64-bit random number.

``torch.bernoulli_`` and ``torch.rand`` cost a generator call and a float conversion per unit;
here one ``random_`` call on int64 words gives four uniforms on the signed int16 scale, and a
unit is dropped when its uniform falls below ``round(p·2^16)`` (p = 0.1 → 0.100006). Used by the
memorisation ensemble (one generator per model) and by SAMIA's Transformer (torch's default
generator); measured in ``benchmarks/memscore_speed.py --ablation`` and ``benchmarks/samia_speed.py``.
"""

from __future__ import annotations

import torch

DROP_BITS = 16


def int16_uniforms(n: int, device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` uniform int16 values (four per 64-bit draw of ``generator``, torch's default if None)."""
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device)
    words.random_(-(2**63), 2**63 - 1, generator=generator)
    return words.view(torch.int16)[:n]


def keep_threshold(p: float) -> int:
    """A unit is kept when its int16 uniform is ``>=`` this (drop probability ``round(p·2^16)/2^16``)."""
    return round(p * 2**DROP_BITS) - 2 ** (DROP_BITS - 1)


def fast_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout of ``x`` with 16-bit draws from torch's default generator."""
    if not training or p <= 0.0:
        return x
    keep = int16_uniforms(x.numel(), x.device).view(x.shape) >= keep_threshold(p)
    return x * keep * (1.0 / (1.0 - p))
