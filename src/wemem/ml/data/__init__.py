"""Raw dataset loaders and the reference split protocol (SPEC §2).

Pure library: no kedro imports. Every loader reads a local file under ``raw_dir`` first and only
then (``download=True``) tries the canonical download once; anything missing, truncated or
malformed raises one :class:`DataError` that names the path or value and says what to do.

Modules
-------
``raw``        :class:`RawDataset`, :class:`DataError`, downloads, archives and CSV parsing
``registry``   :data:`DATASETS` (name -> loader, label, family) and :func:`load_dataset`
``synthetic``  ``mnist1d``: generated locally with the ``mnist1d`` package (cached as an ``.npz``)
``tabular``    ``location``, ``purchase100``, ``texas100``: binary features inside a tgz
``images``     ``cifar10``, ``cifar100`` (torchvision's format), ``cinic10`` (ImageFolder)
``splits``     :func:`make_splits` (victim and shadow splits) and :func:`split_sizes`

Adding a dataset is one loader function registered with ``@DATASETS.register(name, label=...,
family=...)`` in a module of this package (every module is imported here), plus its entry under ``datasets:`` in
``conf/base/parameters.yml``; its keyword arguments are the entry's ``loader`` options.
"""

from __future__ import annotations

import importlib
import pkgutil

from .raw import DOWNLOAD_TIMEOUT_S, DataError, RawDataset
from .registry import DATASETS, load_dataset, loader_options

# the loader modules register their datasets on import, in this order
from .synthetic import load_mnist1d  # noqa: E402  isort: skip
from .tabular import load_location, load_purchase100, load_texas100  # noqa: E402  isort: skip
from .images import load_cifar10, load_cifar100, load_cinic10  # noqa: E402  isort: skip
from .splits import make_splits, split_sizes  # noqa: E402

# any other module of the package (a new loader family) registers its datasets on import
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "DATASETS",
    "DOWNLOAD_TIMEOUT_S",
    "DataError",
    "RawDataset",
    "load_dataset",
    "loader_options",
    "make_splits",
    "split_sizes",
    "load_mnist1d",
    "load_location",
    "load_purchase100",
    "load_texas100",
    "load_cifar10",
    "load_cifar100",
    "load_cinic10",
]
