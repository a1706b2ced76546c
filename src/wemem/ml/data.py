"""Raw dataset loaders and the reference split protocol (SPEC §2).

Pure library: no kedro imports. Every loader reads a local file under ``raw_dir`` first and only
then (``download=True``) tries the canonical download once; anything missing, truncated or
malformed raises one :class:`DataError` that names the path or value and says what to do.

Datasets
--------
``mnist1d``      generated locally with the ``mnist1d`` package (cached as an ``.npz``)
``location``     ``dataset_location.tgz`` -> CSV ``bangkok`` (label "1".."30", 446 binary columns)
``purchase100``  ``dataset_purchase.tgz`` -> CSV ``dataset_purchase`` (label 1..100, 600 binary)
``texas100``     ``dataset_texas.tgz`` -> ``texas/100/feats`` + ``texas/100/labels`` (6,169 binary)
``cifar10``      ``cifar-10-batches-py/data_batch_1..5`` + ``test_batch`` (torchvision format)
``cifar100``     ``cifar-100-python/train`` + ``test`` (``fine_labels``)
``cinic10``      ImageFolder ``train/<class>/*.png`` and ``test/<class>/*.png``

Image normalisation constants (``mean``/``std``) are per channel on the ``pixel / 255`` scale,
computed from the train part only.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import io
import math
import os
import pickle
import random
import re
import socket
import tarfile
import tempfile
import urllib.request
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

__all__ = [
    "DataError",
    "RawDataset",
    "LOADERS",
    "load_dataset",
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

DOWNLOAD_TIMEOUT_S = 30.0

LOCATION_URL = "https://github.com/privacytrustlab/datasets/raw/master/dataset_location.tgz"
LOCATION_MD5 = "66851c781a61f51b35ead292b5f303e3"
PURCHASE_URL = "https://www.comp.nus.edu.sg/~reza/files/dataset_purchase.tgz"
TEXAS_URL = "https://www.comp.nus.edu.sg/~reza/files/dataset_texas.tgz"
CINIC10_URL = "https://datashare.ed.ac.uk/bitstream/handle/10283/3192/CINIC-10.tar.gz"

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


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
# downloads
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
        n_ok = int((~np.isnan(arr[r])).sum())
        raise DataError(f"{source}: wrong number of columns or an empty value on data row {r + 1}: "
                        f"expected {expected_cols} values ({what}), found {n_ok}.")
    return arr


def _check_binary(features: np.ndarray, source: str) -> None:
    bad = (features != 0) & (features != 1)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise DataError(f"{source}: non-binary feature value {features[r, c]!r} at data row "
                        f"{r + 1}, feature column {c + 1}; this format holds only 0/1 features. "
                        f"The file is not the expected one; replace it with the original.")


def _labels_from_one_based(raw: np.ndarray, num_classes: int, source: str) -> np.ndarray:
    """Turn labels 1..num_classes (float from CSV) into int64 0..num_classes-1, validated."""
    raw = np.asarray(raw, dtype=np.float64)
    bad = (raw != np.round(raw)) | (raw < 1) | (raw > num_classes)
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise DataError(f"{source}: label {raw[r]:g} at data row {r + 1} is out of range; "
                        f"expected integer labels 1..{num_classes}.")
    return raw.astype(np.int64) - 1


def _tabular(name: str, features: np.ndarray, labels: np.ndarray, num_classes: int) -> RawDataset:
    return RawDataset(name=name, features=np.ascontiguousarray(features, dtype=np.float32),
                      labels=np.ascontiguousarray(labels, dtype=np.int64), num_classes=num_classes,
                      kind="tabular", mean=None, std=None, test_mask=None)


def _load_label_first_csv(archive: Path, member: str, *, name: str, n_features: int,
                          num_classes: int) -> RawDataset:
    data = _read_members(archive, [member])[member]
    source = f"{archive}:{member}"
    arr = _parse_numeric_csv(data, source=source, expected_cols=n_features + 1,
                             what=f"label 1..{num_classes} then {n_features} binary features")
    labels = _labels_from_one_based(arr[:, 0], num_classes, source)
    features = arr[:, 1:]
    _check_binary(features, source)
    return _tabular(name, features, labels, num_classes)


# --------------------------------------------------------------------------------------------
# tabular loaders
# --------------------------------------------------------------------------------------------


def load_location(raw_dir: str | Path, *, download: bool = True) -> RawDataset:
    """Location-30: ``raw_dir/dataset_location.tgz`` -> CSV ``bangkok`` (5,010 x 446, 30 classes)."""
    path = Path(raw_dir) / "dataset_location.tgz"
    _ensure_file(path, url=LOCATION_URL, what="Location archive", download=download,
                 how="dataset_location.tgz from the privacytrustlab/datasets repository, "
                     f"md5 {LOCATION_MD5}")
    digest = _md5(path)
    if digest != LOCATION_MD5:
        warnings.warn(f"{path}: md5 {digest} differs from the published {LOCATION_MD5}; "
                      "results may not match the reference.", UserWarning, stacklevel=2)
    return _load_label_first_csv(path, "bangkok", name="location", n_features=446, num_classes=30)


def load_purchase100(raw_dir: str | Path, *, download: bool = True) -> RawDataset:
    """Purchase-100: ``raw_dir/dataset_purchase.tgz`` -> CSV ``dataset_purchase`` (600 binary)."""
    path = Path(raw_dir) / "dataset_purchase.tgz"
    _ensure_file(path, url=PURCHASE_URL, what="Purchase-100 archive", download=download,
                 how="dataset_purchase.tgz as published by Shokri et al. / ML Privacy Meter")
    return _load_label_first_csv(path, "dataset_purchase", name="purchase100", n_features=600,
                                 num_classes=100)


def load_texas100(raw_dir: str | Path, *, download: bool = True) -> RawDataset:
    """Texas-100: ``raw_dir/dataset_texas.tgz`` -> ``texas/100/feats`` + ``texas/100/labels``."""
    path = Path(raw_dir) / "dataset_texas.tgz"
    _ensure_file(path, url=TEXAS_URL, what="Texas-100 archive", download=download,
                 how="dataset_texas.tgz as published by Shokri et al. / ML Privacy Meter")
    feats_m, labels_m = "texas/100/feats", "texas/100/labels"
    members = _read_members(path, [feats_m, labels_m])
    n_features, num_classes = 6169, 100
    features = _parse_numeric_csv(members.pop(feats_m), source=f"{path}:{feats_m}",
                                  expected_cols=n_features,
                                  what=f"{n_features} comma-separated binary features")
    _check_binary(features, f"{path}:{feats_m}")
    lab = _parse_numeric_csv(members.pop(labels_m), source=f"{path}:{labels_m}", expected_cols=1,
                             what=f"one label 1..{num_classes} per line")
    labels = _labels_from_one_based(lab[:, 0], num_classes, f"{path}:{labels_m}")
    if labels.shape[0] != features.shape[0]:
        raise DataError(f"{path}: {feats_m} has {features.shape[0]} rows but {labels_m} has "
                        f"{labels.shape[0]} labels; they must match. Replace the archive.")
    return _tabular("texas100", features, labels, num_classes)


# --------------------------------------------------------------------------------------------
# mnist1d
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# CIFAR (restricted unpickling)
# --------------------------------------------------------------------------------------------


def _numpy_pickle_globals() -> dict[tuple[str, str], Any]:
    try:
        from numpy._core import multiarray as ma  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray as ma  # type: ignore[no-redef]
    try:
        from numpy._core import numeric as nm
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import numeric as nm  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Any] = {}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = ma._reconstruct
        allowed[(mod, "scalar")] = ma.scalar
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(mod, "_frombuffer")] = nm._frombuffer  # protocol-5 pickles
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    import _codecs
    import builtins

    allowed[("_codecs", "encode")] = _codecs.encode  # protocol-2 pickles of bytes
    for name in ("dict", "list", "tuple", "set", "frozenset", "bytes", "bytearray", "str", "int",
                 "float", "complex", "bool"):
        allowed[("builtins", name)] = getattr(builtins, name)
        allowed[("__builtin__", name)] = allowed[("builtins", name)]
    return allowed


_PICKLE_ALLOWED = _numpy_pickle_globals()


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds numpy arrays and plain builtins (what a CIFAR batch holds)."""

    def __init__(self, file: Any, source: str):
        super().__init__(file, encoding="latin1")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:  # noqa: D401
        try:
            return _PICKLE_ALLOWED[(module, name)]
        except KeyError:
            raise DataError(f"{self._source}: refusing to unpickle {module}.{name}; a CIFAR batch "
                            f"only holds numpy arrays and lists. The file is not a genuine CIFAR "
                            f"batch; delete it and obtain the original.") from None


