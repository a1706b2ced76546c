"""Atomic, versionable JSON, CSV, text and figure datasets.

Drop-in replacements for ``json.JSONDataset``, ``pandas.CSVDataset``, ``text.TextDataset`` and
``matplotlib.MatplotlibDataset`` of kedro-datasets (same ``filepath``, ``save_args``,
``load_args``, ``versioned``), built on :class:`~wemem.datasets._base.FileDataset`: the bytes
are written to a temporary file and renamed into place, so a crash or a full disk never leaves
a half-written artefact at the dataset's path, and a truncated file (e.g. copied from elsewhere)
counts as missing for ``--only-missing-outputs``.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pandas as pd
from kedro.io.core import DatasetError, Version

from ._base import FileDataset

__all__ = ["JSONDataset", "CSVDataset", "TextDataset", "FigureDataset"]

_PNG_END = b"IEND\xaeB`\x82"


class _ArgsDataset(FileDataset):
    """A file dataset with ``save_args`` and ``load_args`` for the underlying library."""

    DEFAULT_SAVE_ARGS: dict[str, Any] = {}

    def __init__(
        self,
        *,
        filepath: str,
        save_args: dict[str, Any] | None = None,
        load_args: dict[str, Any] | None = None,
        version: Version | None = None,
        metadata: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(filepath=filepath, version=version, metadata=metadata, fs_args=fs_args)
        self._save_args = {**self.DEFAULT_SAVE_ARGS, **(save_args or {})}
        self._load_args = dict(load_args or {})


class JSONDataset(_ArgsDataset):
    """Any JSON value; NaN/inf are written as JSON's ``NaN``/``Infinity`` (as ``json`` does)."""

    DEFAULT_SAVE_ARGS = {"indent": 2}

    def _serialise(self, data: Any) -> bytes:
        return json.dumps(data, **self._save_args).encode("utf-8")

    def _check(self, raw: bytes) -> str | None:
        try:
            json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            return f"not valid JSON: {exc}"
        return None

    def _deserialise(self, raw: bytes, path: str) -> Any:
        return json.loads(raw.decode("utf-8"), **self._load_args)


class CSVDataset(_ArgsDataset):
    """A pandas DataFrame as CSV (``save_args``/``load_args`` go to ``to_csv``/``read_csv``).
    ``to_csv`` ends every file with a newline: a file without one was cut short."""

    def _serialise(self, data: pd.DataFrame) -> bytes:
        if not isinstance(data, pd.DataFrame):
            raise DatasetError(f"CSVDataset saves a pandas DataFrame, got {type(data).__name__}")
        return data.to_csv(**self._save_args).encode("utf-8")

    def _check(self, raw: bytes) -> str | None:
        return None if raw.endswith(b"\n") else "the last line is cut short"

    def _deserialise(self, raw: bytes, path: str) -> pd.DataFrame:
        try:
            return pd.read_csv(io.BytesIO(raw), **self._load_args)
        except (ValueError, pd.errors.ParserError) as exc:
            raise DatasetError(f"{path} is not a readable CSV table ({exc})") from exc


class TextDataset(FileDataset):
    """A UTF-8 string (e.g. a Markdown or HTML report)."""

    def _serialise(self, data: str) -> bytes:
        if not isinstance(data, str):
            raise DatasetError(f"TextDataset saves a string, got {type(data).__name__}")
        return data.encode("utf-8")

    def _deserialise(self, raw: bytes, path: str) -> str:
        return raw.decode("utf-8")


class FigureDataset(_ArgsDataset):
    """A matplotlib Figure as an image (``save_args`` go to ``savefig``; the format follows the
    file's extension). Loading gives the image's bytes."""

    def _serialise(self, data: Any) -> bytes:
        if not hasattr(data, "savefig"):
            raise DatasetError(f"FigureDataset saves a matplotlib Figure, got {type(data).__name__}")
        buf = io.BytesIO()
        fmt = str(self._filepath).rsplit(".", 1)[-1].lower()
        data.savefig(buf, **{"format": fmt, **self._save_args})
        return buf.getvalue()

    def _check(self, raw: bytes) -> str | None:
        if str(self._filepath).lower().endswith(".png") and not raw.rstrip(b"\0").endswith(_PNG_END):
            return "the PNG image is cut short"
        return None

    def _deserialise(self, raw: bytes, path: str) -> bytes:
        return raw
