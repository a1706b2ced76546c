"""Kedro datasets of the project, all written atomically (temporary file + rename) and
versionable: numpy archives, torch state dicts, JSON, CSV, text and figures, and a report set
that writes several reports as one unit."""

from .formats import CSVDataset, FigureDataset, JSONDataset, TextDataset
from .numpy_dataset import NpzDataset
from .report_set import ReportSetDataset
from .torch_dataset import TorchModelsDataset

__all__ = ["NpzDataset", "TorchModelsDataset", "JSONDataset", "CSVDataset", "TextDataset", "FigureDataset",
           "ReportSetDataset"]
