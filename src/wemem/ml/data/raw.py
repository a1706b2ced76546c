"""Dataset types and file helpers shared by every loader: the in-memory :class:`RawDataset`,
the one error every loader raises (:class:`DataError`), downloads, archives and CSV parsing.

Every network access of the loaders goes through :func:`_fetch_url` or
:func:`_torchvision_cifar_download` here (looked up on this module at call time), so tests switch
the network off by patching this one module.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import socket
import tarfile
import tempfile
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

__all__ = ["DOWNLOAD_TIMEOUT_S", "DataError", "RawDataset"]

DOWNLOAD_TIMEOUT_S = 30.0


class DataError(ValueError):
    """A dataset file is missing, corrupt or malformed, or a split request is impossible."""


@dataclass(frozen=True)
class RawDataset:
    """One dataset in memory, before splitting.

    ``features``: tabular float32 (n, d) of 0/1 (mnist1d: real values); image uint8 (n, 3, 32, 32).
    ``labels``: int64 (n,) in 0..num_classes-1.
    ``mean``/``std``: per-channel constants on the pixel/255 scale (images only, from the train part).
    ``test_mask``: True for rows of the dataset's own test set; None for data split 80/20.
    """

    name: str
    features: np.ndarray
    labels: np.ndarray
    num_classes: int
    kind: str
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    test_mask: np.ndarray | None

    @property
    def num_samples(self) -> int:
        return int(self.labels.shape[0])


# --------------------------------------------------------------------------------------------
# downloads and files
# --------------------------------------------------------------------------------------------


def _fetch_url(url: str, dest: Path, timeout: float = DOWNLOAD_TIMEOUT_S) -> None:
    """Download ``url`` to ``dest`` atomically (temp file in the same folder, then rename)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            while True:
                chunk = resp.read(1 << 20)
                if not chunk:
                    break
                out.write(chunk)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _torchvision_cifar_download(name: str, raw_dir: Path, timeout: float = DOWNLOAD_TIMEOUT_S) -> None:
    """Let torchvision download and extract CIFAR-10/100 into ``raw_dir`` (its own format)."""
    import torchvision  # local import: only needed when a download is attempted

    cls = {"cifar10": torchvision.datasets.CIFAR10, "cifar100": torchvision.datasets.CIFAR100}[name]
    raw_dir.mkdir(parents=True, exist_ok=True)
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        cls(root=str(raw_dir), train=True, download=True)
        cls(root=str(raw_dir), train=False, download=True)
    finally:
        socket.setdefaulttimeout(old)


def _ensure_file(path: Path, *, url: str, what: str, download: bool, how: str) -> Path:
    """Return ``path`` if it exists, else try one download of ``url`` to it, else raise DataError."""
    if path.is_file():
        return path
    if path.exists():
        raise DataError(f"{what}: expected a file at {path} but found something else; "
                        f"remove it and put the file there ({how}).")
    if not download:
        raise DataError(f"{what} not found: looked for {path} (download=False). "
                        f"Put the file at that path ({how}).")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _fetch_url(url, path, DOWNLOAD_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - any failure becomes one clear DataError
        raise DataError(f"{what} not found: looked for {path}; the download from {url} failed "
                        f"({type(exc).__name__}: {exc}). Obtain the file ({how}) and put it at "
                        f"{path}.") from exc
    if not path.is_file():  # pragma: no cover - defensive
        raise DataError(f"{what}: download reported success but {path} does not exist.")
    return path


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------------------------
# archives and CSV parsing
# --------------------------------------------------------------------------------------------


_ARCHIVE_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError)