def _load_cifar_batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            obj = _CifarUnpickler(f, str(path)).load()
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated/corrupt pickle
        raise DataError(f"{path}: cannot read the CIFAR batch ({type(exc).__name__}: {exc}); the "
                        f"file is truncated or corrupt. Delete it and obtain a fresh copy.") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a dict in the CIFAR batch, found {type(obj).__name__}.")
    batch = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}
    for key in ("data", label_key):
        if key not in batch:
            raise DataError(f"{path}: CIFAR batch has no {key!r} entry (keys: "
                            f"{sorted(map(str, batch))}). Is this the right CIFAR variant?")
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.ndim not in (2, 4):
        raise DataError(f"{path}: 'data' must be a numpy array of shape (n, 3072), found "
                        f"{type(data).__name__} {getattr(data, 'shape', '')}.")
    n = data.shape[0]
    if data.size != n * 3072:
        raise DataError(f"{path}: 'data' has shape {data.shape}; expected (n, 3072) = 3x32x32.")
    if data.dtype != np.uint8:
        if not np.issubdtype(data.dtype, np.integer) or data.min(initial=0) < 0 \
                or data.max(initial=0) > 255:
            raise DataError(f"{path}: 'data' must hold uint8 pixels 0..255, found {data.dtype}.")
        data = data.astype(np.uint8)
    images = np.ascontiguousarray(data.reshape(n, 3, 32, 32))
    try:
        labels = np.asarray(batch[label_key])
        if labels.dtype.kind not in "iu":
            raise TypeError(labels.dtype)
        labels = labels.astype(np.int64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: {label_key!r} must be a list of integers.") from exc
    if labels.shape[0] != n:
        raise DataError(f"{path}: {n} images but {labels.shape[0]} labels in {label_key!r}.")
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}: label {labels[i]} at index {i} is out of range 0..{num_classes - 1}.")
    return images, labels


