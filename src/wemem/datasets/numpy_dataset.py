"""``NpzDataset``: a dict of numpy arrays in one ``.npz`` file, never unpickled on load."""

from __future__ import annotations

import io
import zipfile
from typing import Any

import numpy as np
from kedro.io.core import DatasetError

from ._base import FileDataset


class NpzDataset(FileDataset):
    """Saves ``dict[str, np.ndarray]`` with ``np.savez_compressed``; loads with
    ``allow_pickle=False`` so object arrays are refused and no code can run on load.

    Example catalog entry::

        splits:
          type: wemem.datasets.NpzDataset
          filepath: data/02_intermediate/splits.npz
          versioned: true
    """

    def load(self) -> dict[str, np.ndarray]:
        f, path = self._open_for_read()
        with f:
            raw = f.read()
        try:
            with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
                return {k: npz[k] for k in npz.files}
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
            raise DatasetError(
                f"{path} is not a valid numpy archive ({exc}); it may be truncated or tampered with. "
                "Delete this version and re-run the pipeline that produces it."
            ) from exc

    def save(self, data: dict[str, Any]) -> None:
        if not isinstance(data, dict):
            raise DatasetError(f"NpzDataset saves a dict of arrays, got {type(data).__name__}")
        arrays = {str(k): np.asarray(v) for k, v in data.items()}
        bad = [k for k, v in arrays.items() if v.dtype == object]
        if bad:
            raise DatasetError(f"NpzDataset refuses object arrays (keys {bad}); store numeric arrays only")
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        self._write_atomic(buf.getvalue())
