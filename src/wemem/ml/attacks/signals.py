"""Per-sample membership signals computed from a model's outputs.

Every function is vectorised over samples and takes ``probs`` (softmax, derived from the stored
float32 logits) or ``logits`` of shape (n, C) and, where the signal depends on the label,
``labels`` of shape (n,). LiRA's logit confidence is computed from the logits directly.
"""

from __future__ import annotations

import numpy as np
import torch

#: probabilities are clipped to [PROB_EPS, 1 - PROB_EPS] before taking logs
PROB_EPS = 1e-7


def true_class_prob(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Probability the model gives to each sample's true class, shape (n,)."""
    probs = np.asarray(probs)
    labels = np.asarray(labels, dtype=np.int64)
    return np.take_along_axis(probs, labels[:, None], axis=1)[:, 0]


def entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy ``-sum_c p_c log p_c`` of each row (natural log; 0 log 0 = 0), shape (n,)."""
    p = np.asarray(probs, dtype=np.float64)
    logp = np.log(np.clip(p, PROB_EPS, None))
    return -(p * logp).sum(axis=1)


def modified_entropy(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Song & Mittal's modified entropy, shape (n,).

    ``Mentr(p, y) = -(1 - p_y) log(p_y) - sum_{c != y} p_c log(1 - p_c)``; it is 0 for a
    confident correct prediction and grows with both uncertainty and confident mistakes.
    """
    p = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    log_p = np.log(np.clip(p, PROB_EPS, None))
    log_1mp = np.log(np.clip(1.0 - p, PROB_EPS, None))
    onehot = np.zeros_like(p, dtype=bool)
    onehot[np.arange(p.shape[0]), labels] = True
    terms = np.where(onehot, -(1.0 - p) * log_p, -p * log_1mp)
    return terms.sum(axis=1)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis of ``logits`` (..., C), computed in float64 (stable: the row
    maximum is subtracted first)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _true_and_rest(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``z_y``, ``logsumexp_{c != y} z_c`` and ``logsumexp_c z_c`` (float64) for logits of shape
    (..., n, C) with labels (n,)."""
    z = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    idx = np.broadcast_to(labels[:, None], z.shape[:-1] + (1,))
    zy = np.take_along_axis(z, idx, axis=-1)[..., 0]
    others = z.copy()
    np.put_along_axis(others, idx, -np.inf, axis=-1)
    m = z.max(axis=-1)
    # the other classes get their own maximum: shifted by the true class's logit they would
    # underflow to log(0) once z_y leads them by more than ~745
    m_rest = others.max(axis=-1)
    m_rest = np.where(np.isfinite(m_rest), m_rest, 0.0)  # no other class (C = 1): rest = log 0 = −inf
    with np.errstate(divide="ignore"):
        rest = m_rest + np.log(np.exp(others - m_rest[..., None]).sum(axis=-1))
    total = m + np.log(np.exp(z - m[..., None]).sum(axis=-1))
    return zy, rest, total


def logit_confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """LiRA's logit-scaled confidence ``log(p_y / (1 - p_y)) = z_y - logsumexp_{c != y} z_c``,
    computed from the logits in float64 (no clipping: it stays resolved where the softmax
    saturates at 1). ``logits`` may carry leading model axes: (..., n, C) with ``labels`` (n,)."""
    zy, rest, _ = _true_and_rest(logits, labels)
    return zy - rest


def true_class_log_prob(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``log p_y = z_y - logsumexp_c z_c`` (float64) for logits (..., n, C), labels (n,)."""
    zy, _, total = _true_and_rest(logits, labels)
    return zy - total


@torch.no_grad()
def compute_sensitivity(
    model: torch.nn.Module,
    x: torch.Tensor,
    n_draws: int = 10,
    eps: float = 1e-3,
    seed: int = 0,
    batch_size: int = 1024,
) -> torch.Tensor:
    """SAMIA sensitivity signal, shape (n, C).

    Mean over ``n_draws`` draws of ``|softmax(f(x + eps*u)) - softmax(f(x))| / eps`` with
    ``u ~ N(0, I)`` drawn from a ``torch.Generator`` seeded with ``seed`` on ``x``'s device.
    Draw ``d`` uses one noise tensor of ``x``'s full shape, so the result does not depend on
    ``batch_size`` (which only bounds the forward-pass memory). The model is evaluated in eval
    mode without gradients; its previous train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    try:
        gen = torch.Generator(device=x.device)
        gen.manual_seed(int(seed))
        n = x.shape[0]
        base = torch.cat(
            [torch.softmax(model(x[i : i + batch_size]), dim=1) for i in range(0, n, batch_size)]
        )
        total = torch.zeros_like(base)
        for _ in range(n_draws):
            noise = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
            for i in range(0, n, batch_size):
                xb = x[i : i + batch_size] + eps * noise[i : i + batch_size]
                total[i : i + batch_size] += (
                    torch.softmax(model(xb), dim=1) - base[i : i + batch_size]
                ).abs()
        return total / (n_draws * eps)
    finally:
        model.train(was_training)
