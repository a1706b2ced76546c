"""Ranking tables, window previews and risky sets against hand-worked answers (issue 17: the
gaps the mutation run of ranking.py found)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from wemem.ml.ranking import (
    class_window,
    epoch_window,
    order_key,
    preview_table,
    rank_per_class,
    rankings_table,
    risk_threshold,
    risky_mask,
    window_preview,
)

# train-pool positions 0..5 given out of order; class 1 has a tie (0.4 at positions 2 and 5)
MEMSCORES = pd.DataFrame({"index": [3, 0, 5, 1, 4, 2], "label": [0, 0, 1, 0, 1, 1],
                          "score": [0.1, 0.7, 0.4, 0.9, 0.8, 0.4]})


def test_rankings_table_by_hand():
    table = rankings_table(MEMSCORES)
    assert list(table.columns) == ["order", "label", "rank", "index", "score"]
    assert table.index.tolist() == list(range(12))
    rows = [tuple(r) for r in table.itertuples(index=False)]
    assert rows == [
        ("h2l", 0, 0, 1, 0.9), ("h2l", 0, 1, 0, 0.7), ("h2l", 0, 2, 3, 0.1),
        ("h2l", 1, 0, 4, 0.8), ("h2l", 1, 1, 2, 0.4), ("h2l", 1, 2, 5, 0.4),
        ("l2h", 0, 0, 3, 0.1), ("l2h", 0, 1, 0, 0.7), ("l2h", 0, 2, 1, 0.9),
        ("l2h", 1, 0, 2, 0.4), ("l2h", 1, 1, 5, 0.4), ("l2h", 1, 2, 4, 0.8),
    ]


def test_preview_table_by_hand():
    """h2l windows of w = 2, s = 1 over 3 epochs on classes of 3: sizes 2, 2, 1; all 3 seen."""
    preview = preview_table(rankings_table(MEMSCORES), epochs=3, width=2, step=1)
    assert list(preview.columns) == ["w", "s", "class", "epoch", "window_size", "distinct_so_far", "class_size"]
    assert (preview["w"] == 2).all() and (preview["s"] == 1).all()
    rows = [tuple(r) for r in preview[["class", "epoch", "window_size", "distinct_so_far", "class_size"]].itertuples(
        index=False)]
    assert rows == [(0, 0, 2, 2, 3), (0, 1, 2, 3, 3), (0, 2, 1, 3, 3), (0, -1, 3, 3, 3),
                    (1, 0, 2, 2, 3), (1, 1, 2, 3, 3), (1, 2, 1, 3, 3), (1, -1, 3, 3, 3)]


def test_window_preview_rows_by_hand():
    preview = window_preview({0: np.arange(5), 2: np.arange(5, 7)}, epochs=2, width=2, step=3)
    assert [tuple(r) for r in preview.itertuples(index=False)] == [
        (0, 0, 2, 2, 5), (0, 1, 2, 4, 5), (0, -1, 4, 4, 5),
        (2, 0, 2, 2, 2), (2, 1, 0, 2, 2), (2, -1, 2, 2, 2)]
    assert window_preview({}, epochs=2, width=1, step=1).empty


def test_windows_refuse_bad_sizes_and_an_empty_ranking_gives_nothing():
    for w, s in ((0, 1), (1, 0), (-1, 2)):
        with pytest.raises(ValueError, match=f"w={w} and step s={s}"):
            class_window(np.arange(4), 0, w, s)
    np.testing.assert_array_equal(class_window(np.arange(10), 3, 4, 2), [6, 7, 8, 9])
    np.testing.assert_array_equal(class_window(np.arange(10), 5, 4, 2), [])
    empty = epoch_window({}, 0, 2, 1)
    assert empty.size == 0 and empty.dtype == np.int64


def test_order_spellings_and_rank_refusals():
    for spelling in ("h2l", "H2L", "h->l", "h→l", "h_2_l"):
        assert order_key(spelling) == "h2l"
    assert order_key("L->H") == "l2h"
    np.testing.assert_array_equal(rank_per_class(np.array([0.2, 0.1]), np.array([0, 0]), "L→H")[0], [1, 0])
    with pytest.raises(ValueError, match="must be 1-D of equal length"):
        rank_per_class(np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match="must be 1-D of equal length"):
        rank_per_class(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="^scores contain NaN; every sample needs a memorisation score"):
        rank_per_class(np.array([0.1, np.nan]), np.array([0, 1]))
    ranking = rank_per_class(np.array([0.3, 0.3, 0.3]), np.array([4, 2, 4]))
    assert list(ranking) == [2, 4] and ranking[4].dtype == np.int64
    np.testing.assert_array_equal(ranking[4], [0, 2])


def test_risky_sets_and_thresholds_by_hand():
    scores = np.array([0.2, 0.9, 0.5, 0.9, 0.1, 0.5])
    np.testing.assert_array_equal(risky_mask(scores, 0.5), [0, 1, 1, 1, 0, 1])  # value: score ≥ τ
    # fraction: round(τ·n) highest, ties by position: 0.9 (1), 0.9 (3), then 0.5 at position 2
    np.testing.assert_array_equal(risky_mask(scores, 0.5, "fraction"), [0, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(risky_mask(scores, 0.0, "fraction"), [0] * 6)
    mask, t = risk_threshold(scores, 0.5, "fraction")
    assert t == 0.5 and mask.sum() == 3
    mask, t = risk_threshold(scores, 1 / 3, "fraction")
    assert t == 0.9 and mask.tolist() == [False, True, False, True, False, False]
    mask, t = risk_threshold(scores, 0.05, "fraction")  # round(0.3) = 0: nobody, threshold inf
    assert not mask.any() and math.isinf(t) and t > 0
    mask, t = risk_threshold(scores, 0.6)  # value mode by default
    assert t == 0.6 and mask.tolist() == [False, True, False, True, False, False]
    np.testing.assert_array_equal(risky_mask(scores, 0.6), mask)
    with pytest.raises(ValueError, match="tau_mode='share'"):
        risky_mask(scores, 0.5, "share")