def _channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean/std of uint8 NCHW images on the pixel/255 scale (via histograms)."""
    if images.shape[0] == 0:
        raise DataError("cannot compute normalisation constants from an empty train part.")
    values = np.arange(256, dtype=np.float64)
    means, stds = [], []
    for c in range(images.shape[1]):
        counts = np.bincount(images[:, c].reshape(-1), minlength=256).astype(np.float64)
        total = counts.sum()
        m = float((counts * values).sum() / total)
        var = float((counts * values**2).sum() / total - m * m)
        means.append(m / 255.0)
        stds.append(math.sqrt(max(var, 0.0)) / 255.0)
    return tuple(means), tuple(stds)


def _image_dataset(name: str, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                   test_y: np.ndarray, num_classes: int) -> RawDataset:
    mean, std = _channel_stats(train_x)
    features = np.concatenate([train_x, test_x]) if test_x.size else train_x
    labels = np.concatenate([train_y, test_y]).astype(np.int64)
    mask = np.zeros(labels.shape[0], dtype=bool)
    mask[train_y.shape[0]:] = True
    return RawDataset(name=name, features=np.ascontiguousarray(features, dtype=np.uint8),
                      labels=labels, num_classes=num_classes, kind="image", mean=mean, std=std,
                      test_mask=mask)


def _load_cifar(name: str, raw_dir: str | Path, download: bool) -> RawDataset:
    raw_dir = Path(raw_dir)
    if name == "cifar10":
        folder, train_files, test_files = "cifar-10-batches-py", \
            [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]
        label_key, num_classes = "labels", 10
    else:
        folder, train_files, test_files = "cifar-100-python", ["train"], ["test"]
        label_key, num_classes = "fine_labels", 100
    paths = [raw_dir / folder / f for f in train_files + test_files]
    missing = [p for p in paths if not p.is_file()]
    how = (f"the CIFAR python version as torchvision downloads it, extracted so that "
           f"{raw_dir / folder} holds {', '.join(train_files + test_files)}")
    if missing:
        if not download:
            raise DataError(f"{name}: {missing[0]} not found (download=False). Put {how}.")
        try:
            _torchvision_cifar_download(name, raw_dir, DOWNLOAD_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"{name}: {missing[0]} not found; the torchvision download into "
                            f"{raw_dir} failed ({type(exc).__name__}: {exc}). Put {how}.") from exc
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise DataError(f"{name}: {missing[0]} still missing after the download. Put {how}.")
    parts = [_load_cifar_batch(p, label_key, num_classes) for p in paths]
    k = len(train_files)
    tr_x = np.concatenate([x for x, _ in parts[:k]])
    tr_y = np.concatenate([y for _, y in parts[:k]])
    te_x = np.concatenate([x for x, _ in parts[k:]])
    te_y = np.concatenate([y for _, y in parts[k:]])
    return _image_dataset(name, tr_x, tr_y, te_x, te_y, num_classes)


def load_cifar10(raw_dir: str | Path, *, download: bool = True) -> RawDataset:
    """CIFAR-10 in torchvision's format under ``raw_dir/cifar-10-batches-py``."""
    return _load_cifar("cifar10", raw_dir, download)


