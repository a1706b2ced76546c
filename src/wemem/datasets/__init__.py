"""Kedro datasets of the project: numpy archives and torch state dicts, both versionable."""

from .numpy_dataset import NpzDataset
from .torch_dataset import TorchModelsDataset

__all__ = ["NpzDataset", "TorchModelsDataset"]
