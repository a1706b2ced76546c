"""Synthetic data: MNIST-1D, generated locally with the ``mnist1d`` package (cached as an ``.npz``)."""

from __future__ import annotations

import contextlib
import io
import random
import warnings
from pathlib import Path

import numpy as np

from .raw import DataError, RawDataset, _atomic_savez
from .registry import DATASETS

__all__ = ["load_mnist1d"]


@DATASETS.register("mnist1d", label="MNIST-1D", family="synthetic")
def load_mnist1d(raw_dir: str | Path, *, download: bool = True, num_samples: int = 5000,
                 seed: int = 42) -> RawDataset:
    """MNIST-1D generated locally (no download); its own train/test sets give ``test_mask``.

    The generated arrays are cached as ``raw_dir/mnist1d_<num_samples>_<seed>.npz``.
    """
    del download  # generated locally, never downloaded
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) \
            or num_samples < 10:
        raise DataError(f"mnist1d: num_samples must be an integer >= 10, got {num_samples!r}.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise DataError(f"mnist1d: seed must be an integer, got {seed!r}.")
    cache = Path(raw_dir) / f"mnist1d_{int(num_samples)}_{int(seed)}.npz"
    arrays = None
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as z:
                arrays = {k: z[k] for k in ("x", "y", "test_mask")}
        except Exception as exc:  # noqa: BLE001 - a broken cache is regenerated
            warnings.warn(f"{cache}: unreadable cache ({exc}); regenerating it.", UserWarning,
                          stacklevel=2)
            arrays = None
    if arrays is None:
        try:
            from mnist1d.data import get_dataset_args, make_dataset
        except ImportError as exc:  # pragma: no cover - dependency of the project
            raise DataError("mnist1d: the 'mnist1d' package is not installed; "
                            "install it with `pip install mnist1d`.") from exc
        args = get_dataset_args()
        args.num_samples = int(num_samples)
        args.seed = int(seed)
        # make_dataset reseeds the global `random`/`np.random` generators: restore them after
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                d = make_dataset(args)
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
        x = np.concatenate([np.asarray(d["x"]), np.asarray(d["x_test"])]).astype(np.float32)
        y = np.concatenate([np.asarray(d["y"]), np.asarray(d["y_test"])]).astype(np.int64)
        mask = np.zeros(len(y), dtype=bool)
        mask[len(d["y"]):] = True
        arrays = {"x": x, "y": y, "test_mask": mask}
        _atomic_savez(cache, **arrays)
    x = arrays["x"].astype(np.float32, copy=False)
    y = arrays["y"].astype(np.int64, copy=False)
    if y.size and (y.min() < 0 or y.max() > 9):
        raise DataError(f"{cache}: labels out of range 0..9; delete the cache file to regenerate.")
    return RawDataset(name="mnist1d", features=np.ascontiguousarray(x), labels=y, num_classes=10,
                      kind="tabular", mean=None, std=None,
                      test_mask=arrays["test_mask"].astype(bool, copy=False))