def load_cifar100(raw_dir: str | Path, *, download: bool = True) -> RawDataset:
    """CIFAR-100 (fine labels) in torchvision's format under ``raw_dir/cifar-100-python``."""
    return _load_cifar("cifar100", raw_dir, download)


# --------------------------------------------------------------------------------------------
# CINIC-10 (ImageFolder)
# --------------------------------------------------------------------------------------------


def _scan_image_folder(root: Path) -> tuple[list[str], list[list[Path]]]:
    if not root.is_dir():
        raise DataError(f"cinic10: folder {root} not found.")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"cinic10: {root} holds no class folders; expected {root}/<class>/*.png.")
    files = []
    for c in classes:
        imgs = sorted(p for p in (root / c).iterdir()
                      if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not imgs:
            raise DataError(f"cinic10: class folder {root / c} holds no images "
                            f"({'/'.join(IMAGE_EXTENSIONS)}); every class needs at least one.")
        files.append(imgs)
    return classes, files


def _read_images(paths: list[Path]) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    out = np.empty((len(paths), 3, 32, 32), dtype=np.uint8)
    for i, p in enumerate(paths):
        try:
            with Image.open(p) as im:
                arr = np.asarray(im.convert("RGB"))
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise DataError(f"cinic10: cannot read image {p} ({exc}); replace or remove it.") from exc
        if arr.shape != (32, 32, 3):
            raise DataError(f"cinic10: image {p} is {arr.shape[1]}x{arr.shape[0]}; expected 32x32.")
        out[i] = arr.transpose(2, 0, 1)
    return out


def _subset(files: list[list[Path]], limit: int | None, rng: np.random.Generator,
            what: str) -> tuple[list[Path], np.ndarray]:
    paths = [p for group in files for p in group]
    labels = np.repeat(np.arange(len(files), dtype=np.int64), [len(g) for g in files])
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
            raise DataError(f"cinic10: {what} must be a positive integer or None, got {limit!r}.")
        if limit < len(paths):
            keep = np.sort(rng.choice(len(paths), size=int(limit), replace=False))
            paths = [paths[i] for i in keep]
            labels = labels[keep]
    return paths, labels


def _ensure_cinic(raw_dir: Path, download: bool) -> None:
    if (raw_dir / "train").is_dir() and (raw_dir / "test").is_dir():
        return
    where = raw_dir / ("train" if not (raw_dir / "train").is_dir() else "test")
    how = (f"download CINIC-10.tar.gz ({CINIC10_URL}) and extract it so that {raw_dir}/train and "
           f"{raw_dir}/test hold one folder of PNGs per class")
    if not download:
        raise DataError(f"cinic10: {where} not found (download=False); {how}.")
    archive = raw_dir / "CINIC-10.tar.gz"
    try:
        if not archive.is_file():
            _fetch_url(CINIC10_URL, archive, DOWNLOAD_TIMEOUT_S)
        with tarfile.open(archive, "r:*") as tar:
            kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(raw_dir, **kwargs)
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"cinic10: {where} not found; the download/extraction of {CINIC10_URL} "
                        f"into {raw_dir} failed ({type(exc).__name__}: {exc}); {how}.") from exc
    if not ((raw_dir / "train").is_dir() and (raw_dir / "test").is_dir()):
        raise DataError(f"cinic10: {where} still missing after extracting {archive}; {how}.")


