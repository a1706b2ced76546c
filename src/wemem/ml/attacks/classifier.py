"""Classifier attacks trained on pooled shadow in/out: NN, Top3-NN, CI-NN (MLP) and SAMIA
(a small Transformer over per-class tokens).

The family shares one training schema, :class:`AttackModelSettings` (conf:
``mia_evaluation.attack_model``, handed over as ``AttackContext.training``); SAMIA adds its own
:class:`SamiaSettings` (conf: ``mia_evaluation.samia``). Training keeps all data on the context's
device as tensors and draws batches by slicing a seeded permutation (no DataLoader).
Initialisation and dropout are seeded with the context's seed inside ``torch.random.fork_rng``
so the caller's global RNG state is left untouched. Members and non-members are balanced by
class weights in the cross-entropy loss.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch
from pydantic import model_validator
from torch import nn

from ..dropout import fast_dropout
from ..schema import NonNeg, Pos, PosInt, Section, Sparsity, fail
from .base import ATTACKS, AttackContext, AttackData, AttackResult, ModelOutputs, make_result, pooled_shadows

PREDICT_BATCH = 4096


# ---------------------------------------------------------------- settings
class AttackModelSettings(Section):
    """``mia_evaluation.attack_model``: how every classifier attack trains its attack model
    (defaults: SPEC §8)."""

    epochs: PosInt = 100
    lr: Pos = 1e-3
    momentum: NonNeg = 0.9
    weight_decay: NonNeg = 5e-4
    batch_size: PosInt = 128
    milestones: list[PosInt] = [50, 75]  # the learning rate drops ×0.1 at these epochs
    dropout: Sparsity = 0.2


class SamiaSettings(Section):
    """``mia_evaluation.samia``: the sensitivity signal (``n_draws`` perturbations of size
    ``eps``, computed with the model outputs) and the Transformer's shape."""

    n_draws: PosInt = 10
    eps: Pos = 1e-3
    width: PosInt = 64
    layers: PosInt = 3
    heads: PosInt = 4
    max_train: PosInt | None = None  # at most this many pooled shadow samples train the
    # Transformer (a seeded uniform subsample; None = all): its cost grows with samples × classes
    epochs: PosInt | None = None  # SAMIA's own epoch count (None: attack_model.epochs); the
    # learning-rate milestones are scaled with it

    @model_validator(mode="after")
    def _heads_divide_width(self) -> SamiaSettings:
        if self.width % self.heads:
            raise fail(f"width {self.width} is not divisible by heads {self.heads}",
                       "a width that is a multiple of heads")
        return self


# ---------------------------------------------------------------- features
def _onehot(labels: np.ndarray, c: int) -> np.ndarray:
    out = np.zeros((labels.shape[0], c), dtype=np.float32)
    out[np.arange(labels.shape[0]), labels] = 1.0
    return out


def nn_features(out: ModelOutputs) -> np.ndarray:
    """NN input: the softmax vector."""
    return np.asarray(out.probs, dtype=np.float32)


def top3_features(out: ModelOutputs) -> np.ndarray:
    """Top3-NN input: the 3 largest probabilities, sorted descending (fewer if C < 3)."""
    p = np.asarray(out.probs, dtype=np.float32)
    k = min(3, p.shape[1])
    return -np.sort(-p, axis=1)[:, :k]


def ci_features(out: ModelOutputs) -> np.ndarray:
    """CI-NN input: softmax ⊕ one-hot label."""
    p = np.asarray(out.probs, dtype=np.float32)
    return np.concatenate([p, _onehot(np.asarray(out.labels, dtype=np.int64), p.shape[1])], axis=1)


def samia_features(out: ModelOutputs) -> np.ndarray:
    """SAMIA input, (n, 3·C) laid out as C tokens (p_c, sensitivity_c, 1[y = c])."""
    if out.sensitivity is None:
        raise ValueError("SAMIA needs the sensitivity signal (ModelOutputs.sensitivity is None)")
    p = np.asarray(out.probs, dtype=np.float32)
    s = np.asarray(out.sensitivity, dtype=np.float32)
    oh = _onehot(np.asarray(out.labels, dtype=np.int64), p.shape[1])
    return np.stack([p, s, oh], axis=2).reshape(p.shape[0], -1)


