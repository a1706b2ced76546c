"""Shared plumbing of the project's file datasets: versioned paths and atomic writes."""

from __future__ import annotations

import uuid
from pathlib import PurePosixPath
from typing import Any

import fsspec
from kedro.io.core import (
    AbstractVersionedDataset,
    DatasetError,
    Version,
    get_filepath_str,
    get_protocol_and_path,
)


class FileDataset(AbstractVersionedDataset):
    """A versioned file dataset whose ``save`` writes a temporary file and renames it.

    A crash in the middle of a save therefore never leaves a half-written artefact at the
    dataset's path, and earlier versions are never touched.
    """

    def __init__(
        self,
        *,
        filepath: str,
        version: Version | None = None,
        metadata: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
    ) -> None:
        protocol, path = get_protocol_and_path(filepath, version)
        self._protocol = protocol
        self._fs = fsspec.filesystem(protocol, **(fs_args or {}))
        self.metadata = metadata
        super().__init__(
            filepath=PurePosixPath(path),
            version=version,
            exists_function=self._fs.exists,
            glob_function=self._fs.glob,
        )

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._filepath, "protocol": self._protocol, "version": self._version}

    def _load_path(self) -> str:
        return get_filepath_str(self._get_load_path(), self._protocol)

    def _open_for_read(self):
        path = self._load_path()
        try:
            return self._fs.open(path, "rb"), path
        except FileNotFoundError as exc:
            raise DatasetError(
                f"{path} does not exist; run the pipeline that produces it first "
                "(see `kedro viz` for the lineage)"
            ) from exc

    def _write_atomic(self, payload: bytes) -> None:
        save_path = get_filepath_str(self._get_save_path(), self._protocol)
        parent = str(PurePosixPath(save_path).parent)
        self._fs.makedirs(parent, exist_ok=True)
        tmp = f"{parent}/.{PurePosixPath(save_path).name}.{uuid.uuid4().hex}.tmp"
        with self._fs.open(tmp, "wb") as f:
            f.write(payload)
        self._fs.mv(tmp, save_path)
        self._fs.invalidate_cache(parent)

    def _exists(self) -> bool:
        try:
            path = self._load_path()
        except DatasetError:
            return False
        return self._fs.exists(path)

    def _release(self) -> None:
        super()._release()
        self._fs.invalidate_cache(get_filepath_str(self._filepath, self._protocol))
