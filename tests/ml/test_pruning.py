"""Iterative pruning (SPEC §6): schedule, per-layer targets, structured rows, fixed masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wemem.ml.defenses import Base
from wemem.ml.models import build_model, prunable_modules
from wemem.ml.pruning import (
    PRUNING_METHODS,
    apply_masks,
    full_masks,
    global_sparsity,
    iterative_prune,
    layer_sparsity,
    masks_from_zeros,
    prune_step,
    sparsity_schedule,
)
from wemem.ml.train import TrainConfig, fit, to_tensors

TOL = 0.005  # SPEC: every layer within 0.5% of the schedule's target


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    n, d, c = 240, 12, 3
    centers = rng.normal(scale=2.0, size=(c, d))
    y = rng.integers(0, c, n)
    x = (centers[y] + rng.normal(size=(n, d))).astype(np.float32)
    xt, yt = to_tensors(x, y, torch.device("cpu"))
    return (xt[:160], yt[:160]), (xt[160:], yt[160:])


def _model(seed: int = 0):
    torch.manual_seed(seed)
    return build_model("column_fc", (12,), 3)  # hidden 256, 128: rows fine enough for 0.5%


def test_schedule_matches_spec():
    got = sparsity_schedule(0.6, 5)
    assert got == pytest.approx([0.0, 0.205, 0.368, 0.497, 0.6], abs=1e-3)
    assert got[0] == 0.0 and got[-1] == pytest.approx(0.6)
    assert sparsity_schedule(0.5, 1) == [0.5]


@pytest.mark.parametrize("bad", [(1.0, 5), (-0.1, 5), (0.5, 0), (0.5, 2.5)])
def test_schedule_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        sparsity_schedule(*bad)


def test_unknown_method_raises():
    with pytest.raises(ValueError, match="pruning method"):
        prune_step(_model(), None, "random", 0.3)


@pytest.mark.parametrize("method", PRUNING_METHODS)
def test_iterative_prune_hits_every_target_and_masks_hold(method, data):
    train, dev = data
    model = _model()
    seen_masks = []

    def finetune(m, k, masks):
        seen_masks.append({n: t.clone() for n, t in masks.items()})
        cfg = TrainConfig(epochs=1, patience=None, batch_size=64, progress=False, seed=k)
        return fit(m, train, dev, cfg, Base(masks=masks))

    records = iterative_prune(model, method=method, final_sparsity=0.6, n_iter=5, finetune=finetune)
    assert [r["iteration"] for r in records] == list(range(5))
    for rec in records:
        for name, achieved in rec["layer_sparsity"].items():
            assert abs(achieved - rec["target_sparsity"]) <= TOL, (name, rec)
        assert rec["history"] and rec["seconds"] >= 0
    # pruned weights never come back: each mask is a subset of the previous one
    for old, new in zip(seen_masks, seen_masks[1:]):
        for name in old:
            assert not (new[name] & ~old[name]).any()
    # the final model really contains the zeros of the final mask, and no prune hooks
    for name, module in prunable_modules(model):
        assert (module.weight[~seen_masks[-1][name]] == 0).all()
        assert not hasattr(module, "weight_orig") and not module._forward_pre_hooks
    assert global_sparsity(model) == pytest.approx(0.6, abs=TOL)


@pytest.mark.parametrize("method", ["l1_structured", "l2_structured"])
def test_structured_methods_zero_whole_rows(method):
    model = _model()
    masks = None
    for target in sparsity_schedule(0.6, 5):
        masks = prune_step(model, masks, method, target)
        for name, module in prunable_modules(model):
            w = module.weight.detach()
            zero_rows = (w == 0).all(dim=1)
            partly = (w == 0).any(dim=1) & ~zero_rows
            assert not partly.any(), name
            assert int(zero_rows.sum()) == round(target * w.shape[0])
            assert torch.equal(masks[name], ~zero_rows[:, None].expand_as(w))


def test_structured_uses_the_requested_norm():
    # rows with small L1 but large L2 norm separate the two structured methods
    model = _model()
    with torch.no_grad():
        w = model.fc2.weight
        w.fill_(0.1)
        w[:10] = 0.0
        w[:10, 0] = 2.0  # L1 = 2 (< 0.1·256 = 25.6), L2 = 2 (> 0.1·16 = 1.6)
    l1 = prune_step(_copy(model), None, "l1_structured", 10 / 128)["fc2"]
    l2 = prune_step(_copy(model), None, "l2_structured", 10 / 128)["fc2"]
    assert not l1[:10].any() and l1[10:].all()
    assert l2[:10].all()


def _copy(model):
    import copy

    return copy.deepcopy(model)


def test_l1_unstructured_prunes_smallest_magnitudes():
    model = _model()
    before = model.fc1.weight.detach().abs().clone()
    masks = prune_step(model, None, "l1_unstructured", 0.3)
    kept, pruned = before[masks["fc1"]], before[~masks["fc1"]]
    assert pruned.max() <= kept.min()


def test_apply_masks_and_sparsity_helpers():
    model = _model()
    masks = full_masks(model)
    assert layer_sparsity(model) == {"fc1": 0.0, "fc2": 0.0}
    masks["fc1"][:64] = False  # a quarter of fc1's rows
    apply_masks(model, masks)
    assert layer_sparsity(model)["fc1"] == pytest.approx(0.25)
    n1, n2 = model.fc1.weight.numel(), model.fc2.weight.numel()
    assert global_sparsity(model) == pytest.approx(0.25 * n1 / (n1 + n2))
    assert torch.equal(masks_from_zeros(model)["fc1"], masks["fc1"])
    assert model.fc3.weight.ne(0).all()  # the output layer is never pruned


def test_one_shot_is_a_single_step(data):
    train, dev = data
    model = _model()
    calls = []

    def finetune(m, k, masks):
        calls.append(k)
        return fit(m, train, dev, TrainConfig(epochs=1, progress=False), Base(masks=masks))

    records = iterative_prune(
        model, method="l1_unstructured", final_sparsity=0.6, n_iter=5, one_shot=True, finetune=finetune
    )
    assert calls == [0] and len(records) == 1
    assert records[0]["target_sparsity"] == pytest.approx(0.6)
    assert all(abs(v - 0.6) <= TOL for v in records[0]["layer_sparsity"].values())