# ---------------------------------------------------------------- models
class AttackMLP(nn.Module):
    """d → 512 → 256 → 128 → 2, ReLU + Dropout after each hidden layer."""

    def __init__(self, in_dim: int, dropout: float = 0.2):
        super().__init__()
        layers: list[nn.Module] = []
        dims = (in_dim, 512, 256, 128)
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.ReLU(), nn.Dropout(dropout)]
        layers.append(nn.Linear(dims[-1], 2))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PreLNBlock(nn.Module):
    """One pre-LayerNorm Transformer encoder layer (the layout of ``nn.TransformerEncoderLayer``
    with ``norm_first=True``, ReLU, feed-forward 2·width): x + drop(attn(LN(x))), then
    x + drop(ff(LN(x))), dropout also on the attention weights and inside the feed-forward.

    Written out (one fused QKV projection, attention by two batched matmuls, ``fast_dropout``:
    16-bit draws, where ``bernoulli_`` was a quarter of the step) because for SAMIA's tiny tokens
    torch's module spent most of its time outside the matmuls (``benchmarks/samia_speed.py``)."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        if width % heads:
            raise ValueError(f"SAMIA width {width} must be divisible by heads {heads}")
        self.heads, self.p = heads, dropout
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.ff1, self.ff2 = nn.Linear(width, 2 * width), nn.Linear(2 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, w = x.shape
        d = w // self.heads
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, d).permute(2, 0, 3, 1, 4)
        att = torch.softmax((q @ k.transpose(-1, -2)) * d**-0.5, dim=-1)
        att = fast_dropout(att, self.p, self.training)
        a = (att @ v).transpose(1, 2).reshape(b, t, w)
        x = x + fast_dropout(self.proj(a), self.p, self.training)
        h = fast_dropout(torch.relu(self.ff1(self.norm2(x))), self.p, self.training)
        return x + fast_dropout(self.ff2(h), self.p, self.training)


class SamiaTransformer(nn.Module):
    """C tokens of size 3 → linear embedding + learned per-class position embedding →
    ``layers`` pre-LayerNorm encoder blocks (pre-LN trained stably under SGD where post-LN
    sometimes collapsed to a constant output) → mean-pool → linear → 2."""

    def __init__(self, num_classes: int, width: int = 64, layers: int = 3, heads: int = 4,
                 dropout: float = 0.2):
        super().__init__()
        self.num_classes = num_classes
        self.embed = nn.Linear(3, width)
        self.position = nn.Parameter(torch.randn(num_classes, width) * 0.02)
        self.blocks = nn.ModuleList(PreLNBlock(width, heads, dropout) for _ in range(layers))
        self.head = nn.Linear(width, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x.view(x.shape[0], self.num_classes, 3)) + self.position
        for block in self.blocks:
            h = block(h)
        return self.head(h.mean(dim=1))


# ---------------------------------------------------------------- training
def _fork_devices(device: torch.device) -> list:
    if device.type == "cuda":
        return [device.index if device.index is not None else torch.cuda.current_device()]
    return []


def fit_attack_model(
    make_model: Callable[[], nn.Module], x: np.ndarray, y: np.ndarray, training: AttackModelSettings,
    *, device: str = "cpu", seed: int = 0,
) -> nn.Module:
    """Build ``make_model()`` and train it on features ``x`` (n, d) and member labels ``y``.

    SGD(momentum, weight decay), MultiStepLR ×0.1 at ``training.milestones``, class-weighted
    cross-entropy, ``training.epochs`` epochs of ``training.batch_size`` batches. Deterministic
    for a given ``seed`` on a given device.
    """
    device = torch.device(device)
    with torch.random.fork_rng(devices=_fork_devices(device)):
        torch.manual_seed(seed)
        model = make_model().to(device)
        xt = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32, device=device)
        yt = torch.as_tensor(np.asarray(y, dtype=np.int64), device=device)
        n = yt.shape[0]
        counts = torch.bincount(yt, minlength=2).to(torch.float32)
        weight = torch.where(counts > 0, n / (2.0 * counts.clamp(min=1)), torch.zeros_like(counts))
        loss_fn = nn.CrossEntropyLoss(weight=weight)
        opt = torch.optim.SGD(model.parameters(), lr=training.lr, momentum=training.momentum,
                              weight_decay=training.weight_decay)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(training.milestones), gamma=0.1)
        gen = torch.Generator(device=device)
        gen.manual_seed(seed)
        model.train()
        for _ in range(training.epochs):
            perm = torch.randperm(n, generator=gen, device=device)
            for i in range(0, n, training.batch_size):
                idx = perm[i : i + training.batch_size]
                opt.zero_grad(set_to_none=True)
                loss_fn(model(xt[idx]), yt[idx]).backward()
                opt.step()
            sched.step()
    model.eval()
    return model


@torch.no_grad()
def predict_member(model: nn.Module, x: np.ndarray, device: str) -> tuple[np.ndarray, np.ndarray]:
    """Member probability (softmax of class 1, computed in float64 from the logit gap so that it
    saturates late) and the argmax decision (ties → non-member)."""
    model.eval()
    xt = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32, device=torch.device(device))
    parts = []
    for i in range(0, xt.shape[0], PREDICT_BATCH):
        logits = model(xt[i : i + PREDICT_BATCH])
        parts.append(logits[:, 1] - logits[:, 0])
    gaps = torch.cat(parts).double().cpu().numpy()
    if not np.isfinite(gaps).all():
        warnings.warn(
            "attack model produced non-finite outputs (training diverged; lower the attack lr): "
            "those samples get score 0.5 and are predicted non-members",
            RuntimeWarning, stacklevel=2,
        )
        gaps = np.nan_to_num(gaps, nan=0.0, posinf=0.0, neginf=0.0)
    return 1.0 / (1.0 + np.exp(-gaps)), gaps > 0


def subsample(out: ModelOutputs, max_rows: int | None, seed: int) -> ModelOutputs:
    """At most ``max_rows`` rows of ``out``: a seeded uniform draw without replacement, kept in
    their original order (all rows when ``max_rows`` is None or not smaller)."""
    n = len(out)
    if max_rows is None or max_rows >= n:
        return out
    keep = np.sort(np.random.default_rng(seed).permutation(n)[:max_rows])
    sens = None if out.sensitivity is None else out.sensitivity[keep]
    return ModelOutputs(logits=out.logits[keep], labels=out.labels[keep], member=out.member[keep], sensitivity=sens)


def classifier_attack(
    name: str,
    data: AttackData,
    ctx: AttackContext,
    featurize: Callable[[ModelOutputs], np.ndarray],
    make_model: Callable[[int], nn.Module],
    max_train: int | None = None,
    epochs: int | None = None,
) -> AttackResult:
    """Train ``make_model(feature_dim)`` on the pooled shadows' features (at most ``max_train``
    of them, see :func:`subsample`), score the target."""
    sh = subsample(pooled_shadows(data), max_train, ctx.seed)
    x_sh = featurize(sh)
    model = fit_attack_model(lambda: make_model(x_sh.shape[1]), x_sh, sh.member, training_of(ctx, epochs),
                             device=ctx.device, seed=ctx.seed)
    scores, predictions = predict_member(model, featurize(data.target), ctx.device)
    return make_result(name, scores, predictions, data)


def training_of(ctx: AttackContext, epochs: int | None = None) -> AttackModelSettings:
    """The family's shared training settings of ``ctx`` (their defaults when it has none); with
    ``epochs``, that many epochs and the milestones scaled by the same factor (each at least 1)."""
    training = ctx.training if ctx.training is not None else AttackModelSettings()
    if epochs is None or epochs == training.epochs:
        return training
    ratio = epochs / training.epochs
    milestones = sorted({max(1, round(m * ratio)) for m in training.milestones})
    return training.model_copy(update={"epochs": epochs, "milestones": milestones})


def _mlp(ctx: AttackContext) -> Callable[[int], nn.Module]:
    return lambda d: AttackMLP(d, dropout=training_of(ctx).dropout)


@ATTACKS.register("nn", label="NN", family="classifier")
def nn_attack(data: AttackData, ctx: AttackContext) -> AttackResult:
    return classifier_attack("nn", data, ctx, nn_features, _mlp(ctx))


@ATTACKS.register("top3_nn", label="Top3-NN", family="classifier")
def top3_nn_attack(data: AttackData, ctx: AttackContext) -> AttackResult:
    return classifier_attack("top3_nn", data, ctx, top3_features, _mlp(ctx))


@ATTACKS.register("ci_nn", label="CI-NN", family="classifier")
def ci_nn_attack(data: AttackData, ctx: AttackContext) -> AttackResult:
    return classifier_attack("ci_nn", data, ctx, ci_features, _mlp(ctx))


@ATTACKS.register("samia", label="SAMIA", family="classifier", settings=SamiaSettings, needs=("sensitivity",))
def samia_attack(data: AttackData, ctx: AttackContext) -> AttackResult:
    c = int(data.target.probs.shape[1])
    s = ctx.settings if ctx.settings is not None else SamiaSettings()
    return classifier_attack(
        "samia", data, ctx, samia_features,
        lambda d: SamiaTransformer(c, width=s.width, layers=s.layers, heads=s.heads, dropout=training_of(ctx).dropout),
        max_train=s.max_train, epochs=s.epochs,
    )
