"""Image loaders: CIFAR-10/100 (torchvision's pickled batches) and CINIC-10 (ImageFolder).

``cifar10``      ``cifar-10-batches-py/data_batch_1..5`` + ``test_batch`` (torchvision format)
``cifar100``     ``cifar-100-python/train`` + ``test`` (``fine_labels``)
``cinic10``      ImageFolder ``train/<class>/*.png`` and ``test/<class>/*.png``

Normalisation constants (``mean``/``std``) are per channel on the ``pixel / 255`` scale, computed
from the train part only.

Every image loader takes ``train_per_class`` / ``test_per_class`` (keep that many images of each
class in that part, drawn without replacement with ``default_rng(seed)``; a class with fewer
keeps all of them; ``None`` keeps everything): a class-balanced subset for CPU-scale runs.
"""

from __future__ import annotations

import math
import pickle
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from . import raw as _raw  # downloads are looked up there at call time (tests switch them off)
from .raw import DataError, RawDataset
from .registry import DATASETS

__all__ = ["load_cifar10", "load_cifar100", "load_cinic10"]

CINIC10_URL = "https://datashare.ed.ac.uk/bitstream/handle/10283/3192/CINIC-10.tar.gz"

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


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


def balanced_subset(labels: np.ndarray, per_class: int | None, rng: np.random.Generator, what: str,
                    name: str) -> np.ndarray:
    """Sorted indices of ``per_class`` random samples of every class (all when fewer)."""
    if per_class is None:
        return np.arange(labels.shape[0])
    if isinstance(per_class, bool) or not isinstance(per_class, (int, np.integer)) or per_class < 1:
        raise DataError(f"{name}: {what} must be a positive integer or None, got {per_class!r}.")
    keep = []
    for c in np.unique(labels):  # one draw per class, not per sample
        idx = np.flatnonzero(labels == c)
        keep.append(idx if idx.size <= per_class else rng.choice(idx, size=int(per_class), replace=False))
    return np.sort(np.concatenate(keep))


def _load_cifar(name: str, raw_dir: str | Path, download: bool, train_per_class: int | None = None,
                test_per_class: int | None = None, seed: int = 0) -> RawDataset:
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
            _raw._torchvision_cifar_download(name, raw_dir, _raw.DOWNLOAD_TIMEOUT_S)
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
    rng = np.random.default_rng(seed)
    tr = balanced_subset(tr_y, train_per_class, rng, "train_per_class", name)
    te = balanced_subset(te_y, test_per_class, rng, "test_per_class", name)
    return _image_dataset(name, tr_x[tr], tr_y[tr], te_x[te], te_y[te], num_classes)


@DATASETS.register("cifar10", label="CIFAR-10", family="image")
def load_cifar10(raw_dir: str | Path, *, download: bool = True, train_per_class: int | None = None,
                 test_per_class: int | None = None, seed: int = 0) -> RawDataset:
    """CIFAR-10 in torchvision's format under ``raw_dir/cifar-10-batches-py``; optionally a
    class-balanced subset (``train_per_class``/``test_per_class`` images of each class, ``seed``)."""
    return _load_cifar("cifar10", raw_dir, download, train_per_class, test_per_class, seed)


@DATASETS.register("cifar100", label="CIFAR-100", family="image")
def load_cifar100(raw_dir: str | Path, *, download: bool = True, train_per_class: int | None = None,
                  test_per_class: int | None = None, seed: int = 0) -> RawDataset:
    """CIFAR-100 (fine labels) in torchvision's format under ``raw_dir/cifar-100-python``;
    optionally a class-balanced subset (as :func:`load_cifar10`)."""
    return _load_cifar("cifar100", raw_dir, download, train_per_class, test_per_class, seed)


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
            _raw._fetch_url(CINIC10_URL, archive, _raw.DOWNLOAD_TIMEOUT_S)
        with tarfile.open(archive, "r:*") as tar:
            kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(raw_dir, **kwargs)
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"cinic10: {where} not found; the download/extraction of {CINIC10_URL} "
                        f"into {raw_dir} failed ({type(exc).__name__}: {exc}); {how}.") from exc
    if not ((raw_dir / "train").is_dir() and (raw_dir / "test").is_dir()):
        raise DataError(f"cinic10: {where} still missing after extracting {archive}; {how}.")


@DATASETS.register("cinic10", label="CINIC-10", family="image")
def load_cinic10(raw_dir: str | Path, *, download: bool = True, max_train: int | None = None,
                 max_test: int | None = None, seed: int = 0, train_per_class: int | None = None,
                 test_per_class: int | None = None) -> RawDataset:
    """CINIC-10 ImageFolder ``raw_dir/{train,test}/<class>/*.png``; class order = sorted names.

    ``max_train``/``max_test`` keep a uniformly random subset (``seed``) of that part;
    ``train_per_class``/``test_per_class`` a class-balanced one (chosen before any image is
    read, so a small subset loads quickly). Use one kind per part.
    """
    for part, limit, per_class in (("train", max_train, train_per_class), ("test", max_test, test_per_class)):
        if limit is not None and per_class is not None:
            raise DataError(f"cinic10: max_{part}={limit!r} and {part}_per_class={per_class!r} both set; "
                            f"keep one (max_{part}: random subset, {part}_per_class: class-balanced).")
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
    tr = balanced_subset(tr_y, train_per_class, rng, "train_per_class", "cinic10")
    te = balanced_subset(te_y, test_per_class, rng, "test_per_class", "cinic10")
    tr_paths, tr_y, te_paths, te_y = [tr_paths[i] for i in tr], tr_y[tr], [te_paths[i] for i in te], te_y[te]
    return _image_dataset("cinic10", _read_images(tr_paths), tr_y, _read_images(te_paths), te_y,
                          len(tr_classes))
