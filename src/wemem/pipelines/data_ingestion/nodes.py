"""Nodes of the data_ingestion pipeline: load one dataset, split it, report the sizes."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from wemem.ml.data import load_dataset, make_splits, split_sizes

log = logging.getLogger(__name__)


def _dataset_settings(dataset: str, datasets: dict[str, Any]) -> dict[str, Any]:
    if dataset not in datasets:
        raise ValueError(
            f"unknown dataset {dataset!r} (parameter 'dataset'); choose one of {sorted(datasets)} "
            "or add its settings under 'datasets' in conf/base/parameters.yml"
        )
    return datasets[dataset]


def load_raw_dataset(
    dataset: str, datasets: dict[str, Any], ingestion: dict[str, Any]
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Reads the raw files of ``dataset`` into compact arrays and describes them.

    Args:
        dataset: dataset name (``params:dataset``).
        datasets: per-dataset settings (``params:datasets``).
        ingestion: ``params:data_ingestion`` (raw folder, download switch).

    Returns:
        ``dataset_arrays`` (features, labels and, for datasets with their own test set, the
        test mask) and ``dataset_info`` (shape, classes, model, normalisation, defense defaults).
    """
    settings = _dataset_settings(dataset, datasets)
    raw_dir = ingestion.get("raw_dir") or str(Path(ingestion["raw_root"]) / dataset)
    raw = load_dataset(dataset, raw_dir, download=bool(ingestion.get("download", True)), **settings.get("loader", {}))
    arrays = {"features": raw.features, "labels": raw.labels}
    if raw.test_mask is not None:
        arrays["test_mask"] = raw.test_mask
    info = {
        "name": raw.name,
        "kind": raw.kind,
        "num_samples": int(raw.labels.shape[0]),
        "input_shape": list(raw.features.shape[1:]),
        "num_classes": int(raw.num_classes),
        "mean": list(raw.mean) if raw.mean is not None else None,
        "std": list(raw.std) if raw.std is not None else None,
        "model": settings["model"],
        "n_shadows": int(settings["n_shadows"]),
        "defense_defaults": dict(settings.get("defense_defaults", {})),
        "raw_dir": raw_dir,
    }
    log.info("%s: %d samples, input %s, %d classes, model %s", dataset, info["num_samples"],
             tuple(info["input_shape"]), info["num_classes"], info["model"])
    return arrays, info


def split_dataset(
    arrays: dict[str, np.ndarray], info: dict[str, Any], split: dict[str, Any], seed: int
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Victim and shadow splits as index arrays into the raw rows (SPEC §2).

    Returns:
        ``splits`` (``train_pool``, ``victim/train`` … ``shadow_<i>/test``) and their sizes.
    """
    splits = make_splits(
        arrays["labels"],
        test_mask=arrays.get("test_mask"),
        seed=int(seed),
        n_shadows=int(info["n_shadows"]),
        **split,
    )
    sizes = split_sizes(splits)
    log.info(
        "%s splits: train pool %d, test pool %d; per model: train %d, dev %d, test %d (victim), %d shadows",
        info["name"], sizes["train_pool"], sizes["test_pool"], sizes["victim/train"], sizes["victim/dev"],
        sizes["victim/test"], info["n_shadows"],
    )
    return splits, sizes