def load_cinic10(raw_dir: str | Path, *, download: bool = True, max_train: int | None = None,
                 max_test: int | None = None, seed: int = 0) -> RawDataset:
    """CINIC-10 ImageFolder ``raw_dir/{train,test}/<class>/*.png``; class order = sorted names.

    ``max_train``/``max_test`` keep a uniformly random subset (``seed``) of that part.
    """
    raw_dir = Path(raw_dir)
    _ensure_cinic(raw_dir, download)
    tr_classes, tr_files = _scan_image_folder(raw_dir / "train")
    te_classes, te_files = _scan_image_folder(raw_dir / "test")
    if tr_classes != te_classes:
        only_tr = sorted(set(tr_classes) - set(te_classes))
        only_te = sorted(set(te_classes) - set(tr_classes))
        raise DataError(f"cinic10: inconsistent classes between {raw_dir / 'train'} and "
                        f"{raw_dir / 'test'}: only in train {only_tr}, only in test {only_te}. "
                        f"Both must hold the same class folders.")
    rng = np.random.default_rng(seed)
    tr_paths, tr_y = _subset(tr_files, max_train, rng, "max_train")
    te_paths, te_y = _subset(te_files, max_test, rng, "max_test")
    return _image_dataset("cinic10", _read_images(tr_paths), tr_y, _read_images(te_paths), te_y,
                          len(tr_classes))


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------


LOADERS: dict[str, Callable[..., RawDataset]] = {
    "mnist1d": load_mnist1d,
    "location": load_location,
    "purchase100": load_purchase100,
    "texas100": load_texas100,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "cinic10": load_cinic10,
}


