"""Nodes of the data_ingestion pipeline: load one dataset, split it, report the sizes."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from wemem.ml.data import load_dataset, make_splits, split_sizes
from wemem.ml.experiment import describe_data
from wemem.params import DataIngestion, DatasetSettings

log = logging.getLogger(__name__)


def load_raw_dataset(
    dataset: str, settings: DatasetSettings, ingestion: DataIngestion
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Reads the raw files of ``dataset`` into compact arrays and describes them.

    Args:
        dataset: dataset name (``params:dataset``).
        settings: the dataset's settings (``params:dataset_settings``): loader options.
        ingestion: ``params:data_ingestion`` (raw folder, download switch).

    Returns:
        ``dataset_arrays`` (features, labels and, for datasets with their own test set, the
        test mask) and ``dataset_info`` (what the data is: shape, classes, normalisation, source).
    """
    raw_dir = ingestion.raw_dir or str(Path(ingestion.raw_root) / dataset)
    raw = load_dataset(dataset, raw_dir, download=ingestion.download, **settings.loader)
    arrays, info = describe_data(raw, raw_dir)
    log.info("%s: %d samples, input %s, %d classes", dataset, info["num_samples"], tuple(info["input_shape"]),
             info["num_classes"])
    return arrays, info


def split_dataset(
    arrays: dict[str, np.ndarray], info: dict[str, Any], settings: DatasetSettings, ingestion: DataIngestion,
    seed: int,
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Victim and shadow splits as index arrays into the raw rows (SPEC §2).

    Returns:
        ``splits`` (``train_pool``, ``victim/train`` … ``shadow_<i>/test``) and their sizes.
    """
    splits = make_splits(arrays["labels"], test_mask=arrays.get("test_mask"), seed=int(seed),
                         n_shadows=settings.n_shadows, **ingestion.split.as_dict())
    sizes = split_sizes(splits)
    log.info(
        "%s splits: train pool %d, test pool %d; per model: train %d, dev %d, test %d (victim), %d shadows",
        info["name"], sizes["train_pool"], sizes["test_pool"], sizes["victim/train"], sizes["victim/dev"],
        sizes["victim/test"], settings.n_shadows,
    )
    return splits, sizes
