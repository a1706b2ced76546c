"""Scores in the reference implementation's CSV format (header ``,0``, then ``index,score``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..data.raw import DataError
from .estimator import TABLE_COLUMNS

__all__ = ["import_reference_csv", "export_reference_csv"]


def import_reference_csv(path: str | Path, labels: np.ndarray) -> pd.DataFrame:
    """Reads the reference implementation's score CSV (header ``,0`` then ``index,score``).

    The file's scores are already min-max normalised; they become both ``raw_score`` and
    ``score``, with ``n_in``/``n_out`` unknown (-1).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"memscore import file {path} does not exist; set memscore.import_csv to a CSV in the reference format "
            "(header ',0', then 'index,score') or to null to estimate scores"
        )
    try:
        df = pd.read_csv(path, index_col=0)
    except Exception as exc:  # noqa: BLE001 - re-raised with the path
        raise DataError(f"memscore import file {path} is not a readable CSV: {exc}") from exc
    if df.shape[1] != 1:
        raise DataError(f"memscore import file {path}: expected one score column after the index, found {df.shape[1]}")
    n = len(labels)
    index = df.index.to_numpy()
    if not np.issubdtype(index.dtype, np.integer) or len(index) != n or set(index.tolist()) != set(range(n)):
        raise DataError(
            f"memscore import file {path}: its index must cover the train pool 0..{n - 1} exactly once "
            f"(found {len(index)} rows); was it computed for another dataset or split seed?"
        )
    score = pd.to_numeric(df.iloc[:, 0], errors="coerce").to_numpy(dtype=np.float64)
    order = np.argsort(index)
    score = score[order]
    if np.isnan(score).any() or score.min() < 0 or score.max() > 1:
        raise DataError(f"memscore import file {path}: scores must be numbers in [0, 1]")
    return pd.DataFrame({
        "index": np.arange(n, dtype=np.int64),
        "label": np.asarray(labels, dtype=np.int64),
        "raw_score": score,
        "score": score,
        "n_in": np.full(n, -1, dtype=np.int64),
        "n_out": np.full(n, -1, dtype=np.int64),
    })[TABLE_COLUMNS]


def export_reference_csv(table: pd.DataFrame, path: str | Path) -> None:
    """Writes a score table in the reference format (header ``,0``)."""
    pd.DataFrame({"0": table["score"].to_numpy()}, index=table["index"].to_numpy()).to_csv(path)
