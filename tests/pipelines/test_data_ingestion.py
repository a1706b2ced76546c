"""data_ingestion: nodes called directly and the pipeline run with a DataCatalog."""

from __future__ import annotations

import numpy as np
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro_datasets.json import JSONDataset

from tests.conftest import SHARED_LOCATION
from wemem.ml.data import DataError
from wemem.pipelines.data_ingestion.nodes import load_raw_dataset, split_dataset
from wemem.params import DataIngestion, DatasetSettings
from wemem.pipelines.data_ingestion.pipeline import create_pipeline

DATASETS = {
    "mnist1d": {"loader": {"num_samples": 600, "seed": 0}, "model": "column_fc", "n_shadows": 2,
                "defense_defaults": {"w": 5, "s": 1, "tau": 0.6}},
    "location": {"loader": {}, "model": "column_fc", "n_shadows": 5, "defense_defaults": {"w": 15, "s": 1, "tau": 0.6}},
}
SPLIT = {"train_pool_fraction": 0.8, "victim_fraction": 0.5, "member_fraction": 0.9, "dev_fraction": 0.34}


def _settings(dataset: str) -> DatasetSettings:
    return DatasetSettings.model_validate(DATASETS[dataset])


def _ingestion(raw_root, raw_dir=None) -> DataIngestion:
    return DataIngestion(raw_root=str(raw_root), raw_dir=raw_dir, download=False, split=SPLIT)


def _catalog(dataset: str, raw_dir: str, out_dir) -> DataCatalog:
    return DataCatalog({
        "dataset_info": JSONDataset(filepath=str(out_dir / "dataset_info.json")),
        "params:dataset": MemoryDataset(dataset),
        "params:dataset_settings": MemoryDataset(_settings(dataset)),  # typed, as Kedro hands them over
        "params:data_ingestion": MemoryDataset(_ingestion(raw_dir, raw_dir)),
        "params:seed": MemoryDataset(7),
    })


def test_pipeline_on_mnist1d(tmp_path):
    catalog = _catalog("mnist1d", str(tmp_path), tmp_path)
    SequentialRunner().run(create_pipeline(), catalog)
    info = catalog.load("dataset_info")
    splits = catalog.load("splits")
    sizes = catalog.load("split_sizes")
    assert info["input_shape"] == [40] and info["num_classes"] == 10
    assert "model" not in info and "n_shadows" not in info  # settings are parameters, not data
    assert len({k.split("/")[0] for k in splits if k.startswith("shadow_")}) == 2
    assert set(splits) >= {"victim/train", "shadow_0/test", "shadow_1/dev"}
    assert sizes["victim/train"] == len(splits["victim/train"])
    for role in ("victim", "shadow_0", "shadow_1"):
        members = set(splits[f"{role}/train"])
        assert not members & set(splits[f"{role}/test"]) and not members & set(splits[f"{role}/dev"])


@pytest.mark.skipif(not SHARED_LOCATION.exists(), reason="real Location archive not present in ../shared")
def test_pipeline_on_real_location_logs_reference_sizes(caplog, tmp_path):
    catalog = _catalog("location", str(SHARED_LOCATION.parent), tmp_path)
    with caplog.at_level("INFO"):
        SequentialRunner().run(create_pipeline(), catalog)
    sizes = catalog.load("split_sizes")
    assert (sizes["victim/train"], sizes["victim/dev"], sizes["victim/test"]) == (1803, 409, 794)
    assert all(sizes[f"shadow_{i}/train"] == 1803 for i in range(5))
    assert "train 1803, dev 409, test 794" in caplog.text


def test_unknown_dataset_names_the_choices(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'mnist2d'.*did you mean 'mnist1d'"):
        load_raw_dataset("mnist2d", _settings("mnist1d"), _ingestion(tmp_path))


def test_missing_archive_names_the_path(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path / "location")):
        load_raw_dataset("location", _settings("location"), _ingestion(tmp_path))


def test_same_seed_same_split_other_seed_other_split(tmp_path):
    settings, ingestion = _settings("mnist1d"), _ingestion(tmp_path)
    arrays, info = load_raw_dataset("mnist1d", settings, ingestion)
    a, _ = split_dataset(arrays, info, settings, ingestion, 1)
    b, _ = split_dataset(arrays, info, settings, ingestion, 1)
    c, _ = split_dataset(arrays, info, settings, ingestion, 2)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["victim/train"], c["victim/train"])
