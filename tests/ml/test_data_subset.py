"""Class-balanced subsets of the image datasets (loader options train_per_class/test_per_class)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.ml.conftest import make_cifar10, make_cifar100, make_cinic10
from wemem.ml.data import DataError, load_dataset
from wemem.ml.data.images import balanced_subset


def test_balanced_subset_known_answer():
    # catches: a class over- or under-drawn, a short class dropped, unsorted or repeated indices
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 2])  # class 2 has one sample only
    keep = balanced_subset(labels, 2, np.random.default_rng(0), "train_per_class", "t")
    assert np.bincount(labels[keep]).tolist() == [2, 2, 1]
    assert np.all(np.diff(keep) > 0) and keep[-1] == 7
    assert balanced_subset(labels, None, np.random.default_rng(0), "x", "t").tolist() == list(range(8))
    with pytest.raises(DataError, match="t: train_per_class must be a positive integer or None, got 0"):
        balanced_subset(labels, 0, np.random.default_rng(0), "train_per_class", "t")


def test_cifar10_subset_is_balanced_seeded_and_keeps_rows(tmp_path):
    # catches: images detached from their labels, the seed ignored, test part not subset
    batches = make_cifar10(tmp_path, n_per_batch=40)  # 200 train, 40 test, random labels
    full = load_dataset("cifar10", tmp_path, download=False)
    a = load_dataset("cifar10", tmp_path, download=False, train_per_class=3, test_per_class=1, seed=5)
    b = load_dataset("cifar10", tmp_path, download=False, train_per_class=3, test_per_class=1, seed=5)
    c = load_dataset("cifar10", tmp_path, download=False, train_per_class=3, test_per_class=1, seed=6)
    train_y = a.labels[~a.test_mask]
    assert np.bincount(train_y, minlength=10).max() == 3
    assert (np.bincount(train_y, minlength=10) == np.minimum(3, np.bincount(full.labels[~full.test_mask], minlength=10))).all()
    assert np.bincount(a.labels[a.test_mask], minlength=10).max() == 1
    np.testing.assert_array_equal(a.features, b.features)
    assert not np.array_equal(a.features, c.features)
    # every kept row is a row of the full set with its own label
    rows = {full.features[i].tobytes(): full.labels[i] for i in range(full.labels.size)}
    assert all(rows[a.features[i].tobytes()] == a.labels[i] for i in range(a.labels.size))
    assert len(batches) == 6


def test_cifar100_and_cinic10_take_the_option(tmp_path):
    # catches: an image loader without the option (validation would reject the CPU envs)
    make_cifar100(tmp_path / "c100", n_train=300, n_test=100)
    ds = load_dataset("cifar100", tmp_path / "c100", download=False, train_per_class=1, seed=0)
    assert np.bincount(ds.labels[~ds.test_mask]).max() == 1 and ds.test_mask.sum() == 100
    make_cinic10(tmp_path / "cinic", n_train=3, n_test=2)
    ds = load_dataset("cinic10", tmp_path / "cinic", download=False, train_per_class=2, test_per_class=1, seed=0)
    assert np.bincount(ds.labels[~ds.test_mask]).tolist() == [2] * 10
    assert np.bincount(ds.labels[ds.test_mask]).tolist() == [1] * 10
    with pytest.raises(DataError, match="max_train=5 and train_per_class=2 both set"):
        load_dataset("cinic10", tmp_path / "cinic", download=False, max_train=5, train_per_class=2)
