"""Tabular loaders: Location-30, Purchase-100 and Texas-100 (binary features inside a tgz).

``location``     ``dataset_location.tgz`` -> CSV ``bangkok`` (label "1".."30", 446 binary columns)
``purchase100``  ``dataset_purchase.tgz`` -> CSV ``dataset_purchase`` (label 1..100, 600 binary)
``texas100``     ``dataset_texas.tgz`` -> ``texas/100/feats`` + ``texas/100/labels`` (6,169 binary)
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from .raw import DataError, RawDataset, _ensure_file, _md5, _parse_numeric_csv, _read_members
from .registry import DATASETS

__all__ = ["load_location", "load_purchase100", "load_texas100"]

LOCATION_URL = "https://github.com/privacytrustlab/datasets/raw/master/dataset_location.tgz"
LOCATION_MD5 = "66851c781a61f51b35ead292b5f303e3"
PURCHASE_URL = "https://www.comp.nus.edu.sg/~reza/files/dataset_purchase.tgz"
TEXAS_URL = "https://www.comp.nus.edu.sg/~reza/files/dataset_texas.tgz"


def _check_binary(features: np.ndarray, source: str) -> None:
    bad = (features != 0) & (features != 1)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise DataError(f"{source}: non-binary feature value {features[r, c]!r} at data row "
                        f"{r + 1}, feature column {c + 1}; this format holds only 0/1 features. "
                        f"The file is not the expected one; replace it with the original.")


def _labels_from_one_based(raw: np.ndarray, num_classes: int, source: str) -> np.ndarray:
    """Turn labels 1..num_classes (float from CSV) into int64 0..num_classes-1, validated."""
    raw = np.asarray(raw, dtype=np.float64)
    bad = (raw != np.round(raw)) | (raw < 1) | (raw > num_classes)
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise DataError(f"{source}: label {raw[r]:g} at data row {r + 1} is out of range; "
                        f"expected integer labels 1..{num_classes}.")
    return raw.astype(np.int64) - 1


def _tabular(name: str, features: np.ndarray, labels: np.ndarray, num_classes: int) -> RawDataset:
    return RawDataset(name=name, features=np.ascontiguousarray(features, dtype=np.float32),
                      labels=np.ascontiguousarray(labels, dtype=np.int64), num_classes=num_classes,
                      kind="tabular", mean=None, std=None, test_mask=None)


def _load_label_first_csv(archive: Path, member: str, *, name: str, n_features: int,
                          num_classes: int) -> RawDataset:
    data = _read_members(archive, [member])[member]
    source = f"{archive}:{member}"
    arr = _parse_numeric_csv(data, source=source, expected_cols=n_features + 1,
                             what=f"label 1..{num_classes} then {n_features} binary features")
    labels = _labels_from_one_based(arr[:, 0], num_classes, source)
    features = arr[:, 1:]
    _check_binary(features, source)
    return _tabular(name, features, labels, num_classes)


# --------------------------------------------------------------------------------------------
# loaders
# --------------------------------------------------------------------------------------------


@DATASETS.register("location", label="Location", family="tabular")
def load_location(raw_dir: str | Path, *, download: bool = True) -> RawDataset:
    """Location-30: ``raw_dir/dataset_location.tgz`` -> CSV ``bangkok`` (5,010 x 446, 30 classes)."""
    path = Path(raw_dir) / "dataset_location.tgz"
    _ensure_file(path, url=LOCATION_URL, what="Location archive", download=download,
                 how="dataset_location.tgz from the privacytrustlab/datasets repository, "
                     f"md5 {LOCATION_MD5}")
    digest = _md5(path)
    if digest != LOCATION_MD5:
        warnings.warn(f"{path}: md5 {digest} differs from the published {LOCATION_MD5}; "
                      "results may not match the reference.", UserWarning, stacklevel=2)
    return _load_label_first_csv(path, "bangkok", name="location", n_features=446, num_classes=30)


@DATASETS.register("purchase100", label="Purchase-100", family="tabular")
def load_purchase100(raw_dir: str | Path, *, download: bool = True) -> RawDataset:
    """Purchase-100: ``raw_dir/dataset_purchase.tgz`` -> CSV ``dataset_purchase`` (600 binary)."""
    path = Path(raw_dir) / "dataset_purchase.tgz"
    _ensure_file(path, url=PURCHASE_URL, what="Purchase-100 archive", download=download,
                 how="dataset_purchase.tgz as published by Shokri et al. / ML Privacy Meter")
    return _load_label_first_csv(path, "dataset_purchase", name="purchase100", n_features=600,
                                 num_classes=100)


@DATASETS.register("texas100", label="Texas-100", family="tabular")
def load_texas100(raw_dir: str | Path, *, download: bool = True) -> RawDataset:
    """Texas-100: ``raw_dir/dataset_texas.tgz`` -> ``texas/100/feats`` + ``texas/100/labels``."""
    path = Path(raw_dir) / "dataset_texas.tgz"
    _ensure_file(path, url=TEXAS_URL, what="Texas-100 archive", download=download,
                 how="dataset_texas.tgz as published by Shokri et al. / ML Privacy Meter")
    feats_m, labels_m = "texas/100/feats", "texas/100/labels"
    members = _read_members(path, [feats_m, labels_m])
    n_features, num_classes = 6169, 100
    features = _parse_numeric_csv(members.pop(feats_m), source=f"{path}:{feats_m}",
                                  expected_cols=n_features,
                                  what=f"{n_features} comma-separated binary features")
    _check_binary(features, f"{path}:{feats_m}")
    lab = _parse_numeric_csv(members.pop(labels_m), source=f"{path}:{labels_m}", expected_cols=1,
                             what=f"one label 1..{num_classes} per line")
    labels = _labels_from_one_based(lab[:, 0], num_classes, f"{path}:{labels_m}")
    if labels.shape[0] != features.shape[0]:
        raise DataError(f"{path}: {feats_m} has {features.shape[0]} rows but {labels_m} has "
                        f"{labels.shape[0]} labels; they must match. Replace the archive.")
    return _tabular("texas100", features, labels, num_classes)
