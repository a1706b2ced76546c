"""Property-based tests (Hypothesis): invariants checked against brute-force answers on random
inputs, for the threshold search, the metrics, the rankings and windows, the risky set and the
pruning schedule and masks. Each property names the bug it would catch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from wemem.ml.attacks.metric import best_threshold, class_thresholds
from wemem.ml.attacks.metrics import attack_metrics, tpr_at_fpr, roc_points
from wemem.ml.pruning import prune_step, sparsity_schedule
from wemem.ml.ranking import epoch_window, rank_per_class, risky_mask

FAST = settings(max_examples=60, deadline=None)
# small integer-valued floats make ties common, which is where threshold and AUC code goes wrong
values = st.lists(st.integers(-4, 4).map(float), min_size=0, max_size=25)


def _balanced(m: np.ndarray, nm: np.ndarray, t: float) -> float:
    tpr = (m >= t).mean() if m.size else None
    tnr = (nm < t).mean() if nm.size else None
    parts = [p for p in (tpr, tnr) if p is not None]
    return float(np.mean(parts))


@FAST
@given(values, values)
def test_best_threshold_is_the_brute_force_optimum(members, nonmembers):
    # catches: an off-by-one between "≥ threshold" and the counts, candidates missing +inf or a
    # unique value, or ties split between both sides
    m, nm = np.array(members), np.array(nonmembers)
    if m.size + nm.size == 0:
        assert best_threshold(m, nm)[0] == math.inf
        return
    threshold, ba = best_threshold(m, nm)
    candidates = np.append(np.unique(np.concatenate([m, nm])), np.inf)
    brute = max(_balanced(m, nm, t) for t in candidates)
    assert ba == pytest.approx(brute, abs=1e-12)
    assert _balanced(m, nm, threshold) == pytest.approx(ba, abs=1e-12)


@FAST
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(-3, 3), st.booleans()), min_size=1, max_size=30))
def test_class_thresholds_are_each_class_s_own_optimum(rows):
    # catches: one global threshold used for every class (the planted Conf/Entr/Mentr bug)
    labels = np.array([r[0] for r in rows])
    vals = np.array([float(r[1]) for r in rows])
    member = np.array([r[2] for r in rows])
    thresholds, global_t = class_thresholds(vals, labels, member, 3)
    for c in range(3):
        sel = labels == c
        m, nm = vals[sel & member], vals[sel & ~member]
        if m.size == 0 or nm.size == 0:  # a class without both groups falls back to the global one
            assert thresholds[c] == global_t
            continue
        _, ba = best_threshold(m, nm)
        assert _balanced(m, nm, float(thresholds[c])) == pytest.approx(ba, abs=1e-12)


def _pairwise_auc(scores: np.ndarray, mem: np.ndarray) -> float:
    pos, neg = scores[mem], scores[~mem]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


@FAST
@given(st.lists(st.tuples(st.integers(0, 5), st.booleans()), min_size=2, max_size=40))
def test_auc_equals_the_pairwise_count_with_ties_as_half(rows):
    # catches: AUC computed on predictions instead of scores, or ties counted as wins/losses
    scores = np.array([float(r[0]) for r in rows])
    mem = np.array([r[1] for r in rows])
    if mem.all() or not mem.any():
        assert math.isnan(attack_metrics(scores, scores > 2, mem)["auc"])
        return
    assert attack_metrics(scores, scores > 2, mem)["auc"] == pytest.approx(_pairwise_auc(scores, mem), abs=1e-12)


@FAST
@given(st.lists(st.tuples(st.integers(0, 6), st.booleans()), min_size=2, max_size=40),
       st.sampled_from([0.0, 0.05, 0.1, 0.25, 0.5]))
def test_tpr_at_fpr_is_the_best_threshold_sweep_within_the_fpr_budget(rows, level):
    # catches: interpolated ROC points (a threshold that does not exist) or FPR > level accepted
    scores = np.array([float(r[0]) for r in rows])
    mem = np.array([r[1] for r in rows])
    if mem.all() or not mem.any():
        return
    best = 0.0
    for t in np.append(np.unique(scores), np.inf):
        fpr = (scores[~mem] >= t).mean()
        if fpr <= level:
            best = max(best, (scores[mem] >= t).mean())
    fpr, tpr = roc_points(scores, mem)
    assert tpr_at_fpr(fpr, tpr, level) == pytest.approx(best, abs=1e-12)


@FAST
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 5)), min_size=0, max_size=40),
       st.sampled_from(["h2l", "l2h"]))
def test_rankings_partition_the_classes_in_score_order(rows, order):
    # catches: a sample ranked twice or lost, a class mixed into another, the order reversed
    labels = np.array([r[0] for r in rows], dtype=np.int64)
    scores = np.array([r[1] / 5 for r in rows])
    ranking = rank_per_class(scores, labels, order)
    everything = np.concatenate(list(ranking.values())) if ranking else np.empty(0, dtype=np.int64)
    assert sorted(everything.tolist()) == list(range(len(rows)))
    for c, positions in ranking.items():
        assert (labels[positions] == c).all()
        s = scores[positions]
        assert (np.diff(s) <= 0).all() if order == "h2l" else (np.diff(s) >= 0).all()


@FAST
@given(st.lists(st.integers(0, 30), min_size=1, max_size=5), st.integers(1, 8), st.integers(1, 8))
def test_windows_slide_by_s_and_cover_every_sample_when_w_at_least_s(class_sizes, w, s):
    # catches: windows that skip samples (w ≥ s must cover all) or a wrong start s·e
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(class_sizes)]).astype(np.int64)
    scores = np.linspace(0, 1, labels.size)
    ranking = rank_per_class(scores, labels, "h2l")
    seen = set()
    longest = max(class_sizes)
    for e in range(math.ceil(longest / s) + 1):
        window = epoch_window(ranking, e, w, s)
        expected = sum(min(w, max(0, r.size - s * e)) for r in ranking.values())
        assert window.size == expected
        seen.update(window.tolist())
    if w >= s:
        assert seen == set(range(labels.size))
    else:  # gaps of s − w between consecutive windows
        assert len(seen) < labels.size or longest <= w


@FAST
@given(st.lists(st.integers(0, 10), min_size=0, max_size=40), st.integers(0, 10))
def test_risky_sets_by_value_and_by_fraction(raw, tau10):
    # catches: "≥ τ" turned into "> τ", or a fraction rounded/tied so the count drifts
    scores = np.array(raw) / 10
    tau = tau10 / 10
    by_value = risky_mask(scores, tau, "value")
    assert (by_value == (scores >= tau)).all()
    by_share = risky_mask(scores, tau, "fraction")
    assert by_share.sum() == round(tau * scores.size)
    if by_share.any() and (~by_share).any():
        assert scores[by_share].min() >= scores[~by_share].max()


@FAST
@given(st.integers(0, 95), st.integers(1, 8))
def test_sparsity_schedule_rises_to_the_final_sparsity(pct, n_iter):
    # catches: a schedule that overshoots, is not monotone or never reaches the target
    final = pct / 100
    sched = sparsity_schedule(final, n_iter)
    assert len(sched) == n_iter and sched[-1] == pytest.approx(final)
    assert all(b >= a - 1e-12 for a, b in zip(sched, sched[1:]))
    if n_iter > 1:
        assert sched[0] == 0.0
        # the kept fraction shrinks by the same factor each step (geometric schedule)
        kept = [1 - v for v in sched]
        ratios = [b / a for a, b in zip(kept, kept[1:])]
        assert max(ratios) == pytest.approx(min(ratios))


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(["l1_unstructured", "l1_structured", "l2_structured"]),
       st.integers(1, 6), st.integers(30, 90))
def test_prune_steps_hit_the_target_exactly_and_never_unprune(seed, method, n_iter, pct):
    # catches: pruned weights revived by a later step, counts off by rounding, or structured
    # pruning that removes single weights instead of whole output rows
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(7, 13), nn.ReLU(), nn.Linear(13, 5))
    model.prunable = ["0", "2"]
    masks = None
    for target in sparsity_schedule(pct / 100, n_iter):
        new = prune_step(model, masks, method, target)
        for name, mask in new.items():
            if masks is not None and name in masks:
                assert not (mask & ~masks[name]).any()
            if name.endswith(".bias"):  # structured: a pruned row's bias goes with it
                assert method != "l1_unstructured"
                assert (~mask == (~new[name[: -len(".bias")]]).all(dim=1)).all()
                continue
            rows = mask.shape[0]
            if method == "l1_unstructured":
                assert int((~mask).sum()) == round(target * mask.numel())
            else:
                dead = (~mask.reshape(rows, -1)).all(dim=1)
                assert int(dead.sum()) == round(target * rows)
                assert ((~mask).any(dim=1) == dead).all()  # whole rows only
        masks = new
    for name, module in model.named_modules():
        if name in masks:
            assert (module.weight[~masks[name]] == 0).all()
        if f"{name}.bias" in masks:
            assert (module.bias[~masks[f"{name}.bias"]] == 0).all()
