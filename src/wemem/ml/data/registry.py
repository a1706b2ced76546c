"""The dataset registry: name -> loader, with a label and a family (``synthetic``, ``tabular``,
``image``). Each loader module registers its loaders; :func:`load_dataset` looks them up."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from ..registry import Registry, UnknownName
from .raw import DataError, RawDataset

__all__ = ["DATASETS", "load_dataset", "loader_options"]

DATASETS = Registry("dataset")


def loader_options(name: str) -> list[str]:
    """The options dataset ``name``'s loader takes (its keyword arguments besides ``download``)."""
    loader = DATASETS[name].obj
    return [p for p in inspect.signature(loader).parameters if p not in ("raw_dir", "download")]


def load_dataset(name: str, raw_dir: str | Path, *, download: bool = True,
                 **options: Any) -> RawDataset:
    """Load dataset ``name`` from ``raw_dir`` (usually ``data/01_raw/<name>/``)."""
    try:
        loader = DATASETS[name].obj
    except UnknownName as exc:
        raise DataError(str(exc)) from None
    accepted = loader_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise DataError(f"dataset {name!r}: unknown option(s) {unknown}; accepted: "
                        f"{accepted or 'none'}.")
    return loader(raw_dir, download=download, **options)