def _read_members(archive: Path, wanted: Iterable[str]) -> dict[str, bytes]:
    """Read the named members of a (compressed) tar archive into memory.

    A member matches if its normalised name equals the wanted name or ends with ``/<wanted>``.
    """
    wanted = list(wanted)
    out: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            names = [m.name for m in members]
            for want in wanted:
                match = None
                for m in members:
                    norm = m.name.removeprefix("./")
                    if m.isfile() and (norm == want or norm.endswith("/" + want)):
                        match = m
                        break
                if match is None:
                    shown = ", ".join(names[:10]) + (" ..." if len(names) > 10 else "")
                    raise DataError(f"{archive}: member {want!r} not found in the archive "
                                    f"(it holds: {shown or 'nothing'}). The archive is not the "
                                    f"expected one; replace it with the original.")
                fobj = tar.extractfile(match)
                if fobj is None:  # pragma: no cover - isfile() checked
                    raise DataError(f"{archive}: member {match.name!r} cannot be read.")
                out[want] = fobj.read()
    except DataError:
        raise
    except _ARCHIVE_ERRORS as exc:
        raise DataError(f"{archive}: the archive is truncated or corrupt ({type(exc).__name__}: "
                        f"{exc}). Delete it and obtain a fresh copy at that path.") from exc
    return out


def _parse_numeric_csv(data: bytes, *, source: str, expected_cols: int, what: str) -> np.ndarray:
    """Parse comma-separated numbers (optionally quoted) into float32 (rows, expected_cols).

    Raises DataError naming ``source`` and the offending line on a wrong column count, a missing
    or non-numeric value.
    """
    import pandas as pd

    if not data.strip():
        raise DataError(f"{source}: the file is empty; expected {what}.")
    try:
        df = pd.read_csv(io.BytesIO(data), header=None, dtype=np.float32, skip_blank_lines=True,
                         engine="c")
    except pd.errors.ParserError as exc:
        msg = " ".join(str(exc).split())
        m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", msg)
        if m:
            first, line, saw = int(m.group(1)), m.group(2), m.group(3)
            if first != expected_cols:  # the first line set the (wrong) column count
                line, saw = "1", str(first)
            raise DataError(f"{source}: wrong number of columns on line {line}: expected "
                            f"{expected_cols} ({what}), found {saw}.") from exc
        raise DataError(f"{source}: cannot parse the CSV ({msg}); expected {expected_cols} "
                        f"columns per line ({what}).") from exc
    except (ValueError, TypeError) as exc:
        # a non-numeric value somewhere: locate it (error path only)
        try:
            raw = pd.read_csv(io.BytesIO(data), header=None, dtype=str, keep_default_na=False,
                              skip_blank_lines=True)
        except Exception:  # noqa: BLE001
            raise DataError(f"{source}: cannot parse as numbers ({exc}); expected {what}.") from exc
        num = raw.apply(pd.to_numeric, errors="coerce")
        bad = num.isna().to_numpy() & (raw.to_numpy() != "")
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise DataError(f"{source}: non-numeric value {raw.iat[r, c]!r} at data row {r + 1}, "
                            f"column {c + 1}; expected {what}.") from exc
        raise DataError(f"{source}: cannot parse as numbers ({exc}); expected {what}.") from exc
    found = df.shape[1]
    if found != expected_cols:
        raise DataError(f"{source}: wrong number of columns on line 1: expected {expected_cols} "
                        f"({what}), found {found}.")
    arr = df.to_numpy(dtype=np.float32, copy=False)
    nan_rows = np.flatnonzero(np.isnan(arr).any(axis=1))
    if nan_rows.size:
        r = int(nan_rows[0])
        c = int(np.flatnonzero(np.isnan(arr[r]))[0])
        cells = pd.read_csv(io.BytesIO(data), header=None, dtype=str, keep_default_na=False,
                            skip_blank_lines=True, skiprows=r, nrows=1).iloc[0]  # error path only
        if len(cells) < expected_cols:  # a short row (pandas pads it with NaN)
            raise DataError(f"{source}: wrong number of columns on data row {r + 1}: expected "
                            f"{expected_cols} ({what}), found {len(cells)}.")
        value = str(cells.iloc[c]).strip()
        found = f"the value {value!r}" if value else "an empty value"
        raise DataError(f"{source}: {found} at data row {r + 1}, column {c + 1}; expected a number there "
                        f"({expected_cols} numeric values per row: {what}). Fix or remove that row.")
    return arr

