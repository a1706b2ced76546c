"""``NpzDataset``: a dict of numpy arrays in one ``.npz`` file, never unpickled on load."""

from __future__ import annotations

import io
import zipfile
from typing import Any

import numpy as np
from kedro.io.core import DatasetError

from ._base import FileDataset


def zip_problem(raw: bytes) -> str | None:
    """Why ``raw`` is not a complete zip archive (npz and torch files are zips), or None.
    A truncated archive loses its central directory, which sits at the end."""
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as z:
            z.namelist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        return f"not a complete archive: {exc}"
    return None


class NpzDataset(FileDataset):
    """Saves ``dict[str, np.ndarray]`` with ``np.savez_compressed``; loads with
    ``allow_pickle=False`` so object arrays are refused and no code can run on load.

    Example catalog entry::

        splits:
          type: wemem.datasets.NpzDataset
          filepath: data/02_intermediate/splits.npz
          versioned: true
    """

    def _check(self, raw: bytes) -> str | None:
        return zip_problem(raw)

    def _deserialise(self, raw: bytes, path: str) -> dict[str, np.ndarray]:
        try:
            with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
                return {k: npz[k] for k in npz.files}
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
            raise DatasetError(
                f"{path} is not a valid numpy archive ({exc}); it may be truncated or tampered with. "
                "Delete this version and re-run the pipeline that produces it."
            ) from exc

    def _serialise(self, data: dict[str, Any]) -> bytes:
        if not isinstance(data, dict):
            raise DatasetError(f"NpzDataset saves a dict of arrays, got {type(data).__name__}")
        arrays = {str(k): np.asarray(v) for k, v in data.items()}
        bad = [k for k, v in arrays.items() if v.dtype == object]
        if bad:
            raise DatasetError(f"NpzDataset refuses object arrays (keys {bad}); store numeric arrays only")
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        return buf.getvalue()
