"""Per-class ranking and sliding windows, against hand-worked answers."""

import numpy as np
import pytest

from wemem.ml.ranking import epoch_window, rank_per_class, window_preview


def test_rank_per_class_both_orders_with_ties_by_position():
    scores = np.array([0.5, 0.9, 0.1, 0.5, 0.7, 0.2])
    labels = np.array([0, 0, 1, 0, 1, 1])
    h2l = rank_per_class(scores, labels, "h2l")
    l2h = rank_per_class(scores, labels, "l2h")
    np.testing.assert_array_equal(h2l[0], [1, 0, 3])  # 0.9, then the tie 0.5/0.5 by position
    np.testing.assert_array_equal(h2l[1], [4, 5, 2])
    np.testing.assert_array_equal(l2h[0], [0, 3, 1])
    np.testing.assert_array_equal(l2h[1], [2, 5, 4])


def test_rankings_are_complete_per_class():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 500)
    scores = rng.random(500).round(2)
    for order in ("h2l", "l2h"):
        ranking = rank_per_class(scores, labels, order)
        assert sorted(np.concatenate(list(ranking.values())).tolist()) == list(range(500))
        for c, pos in ranking.items():
            assert (labels[pos] == c).all()
            s = scores[pos]
            assert (np.diff(s) <= 0).all() if order == "h2l" else (np.diff(s) >= 0).all()


def test_each_class_has_its_own_window():
    ranking = {0: np.arange(100), 1: np.arange(100, 103), 2: np.arange(200, 300)}
    win = epoch_window(ranking, epoch=2, width=5, step=2)  # ranks 4..8 of every class
    np.testing.assert_array_equal(win, [4, 5, 6, 7, 8, 204, 205, 206, 207, 208])


def test_window_preview_counts_distinct_samples():
    ranking = {0: np.arange(10), 1: np.arange(10, 13)}
    preview = window_preview(ranking, epochs=4, width=3, step=2)
    whole = preview[preview["epoch"] == -1].set_index("class")
    assert whole.loc[0, "window_size"] == 9  # ranks 0..8
    assert whole.loc[1, "window_size"] == 3  # a class smaller than the windows
    sizes = preview[(preview["class"] == 1) & (preview["epoch"] >= 0)]["window_size"].tolist()
    assert sizes == [3, 1, 0, 0]


def test_disjoint_windows_counted_as_union():
    preview = window_preview({0: np.arange(20)}, epochs=3, width=2, step=5)
    assert preview[preview["epoch"] == -1]["window_size"].item() == 6


@pytest.mark.parametrize("bad", ["up", "H2M"])
def test_unknown_order_is_refused(bad):
    with pytest.raises(ValueError, match="h2l"):
        rank_per_class(np.zeros(2), np.zeros(2), bad)
