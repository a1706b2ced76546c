"""Shared plumbing of the project's file datasets: versioned paths, atomic writes, and a check
that an artefact found on disk is complete before a resumed run reuses it."""

from __future__ import annotations

import logging
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

log = logging.getLogger(__name__)

FIX = "`kedro run --only-missing-outputs` writes a new, complete version of it"


def unreadable_message(path: str, reason: str) -> str:
    """The one line that names an unreadable artefact and the command that fixes it."""
    return f"{path} is truncated or tampered with ({reason}); {FIX}."


class FileDataset(AbstractVersionedDataset):
    """A versioned file dataset whose ``save`` writes a temporary file and renames it.

    A crash in the middle of a save therefore never leaves a half-written artefact at the
    dataset's path, and earlier versions are never touched. ``save`` is split into
    :meth:`stage` (write the temporary file) and :meth:`commit` (rename it into place), so a
    :class:`~wemem.datasets.ReportSetDataset` can stage several files before renaming any.

    Subclasses implement :meth:`_serialise` (data → bytes), :meth:`_deserialise` (bytes → data)
    and may implement :meth:`_check` (bytes → why they are not a complete file, or None): an
    artefact that fails the check does not count as existing (``--only-missing-outputs`` redoes
    it) and fails to load with one line naming it and the command that fixes it.
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

    # ------------------------------------------------------------------ subclass interface
    def _serialise(self, data: Any) -> bytes:
        raise NotImplementedError

    def _deserialise(self, raw: bytes, path: str) -> Any:
        raise NotImplementedError

    def _check(self, raw: bytes) -> str | None:
        """Why ``raw`` is not a complete file of this format (None: it is)."""
        return None

    # ------------------------------------------------------------------ kedro interface
    def load(self) -> Any:
        f, path = self._open_for_read()
        with f:
            raw = f.read()
        reason = self._check(raw)
        if reason:
            raise DatasetError(unreadable_message(path, reason))
        return self._deserialise(raw, path)

    def save(self, data: Any) -> None:
        self.commit(self.stage(data))

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

    def stage(self, data: Any) -> tuple[str, str]:
        """Writes ``data`` to a temporary file next to the save path; returns (temporary, final)."""
        payload = self._serialise(data)
        if getattr(self, "_version_cache", None) is not None:
            self._version_cache.clear()  # the save path of a new version (as kedro's save does)
        save_path = get_filepath_str(self._get_save_path(), self._protocol)
        parent = str(PurePosixPath(save_path).parent)
        tmp = f"{parent}/.{PurePosixPath(save_path).name}.{uuid.uuid4().hex}.tmp"
        try:
            self._fs.makedirs(parent, exist_ok=True)
            with self._fs.open(tmp, "wb") as f:
                f.write(payload)
        except OSError as exc:
            self.discard(tmp)
            raise DatasetError(
                f"cannot write {save_path} ({type(exc).__name__}: {exc}); check that {parent} can be "
                "created and written (free space, permissions, no file in the way)"
            ) from exc
        return tmp, save_path

    def commit(self, staged: tuple[str, str]) -> None:
        """Renames a staged temporary file into place (atomic on one filesystem)."""
        tmp, save_path = staged
        self._fs.mv(tmp, save_path)
        self._fs.invalidate_cache(str(PurePosixPath(save_path).parent))

    def discard(self, path: str) -> None:
        """Removes ``path`` if it is there (a staged or committed file being rolled back), and
        its version folder when that is left empty."""
        parent = str(PurePosixPath(path).parent)
        try:
            if self._fs.exists(path):
                self._fs.rm(path)
            if self._version is not None and self._fs.isdir(parent) and not self._fs.ls(parent):
                self._fs.rmdir(parent)
            self._fs.invalidate_cache(parent)
        except OSError:
            pass

    def _exists(self) -> bool:
        try:
            path = self._load_path()
        except DatasetError:
            return False
        if not self._fs.exists(path):
            return False
        try:
            with self._fs.open(path, "rb") as f:
                reason = self._check(f.read())
        except OSError as exc:
            reason = f"{type(exc).__name__}: {exc}"
        if reason:
            log.warning(unreadable_message(path, reason))
            return False
        return True

    def _release(self) -> None:
        super()._release()
        self._fs.invalidate_cache(get_filepath_str(self._filepath, self._protocol))
