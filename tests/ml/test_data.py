"""Tests for wemem.ml.data: loaders on real-format fixtures, the real Location archive, the split
protocol (SPEC §2) and the error paths."""

from __future__ import annotations

import os
import pickle
import random
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest

from wemem.ml import data
from wemem.ml.data import (
    DATASETS,
    DataError,
    RawDataset,
    load_dataset,
    make_splits,
    split_sizes,
)

_REAL_FETCH = data.raw._fetch_url  # saved before the autouse fixture replaces it

ALL_NAMES = ["mnist1d", "location", "purchase100", "texas100", "cifar10", "cifar100", "cinic10"]


def load_quiet(name, raw_dir, **kw):
    """Load ignoring the md5 warning that fixture Location archives trigger."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return load_dataset(name, raw_dir, **kw)


def check_raw(ds: RawDataset, *, n: int, num_classes: int, kind: str):
    assert isinstance(ds, RawDataset)
    assert ds.labels.dtype == np.int64 and ds.labels.shape == (n,)
    assert ds.labels.min() >= 0 and ds.labels.max() < num_classes
    assert ds.num_classes == num_classes and ds.kind == kind
    assert ds.features.shape[0] == n
    if kind == "image":
        assert ds.features.dtype == np.uint8 and ds.features.shape[1:] == (3, 32, 32)
        assert len(ds.mean) == 3 and len(ds.std) == 3
        assert ds.test_mask.dtype == bool and ds.test_mask.shape == (n,)
    else:
        assert ds.features.dtype == np.float32


# ------------------------------------------------------------------------------------------
# registry
# ------------------------------------------------------------------------------------------


def test_loaders_registry_has_all_names():
    assert sorted(DATASETS) == sorted(ALL_NAMES)
    assert {DATASETS[n].family for n in ALL_NAMES} == {"synthetic", "tabular", "image"}
    assert all(DATASETS[n].label for n in ALL_NAMES)


def test_unknown_dataset_lists_known_names(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("imagenet", tmp_path)
    msg = str(e.value)
    assert "'imagenet'" in msg
    for name in ALL_NAMES:
        assert name in msg


def test_unknown_option_is_data_error(tmp_path):
    with pytest.raises(DataError, match="num_sampels"):
        load_dataset("mnist1d", tmp_path, num_sampels=10)


# ------------------------------------------------------------------------------------------
# tabular loaders on real-format fixtures
# ------------------------------------------------------------------------------------------


def test_location_fixture(tmp_path, fx):
    _, labels, feats = fx.make_location(tmp_path)
    with pytest.warns(UserWarning, match="md5"):
        ds = load_dataset("location", tmp_path, download=False)
    check_raw(ds, n=120, num_classes=30, kind="tabular")
    assert ds.name == "location" and ds.features.shape == (120, 446)
    np.testing.assert_array_equal(ds.labels, labels - 1)  # quoted "1".."30" -> 0..29
    np.testing.assert_array_equal(ds.features, feats.astype(np.float32))
    assert ds.mean is None and ds.std is None and ds.test_mask is None


def test_purchase_fixture(tmp_path, fx):
    _, labels, feats = fx.make_purchase(tmp_path)
    ds = load_dataset("purchase100", tmp_path, download=False)
    check_raw(ds, n=220, num_classes=100, kind="tabular")
    assert ds.features.shape == (220, 600)
    np.testing.assert_array_equal(ds.labels, labels - 1)
    np.testing.assert_array_equal(ds.features, feats)
    assert ds.test_mask is None


def test_texas_fixture(tmp_path, fx):
    _, labels, feats = fx.make_texas(tmp_path)
    ds = load_dataset("texas100", tmp_path, download=False)
    check_raw(ds, n=120, num_classes=100, kind="tabular")
    assert ds.features.shape == (120, 6169)
    np.testing.assert_array_equal(ds.labels, labels - 1)
    np.testing.assert_array_equal(ds.features, feats)


def test_real_location_archive(real_location_archive):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the genuine archive must not trigger the md5 warning
        ds = load_dataset("location", real_location_archive.parent, download=False)
    check_raw(ds, n=5010, num_classes=30, kind="tabular")
    assert ds.features.shape == (5010, 446)
    assert set(np.unique(ds.features)) <= {0.0, 1.0}
    assert np.unique(ds.labels).tolist() == list(range(30))
    sizes = split_sizes(make_splits(ds.labels, test_mask=None, seed=0, n_shadows=2))
    assert (sizes["victim/train"], sizes["victim/dev"], sizes["victim/test"]) == (1803, 409, 794)
    assert (sizes["shadow_1/train"], sizes["shadow_1/dev"], sizes["shadow_1/test"]) == (1803, 409, 794)
    assert (sizes["train_pool"], sizes["test_pool"]) == (4008, 1002)


# ------------------------------------------------------------------------------------------
# mnist1d
# ------------------------------------------------------------------------------------------


def test_mnist1d_generated_and_cached(tmp_path, monkeypatch):
    np_state = np.random.get_state()[1].copy()
    py_state = random.getstate()
    ds = load_dataset("mnist1d", tmp_path, num_samples=200, seed=3)
    check_raw(ds, n=200, num_classes=10, kind="tabular")
    assert ds.features.shape == (200, 40)
    assert ds.test_mask.sum() == 40 and not ds.test_mask[:160].any()  # mnist1d's own 80/20
    assert ds.mean is None
    # global RNGs untouched by mnist1d's reseeding
    np.testing.assert_array_equal(np.random.get_state()[1], np_state)
    assert random.getstate() == py_state
    cache = tmp_path / "mnist1d_200_3.npz"
    assert cache.is_file()
    assert not [p for p in tmp_path.iterdir() if p.name != cache.name]  # no temp leftovers

    import mnist1d.data

    def boom(*a, **k):
        raise AssertionError("second load must come from the cache")

    monkeypatch.setattr(mnist1d.data, "make_dataset", boom)
    again = load_dataset("mnist1d", tmp_path, num_samples=200, seed=3)
    np.testing.assert_array_equal(again.features, ds.features)
    np.testing.assert_array_equal(again.labels, ds.labels)
    np.testing.assert_array_equal(again.test_mask, ds.test_mask)


def test_mnist1d_corrupt_cache_is_regenerated(tmp_path):
    ds = load_dataset("mnist1d", tmp_path, num_samples=100)
    cache = tmp_path / "mnist1d_100_42.npz"
    cache.write_bytes(cache.read_bytes()[:50])
    with pytest.warns(UserWarning, match="regenerating"):
        again = load_dataset("mnist1d", tmp_path, num_samples=100)
    np.testing.assert_array_equal(again.features, ds.features)


def test_mnist1d_bad_option(tmp_path):
    with pytest.raises(DataError, match="num_samples"):
        load_dataset("mnist1d", tmp_path, num_samples=-5)


# ------------------------------------------------------------------------------------------
# images
# ------------------------------------------------------------------------------------------


def _expected_stats(images: np.ndarray):
    x = images.astype(np.float64) / 255.0
    return x.mean(axis=(0, 2, 3)), x.std(axis=(0, 2, 3))


def test_cifar10_fixture(tmp_path, fx):
    batches = fx.make_cifar10(tmp_path, n_per_batch=8)
    ds = load_dataset("cifar10", tmp_path, download=False)
    check_raw(ds, n=48, num_classes=10, kind="image")
    assert ds.name == "cifar10"
    assert ds.test_mask.sum() == 8 and ds.test_mask[-8:].all()
    train_data = np.concatenate([batches[f"data_batch_{i}"]["data"] for i in range(1, 6)])
    expected = np.concatenate([train_data, batches["test_batch"]["data"]]).reshape(-1, 3, 32, 32)
    np.testing.assert_array_equal(ds.features, expected)
    # channel 0 is the first 1024 bytes of a row (R plane), row-major 32x32
    assert ds.features[0, 0, 0, 1] == batches["data_batch_1"]["data"][0, 1]
    assert ds.features[0, 1, 0, 0] == batches["data_batch_1"]["data"][0, 1024]
    labels = sum((batches[f"data_batch_{i}"]["labels"] for i in range(1, 6)), [])
    labels += batches["test_batch"]["labels"]
    np.testing.assert_array_equal(ds.labels, labels)
    mean, std = _expected_stats(train_data.reshape(-1, 3, 32, 32))  # train part only
    np.testing.assert_allclose(ds.mean, mean, rtol=1e-9)
    np.testing.assert_allclose(ds.std, std, rtol=1e-9)


def test_cifar100_fixture_bytes_keys(tmp_path, fx):
    batches = fx.make_cifar100(tmp_path, n_train=30, n_test=10)
    ds = load_dataset("cifar100", tmp_path, download=False)
    check_raw(ds, n=40, num_classes=100, kind="image")
    np.testing.assert_array_equal(ds.labels[:30], batches["train"][b"fine_labels"])
    np.testing.assert_array_equal(ds.labels[30:], batches["test"][b"fine_labels"])
    np.testing.assert_array_equal(ds.features[30:].reshape(10, -1), batches["test"][b"data"])
    assert ds.test_mask.tolist() == [False] * 30 + [True] * 10


def test_cinic10_fixture(tmp_path, fx):
    imgs = fx.make_cinic10(tmp_path, n_train=3, n_test=2)
    ds = load_dataset("cinic10", tmp_path, download=False)
    check_raw(ds, n=50, num_classes=10, kind="image")
    classes = sorted(fx.CINIC_CLASSES)
    assert ds.labels[:30].tolist() == [i for i in range(10) for _ in range(3)]
    assert ds.labels[30:].tolist() == [i for i in range(10) for _ in range(2)]
    assert ds.test_mask.sum() == 20
    np.testing.assert_array_equal(ds.features[0], imgs["train"][classes[0]][0].transpose(2, 0, 1))
    np.testing.assert_array_equal(ds.features[31], imgs["test"][classes[0]][1].transpose(2, 0, 1))
    train = np.stack([im for c in classes for im in imgs["train"][c]]).transpose(0, 3, 1, 2)
    mean, std = _expected_stats(train)
    np.testing.assert_allclose(ds.mean, mean, rtol=1e-9)
    np.testing.assert_allclose(ds.std, std, rtol=1e-9)


def test_cinic10_seeded_subset(tmp_path, fx):
    fx.make_cinic10(tmp_path, n_train=3, n_test=2)
    a = load_dataset("cinic10", tmp_path, download=False, max_train=7, max_test=5, seed=1)
    b = load_dataset("cinic10", tmp_path, download=False, max_train=7, max_test=5, seed=1)
    c = load_dataset("cinic10", tmp_path, download=False, max_train=7, max_test=5, seed=2)
    assert a.features.shape == (12, 3, 32, 32) and a.test_mask.sum() == 5
    np.testing.assert_array_equal(a.features, b.features)
    assert not np.array_equal(a.features, c.features)
    with pytest.raises(DataError, match="max_train"):
        load_dataset("cinic10", tmp_path, download=False, max_train=0)


# ------------------------------------------------------------------------------------------
# missing files and downloads
# ------------------------------------------------------------------------------------------

EXPECTED_PATH = {
    "location": "dataset_location.tgz",
    "purchase100": "dataset_purchase.tgz",
    "texas100": "dataset_texas.tgz",
    "cifar10": os.path.join("cifar-10-batches-py", "data_batch_1"),
    "cifar100": os.path.join("cifar-100-python", "train"),
    "cinic10": "train",
}


@pytest.mark.parametrize("name", sorted(EXPECTED_PATH))
def test_missing_file_without_download_names_path(tmp_path, name):
    with pytest.raises(DataError) as e:
        load_dataset(name, tmp_path, download=False)
    assert str(tmp_path / EXPECTED_PATH[name]) in str(e.value)
    assert "download=False" in str(e.value)


@pytest.mark.parametrize("name", sorted(EXPECTED_PATH))
def test_missing_file_failed_download_is_one_clear_error(tmp_path, name):
    # the autouse _no_network fixture makes every download fail at once
    with pytest.raises(DataError) as e:
        load_dataset(name, tmp_path, download=True)
    msg = str(e.value)
    assert str(tmp_path / EXPECTED_PATH[name]) in msg
    assert "fail" in msg and "network disabled in tests" in msg
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # nothing half-written


def test_successful_download_is_used(tmp_path, fx, monkeypatch):
    src = tmp_path / "src"
    fx.make_purchase(src)
    seen = []

    def fake_fetch(url, dest, timeout=None):
        seen.append((url, dest, timeout))
        dest.write_bytes((src / "dataset_purchase.tgz").read_bytes())

    monkeypatch.setattr(data.raw, "_fetch_url", fake_fetch)
    raw = tmp_path / "raw"
    ds = load_dataset("purchase100", raw)
    assert ds.features.shape == (220, 600)
    assert seen[0][0] == data.tabular.PURCHASE_URL and seen[0][1] == raw / "dataset_purchase.tgz"
    assert seen[0][2] <= 60
    load_dataset("purchase100", raw)  # second time the local file is used
    assert len(seen) == 1


# ------------------------------------------------------------------------------------------
# bad tabular input
# ------------------------------------------------------------------------------------------


def test_truncated_archive(tmp_path, fx):
    path, _, _ = fx.make_location(tmp_path)
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="truncated or corrupt") as e:
        load_quiet("location", tmp_path, download=False)
    assert str(path) in str(e.value)


def test_garbage_archive(tmp_path):
    path = tmp_path / "dataset_purchase.tgz"
    path.write_bytes(b"this is not a tar archive at all" * 10)
    with pytest.raises(DataError, match="truncated or corrupt") as e:
        load_dataset("purchase100", tmp_path, download=False)
    assert str(path) in str(e.value)


def test_missing_member(tmp_path, fx):
    path = fx.write_tgz(tmp_path / "dataset_location.tgz", {"paris": b'"1",0\n'})
    with pytest.raises(DataError, match="'bangkok' not found") as e:
        load_quiet("location", tmp_path, download=False)
    assert str(path) in str(e.value) and "paris" in str(e.value)


def test_texas_missing_labels_member(tmp_path, fx):
    fx.write_tgz(tmp_path / "dataset_texas.tgz", {"texas/100/feats": b"0,1\n"})
    with pytest.raises(DataError, match="texas/100/labels"):
        load_dataset("texas100", tmp_path, download=False)


def _location_with(tmp_path, fx, rows: list[str]):
    labels, feats = fx.tabular_arrays(6, 446, 30)
    body = fx.csv_bytes(labels, feats, quote_labels=True).decode().splitlines()
    for i, row in enumerate(rows):
        if row is not None:
            body[i] = row
    fx.write_tgz(tmp_path / "dataset_location.tgz", {"bangkok": ("\n".join(body) + "\n").encode()})
    return str(tmp_path / "dataset_location.tgz")


def test_wrong_column_count_first_line(tmp_path, fx):
    path = _location_with(tmp_path, fx, ['"3",' + ",".join(["0"] * 445)])
    with pytest.raises(DataError) as e:
        load_quiet("location", tmp_path, download=False)
    msg = str(e.value)
    assert path in msg and "expected 447" in msg and "found 446" in msg and "line 1" in msg


def test_wrong_column_count_later_line_extra(tmp_path, fx):
    _location_with(tmp_path, fx, [None, None, '"3",' + ",".join(["0"] * 447)])
    with pytest.raises(DataError) as e:
        load_quiet("location", tmp_path, download=False)
    msg = str(e.value)
    assert "expected 447" in msg and "found 448" in msg and "line 3" in msg


def test_wrong_column_count_later_line_short(tmp_path, fx):
    _location_with(tmp_path, fx, [None, None, None, '"3",' + ",".join(["0"] * 400)])
    with pytest.raises(DataError) as e:
        load_quiet("location", tmp_path, download=False)
    msg = str(e.value)
    assert "expected 447" in msg and "found 401" in msg and "row 4" in msg


def test_non_binary_feature(tmp_path, fx):
    path = _location_with(tmp_path, fx, [None, '"3",' + ",".join(["0"] * 9 + ["2"] + ["0"] * 436)])
    with pytest.raises(DataError, match="non-binary") as e:
        load_quiet("location", tmp_path, download=False)
    msg = str(e.value)
    assert path in msg and "row 2" in msg and "column 10" in msg and "2.0" in msg


def test_non_numeric_value(tmp_path, fx):
    _location_with(tmp_path, fx, [None, None, '"3",' + ",".join(["0"] * 4 + ["yes"] + ["0"] * 441)])
    with pytest.raises(DataError, match="non-numeric value 'yes'") as e:
        load_quiet("location", tmp_path, download=False)
    assert "row 3" in str(e.value) and "column 6" in str(e.value)


@pytest.mark.parametrize("label", ['"31"', '"0"', '"2.5"'])
def test_location_label_out_of_range(tmp_path, fx, label):
    _location_with(tmp_path, fx, [None, label + "," + ",".join(["0"] * 446)])
    with pytest.raises(DataError, match="out of range") as e:
        load_quiet("location", tmp_path, download=False)
    assert "1..30" in str(e.value) and "row 2" in str(e.value)


def test_purchase_label_out_of_range(tmp_path, fx):
    labels, feats = fx.tabular_arrays(5, 600, 100)
    labels[4] = 101
    fx.write_tgz(tmp_path / "dataset_purchase.tgz",
                 {"dataset_purchase": fx.csv_bytes(labels, feats, quote_labels=False)})
    with pytest.raises(DataError, match="label 101 at data row 5 is out of range"):
        load_dataset("purchase100", tmp_path, download=False)


def test_texas_label_count_mismatch(tmp_path, fx):
    fx.make_texas(tmp_path, n=10, labels_override=np.arange(1, 10))
    with pytest.raises(DataError, match="10 rows but .* 9 labels"):
        load_dataset("texas100", tmp_path, download=False)


def test_texas_label_out_of_range(tmp_path, fx):
    fx.make_texas(tmp_path, n=10, labels_override=np.array([1] * 9 + [0]))
    with pytest.raises(DataError, match="texas/100/labels.*out of range"):
        load_dataset("texas100", tmp_path, download=False)


def test_empty_csv(tmp_path, fx):
    fx.write_tgz(tmp_path / "dataset_purchase.tgz", {"dataset_purchase": b""})
    with pytest.raises(DataError, match="empty"):
        load_dataset("purchase100", tmp_path, download=False)


# ------------------------------------------------------------------------------------------
# bad image input
# ------------------------------------------------------------------------------------------


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_cifar_pickle_is_refused(tmp_path, fx):
    fx.make_cifar10(tmp_path, n_per_batch=4)
    marker = tmp_path / "pwned"
    target = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch = fx.cifar_batch(4, 10, seed=0, label_key="labels", bytes_keys=False)
    batch["payload"] = _Evil(marker)
    fx.write_pickle(target, batch)
    with pytest.raises(DataError, match="refusing to unpickle") as e:
        load_dataset("cifar10", tmp_path, download=False)
    assert str(target) in str(e.value) and "system" in str(e.value)
    assert not marker.exists()


def test_cifar_pickle_with_arbitrary_builtin_is_refused(tmp_path, fx):
    fx.make_cifar100(tmp_path)
    target = tmp_path / "cifar-100-python" / "test"
    # hand-made protocol-0 pickle calling builtins.eval
    target.write_bytes(b"cbuiltins\neval\n(V1+1\ntR.")
    with pytest.raises(DataError, match="refusing to unpickle builtins.eval"):
        load_dataset("cifar100", tmp_path, download=False)


def test_truncated_cifar_batch(tmp_path, fx):
    fx.make_cifar10(tmp_path, n_per_batch=4)
    target = tmp_path / "cifar-10-batches-py" / "test_batch"
    target.write_bytes(target.read_bytes()[:500])
    with pytest.raises(DataError, match="truncated or corrupt") as e:
        load_dataset("cifar10", tmp_path, download=False)
    assert str(target) in str(e.value)


def test_cifar100_batch_without_fine_labels(tmp_path, fx):
    fx.make_cifar10(tmp_path)  # a cifar10 batch where cifar100 is expected
    (tmp_path / "cifar-100-python").mkdir()
    for name, src in (("train", "data_batch_1"), ("test", "test_batch")):
        (tmp_path / "cifar-100-python" / name).write_bytes(
            (tmp_path / "cifar-10-batches-py" / src).read_bytes())
    with pytest.raises(DataError, match="'fine_labels'"):
        load_dataset("cifar100", tmp_path, download=False)


def test_cifar_label_out_of_range(tmp_path, fx):
    fx.make_cifar10(tmp_path, n_per_batch=4)
    batch = fx.cifar_batch(4, 10, seed=0, label_key="labels", bytes_keys=False)
    batch["labels"][2] = 10
    target = fx.write_pickle(tmp_path / "cifar-10-batches-py" / "data_batch_2", batch)
    with pytest.raises(DataError, match="label 10 at index 2 is out of range 0..9") as e:
        load_dataset("cifar10", tmp_path, download=False)
    assert str(target) in str(e.value)


def test_cifar_wrong_image_size(tmp_path, fx):
    fx.make_cifar10(tmp_path, n_per_batch=4)
    batch = fx.cifar_batch(4, 10, seed=0, label_key="labels", bytes_keys=False)
    batch["data"] = batch["data"][:, :1000]
    fx.write_pickle(tmp_path / "cifar-10-batches-py" / "data_batch_1", batch)
    with pytest.raises(DataError, match="3072"):
        load_dataset("cifar10", tmp_path, download=False)


def test_cinic_empty_class_folder(tmp_path, fx):
    fx.make_cinic10(tmp_path, n_train=1, n_test=1)
    empty = tmp_path / "test" / "zebra"
    empty.mkdir()
    (tmp_path / "train" / "zebra").mkdir()
    with pytest.raises(DataError, match="no images") as e:
        load_dataset("cinic10", tmp_path, download=False)
    assert str(tmp_path / "train" / "zebra") in str(e.value)


def test_cinic_no_class_folders(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    with pytest.raises(DataError, match="no class folders") as e:
        load_dataset("cinic10", tmp_path, download=False)
    assert str(tmp_path / "train") in str(e.value)


def test_cinic_inconsistent_classes(tmp_path, fx):
    fx.make_cinic10(tmp_path, n_train=1, n_test=1)
    import shutil

    shutil.rmtree(tmp_path / "test" / "frog")
    with pytest.raises(DataError, match="inconsistent classes") as e:
        load_dataset("cinic10", tmp_path, download=False)
    assert "frog" in str(e.value)


def test_cinic_bad_images(tmp_path, fx):
    from PIL import Image

    fx.make_cinic10(tmp_path, n_train=1, n_test=1)
    bad = tmp_path / "train" / "cat" / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="cannot read image") as e:
        load_dataset("cinic10", tmp_path, download=False)
    assert str(bad) in str(e.value)
    bad.unlink()
    big = tmp_path / "test" / "dog" / "big.png"
    Image.fromarray(np.zeros((64, 48, 3), np.uint8)).save(big)
    with pytest.raises(DataError, match="48x64; expected 32x32") as e:
        load_dataset("cinic10", tmp_path, download=False)
    assert str(big) in str(e.value)


# ------------------------------------------------------------------------------------------
# splits
# ------------------------------------------------------------------------------------------


def _labels(n, k, seed=0):
    return np.random.default_rng(seed).permutation(np.arange(n) % k)


def _check_invariants(s, n, n_shadows, test_mask=None):
    for k, v in s.items():
        assert v.dtype == np.int64, k
        assert len(np.unique(v)) == len(v), f"{k} has duplicates"
        assert v.min() >= 0 and v.max() < n
    tp, te = set(s["train_pool"].tolist()), set(s["test_pool"].tolist())
    assert not tp & te and len(tp) + len(te) == n
    if test_mask is not None:
        assert tp == set(np.flatnonzero(~test_mask).tolist())
        assert te == set(np.flatnonzero(test_mask).tolist())
    vh, ah = set(s["victim_half"].tolist()), set(s["attack_half"].tolist())
    assert not vh & ah and vh | ah == tp
    for prefix, half in [("victim", vh)] + [(f"shadow_{i}", ah) for i in range(n_shadows)]:
        tr = set(s[f"{prefix}/train"].tolist())
        dev = set(s[f"{prefix}/dev"].tolist())
        test = set(s[f"{prefix}/test"].tolist())
        assert tr <= half
        assert not tr & dev and not tr & test and not dev & test  # members vs non-members
        assert dev | test == (half - tr) | te  # held-out part joined the test pool
        assert len(tr) + len(dev) + len(test) == len(half) + len(te)
    assert f"shadow_{n_shadows}/train" not in s


def test_split_invariants_tabular():
    labels = _labels(1000, 10)
    s = make_splits(labels, test_mask=None, seed=7, n_shadows=3)
    _check_invariants(s, 1000, 3)
    sizes = split_sizes(s)
    assert sizes["train_pool"] == 800 and sizes["test_pool"] == 200
    assert sizes["victim_half"] == 400 and sizes["attack_half"] == 400
    assert sizes["victim/train"] == 360 and sizes["victim/dev"] == 81 and sizes["victim/test"] == 159
    assert all(isinstance(v, int) for v in sizes.values())
    expected = {"train_pool", "test_pool", "victim_half", "attack_half"} | {
        f"{p}/{part}" for p in ["victim", "shadow_0", "shadow_1", "shadow_2"]
        for part in ["train", "dev", "test"]}
    assert set(s) == expected


def test_split_invariants_with_test_mask():
    n = 600
    mask = np.zeros(n, dtype=bool)
    mask[np.random.default_rng(1).choice(n, 150, replace=False)] = True
    s = make_splits(_labels(n, 10), test_mask=mask, seed=3, n_shadows=2)
    _check_invariants(s, n, 2, test_mask=mask)
    assert split_sizes(s)["test_pool"] == 150


def test_splits_deterministic_and_seed_dependent():
    labels = _labels(500, 5)
    a = make_splits(labels, test_mask=None, seed=11, n_shadows=2)
    b = make_splits(labels, test_mask=None, seed=11, n_shadows=2)
    c = make_splits(labels, test_mask=None, seed=12, n_shadows=2)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["victim/train"], c["victim/train"])


def test_shadows_differ_from_each_other_and_from_victim():
    s = make_splits(_labels(1000, 10), test_mask=None, seed=0, n_shadows=3)
    trains = [set(s[f"shadow_{i}/train"].tolist()) for i in range(3)]
    devs = [s[f"shadow_{i}/dev"] for i in range(3)]
    for i in range(3):
        for j in range(i + 1, 3):
            assert trains[i] != trains[j]
            assert not np.array_equal(devs[i], devs[j])
        assert not trains[i] & set(s["victim/train"].tolist())  # different halves
        assert not np.array_equal(np.sort(s["victim/test"]), np.sort(s[f"shadow_{i}/test"]))
    # with one shadow the result is a prefix of the three-shadow result
    one = make_splits(_labels(1000, 10), test_mask=None, seed=0, n_shadows=1)
    np.testing.assert_array_equal(one["shadow_0/train"], s["shadow_0/train"])


def test_splits_on_loaded_image_dataset(tmp_path, fx):
    fx.make_cinic10(tmp_path, n_train=4, n_test=3)
    ds = load_dataset("cinic10", tmp_path, download=False)
    s = make_splits(ds.labels, test_mask=ds.test_mask, seed=0, n_shadows=1,
                    member_fraction=0.9, dev_fraction=0.34)
    _check_invariants(s, 70, 1, test_mask=ds.test_mask)


@pytest.mark.parametrize("n_shadows", [0, -1, 1.5, True])
def test_bad_n_shadows(n_shadows):
    with pytest.raises(DataError, match="n_shadows"):
        make_splits(_labels(100, 2), test_mask=None, seed=0, n_shadows=n_shadows)


def test_too_few_samples_names_sizes():
    with pytest.raises(DataError, match="too few samples") as e:
        make_splits(_labels(6, 2), test_mask=None, seed=0, n_shadows=1)
    assert "victim/train would hold 1" in str(e.value) and "(n=6" in str(e.value)
    with pytest.raises(DataError, match="would be empty") as e:
        make_splits(_labels(3, 1), test_mask=None, seed=0, n_shadows=1)
    assert "victim/train" in str(e.value) and "'train_pool': 2" in str(e.value)


def test_fewer_train_samples_than_classes():
    with pytest.raises(DataError, match="60 classes") as e:
        make_splits(_labels(120, 60), test_mask=None, seed=0, n_shadows=1)
    assert "victim/train" in str(e.value) and "43" in str(e.value)


def test_bad_test_mask_and_fractions():
    with pytest.raises(DataError, match="test_mask"):
        make_splits(_labels(100, 2), test_mask=np.zeros(99, bool), seed=0, n_shadows=1)
    with pytest.raises(DataError, match="test_mask"):
        make_splits(_labels(100, 2), test_mask=np.zeros(100, int), seed=0, n_shadows=1)
    with pytest.raises(DataError, match="dev_fraction"):
        make_splits(_labels(100, 2), test_mask=None, seed=0, n_shadows=1, dev_fraction=1.0)
    with pytest.raises(DataError, match="labels must be 1-D"):
        make_splits(np.zeros((4, 2)), test_mask=None, seed=0, n_shadows=1)


def test_data_package_does_not_import_kedro():
    for path in Path(data.__file__).parent.glob("*.py"):
        src = path.read_text()
        assert "import kedro" not in src and "from kedro" not in src, path


def test_unpickler_allows_plain_numpy_pickles(tmp_path):
    # all protocols numpy may use for arrays (incl. protocol 5 _frombuffer) load fine
    for proto in range(2, pickle.HIGHEST_PROTOCOL + 1):
        p = tmp_path / f"b{proto}"
        obj = {"data": np.arange(12, dtype=np.uint8).reshape(2, 6), "n": np.int64(3), "l": [1, 2]}
        p.write_bytes(pickle.dumps(obj, protocol=proto))
        with open(p, "rb") as f:
            out = data.images._CifarUnpickler(f, str(p)).load()
        np.testing.assert_array_equal(out["data"], obj["data"])
        assert out["n"] == 3 and out["l"] == [1, 2]


def test_tar_member_with_dot_prefix(tmp_path, fx):
    labels, feats = fx.tabular_arrays(40, 446, 30)
    fx.write_tgz(tmp_path / "dataset_location.tgz",
                 {"./bangkok": fx.csv_bytes(labels, feats, quote_labels=True)})
    ds = load_quiet("location", tmp_path, download=False)
    assert ds.features.shape == (40, 446)


def test_uncompressed_tar_is_accepted(tmp_path, fx):
    labels, feats = fx.tabular_arrays(40, 600, 100)
    with tarfile.open(tmp_path / "dataset_purchase.tgz", "w") as tar:
        import io

        content = fx.csv_bytes(labels, feats, quote_labels=False)
        info = tarfile.TarInfo("dataset_purchase")
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    ds = load_dataset("purchase100", tmp_path, download=False)
    assert ds.features.shape == (40, 600)


def test_real_fetch_is_atomic(tmp_path, fx):
    # exercised with file:// URLs: no network involved
    src = fx.write_tgz(tmp_path / "src.tgz", {"a": b"1"})
    dest = tmp_path / "raw" / "dataset_location.tgz"
    _REAL_FETCH(src.as_uri(), dest, 5)
    assert dest.read_bytes() == src.read_bytes()
    with pytest.raises(OSError):
        _REAL_FETCH((tmp_path / "nope.tgz").as_uri(), tmp_path / "raw" / "x.tgz", 5)
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["dataset_location.tgz"]


def test_cifar_download_hook_is_used(tmp_path, fx, monkeypatch):
    calls = []

    def fake_download(name, raw_dir, timeout=None):
        calls.append((name, raw_dir))
        fx.make_cifar10(raw_dir, n_per_batch=2)

    monkeypatch.setattr(data.raw, "_torchvision_cifar_download", fake_download)
    ds = load_dataset("cifar10", tmp_path)
    assert calls == [("cifar10", tmp_path)] and ds.features.shape == (12, 3, 32, 32)


def test_cifar_download_that_leaves_files_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(data.raw, "_torchvision_cifar_download", lambda *a, **k: None)
    with pytest.raises(DataError, match="still missing after the download") as e:
        load_dataset("cifar100", tmp_path)
    assert str(tmp_path / "cifar-100-python" / "train") in str(e.value)
