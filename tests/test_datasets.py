"""The project's Kedro datasets: versioning, atomic saves, safe loading."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from kedro.io.core import DatasetError, Version

from wemem.datasets import NpzDataset, TorchModelsDataset


def test_npz_round_trip(tmp_path):
    ds = NpzDataset(filepath=str(tmp_path / "a.npz"))
    data = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "victim/train": np.array([3, 1], dtype=np.int64)}
    ds.save(data)
    back = ds.load()
    assert set(back) == set(data)
    for k in data:
        np.testing.assert_array_equal(back[k], data[k])
        assert back[k].dtype == data[k].dtype


def test_npz_refuses_object_arrays(tmp_path):
    with pytest.raises(DatasetError, match="object arrays"):
        NpzDataset(filepath=str(tmp_path / "a.npz")).save({"x": np.array([{"a": 1}], dtype=object)})


def test_versioned_saves_keep_earlier_versions(tmp_path):
    path = str(tmp_path / "m.pt")
    first = TorchModelsDataset(filepath=path, version=Version(None, "2026-01-01T00.00.00.000Z"))
    first.save({"meta": {"n": 1}, "models": {"victim": {"w": torch.ones(2)}}})
    second = TorchModelsDataset(filepath=path, version=Version(None, "2026-01-02T00.00.00.000Z"))
    second.save({"meta": {"n": 2}, "models": {"victim": {"w": torch.zeros(2)}}})
    latest = TorchModelsDataset(filepath=path, version=Version(None, None)).load()
    assert latest["meta"]["n"] == 2
    old = TorchModelsDataset(filepath=path, version=Version("2026-01-01T00.00.00.000Z", None)).load()
    assert old["meta"]["n"] == 1 and torch.equal(old["models"]["victim"]["w"], torch.ones(2))
    with pytest.raises(DatasetError):  # a version is never overwritten
        TorchModelsDataset(filepath=path, version=Version(None, "2026-01-02T00.00.00.000Z")).save(
            {"meta": {}, "models": {}}
        )


def test_no_temporary_file_left_behind(tmp_path):
    ds = NpzDataset(filepath=str(tmp_path / "sub" / "a.npz"))
    ds.save({"x": np.zeros(3)})
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["a.npz"]


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_model_file_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"meta": {}, "models": {"victim": {"w": torch.ones(1)}}, "x": _Evil()}, path)
    with pytest.raises(DatasetError, match="weights_only"):
        TorchModelsDataset(filepath=str(path)).load()


def test_truncated_model_file_gives_clear_error(tmp_path):
    path = tmp_path / "m.pt"
    ds = TorchModelsDataset(filepath=str(path))
    ds.save({"meta": {}, "models": {"victim": {"w": torch.randn(100, 100)}}})
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(DatasetError, match=r"m\.pt.*truncated or tampered"):
        ds.load()


def test_tampered_npz_gives_clear_error(tmp_path):
    path = tmp_path / "a.npz"
    path.write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(DatasetError, match="truncated or tampered"):
        NpzDataset(filepath=str(path)).load()


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(DatasetError, match="nothing.npz"):
        NpzDataset(filepath=str(tmp_path / "nothing.npz")).load()
