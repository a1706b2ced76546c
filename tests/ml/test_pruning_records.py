"""Pruning's records, masks and refusals by hand (issue 17: gaps the mutation run found)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
import torch

from wemem.ml.models import build_model
from wemem.ml.pruning import (
    full_masks,
    iterative_prune,
    mask_sparsity,
    masked_parameters,
    prune_step,
    sparsity_schedule,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _model(seed: int = 0):
    torch.manual_seed(seed)
    return build_model("column_fc", (12,), 3)  # fc1 256×12, fc2 128×256, fc3 (never pruned)


def test_iterative_prune_records_every_field_of_the_fine_tuning_result():
    """Each record: its iteration, the schedule's target, the achieved layer and global
    sparsity, and the fine-tuning result's history, best epoch, best dev accuracy, epochs run and
    the strategy's summary; a fine-tuning that returns None gives empty/None fields."""
    model = _model()
    calls = []

    def finetune(m, k, masks):
        calls.append((k, {n: int((~t).sum()) for n, t in masks.items()}))
        if k == 1:
            return None
        return SimpleNamespace(history=[{"epoch": 0, "k": k}], best_epoch=k + 1, best_dev_acc=0.5 + k / 10,
                               epochs_run=3 * k + 1, extra={"noise": k})

    t0 = time.perf_counter()
    records = iterative_prune(model, method="l1_unstructured", final_sparsity=0.75, n_iter=3, finetune=finetune)
    elapsed = time.perf_counter() - t0
    schedule = [0.0, 0.5, 0.75]  # 1 − 0.25^(k/2)
    assert [c[0] for c in calls] == [0, 1, 2]
    assert [c[1]["fc1"] for c in calls] == [0, 1536, 2304]  # 256·12 weights · target
    assert [c[1]["fc2"] for c in calls] == [0, 16384, 24576]  # 128·256 · target
    assert [set(r) for r in records] == [{
        "iteration", "target_sparsity", "layer_sparsity", "global_sparsity", "history", "best_epoch",
        "best_dev_acc", "epochs_run", "summary", "seconds"}] * 3
    for k, (rec, target) in enumerate(zip(records, schedule)):
        assert rec["iteration"] == k and rec["target_sparsity"] == pytest.approx(target)
        assert rec["layer_sparsity"] == {"fc1": pytest.approx(target), "fc2": pytest.approx(target)}
        assert rec["global_sparsity"] == pytest.approx(target)
        assert 0 <= rec["seconds"] <= elapsed
    assert (records[0]["history"], records[0]["best_epoch"], records[0]["best_dev_acc"], records[0]["epochs_run"],
            records[0]["summary"]) == ([{"epoch": 0, "k": 0}], 1, 0.5, 1, {"noise": 0})
    assert (records[2]["best_epoch"], records[2]["best_dev_acc"], records[2]["epochs_run"], records[2]["summary"]) == (
        3, pytest.approx(0.7), 7, {"noise": 2})
    assert (records[1]["history"], records[1]["best_epoch"], records[1]["best_dev_acc"], records[1]["epochs_run"],
            records[1]["summary"]) == ([], None, None, None, {})


def test_iterative_prune_starts_from_given_masks_and_refuses_bad_settings_first():
    """Masks handed in stay pruned (a row pruned before stays zero even where its weights are
    large); an unknown method or a sparsity of 1 is refused before anything is pruned."""
    model = _model()
    with torch.no_grad():
        model.fc1.weight[0] = 100.0  # the largest weights: magnitude pruning alone keeps them
    masks = full_masks(model)
    masks["fc1"][0] = False
    seen = []
    iterative_prune(model, method="l1_unstructured", final_sparsity=0.5, n_iter=1, masks=masks,
                    finetune=lambda m, k, ms: seen.append(ms["fc1"].clone()))
    assert not seen[0][0].any() and (model.fc1.weight[0] == 0).all()
    assert int((~seen[0]).sum()) == 1536  # the given row counts towards the 50%
    before = {k: v.clone() for k, v in _model(1).state_dict().items()}
    for kwargs in ({"method": "random", "final_sparsity": 0.5}, {"method": "l1_unstructured", "final_sparsity": 1.0}):
        m = _model(1)
        with pytest.raises(ValueError):
            iterative_prune(m, n_iter=2, finetune=lambda *a: pytest.fail("fine-tuned"), **kwargs)
        assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def test_one_shot_checks_its_sparsity_and_ignores_the_schedule():
    model = _model()
    recs = iterative_prune(model, method="l1_unstructured", final_sparsity=0.3, n_iter=4, one_shot=True,
                           finetune=lambda *a: None)
    assert [r["target_sparsity"] for r in recs] == [pytest.approx(0.3)]
    with pytest.raises(ValueError, match=r"^final_sparsity=-0\.1 is not a sparsity"):
        iterative_prune(_model(), method="l1_unstructured", final_sparsity=-0.1, n_iter=4, one_shot=True,
                        finetune=lambda *a: None)


def test_prune_step_keeps_the_old_mask_when_the_target_is_already_met():
    model = _model()
    masks = prune_step(model, None, "l1_unstructured", 0.5)
    again = prune_step(model, masks, "l1_unstructured", 0.25)  # below what is pruned: nothing changes
    assert all(torch.equal(masks[k], again[k]) for k in masks)
    same = prune_step(model, masks, "l1_unstructured", 0.5)
    assert all(torch.equal(masks[k], same[k]) for k in masks)
    assert int((~prune_step(_model(), None, "l1_unstructured", 0.0)["fc1"]).sum()) == 0
    with pytest.raises(ValueError, match="mask of fc1 has shape"):
        prune_step(_model(), {"fc1": torch.ones(3, 3, dtype=torch.bool)}, "l1_unstructured", 0.5)
    with pytest.raises(ValueError, match=r"target=1\.0 is not a sparsity"):
        prune_step(_model(), None, "l1_unstructured", 1.0)