def load_dataset(name: str, raw_dir: str | Path, *, download: bool = True,
                 **options: Any) -> RawDataset:
    """Load dataset ``name`` from ``raw_dir`` (usually ``data/01_raw/<name>/``)."""
    if name not in LOADERS:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(LOADERS))}.")
    loader = LOADERS[name]
    accepted = [p for p in inspect.signature(loader).parameters if p not in ("raw_dir", "download")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise DataError(f"dataset {name!r}: unknown option(s) {unknown}; accepted: "
                        f"{accepted or 'none'}.")
    return loader(raw_dir, download=download, **options)


# --------------------------------------------------------------------------------------------
# splits
# --------------------------------------------------------------------------------------------


def _floor(n: int, frac: float) -> int:
    # small epsilon so that e.g. 0.8 * 5010 = 4008.0000000000005 or 4007.9999999 floors to 4008
    return int(math.floor(n * frac + 1e-9))


def _check_fraction(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) \
            or not 0.0 < float(value) < 1.0:
        raise DataError(f"{name} must be a number strictly between 0 and 1, got {value!r}.")
    return float(value)


def _model_split(half: np.ndarray, test_pool: np.ndarray, seed: int, member_fraction: float,
                 dev_fraction: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    perm = rng.permutation(half)
    m = _floor(len(perm), member_fraction)
    train, held_out = perm[:m], perm[m:]
    union = rng.permutation(np.concatenate([held_out, test_pool]))
    d = _floor(len(union), dev_fraction)
    return train, union[:d], union[d:]


def make_splits(labels: np.ndarray, *, test_mask: np.ndarray | None, seed: int, n_shadows: int,
                train_pool_fraction: float = 0.8, victim_fraction: float = 0.5,
                member_fraction: float = 0.9, dev_fraction: float = 0.34) -> dict[str, np.ndarray]:
    """Reference split protocol (SPEC §2) as int64 index arrays into the dataset rows.

    Keys: ``train_pool``, ``test_pool``, ``victim_half``, ``attack_half``, ``victim/train``,
    ``victim/dev``, ``victim/test`` and ``shadow_<i>/train|dev|test`` for i < n_shadows.
    The victim's own split uses ``default_rng(seed)``, shadow ``i`` uses ``default_rng(seed+1+i)``.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise DataError(f"labels must be 1-D, got shape {labels.shape}.")
    n = int(labels.shape[0])
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise DataError(f"seed must be an integer, got {seed!r}.")
    if isinstance(n_shadows, bool) or not isinstance(n_shadows, (int, np.integer)) or n_shadows < 1:
        raise DataError(f"n_shadows must be an integer >= 1, got {n_shadows!r}.")
    train_pool_fraction = _check_fraction("train_pool_fraction", train_pool_fraction)
    victim_fraction = _check_fraction("victim_fraction", victim_fraction)
    member_fraction = _check_fraction("member_fraction", member_fraction)
    dev_fraction = _check_fraction("dev_fraction", dev_fraction)
    seed = int(seed)

    rng = np.random.default_rng(seed)
    if test_mask is None:
        perm = rng.permutation(n).astype(np.int64)
        k = _floor(n, train_pool_fraction)
        train_pool, test_pool = perm[:k], perm[k:]
    else:
        test_mask = np.asarray(test_mask)
        if test_mask.dtype != bool or test_mask.shape != (n,):
            raise DataError(f"test_mask must be a bool array of shape ({n},), got "
                            f"{test_mask.dtype} {test_mask.shape}.")
        train_pool = rng.permutation(np.flatnonzero(~test_mask).astype(np.int64))
        test_pool = rng.permutation(np.flatnonzero(test_mask).astype(np.int64))
    shuffled = rng.permutation(train_pool)
    h = _floor(len(shuffled), victim_fraction)
    victim_half, attack_half = shuffled[:h], shuffled[h:]

    splits: dict[str, np.ndarray] = {
        "train_pool": train_pool,
        "test_pool": test_pool,
        "victim_half": victim_half,
        "attack_half": attack_half,
    }
    models = [("victim", victim_half, seed)]
    models += [(f"shadow_{i}", attack_half, seed + 1 + i) for i in range(int(n_shadows))]
    for prefix, half, model_seed in models:
        tr, dev, te = _model_split(half, test_pool, model_seed, member_fraction, dev_fraction)
        splits[f"{prefix}/train"], splits[f"{prefix}/dev"], splits[f"{prefix}/test"] = tr, dev, te
    splits = {k: np.ascontiguousarray(v, dtype=np.int64) for k, v in splits.items()}

    n_classes = int(np.unique(labels).size)
    empty = [k for k, v in splits.items() if v.size == 0]
    if empty:
        raise DataError(f"too few samples ({n}) for the requested splits: {', '.join(empty)} "
                        f"would be empty (sizes: {split_sizes(splits)}). Use more data or other "
                        f"fractions.")
    for prefix, _, _ in models:
        size = splits[f"{prefix}/train"].size
        if size < n_classes:
            raise DataError(f"too few samples for the requested splits: {prefix}/train would "
                            f"hold {size} samples but the data has {n_classes} classes (n={n}, "
                            f"sizes: {split_sizes(splits)}).")
    return splits


def split_sizes(splits: dict[str, np.ndarray]) -> dict[str, int]:
    """``{key: number of indices}`` for a dict returned by :func:`make_splits`."""
    return {k: int(len(v)) for k, v in splits.items()}