def test_structured_step_counts_rows_already_pruned():
    """Rows pruned earlier count toward a structured target: 64 of fc1's 256 rows pruned by
    hand, a 50% target prunes 64 more, not 128."""
    model = _model()
    masks = full_masks(model)
    masks["fc1"][:64] = False
    new = prune_step(model, masks, "l2_structured", 0.5)
    rows_kept = new["fc1"].any(dim=1)
    assert int((~rows_kept).sum()) == 128 and not rows_kept[:64].any()
    assert torch.equal(new["fc1.bias"], rows_kept)  # the pruned rows' biases go with them
    assert (model.fc1.bias[~rows_kept] == 0).all()


def test_mask_sparsity_and_masked_parameters_by_hand():
    model = _model()
    masks = full_masks(model)
    masks["fc1"][:, :3] = False  # 3 of 12 columns
    masks["fc2.bias"] = torch.arange(128) % 4 != 0  # a parameter key: a quarter masked
    assert mask_sparsity(masks) == {"fc1": pytest.approx(0.25), "fc2": 0.0, "fc2.bias": pytest.approx(0.25)}
    got = masked_parameters(model, masks)
    assert [k for k, _, _ in got] == ["fc1", "fc2", "fc2.bias"]
    assert got[0][1] is model.fc1.weight and got[2][1] is model.fc2.bias
    assert all(m.dtype == torch.bool for _, _, m in got)
    assert masked_parameters(model, None) == [] and masked_parameters(model, {}) == []
    with pytest.raises(ValueError, match=r"mask of fc2\.bias has shape \(3,\), the parameter \(128,\)"):
        masked_parameters(model, {"fc2.bias": torch.ones(3, dtype=torch.bool)})


def test_schedule_edges():
    assert sparsity_schedule(0.0, 3) == [0.0, 0.0, 0.0]
    assert sparsity_schedule(0.64, 2) == [0.0, pytest.approx(0.64)]
    assert sparsity_schedule(0.875, 4) == [0.0, pytest.approx(0.5), pytest.approx(0.75), pytest.approx(0.875)]
    with pytest.raises(ValueError, match="n_iter=0"):
        sparsity_schedule(0.5, 0)
    with pytest.raises(ValueError, match=r"^final_sparsity=1\.0 is not a sparsity"):
        sparsity_schedule(1.0, 3)


def test_unit_masks_of_a_later_layer_when_an_earlier_one_keeps_every_row():
    """fc1 keeps all its rows, fc2 loses its first 8: only fc2's bias gets a unit mask (an
    earlier unpruned layer must not end the search)."""
    from wemem.ml.pruning import _unit_masks

    model = _model()
    masks = full_masks(model)
    masks["fc2"][:8] = False
    units = _unit_masks(model, masks)
    assert list(units) == ["fc2.bias"]
    assert units["fc2.bias"].tolist() == [False] * 8 + [True] * 120


def test_masks_hold_after_a_fine_tuning_that_refills_pruned_weights():
    """A fine-tuning step that writes into pruned weights (as Adam's momentum would) is undone:
    after each iteration the pruned weights are zero again and the record's sparsity is the
    target's."""
    model = _model()

    def refill(m, k, masks):
        with torch.no_grad():
            m.fc1.weight.add_(1.0)
            m.fc2.weight.add_(1.0)

    records = iterative_prune(model, method="l1_unstructured", final_sparsity=0.5, n_iter=2, finetune=refill)
    assert records[-1]["layer_sparsity"] == {"fc1": pytest.approx(0.5), "fc2": pytest.approx(0.5)}
    assert records[-1]["global_sparsity"] == pytest.approx(0.5)


def test_prune_step_treats_a_layer_without_a_mask_as_unpruned():
    model = _model()
    only_fc1 = {"fc1": full_masks(model)["fc1"]}
    masks = prune_step(model, only_fc1, "l1_unstructured", 0.25)
    assert set(masks) == {"fc1", "fc2"}
    assert int((~masks["fc2"]).sum()) == 8192 and int((~masks["fc1"]).sum()) == 768


def test_masks_given_as_integers_come_back_as_booleans():
    """A 0/1 uint8 mask (e.g. loaded from a file) is read as booleans: the mask helpers and a
    pruning step hand back bool masks with the same entries, and a mask naming nothing fails
    with the whole message."""
    model = _model()
    ones = torch.ones_like(model.fc1.weight, dtype=torch.uint8)
    ones[0] = 0
    (key, param, mask), = masked_parameters(model, {"fc1": ones})
    assert mask.dtype == torch.bool and int((~mask).sum()) == 12
    new = prune_step(model, {"fc1": ones}, "l1_unstructured", 0.25)
    assert new["fc1"].dtype == torch.bool and not new["fc1"][0].any() and int((~new["fc1"]).sum()) == 768
    with pytest.raises(ValueError, match=r"^mask for 'nope' matches no module or parameter of ColumnFC; "
                                         r"masks must come from pruning this architecture$"):
        masked_parameters(model, {"nope": ones})
